"""What each piece of data-plane tracing costs, one piece at a time (no gateway, no sockets).

    python bench/tracing_parts.py PIECE [--calls 2000]               # CPU time per call
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=builtin_eval \\
        python bench/tracing_parts.py PIECE --calls 2000               # instructions: total / calls

PIECE is one of
- ``path``: what the request path does for a sampled request (``Tracing.begin``, the
  ``traceparent`` of one attempt, ``RequestTrace.ended`` with a non-streamed answer: its GenAI
  metrics and its record), with the harness's usage object and clock reads;
- ``unsampled``: the same for a request that is not sampled (its measurements, no record);
- ``nometrics``: ``unsampled`` with the metrics not exported (OTEL_METRICS_EXPORTER=none);
- ``complete``: the tracing thread completing one sampled request's record as plain values
  (``tracing._complete``: its cost priced, here None);
- ``ship``: the tracing thread's ``marshal`` of one sampled request's completed record and
  one unsampled request's measurements (batches of 100 distinct requests);
- ``fold`` (the exporter child): one request's measurements into the histograms (per batch of
  100);
- ``encode`` (the exporter child): one sampled request's two spans to OTLP bytes (its
  response id already read);
- ``child`` (the exporter child): everything it does for one sampled request of a batch of
  100, from the wire bytes to the export request's bytes (unmarshal, response id, histograms,
  spans), the OTLP call itself aside;
- ``meta`` (the exporter child): reading the response id and finish reasons of a whole chat
  completion body.

Under callgrind, subtract the count of ``--calls 0`` (the imports' own ``eval`` calls, e.g.
namedtuple's, are counted too).

The records are the ones ``bench/tracing_overhead.py`` produces (a non-streamed OpenAI chat
completion with one attempt). Only the timed calls run inside ``eval`` (callgrind's toggle).
"""

from __future__ import annotations

import argparse
import marshal
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "proto")]

from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON  # noqa: E402

from dataplane.observability import otel_export, otel_process, tracing  # noqa: E402
from dataplane.translate.base import Prepared  # noqa: E402
from dataplane.usage.tokens import TokenUsage  # noqa: E402

BODY = (
    b'{"id":"chatcmpl-8605ae683b25484cacf0af4c","object":"chat.completion","created":1796667467,'
    b'"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":'
    b'"fake reply: hello bench","refusal":null},"logprobs":null,"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":5,"completion_tokens":4,"total_tokens":9,"prompt_tokens_details":'
    b'{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,'
    b'"audio_tokens":0}},"service_tier":"default","system_fingerprint":"fp_fake"}'
)
HEADERS = [
    (b"host", b"bench"),
    (b"authorization", b"Bearer sk-bench-0001"),
    (b"content-type", b"application/json"),
]
DOCUMENT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello bench"}]}


class _Target:
    provider = "openai"
    origin = "http://127.0.0.1:8080"


class _Policy:
    target = _Target()
    route_type = "llm/v1/chat"
    log_payloads = False


class _Exchange:
    """What ``RequestTrace.ended`` reads of the gateway's exchange."""

    policy = _Policy()
    prepared = Prepared(
        body=b"{}",
        model="gpt-4o-mini",
        stream=False,
        url="http://127.0.0.1:8080",
        document=DOCUMENT,
    )
    attempt = 1
    output_text = None

    upstream_ns = 0
    first_byte_ns = 0


_EXCHANGE = _Exchange()


def _record(tracer: tracing.Tracing) -> tuple[Any, ...]:
    """One finished request's record, as the request path queues it."""
    trace = _request(tracer)
    (record,) = tracer._sampled
    tracer._sampled.clear()
    assert trace.recorded
    return record


def _request(tracer: tracing.Tracing) -> tracing.RequestTrace:
    now = time.perf_counter_ns()
    trace = tracer.begin(
        HEADERS, "01a251b9e7929fb48954fb1a1d75744b", "chat", "acme", "llm/v1/chat", time.time_ns()
    )
    trace.upstream_headers(list(HEADERS))
    trace.response = BODY
    usage = TokenUsage(input_tokens=5, output_tokens=4, cached_input_tokens=0, reasoning_tokens=0)
    exchange = _EXCHANGE
    exchange.upstream_ns, exchange.first_byte_ns = now + 100_000, now + 1_900_000
    trace.ended(exchange, now + 2_000_000, 200, usage, "gpt-4o-mini", False, False)
    return trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "piece",
        choices=(
            "path",
            "unsampled",
            "nometrics",
            "complete",
            "ship",
            "fold",
            "encode",
            "child",
            "meta",
        ),
    )
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    # No exporter process: the records stay queued (and are cleared here).
    tracer = tracing.Tracing(
        sampler=ALWAYS_ON if args.piece == "path" else ALWAYS_OFF,
        metrics=args.piece != "nometrics",
    )
    record = _record(tracing.Tracing(sampler=ALWAYS_ON))
    unsampled = tracing.Tracing(sampler=ALWAYS_OFF)
    calls = args.calls
    if args.piece in ("path", "unsampled", "nometrics"):

        def piece() -> None:
            _request(tracer)
            tracer._sampled.clear()
            tracer._measured.clear()

    elif args.piece == "complete":

        def piece() -> None:
            tracing._complete(record)

    elif args.piece in ("ship", "fold", "child"):
        batch = 100
        calls = max(calls // batch, 1) * batch
        # Distinct requests' records (marshal writes an object it saw before as a reference).
        sampled = tracing.Tracing(sampler=ALWAYS_ON)
        for _ in range(batch):
            _request(sampled)
            _request(unsampled)
        records = [tracing._complete(item) for item in sampled._sampled]
        measures = list(unsampled._measured)
        aggregator = otel_export.MetricAggregator()
        if args.piece == "ship":

            def piece() -> None:
                otel_process.frame((otel_process.BATCH, measures, records))

        elif args.piece == "child":
            wire = otel_process.frame((otel_process.BATCH, [], records))
            exporter = otel_export.Exporter(traces=False, metrics=True)
            encoder = otel_export.SpanEncoder(otel_export.otel_resource("bench"), "0")

            def piece() -> None:
                spans = otel_process.handle(marshal.loads(wire[4:]), exporter.aggregator)
                encoder.export_request([encoder.request(record) for record in spans])

        else:

            def piece() -> None:
                aggregator.add_measures(measures)
                aggregator.fold()

    elif args.piece == "encode":
        encoder = otel_export.SpanEncoder(otel_export.otel_resource("bench"), "0")
        read = list(otel_process.completed([tracing._complete(record)])[0])
        read[22], read[23] = otel_export.response_meta(BODY)
        read[26] = None  # not priced here (the metering's own cost)
        encoded = tuple(read)

        def piece() -> None:
            encoder.request(encoded)

    else:

        def piece() -> None:
            otel_export.response_meta(BODY)

    rounds = calls // 100 if args.piece in ("ship", "fold", "child") else calls
    for _ in range(min(rounds, 50)):
        piece()  # warm: caches, specialised bytecode

    def timed() -> None:
        for _ in range(rounds):
            piece()

    start = time.process_time()
    eval("timed()", {"timed": timed})  # the callgrind toggle
    print(f"{args.piece}: {(time.process_time() - start) / calls * 1e6:.2f} us CPU per request")
    tracer.shutdown()


if __name__ == "__main__":
    main()
