"""Meterline data plane: the OpenAI-compatible proxy that meters every request."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("meterline")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"
