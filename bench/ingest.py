"""Usage ingestion throughput: events/s one control plane stores from concurrent data-plane
streams, deduplicated and ACKed only when durable.

    python bench/ingest.py [--db URL] [--streams 4] [--events 200000] [--batch 500]

Default database: the machine's PostgreSQL (a fresh schema, dropped afterwards). Prints one
table: events/s over the whole run, per-batch ACK latency percentiles, and a check that the
stored count equals the distinct events sent (a resent batch is part of every run), and that
the hourly rollups kept in the same transactions hold exactly the stored events and tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime

import grpc
from google.protobuf import timestamp_pb2
from sqlalchemy import BigInteger, cast, create_engine, func, select, text

from controlplane.server import ControlPlane
from controlplane.storage import schema
from controlplane.storage.db import Database
from meterline.dataplane.v1 import usage_pb2, usage_pb2_grpc

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def make_batches(stream: int, events: int, batch: int) -> list[usage_pb2.UsageBatch]:
    now = timestamp_pb2.Timestamp()
    now.FromDatetime(datetime.now(UTC))
    batches = []
    for start in range(0, events, batch):
        b = usage_pb2.UsageBatch(batch_id=f"s{stream}-b{start}")
        for i in range(start, min(start + batch, events)):
            b.events.add(
                id=f"s{stream}-r{i}:input",
                source=f"bench-dp-{stream}",
                type="llm.tokens",
                subject=f"customer-{i % 100}",
                time=now,
                llm_tokens=usage_pb2.LlmTokens(
                    provider="openai",
                    model="gpt-4o-mini",
                    token_type=usage_pb2.TOKEN_TYPE_INPUT,
                    tokens=1 + i % 50,
                    status_code=200,
                    route="chat",
                    request_id=f"s{stream}-r{i}",
                ),
            )
        batches.append(b)
    return batches


async def run_stream(
    stub: usage_pb2_grpc.UsageServiceStub, batches: list[usage_pb2.UsageBatch]
) -> list[float]:
    call = stub.StreamUsage()
    latencies = []
    # Keep a window of batches in flight, as a data plane does.
    window = 4
    sent: dict[str, float] = {}
    pending = list(batches)

    async def writer() -> None:
        for b in pending:
            while len(sent) >= window:
                await asyncio.sleep(0)
            sent[b.batch_id] = time.perf_counter()
            await call.write(b)
        await call.done_writing()

    w = asyncio.create_task(writer())
    async for ack in call:
        latencies.append(time.perf_counter() - sent.pop(ack.batch_id))
    await w
    return latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default=None)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--events", type=int, default=200_000, help="total, over all streams")
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()

    schema_name = None
    url = args.db
    if url is None:
        schema_name = f"bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(PG, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema_name}"'))
        url = f"{PG}?options=-csearch_path%3D{schema_name}"
    db = Database.connect(url)
    cp = ControlPlane(db=db, listen="127.0.0.1:0")
    port = await cp.start()
    per_stream = args.events // args.streams
    all_batches = [make_batches(s, per_stream, args.batch) for s in range(args.streams)]
    # One batch is sent twice, as after a lost ACK: it must be stored once.
    all_batches[0].append(all_batches[0][0])
    try:
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(args.streams)]
        stubs = [usage_pb2_grpc.UsageServiceStub(c) for c in channels]
        started = time.perf_counter()
        results = await asyncio.gather(
            *(run_stream(stub, b) for stub, b in zip(stubs, all_batches, strict=True))
        )
        elapsed = time.perf_counter() - started
        for c in channels:
            await c.close()
        with db.begin() as conn:
            stored = conn.execute(select(func.count()).select_from(schema.usage_events)).scalar()
            tokens = conn.execute(select(func.sum(schema.usage_events.c.tokens))).scalar()
            r = schema.usage_rollups
            rolled = conn.execute(
                select(func.sum(cast(r.c.value, BigInteger)), func.sum(r.c.count))
            ).one()
        latencies = sorted(x for r in results for x in r)
        sent = per_stream * args.streams
        q = statistics.quantiles(latencies, n=100)
        print(f"database           {db.engine.url.get_backend_name()}")
        print(f"streams x batch    {args.streams} x {args.batch}")
        print(f"events sent        {sent} (+{args.batch} resent)")
        print(f"events stored      {stored} ({'OK' if stored == sent else 'MISMATCH'})")
        same = tuple(rolled) == (tokens, stored)
        print(f"hourly rollups     {rolled[1]} events, {rolled[0]} tokens", end=" ")
        print("(OK: equal to the stored events)" if same else f"(MISMATCH: {tokens} tokens)")
        print(f"elapsed            {elapsed:.2f} s")
        print(f"throughput         {sent / elapsed:,.0f} events/s")
        print(f"batch ack p50/p99  {q[49] * 1000:.1f} / {q[98] * 1000:.1f} ms")
    finally:
        await cp.stop(0)
        db.dispose()
        if schema_name:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema_name}" CASCADE'))


if __name__ == "__main__":
    asyncio.run(main())
