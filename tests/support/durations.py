"""Record how long each test file takes, for the suite's scheduling (tests/durations.txt).

    python -m pytest -q --durations=0 | tee run.log
    python tests/support/durations.py run.log > tests/durations.txt

The three test workers (pytest-xdist, ``--dist loadfile``) take whole files in the order of the
collection; tests/conftest.py puts the files this table lists first, slowest first (the
longest-processing-time-first rule), so that no long end-to-end file starts last and runs alone
while the other workers sit idle. Files it does not list follow in their usual order. A stale
table costs only balance, never a result.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, TypeVar

DURATIONS = Path(__file__).parents[1] / "durations.txt"

LINE = re.compile(r"^(\d+(?:\.\d+)?)s\s+(?:setup|call|teardown)\s+(\S+?)::")
# Files under a second are left to the usual order: they only fill the gaps.
FLOOR_S = 1.0


def per_file(lines: list[str]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for line in lines:
        found = LINE.match(line.strip())
        if found:
            totals[found.group(2)] += float(found.group(1))
    return dict(totals)


def file_seconds(table: Path) -> dict[str, float]:
    """The table's seconds per file ({} when there is none)."""
    if not table.exists():
        return {}
    seconds: dict[str, float] = {}
    for line in table.read_text().splitlines():
        words = line.split()
        if len(words) == 2 and not line.startswith("#"):
            seconds[words[1]] = float(words[0])
    return seconds


class _Item(Protocol):
    @property
    def nodeid(self) -> str: ...


ItemT = TypeVar("ItemT", bound=_Item)


def slowest_files_first(items: Sequence[ItemT], seconds: dict[str, float]) -> list[ItemT]:
    """``items`` with the files ``seconds`` knows first, slowest first; the others after, in
    their order. A file's tests keep their order and stay together."""
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        first.setdefault(item.nodeid.split("::", 1)[0], index)

    def key(item: ItemT) -> tuple[float, int]:
        path = item.nodeid.split("::", 1)[0]
        return -seconds.get(path, 0.0), first[path]

    return sorted(items, key=key)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    totals = per_file(Path(argv[1]).read_text().splitlines())
    if not totals:
        print(f"{argv[1]}: no --durations=0 lines", file=sys.stderr)
        return 1
    print("# seconds  file  (python tests/support/durations.py; see its docstring)")
    for path, seconds in sorted(totals.items(), key=lambda item: (-item[1], item[0])):
        if seconds >= FLOOR_S:
            print(f"{seconds:8.1f}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
