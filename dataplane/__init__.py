"""Meterline data plane: the OpenAI-compatible proxy that meters every request.

Layers, lower never importing upper (import-linter contracts in pyproject.toml):
``cli`` (composition root) | ``testing`` > ``proxy`` > ``admission`` > ``translate`` >
``config`` > ``observability`` > ``usage`` > ``http`` > ``errors`` | ``statedir``.
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("meterline")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"
