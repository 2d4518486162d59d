"""atheris entry point: ``python tests/fuzz/fuzz_upstream_response.py [libFuzzer flags] [dirs]``."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from dataplane.http import client  # noqa: F401

from harness_upstream_response import test_one_input  # type: ignore[import-not-found]

if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
