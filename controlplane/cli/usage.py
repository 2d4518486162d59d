"""``meterline usage ingest|query|meters``: CloudEvents in, windowed meter aggregates out."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from google.protobuf import timestamp_pb2

from controlplane.cli.client import add_cp_argument, admin_client
from controlplane.cli.output import Column, add_output_arguments, emit_list, plural
from controlplane.cli.progress import Progress
from meterline.admin.v1 import usage_pb2

# Events per IngestEvents call (the server takes up to 10,000), and a bound on its size under
# gRPC's default 4 MiB message limit.
CHUNK = 1000
CHUNK_BYTES = 2 * 1024 * 1024
_WINDOWS = {
    "minute": usage_pb2.WINDOW_SIZE_MINUTE,
    "hour": usage_pb2.WINDOW_SIZE_HOUR,
    "day": usage_pb2.WINDOW_SIZE_DAY,
}


def register(usage_commands: Any) -> None:
    """Add ``ingest``, ``query`` and ``meters`` under ``meterline usage``."""
    ingest = usage_commands.add_parser(
        "ingest", help="send CloudEvents (one JSON object a line) to operator meters"
    )
    ingest.add_argument("file", help="a .jsonl file, or - for standard input")
    add_cp_argument(ingest)
    ingest.set_defaults(func=_cmd_ingest)

    query = usage_commands.add_parser(
        "query", help="a meter's aggregates per window and group (UTC windows)"
    )
    query.add_argument("meter", help="meter key (llm_tokens or an operator meter)")
    query.add_argument(
        "--subject", action="append", default=[], help="only this subject (repeatable)"
    )
    query.add_argument(
        "--group-by",
        action="append",
        default=[],
        metavar="DIM",
        help="group by a meter dimension or 'subject' (repeatable)",
    )
    query.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="DIM=VALUE",
        help="only events whose dimension equals the value (repeatable)",
    )
    query.add_argument("--window", choices=sorted(_WINDOWS), help="window size (default: none)")
    query.add_argument("--from", dest="start", metavar="TIME", help="RFC 3339 start (inclusive)")
    query.add_argument("--to", dest="end", metavar="TIME", help="RFC 3339 end (exclusive)")
    query.add_argument("--json", action="store_true", help="print JSON")
    add_cp_argument(query)
    query.set_defaults(func=_cmd_query)

    meters = usage_commands.add_parser("meters", help="list meters (built in and operator)")
    add_output_arguments(meters)
    add_cp_argument(meters)
    meters.set_defaults(func=_cmd_meters)


def _lines(stream: TextIO) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(stream, start=1):
        if line.strip():
            yield number, line.strip()


def _chunks(lines: Iterator[tuple[int, str]]) -> Iterator[list[tuple[int, str]]]:
    chunk: list[tuple[int, str]] = []
    size = 0
    for item in lines:
        if chunk and (len(chunk) == CHUNK or size + len(item[1]) > CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += len(item[1])
    if chunk:
        yield chunk


def _cmd_ingest(args: argparse.Namespace) -> int:
    accepted = duplicates = rejected = 0
    stream: TextIO
    if args.file == "-":
        stream = sys.stdin
    else:
        try:
            stream = Path(args.file).open(encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    progress = Progress("usage ingest")
    with stream, admin_client(args.cp) as client:
        for chunk in _chunks(_lines(stream)):
            response = client.usage.IngestEvents(
                usage_pb2.IngestEventsRequest(events_json=[text for _, text in chunk])
            )
            accepted += response.accepted
            duplicates += response.duplicates
            for event in response.rejected:
                rejected += 1
                line = chunk[event.index][0]
                ident = f" (id {event.id!r})" if event.id else ""
                progress.done()
                print(f"line {line}{ident}: rejected: {event.reason}", file=sys.stderr)
            progress.update(
                f"{plural(accepted + duplicates + rejected, 'event')} sent, up to line"
                f" {chunk[-1][0]}"
            )
    progress.done()
    print(f"accepted {accepted}, duplicates {duplicates}, rejected {rejected}")
    return 1 if rejected else 0


def _timestamp(text: str | None, flag: str) -> timestamp_pb2.Timestamp | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"error: {flag}: {text!r} is not an RFC 3339 time") from None
    if value.tzinfo is None:
        raise SystemExit(f"error: {flag}: {text!r} needs a UTC offset (add Z)")
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def _time_text(ts: timestamp_pb2.Timestamp, present: bool) -> str:
    if not present:
        return ""
    return ts.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def _cmd_query(args: argparse.Namespace) -> int:
    filters = {}
    for item in args.filter:
        dimension, sep, value = item.partition("=")
        if not sep or not dimension:
            raise SystemExit(f"error: --filter: expected DIM=VALUE, got {item!r}")
        filters[dimension] = value
    request = usage_pb2.QueryMeterRequest(
        meter=args.meter,
        subjects=args.subject,
        filters=filters,
        group_by=args.group_by,
        start_time=_timestamp(args.start, "--from"),
        end_time=_timestamp(args.end, "--to"),
        window_size=_WINDOWS[args.window] if args.window else usage_pb2.WINDOW_SIZE_UNSPECIFIED,
    )
    with admin_client(args.cp) as client:
        response = client.usage.QueryMeter(request)
    rows = [
        {
            "window_start": _time_text(row.window_start, row.HasField("window_start")) or None,
            "window_end": _time_text(row.window_end, row.HasField("window_end")) or None,
            **{d: row.group[d] for d in args.group_by},
            "value": row.value,
        }
        for row in response.rows
    ]
    if args.json:
        print(json.dumps({"meter": args.meter, "rows": rows}, indent=2))
        return 0
    columns = (["window_start", "window_end"] if args.window else []) + [*args.group_by, "value"]
    table = [[c.upper() for c in columns]] + [[str(r[c] or "") for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    if not rows:
        print("(no usage)")
    return 0


def _cmd_meters(args: argparse.Namespace) -> int:
    with admin_client(args.cp) as client:
        response = client.usage.ListMeters(usage_pb2.ListUsageMetersRequest(page_size=1000))
    meters = [
        {
            "key": m.key,
            "event_type": m.event_type,
            "aggregation": usage_pb2.UsageMeterAggregation.Name(m.aggregation).removeprefix(
                "USAGE_METER_AGGREGATION_"
            ),
            "value_property": m.value_property,
            "group_by": dict(m.group_by),
        }
        for m in response.meters
    ]
    emit_list(
        args,
        meters,
        (
            Column("key"),
            Column("event_type"),
            Column("aggregation"),
            Column("value_property"),
            Column("group_by", "dimensions"),
        ),
        noun=("meter", "meters"),
    )
    return 0
