"""atheris entry point: ``python tests/fuzz/fuzz_http_server.py [libFuzzer flags] [dirs]``."""

from __future__ import annotations

import logging
import sys

import atheris

with atheris.instrument_imports():
    from dataplane.http import paths, server  # noqa: F401

from harness_http_server import test_one_input  # type: ignore[import-not-found]

if __name__ == "__main__":
    logging.disable(logging.CRITICAL)  # the app's 500 log lines are expected noise
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
