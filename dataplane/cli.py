"""The ``dataplane`` command: serve the gateway, synced from a control plane.

``add_arguments`` and ``run`` let another CLI (``meterline dataplane``) mount this command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from dataplane import __version__
from dataplane.admission.entitlements import Enforcer, acked_events
from dataplane.admission.spool_guard import SpoolGuard
from dataplane.config.cache import CacheError, ConfigCache, load_key, stable_node_id
from dataplane.config.cluster import ClusterConfigError, ClusterTLS, open_channel
from dataplane.config.sync import ConfigClient
from dataplane.http.client import DEFAULT_MAX_RESPONSE_BYTES, UpstreamClients
from dataplane.http.server import DEFAULT_LIMITS, ServerLimits, serve_http, split_host_port
from dataplane.observability.logs import add_log_format_argument, configure_logging
from dataplane.observability.metrics import (
    Observability,
    new_metrics,
    shared_worker_metrics,
    worker_exited,
)
from dataplane.observability.tracing import Tracing
from dataplane.proxy.compiler import compile_isolating
from dataplane.proxy.gateway import DEFAULT_MAX_BODY_BYTES, Gateway
from dataplane.proxy.runtime import RuntimeConfig
from dataplane.usage.reporter import UsageReporter, UsageStreamStub
from dataplane.usage.spool import (
    DEFAULT_FSYNC_INTERVAL_S,
    DEFAULT_MAX_BYTES,
    FsyncPolicy,
    FullPolicy,
    Spool,
    SpoolLocked,
)
from meterline.dataplane.v1 import config_pb2, config_pb2_grpc

logger = logging.getLogger("dataplane")

USAGE_FLUSH_DEADLINE_S = 2.0
DEFAULT_SHUTDOWN_TIMEOUT_S = 20
TRUE_WORDS = ("1", "true", "yes", "on")
# A worker that dies sooner than this after its start is crash-looping: stop, do not restart.
WORKER_MIN_LIFETIME_S = 5.0
# Allocations between two gen-0 collections (CPython's default is 700); see _tune_gc.
GC_GEN0_THRESHOLD = 20_000


def default_node_id() -> str:
    """Hostname plus a random suffix, so restarted or co-located proxies stay distinct."""
    return f"{socket.gethostname()}-{secrets.token_hex(3)}"


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """Where a data plane keeps its state unless told: $METERLINE_STATE_DIR (empty: nowhere),
    /var/lib/meterline for root, else the user's state directory (XDG Base Directory)."""
    env = os.environ if environ is None else environ
    if "METERLINE_STATE_DIR" in env:
        return Path(env["METERLINE_STATE_DIR"]) if env["METERLINE_STATE_DIR"] else None
    if os.geteuid() == 0:
        return Path("/var/lib/meterline")
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "meterline"


def _state_dir(text: str) -> Path | None:
    return Path(text) if text else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the data plane's flags to ``parser``."""
    parser.add_argument(
        "--cp",
        required=True,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="control plane cluster address (its --cluster-listen); several replicas as a "
        "comma-separated list of IP:PORT, tried in turn",
    )
    parser.add_argument(
        "--cluster-cert",
        type=Path,
        metavar="FILE",
        help="this data plane's certificate (meterline pki issue-dataplane)",
    )
    parser.add_argument("--cluster-key", type=Path, metavar="FILE", help="its private key")
    parser.add_argument(
        "--cluster-ca", type=Path, metavar="FILE", help="the CA that signed the control plane"
    )
    parser.add_argument(
        "--insecure-dev",
        action="store_true",
        # `python -m dataplane` has no env defaults of its own; `meterline dataplane` reads
        # the same variable.
        default=os.environ.get("METERLINE_DATAPLANE_INSECURE_DEV", "").lower() in TRUE_WORDS,
        help="development only: talk to the control plane in plaintext, without certificates",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=int,
        default=DEFAULT_SHUTDOWN_TIMEOUT_S,
        metavar="SECONDS",
        help="on SIGTERM, how long requests in flight (streams included) may take to finish "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1:8000",
        metavar="HOST:PORT",
        help="HTTP address to serve on (default: %(default)s)",
    )
    parser.add_argument(
        "--node-id",
        default=None,
        help="data plane id (default: the one stored in the state directory, else hostname + "
        "random suffix, stored there for the next start)",
    )
    parser.add_argument(
        "--state-dir",
        type=_state_dir,
        default=default_state_dir(),
        metavar="DIR",
        help="directory (0700) for the node id, the config cache (DIR/config) and the usage "
        "spool (DIR/spool), one data plane per directory (default: $METERLINE_STATE_DIR, else "
        "/var/lib/meterline as root, else $XDG_STATE_HOME/meterline or "
        "~/.local/state/meterline); '' keeps nothing on disk (usage in memory only)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="config cache directory (default: STATE_DIR/config)",
    )
    parser.add_argument(
        "--cache-key-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="Fernet key that encrypts the config cache (default: $METERLINE_CACHE_KEY; "
        "unset: not encrypted, owner-only permissions)",
    )
    parser.add_argument(
        "--spool-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="usage spool directory (default: STATE_DIR/spool)",
    )
    parser.add_argument(
        "--spool-fsync",
        choices=[p.value for p in FsyncPolicy],
        default=FsyncPolicy.INTERVAL.value,
        help="fdatasync the spool after every event, or every --spool-fsync-interval-ms "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--spool-fsync-interval-ms",
        type=int,
        default=int(DEFAULT_FSYNC_INTERVAL_S * 1000),
        metavar="MS",
        help="most usage (in ms) a machine crash can lose under --spool-fsync interval "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--spool-max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        metavar="BYTES",
        help="unacknowledged usage the spool may hold (default: %(default)s)",
    )
    parser.add_argument(
        "--spool-full",
        choices=[p.value for p in FullPolicy],
        default=FullPolicy.BLOCK.value,
        help="when the spool is full: block (new requests get 503) or serve (keep serving, "
        "usage past the bound in memory only, logged as an ALERT) (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes sharing the listen port (SO_REUSEPORT), each with its own event "
        "loop, config and usage stream, node id NODE-wI and state in STATE_DIR/wI; a worker "
        "that dies is restarted (default: %(default)s)",
    )
    edge = parser.add_argument_group(
        "edge limits", "what one client may hold of the HTTP server (docs/limits.md)"
    )
    edge.add_argument(
        "--header-timeout",
        type=float,
        default=DEFAULT_LIMITS.header_timeout_s,
        metavar="SECONDS",
        help="a request head must be whole this long after its first byte, else 408 and close "
        "(default: %(default)s)",
    )
    edge.add_argument(
        "--body-timeout",
        type=float,
        default=DEFAULT_LIMITS.body_timeout_s,
        metavar="SECONDS",
        help="a request body must be whole this long after its head, else 408 and close "
        "(default: %(default)s)",
    )
    edge.add_argument(
        "--keep-alive-timeout",
        type=float,
        default=DEFAULT_LIMITS.keep_alive_s,
        metavar="SECONDS",
        help="idle keep-alive connections are closed after this long (default: %(default)s)",
    )
    edge.add_argument(
        "--max-requests-per-connection",
        type=int,
        default=DEFAULT_LIMITS.max_requests_per_connection,
        metavar="N",
        help="requests answered on one connection before it closes (default: %(default)s)",
    )
    edge.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_LIMITS.max_connections,
        metavar="N",
        help="open client connections per worker; beyond it the oldest idle one is closed "
        "(default: %(default)s)",
    )
    edge.add_argument(
        "--max-connections-per-client",
        type=int,
        default=DEFAULT_LIMITS.max_connections_per_client,
        metavar="N",
        help="open connections per client IP address per worker; beyond it that client's "
        "oldest idle one is closed (default: %(default)s)",
    )
    edge.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        metavar="BYTES",
        help="largest request body (413 beyond) (default: %(default)s)",
    )
    edge.add_argument(
        "--max-upstream-response-bytes",
        type=int,
        default=DEFAULT_MAX_RESPONSE_BYTES,
        metavar="BYTES",
        help="largest non-streamed provider response, decoded (502 beyond) (default: %(default)s)",
    )
    parser.add_argument(
        "--usage-flush-ms",
        type=int,
        default=200,
        help="longest wait before buffered usage is sent (default: %(default)s)",
    )
    add_log_format_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Run the data plane until SIGTERM/SIGINT; return the exit code."""
    try:
        host, port = split_host_port(args.listen)
    except ValueError as exc:
        print(f"dataplane: --listen: {exc}", file=sys.stderr)
        return 2
    configure_logging(
        log_format=args.log_format,
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
    )
    if args.workers < 1:
        print("dataplane: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1:
        if port == 0:
            print("dataplane: --workers needs a fixed --listen port", file=sys.stderr)
            return 2
        try:
            worker_args = _worker_args(args)
        except OSError as exc:
            print(f"dataplane: {exc}", file=sys.stderr)
            return 2
        # Any worker may answer a scrape: they share their metrics (dataplane/metrics.py).
        with shared_worker_metrics():
            return _supervise(worker_args, host=host, port=port)
    return _run_one(args, host=host, port=port, reuse_port=False)


def _run_one(args: argparse.Namespace, *, host: str, port: int, reuse_port: bool) -> int:
    try:
        state = _state_from_args(args)
    except (CacheError, OSError, ClusterConfigError) as exc:
        print(f"dataplane: {exc}", file=sys.stderr)
        return 2
    import uvloop

    try:
        return uvloop.run(
            _serve(
                cp=args.cp,
                host=host,
                port=port,
                state=state,
                flush_interval=args.usage_flush_ms / 1000,
                reuse_port=reuse_port,
            )
        )
    except SpoolLocked as exc:
        logger.error("dataplane could not start: %s", exc)
        return 1
    except OSError as exc:
        logger.error("dataplane could not start: %s", exc)
        return 1


@dataclass(frozen=True)
class _State:
    node_id: str
    cache: ConfigCache | None
    spool: Spool | None
    full_policy: FullPolicy
    tls: ClusterTLS | None = None
    shutdown_timeout: int = DEFAULT_SHUTDOWN_TIMEOUT_S
    limits: ServerLimits = DEFAULT_LIMITS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES


def _state_from_args(args: argparse.Namespace) -> _State:
    tls = ClusterTLS.from_files(
        cert=args.cluster_cert,
        key=args.cluster_key,
        ca=args.cluster_ca,
        insecure_dev=args.insecure_dev,
    )
    if args.shutdown_timeout < 0:
        raise ClusterConfigError("--shutdown-timeout must not be negative")
    limits = _limits_from_args(args)
    state_dir: Path | None = args.state_dir
    cache_dir: Path | None = args.cache_dir or (state_dir / "config" if state_dir else None)
    spool_dir: Path | None = args.spool_dir or (state_dir / "spool" if state_dir else None)
    # The node id lives beside the state it names, so a restart keeps both.
    identity_dir = state_dir or cache_dir or spool_dir
    if identity_dir is not None:
        node_id = stable_node_id(identity_dir, explicit=args.node_id)
    else:
        node_id = args.node_id or default_node_id()
    cache = None
    if cache_dir is not None:
        key = load_key(
            key_file=args.cache_key_file, env_value=os.environ.get("METERLINE_CACHE_KEY")
        )
        cache = ConfigCache(cache_dir, key=key)
    spool = None
    if spool_dir is not None:
        spool = Spool(
            spool_dir,
            max_bytes=args.spool_max_bytes,
            fsync=FsyncPolicy(args.spool_fsync),
            fsync_interval=args.spool_fsync_interval_ms / 1000,
        )
    return _State(
        node_id=node_id,
        cache=cache,
        spool=spool,
        full_policy=FullPolicy(args.spool_full),
        tls=tls,
        shutdown_timeout=args.shutdown_timeout,
        limits=limits,
        max_body_bytes=args.max_body_bytes,
        max_response_bytes=args.max_upstream_response_bytes,
    )


def _limits_from_args(args: argparse.Namespace) -> ServerLimits:
    for flag, value in (
        ("--max-body-bytes", args.max_body_bytes),
        ("--max-upstream-response-bytes", args.max_upstream_response_bytes),
    ):
        if value < 1:
            raise ClusterConfigError(f"{flag} must be at least 1")
    try:
        return ServerLimits(
            header_timeout_s=args.header_timeout,
            body_timeout_s=args.body_timeout,
            keep_alive_s=args.keep_alive_timeout,
            max_requests_per_connection=args.max_requests_per_connection,
            max_connections=args.max_connections,
            max_connections_per_client=args.max_connections_per_client,
        )
    except ValueError as exc:
        raise ClusterConfigError(f"edge limits: {exc}") from None


async def _serve(
    *, cp: str, host: str, port: int, state: _State, flush_interval: float, reuse_port: bool
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    node_id = state.node_id
    spool = state.spool
    if spool is not None:
        spool.open()
        spool.start()
    else:
        logger.warning(
            "no --state-dir: usage is buffered in memory only (lost if this process dies) and "
            "the config is not cached"
        )
    # One channel (one HTTP/2 connection) carries both the config and the usage stream.
    channel = open_channel(cp, state.tls)
    if state.tls is None:
        logger.warning("--insecure-dev: plaintext link to the control plane, no certificates")
    reporter = UsageReporter(
        stub=UsageStreamStub(channel),
        flush_interval=flush_interval,
        spool=spool,
        full_policy=state.full_policy,
    )

    def usage_state() -> tuple[int, int]:
        stats = reporter.stats
        return stats.pending_events, stats.spool_bytes

    metrics = new_metrics(usage_state=usage_state)
    # OpenTelemetry traces/metrics: only when OTEL_* variables ask for them (docs/observability.md).
    tracing = Tracing.from_environment()
    if tracing is not None:
        tracing.start()  # its drains run on this loop, between requests
        traced: Tracing = tracing
        metrics.otel_dropped = lambda: traced.dropped
    gateway = Gateway(
        node_id=node_id,
        usage_sink=reporter.append,
        clients=UpstreamClients(max_response_bytes=state.max_response_bytes),
        max_body_bytes=state.max_body_bytes,
        metrics=metrics,
        enforcer=Enforcer(acked=acked_events(reporter, marker=lambda: config_client.usage_marker)),
        tracing=tracing,
    )

    def apply(config: RuntimeConfig) -> None:
        gateway.apply(config)
        metrics.config_applied(config.version)

    config_client = ConfigClient(
        compile=compile_isolating,
        stub=config_pb2_grpc.ConfigServiceStub(channel),
        node=config_pb2.Node(id=node_id, hostname=socket.gethostname(), version=__version__),
        apply=apply,
        on_answer=metrics.snapshot_answered,
        cache=state.cache,
    )
    config_client.load_cached()
    _tune_gc()
    reporter.start()
    sync = asyncio.create_task(config_client.run(), name="config-sync")
    guarded = SpoolGuard(gateway, accepting=lambda: reporter.accepting) if spool else gateway
    app = Observability(
        guarded, metrics=metrics, ready=lambda: gateway.config is not None and reporter.accepting
    )
    # With workers, another worker may answer a scrape: keep this one's gauges fresh.
    refresher = asyncio.create_task(metrics.refresh_forever()) if metrics.multiprocess else None
    try:
        async with serve_http(
            app,
            host=host,
            port=port,
            reuse_port=reuse_port,
            graceful_shutdown_s=state.shutdown_timeout,
            limits=state.limits,
        ) as address:
            logger.info(
                "dataplane listening on %s (node %s, control plane %s)", address.url, node_id, cp
            )
            await stop.wait()
            logger.info(
                "dataplane stopping: no new connections; requests in flight have %d s",
                state.shutdown_timeout,
            )
    finally:
        if refresher is not None:
            refresher.cancel()
        sync.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sync
        await reporter.close(timeout=USAGE_FLUSH_DEADLINE_S)
        if spool is not None:
            await spool.close()
        await gateway.aclose()
        if tracing is not None:
            await tracing.aclose()  # exports what is left
        await channel.close()
    logger.info("dataplane stopped")
    return 0


def _tune_gc() -> None:
    """Make the cyclic GC's pauses short and rare; they set the request latency's tail.

    Every request allocates thousands of short-lived objects, so the default gen-0 threshold
    (700) runs a collection every few requests and a full one every few hundred, each walking
    every object the process holds (modules, protobuf descriptors, the config). Freezing what
    exists after start-up takes those out of every later collection; the raised thresholds
    collect the young generations less often. Measured (bench/README.md): p99 at 32
    connections roughly halved, same throughput.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 50, 1000)


def _worker_args(args: argparse.Namespace) -> list[argparse.Namespace]:
    """The arguments of each worker: its own node id and its own state subdirectory.

    Workers never share a spool or a cache file (each spool is locked by one process), and
    each worker's events carry its own node id as their source.
    """
    state_dir: Path | None = args.state_dir
    identity_dir = state_dir or args.cache_dir or args.spool_dir
    if identity_dir is not None:
        base = stable_node_id(identity_dir, explicit=args.node_id)
    else:
        base = args.node_id or default_node_id()
    workers: list[argparse.Namespace] = []
    for index in range(args.workers):
        sub = f"w{index}"
        worker = copy.copy(args)
        worker.workers = 1
        worker.node_id = f"{base}-{sub}"
        worker.state_dir = state_dir / sub if state_dir else None
        worker.cache_dir = args.cache_dir / sub if args.cache_dir else None
        worker.spool_dir = args.spool_dir / sub if args.spool_dir else None
        workers.append(worker)
    return workers


def _worker_main(args: argparse.Namespace, host: str, port: int) -> None:
    # Forked from the supervisor: drop its signal handlers; the worker's loop sets its own.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(_run_one(args, host=host, port=port, reuse_port=True))


def _supervise(worker_args: list[argparse.Namespace], *, host: str, port: int) -> int:
    """Run one forked process per worker until SIGTERM/SIGINT; restart a worker that dies.

    Forked before any event loop, thread or gRPC channel exists, so each worker starts clean.
    """
    context = multiprocessing.get_context("fork")
    running: dict[int, tuple[multiprocessing.process.BaseProcess, float]] = {}
    stopping = False
    code = 0

    def start(index: int) -> None:
        process = context.Process(
            target=_worker_main,
            args=(worker_args[index], host, port),
            name=f"dataplane-w{index}",
        )
        process.start()
        running[index] = (process, time.monotonic())
        logger.info("worker w%d started (pid %s)", index, process.pid)

    def stop_all() -> None:
        for process, _ in running.values():
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        stop_all()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for index in range(len(worker_args)):
        start(index)
    while running:
        sentinels = {process.sentinel: index for index, (process, _) in running.items()}
        for sentinel in multiprocessing.connection.wait(list(sentinels)):
            index = sentinels[sentinel]  # type: ignore[index]
            process, started = running.pop(index)
            process.join()
            worker_exited(process.pid)
            exitcode = process.exitcode or 0
            if stopping:
                code = max(code, exitcode)
            elif time.monotonic() - started < WORKER_MIN_LIFETIME_S:
                logger.error(
                    "worker w%d exited (code %d) right after its start; stopping", index, exitcode
                )
                stopping, code = True, 1
                stop_all()
            else:
                # Its spool (in its own state subdirectory) is resent by the replacement.
                logger.warning("worker w%d exited (code %d); restarting it", index, exitcode)
                start(index)
    return code


def main(argv: list[str] | None = None) -> int:
    """``python -m dataplane``."""
    parser = argparse.ArgumentParser(
        prog="python -m dataplane", description="Run a Meterline data plane."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
