"""Meterline contract (generated code lives beside the .proto files)."""
