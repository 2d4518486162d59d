"""The ``meterline`` command: one console script, with subcommands for both planes."""

from __future__ import annotations

from controlplane.cli.main import main

__all__ = ["main"]
