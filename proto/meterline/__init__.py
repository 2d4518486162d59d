"""Meterline: the public gRPC contract of a token-billing AI gateway."""
