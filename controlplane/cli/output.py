"""What read commands print: one table style, or JSON / YAML for programs.

Tables have upper-case headers and aligned columns; times are shown to the second in the
local zone (``--utc`` for UTC), named by the zone's abbreviation. JSON and YAML carry RFC 3339
UTC times and decimal strings unchanged. Only data goes to stdout: counts, "no routes" and the
next page's token go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import yaml

FORMATS = ("table", "json", "yaml")
DEFAULT_LIMIT = 100


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 route``, ``2 routes``, ``0 entities`` (give the plural when it is not +s)."""
    word = singular if count == 1 else (plural_form or f"{singular}s")
    return f"{count} {word}"


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--output table|json|yaml`` (``-o``), ``--json`` (= ``-o json``) and ``--utc``."""
    parser.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default="table",
        help="table (default), json or yaml",
    )
    parser.add_argument(
        "--json",
        dest="output",
        action="store_const",
        const="json",
        help="same as --output json",
    )
    parser.add_argument("--utc", action="store_true", help="show times in UTC, not local time")


def add_paging_arguments(parser: argparse.ArgumentParser, *, default: int = DEFAULT_LIMIT) -> None:
    """``--limit N`` and ``--page-token TOKEN`` of a list command (newest first)."""
    parser.add_argument(
        "--limit",
        type=_positive,
        default=default,
        metavar="N",
        help=f"at most N items (default: {default}, at most 1000)",
    )
    parser.add_argument(
        "--page-token",
        default="",
        metavar="TOKEN",
        help="the next page, as the previous page's output said",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and 1000")
    return value


@dataclass(frozen=True)
class Column:
    """A table column: the row key it shows, its header, and whether it holds a time."""

    key: str
    header: str = ""
    time: bool = False
    right: bool = False

    @property
    def title(self) -> str:
        return (self.header or self.key.replace("_", " ")).upper()


def parse_time(text: str) -> datetime | None:
    """An RFC 3339 time (as rows carry them), or None for ""."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def rfc3339(value: datetime | None) -> str:
    """UTC, to the microsecond only where there is one, with a Z: what JSON and YAML carry."""
    if value is None:
        return ""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def humane_time(value: datetime | str | None, *, utc: bool = False) -> str:
    """``2026-12-07 15:03:12 CET``: seconds, no microseconds, the zone named."""
    moment = parse_time(value) if isinstance(value, str) else value
    if moment is None:
        return "-"
    local = moment.astimezone(UTC) if utc else moment.astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S %Z")


def _cell(value: Any, column: Column, utc: bool) -> str:
    if column.time:
        return humane_time(value, utc=utc)
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], *, utc: bool) -> str:
    """Rows under upper-case headers, each column as wide as its widest cell."""
    grid = [[c.title for c in columns]]
    grid += [[_cell(row.get(c.key), c, utc) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(columns))]
    lines = []
    for line in grid:
        cells = [
            cell.rjust(width) if column.right else cell.ljust(width)
            for cell, width, column in zip(line, widths, columns, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def dump(data: Any, output: str, stream: TextIO | None = None) -> None:
    """Write data as JSON or YAML (block style, keys in their given order)."""
    out = stream or sys.stdout
    if output == "yaml":
        out.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    else:
        out.write(json.dumps(data, indent=2) + "\n")


def emit_list(
    args: argparse.Namespace,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    noun: tuple[str, str],
    data: Sequence[Any] | None = None,
    next_page_token: str = "",
) -> None:
    """A list command's result. ``noun`` is (singular, plural); ``data`` is what JSON/YAML
    print (default: the rows)."""
    output = getattr(args, "output", "table")
    if output != "table":
        dump(list(rows if data is None else data), output)
    elif rows:
        print(table(rows, columns, utc=getattr(args, "utc", False)))
    summary = plural(len(rows), *noun) if rows else f"no {noun[1]}"
    if next_page_token:
        summary += f"; more with --page-token {next_page_token}"
    if output == "table" or next_page_token:
        print(summary, file=sys.stderr)


def emit_one(
    args: argparse.Namespace,
    row: Mapping[str, Any],
    columns: Sequence[Column],
    *,
    data: Any = None,
) -> None:
    """A get command's result: one table row, or the whole resource as JSON/YAML."""
    output = getattr(args, "output", "table")
    if output != "table":
        dump(row if data is None else data, output)
    else:
        print(table([row], columns, utc=getattr(args, "utc", False)))
