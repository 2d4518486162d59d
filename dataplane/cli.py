"""The ``dataplane`` command: serve the gateway, synced from a control plane.

``add_arguments`` and ``run`` let another CLI (``meterline dataplane``) mount this command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import signal
import socket
import sys

import grpc

from dataplane import __version__
from dataplane.configsync import ConfigClient
from dataplane.httpserver import serve_http, split_host_port
from dataplane.proxy import Gateway
from dataplane.usage import UsageReporter
from meterline.dataplane.v1 import config_pb2, config_pb2_grpc, usage_pb2_grpc

logger = logging.getLogger("dataplane")

USAGE_FLUSH_DEADLINE_S = 2.0


def default_node_id() -> str:
    """Hostname plus a random suffix, so restarted or co-located proxies stay distinct."""
    return f"{socket.gethostname()}-{secrets.token_hex(3)}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the data plane's flags to ``parser``."""
    parser.add_argument(
        "--cp", required=True, metavar="HOST:PORT", help="control plane gRPC address"
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1:8000",
        metavar="HOST:PORT",
        help="HTTP address to serve on (default: %(default)s)",
    )
    parser.add_argument(
        "--node-id", default=None, help="data plane id (default: hostname + random suffix)"
    )
    parser.add_argument(
        "--usage-flush-ms",
        type=int,
        default=200,
        help="longest wait before buffered usage is sent (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the data plane until SIGTERM/SIGINT; return the exit code."""
    try:
        host, port = split_host_port(args.listen)
    except ValueError as exc:
        print(f"dataplane: --listen: {exc}", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(
            stream=sys.stderr,
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    node_id = args.node_id or default_node_id()
    import uvloop

    try:
        return uvloop.run(
            _serve(
                cp=args.cp,
                host=host,
                port=port,
                node_id=node_id,
                flush_interval=args.usage_flush_ms / 1000,
            )
        )
    except OSError as exc:
        logger.error("dataplane could not start: %s", exc)
        return 1


async def _serve(*, cp: str, host: str, port: int, node_id: str, flush_interval: float) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    # One channel (one HTTP/2 connection) carries both the config and the usage stream.
    channel = grpc.aio.insecure_channel(cp)
    reporter = UsageReporter(
        stub=usage_pb2_grpc.UsageServiceStub(channel),  # type: ignore[no-untyped-call, unused-ignore]
        flush_interval=flush_interval,
    )
    gateway = Gateway(node_id=node_id, usage_sink=reporter.append)
    config_client = ConfigClient(
        stub=config_pb2_grpc.ConfigServiceStub(channel),  # type: ignore[no-untyped-call, unused-ignore]
        node=config_pb2.Node(id=node_id, hostname=socket.gethostname(), version=__version__),
        apply=gateway.apply,
    )
    reporter.start()
    sync = asyncio.create_task(config_client.run(), name="config-sync")
    try:
        async with serve_http(gateway, host=host, port=port) as address:
            logger.info(
                "dataplane listening on %s (node %s, control plane %s)", address.url, node_id, cp
            )
            await stop.wait()
            logger.info("dataplane stopping")
    finally:
        sync.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sync
        await reporter.close(timeout=USAGE_FLUSH_DEADLINE_S)
        await gateway.aclose()
        await channel.close()
    logger.info("dataplane stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m dataplane``."""
    parser = argparse.ArgumentParser(
        prog="python -m dataplane", description="Run a Meterline data plane."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
