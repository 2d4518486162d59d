"""Config propagation: snapshot build time for a large gateway config, and the time a change
takes to reach many connected data-plane streams.

    python bench/config_propagation.py [--db URL] [--consumers 10000] [--routes 1000]
                                       [--streams 200] [--changes 5]

Default database: the machine's PostgreSQL (a fresh schema, dropped afterwards); `--db
sqlite:///...` for SQLite. The streams are simulated in this process (one grpc.aio channel per
10 streams), each speaking the data-plane protocol (first request names the node, every response
ACKed). A change is a consumer added through the admin ApplyConfig RPC, as `meterline apply`
does; the clock starts before the RPC is sent and stops, per stream, when its new version
arrives. Prints: build median/max and snapshot size, then per-change p50/p99/max propagation and
the overall p99 over every (change, stream) pair.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime

import grpc
from sqlalchemy import create_engine, text

from controlplane.configsync.snapshot import build_snapshot
from controlplane.declarative.apply import apply_document
from controlplane.gateway import storage as gateway_storage
from controlplane.server import ControlPlane
from controlplane.storage.db import Database
from meterline.admin.v1 import gateway_pb2, gateway_pb2_grpc
from meterline.dataplane.v1 import config_pb2, config_pb2_grpc

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
STREAMS_PER_CHANNEL = 10


def document(consumers: int, routes: int, extra: int = 0) -> str:
    lines = [
        '_format_version: "3.0"',
        "services:",
        "  - name: llm",
        "    url: http://127.0.0.1:9/v1",
        "    routes:",
    ]
    for r in range(routes):
        lines.append(f"      - {{name: route-{r}, paths: [/r{r}]}}")
    lines += [
        "    plugins:",
        "      - name: key-auth",
        "      - name: ai-proxy",
        "        config:",
        "          route_type: llm/v1/chat",
        "          auth: {header_name: Authorization, header_value: Bearer sk-bench}",
        "          model: {provider: openai, name: gpt-4o-mini,",
        "                  options: {upstream_url: 'http://127.0.0.1:9/v1/chat/completions'}}",
        "consumers:",
    ]
    for c in range(consumers + extra):
        lines.append(f"  - {{username: user-{c}, keyauth_credentials: [{{key: key-{c}}}]}}")
    return "\n".join(lines) + "\n"


class Stream:
    """One simulated data plane: holds a version, ACKs every response, timestamps arrivals."""

    def __init__(self, channel: grpc.aio.Channel, index: int) -> None:
        self.stub = config_pb2_grpc.ConfigServiceStub(channel)
        self.index = index
        self.version = ""
        self.arrivals: dict[str, float] = {}
        self.first = asyncio.Event()

    async def run(self) -> None:
        call = self.stub.StreamConfig()
        node = config_pb2.Node(id=f"bench-{self.index}", hostname="bench", version="0.1.0")
        await call.write(config_pb2.ConfigRequest(node=node))
        while (response := await call.read()) is not grpc.aio.EOF:
            self.arrivals[response.version_info] = time.perf_counter()
            self.version = response.version_info
            self.first.set()
            await call.write(
                config_pb2.ConfigRequest(
                    version_info=response.version_info, response_nonce=response.nonce
                )
            )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default=None)
    parser.add_argument("--consumers", type=int, default=10_000)
    parser.add_argument("--routes", type=int, default=1_000)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--builds", type=int, default=7)
    args = parser.parse_args()

    schema_name = None
    url = args.db
    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    if url is None:
        schema_name = f"bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema_name}"'))
        url = f"{PG}?options=-csearch_path%3D{schema_name}"
    db = Database.connect(url)
    try:
        started = time.perf_counter()
        apply_document(db, text=document(args.consumers, args.routes), now=datetime.now(UTC))
        apply_s = time.perf_counter() - started

        # Snapshot build: load from the database + build + serialise, as the hub does.
        loads, builds, serialise = [], [], []
        size = 0
        for _ in range(args.builds):
            t0 = time.perf_counter()
            with db.begin() as conn:
                config = gateway_storage.load_config(conn, secrets=None)
            t1 = time.perf_counter()
            built = build_snapshot(config)
            t2 = time.perf_counter()
            size = len(built.snapshot.SerializeToString())
            t3 = time.perf_counter()
            loads.append(t1 - t0)
            builds.append(t2 - t1)
            serialise.append(t3 - t2)
        print(f"database                 {db.engine.url.get_backend_name()}")
        print(f"config                   {args.consumers} consumers, {args.routes} routes")
        print(f"initial apply            {apply_s * 1000:,.0f} ms")
        print(f"snapshot size            {size / 1e6:.2f} MB")
        print(f"load from database       median {statistics.median(loads) * 1000:.0f} ms")
        print(
            f"build (incl. hashing)    median {statistics.median(builds) * 1000:.0f} ms, "
            f"max {max(builds) * 1000:.0f} ms"
        )
        print(f"serialise                median {statistics.median(serialise) * 1000:.0f} ms")
        total = [a + b + c for a, b, c in zip(loads, builds, serialise, strict=True)]
        print(f"load + build + serialise median {statistics.median(total) * 1000:.0f} ms")

        cp = ControlPlane(db=db, listen="127.0.0.1:0")
        port = await cp.start()
        target = f"127.0.0.1:{port}"
        options = [
            ("grpc.max_receive_message_length", 256 * 1024 * 1024),
            # Separate connections: one channel per STREAMS_PER_CHANNEL streams.
            ("grpc.use_local_subchannel_pool", 1),
        ]
        channels = [
            grpc.aio.insecure_channel(target, options=options)
            for _ in range((args.streams + STREAMS_PER_CHANNEL - 1) // STREAMS_PER_CHANNEL)
        ]
        streams = [Stream(channels[i // STREAMS_PER_CHANNEL], i) for i in range(args.streams)]
        tasks = [asyncio.create_task(s.run()) for s in streams]
        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(s.first.wait() for s in streams)), 300)
        print(
            f"{args.streams} streams connected, first snapshot on all after "
            f"{(time.perf_counter() - t0) * 1000:,.0f} ms"
        )
        admin_channel = grpc.aio.insecure_channel(target)
        stub = gateway_pb2_grpc.GatewayServiceStub(admin_channel)
        all_delays: list[float] = []
        after_apply: list[float] = []
        for change in range(1, args.changes + 1):
            await asyncio.sleep(0.5)
            before = {s.version for s in streams}
            sent = time.perf_counter()
            await stub.ApplyConfig(
                gateway_pb2.ApplyConfigRequest(
                    document=document(args.consumers, args.routes, extra=change)
                )
            )
            applied = time.perf_counter() - sent
            deadline = time.perf_counter() + 30
            while any(s.version in before for s in streams):
                if time.perf_counter() > deadline:
                    raise SystemExit("change did not reach every stream within 30 s")
                await asyncio.sleep(0.005)
            delays = sorted(s.arrivals[s.version] - sent for s in streams)
            all_delays += delays
            after_apply.append(delays[-1] - applied)
            q = statistics.quantiles(delays, n=100)
            print(
                f"change {change}: apply RPC {applied * 1000:.0f} ms; reached {len(delays)} "
                f"streams p50 {q[49] * 1000:.0f} ms  p99 {q[98] * 1000:.0f} ms  "
                f"max {delays[-1] * 1000:.0f} ms (last stream {after_apply[-1] * 1000:.0f} ms "
                "after the RPC returned)"
            )
        q = statistics.quantiles(all_delays, n=100)
        print(
            f"propagation over {len(all_delays)} (change, stream) pairs: p50 {q[49] * 1000:.0f} ms"
            f"  p99 {q[98] * 1000:.0f} ms  max {max(all_delays) * 1000:.0f} ms"
        )
        print(
            "last stream after the apply RPC returned: median "
            f"{statistics.median(after_apply) * 1000:.0f} ms"
        )
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await admin_channel.close()
        for c in channels:
            await c.close()
        await cp.stop(0)
    finally:
        db.dispose()
        if schema_name:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema_name}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    asyncio.run(main())
