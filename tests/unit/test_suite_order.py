"""The suite's scheduling table (tests/support/durations.py): how it is read and applied."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from support.durations import DURATIONS, file_seconds, per_file, slowest_files_first


@dataclass(frozen=True)
class Item:
    nodeid: str


def test_durations_lines_sum_per_file() -> None:
    lines = [
        "12.50s call     tests/e2e/test_a.py::test_one[postgres]",
        "2.25s setup    tests/e2e/test_a.py::test_one[postgres]",
        "0.25s teardown tests/e2e/test_a.py::test_two",
        "3.00s call     tests/unit/test_b.py::TestX::test_y",
        "(42 durations < 0.005s hidden.)",
        "4071 passed in 500.00s",
    ]
    assert per_file(lines) == {"tests/e2e/test_a.py": 15.0, "tests/unit/test_b.py": 3.0}


def test_known_files_go_first_slowest_first_and_files_stay_whole() -> None:
    items = [
        Item("tests/e2e/a.py::t1"),
        Item("tests/e2e/a.py::t2"),
        Item("tests/e2e/b.py::t1"),
        Item("tests/unit/c.py::t1"),
        Item("tests/unit/c.py::t2"),
        Item("tests/unit/d.py::t1"),
    ]
    ordered = slowest_files_first(items, {"tests/unit/c.py": 9.0, "tests/e2e/b.py": 20.0})
    assert [i.nodeid for i in ordered] == [
        "tests/e2e/b.py::t1",
        "tests/unit/c.py::t1",
        "tests/unit/c.py::t2",
        "tests/e2e/a.py::t1",
        "tests/e2e/a.py::t2",
        "tests/unit/d.py::t1",
    ]
    assert slowest_files_first(items, {}) == items


def test_the_table_names_files_that_exist(tmp_path: Path) -> None:
    assert file_seconds(tmp_path / "absent.txt") == {}
    seconds = file_seconds(DURATIONS)
    assert len(seconds) >= 20
    root = DURATIONS.parents[1]
    missing = [path for path in seconds if not (root / path).exists()]
    assert not missing, f"tests/durations.txt names files that are gone: {missing}"
