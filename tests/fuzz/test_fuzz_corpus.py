"""The fuzz harnesses over their committed corpus, in the normal test run (fast, no atheris).

The coverage-guided runs (``tests/fuzz/fuzz_*.py``, 60 s each) are a separate CI step in
``.ci/run``; this keeps every input that ever found something replayed on every change.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent


def _harness(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("harness", "corpus"),
    [
        pytest.param("harness_http_server", "http_server", id="http-server"),
        pytest.param("harness_upstream_response", "upstream_response", id="upstream-response"),
    ],
)
def test_the_committed_corpus_holds_every_invariant(harness: str, corpus: str) -> None:
    module = _harness(harness)
    inputs = sorted((HERE / "corpus" / corpus).iterdir())
    assert len(inputs) >= 10
    try:
        for path in inputs:
            module.test_one_input(path.read_bytes())
    finally:
        if module._loop is not None:
            module._loop.close()
