"""Meterline data plane: the OpenAI-compatible proxy that meters every request."""
