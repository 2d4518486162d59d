"""The committed gRPC/protobuf modules are exactly what proto/generate.py produces."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"


def _load_generator():
    spec = importlib.util.spec_from_file_location("meterline_generate", PROTO_ROOT / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _source(path: Path) -> bool:
    """A module or stub, not Python's bytecode cache of one (__pycache__/*.pyc)."""
    return path.suffix in {".py", ".pyi"} and "__pycache__" not in path.parts


def test_regenerating_changes_nothing(tmp_path: Path) -> None:
    generator = _load_generator()
    generator.generate(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*") if _source(p))
    assert generated, "protoc produced nothing"
    committed = sorted(
        p.relative_to(PROTO_ROOT) for p in PROTO_ROOT.glob("meterline/**/*_pb2*") if _source(p)
    )
    assert generated == committed
    for rel in generated:
        assert (tmp_path / rel).read_text() == (PROTO_ROOT / rel).read_text(), f"{rel} is stale"


@pytest.mark.parametrize(
    "module",
    [
        "meterline.dataplane.v1.config_pb2_grpc",
        "meterline.dataplane.v1.usage_pb2_grpc",
        "meterline.admin.v1.gateway_pb2_grpc",
        "meterline.admin.v1.catalog_pb2_grpc",
        "meterline.admin.v1.customers_pb2_grpc",
        "meterline.admin.v1.billing_pb2_grpc",
        "meterline.admin.v1.usage_pb2_grpc",
    ],
)
def test_stubs_import_from_the_package_tree(module: str) -> None:
    __import__(module)
    assert module in sys.modules
