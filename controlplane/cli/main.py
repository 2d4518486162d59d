"""Argument parsing and dispatch of the ``meterline`` subcommands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import grpc
import isodate

from controlplane.cli.client import add_cp_argument, admin_client, configure
from controlplane.cli.env import (
    ConfigFileError,
    apply_env_defaults,
    load_config_file,
    split_config_argument,
)
from controlplane.cli.output import (
    Column,
    add_output_arguments,
    add_paging_arguments,
    emit_list,
    rfc3339,
)
from controlplane.logs import add_log_format_argument, configure_logging
from meterline.admin.v1 import usage_pb2


def _duration(text: str, flag: str) -> timedelta:
    try:
        value = isodate.parse_duration(text)
    except (isodate.ISO8601Error, ValueError):
        raise SystemExit(f"error: {flag}: {text!r} is not an ISO 8601 duration (PT1H)") from None
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise SystemExit(f"error: {flag}: use a non-negative duration without months (PT1H, P1D)")
    return value


def _cmd_controlplane(args: argparse.Namespace) -> int:
    from controlplane.api.auth import Trust, trust_from_files
    from controlplane.errors import FailedPrecondition, InvalidArgument
    from controlplane.gateway.secrets import SecretBox
    from controlplane.invoicing.lifecycle import InvoicingSettings
    from controlplane.server import serve
    from controlplane.storage.db import SchemaError

    # The data plane's own compiler checks what apply stores (the one place the control plane
    # runs data-plane code: the planes otherwise meet only in the meterline.* contract).
    from dataplane.proxy.compiler import check_snapshot

    trust: Trust | None = None
    if not args.insecure_dev:
        try:
            trust = trust_from_files(
                tokens_file=args.tokens_file,
                cluster_listen=args.cluster_listen,
                cert=args.cluster_cert,
                key=args.cluster_key,
                ca=args.cluster_ca,
                operator_tls=args.operator_tls,
            )
        except InvalidArgument as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    elif (args.tokens_file and not args.console_listen) or args.cluster_cert or args.operator_tls:
        print(
            "warning: --insecure-dev: --tokens-file (except for the console), --cluster-* and "
            "--operator-tls are ignored",
            file=sys.stderr,
        )
    console = _console_options(args, trust)
    if isinstance(console, int):
        return console
    try:
        secrets = SecretBox.from_sources(
            key_file=args.secrets_key_file, env_value=os.environ.get("METERLINE_SECRETS_KEY")
        )
    except InvalidArgument as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if secrets is None and not args.insecure_dev:
        print(
            "error: no secrets key: provider keys would be stored in plaintext; pass "
            "--secrets-key-file or set METERLINE_SECRETS_KEY (--insecure-dev allows none)",
            file=sys.stderr,
        )
        return 2
    try:
        asyncio.run(
            serve(
                db_url=args.db,
                listen=args.listen,
                run_migrations=args.migrations == "auto",
                invoicing=InvoicingSettings(
                    grace=_duration(args.invoice_grace, "--invoice-grace"),
                    auto_issue=args.auto_issue,
                ),
                invoice_job_seconds=args.invoice_job_interval or None,
                notification_job_seconds=args.notification_job_interval or None,
                webhook_listen=args.webhook_listen,
                metrics_listen=args.metrics_listen,
                balance_slicing=args.balance_slicing == "on",
                allow_private_webhook_urls=args.allow_private_webhook_urls,
                trust=trust,
                secrets=secrets,
                validate_snapshot=check_snapshot,
                **console,
            )
        )
    except FailedPrecondition as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (SchemaError, OSError) as exc:  # OSError: a listen address that cannot be bound
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _console_options(args: argparse.Namespace, trust: Any) -> dict[str, Any] | int:
    """serve()'s console arguments from the flags, or an exit code after an error."""
    from controlplane.api.auth import load_tokens
    from controlplane.console.app import ConsoleSettings
    from controlplane.errors import InvalidArgument

    if not args.console_listen:
        return {}
    tokens = trust.tokens if trust is not None else None
    if tokens is None:
        # Development mode: the gRPC API takes no tokens, the console still signs people in.
        if not args.tokens_file or not args.tokens_file.exists():
            print(
                "error: --console-listen needs operator tokens to sign in with: pass "
                "--tokens-file (meterline tokens create NAME --scope admin)",
                file=sys.stderr,
            )
            return 2
        try:
            tokens = load_tokens(args.tokens_file)
        except InvalidArgument as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    tls = None
    if args.console_tls:
        if not (args.cluster_cert and args.cluster_key):
            print("error: --console-tls serves --cluster-cert/--cluster-key", file=sys.stderr)
            return 2
        tls = (args.cluster_cert, args.cluster_key)
    settings = ConsoleSettings(
        secure_cookies=bool(tls) or args.console_secure_cookies,
        session_ttl=_duration(args.console_session_ttl, "--console-session-ttl"),
        portal_frame_ancestors=tuple(args.portal_frame_ancestor or ()),
    )
    return {
        "console_listen": args.console_listen,
        "console_settings": settings,
        "console_tokens": tokens,
        "console_tls": tls,
    }


def _cmd_dataplane(args: argparse.Namespace) -> int:
    # The data plane is its own package; the CLI only mounts its arguments.
    from dataplane.cli import run

    return run(args)


def _cmd_migrate(args: argparse.Namespace) -> int:
    from controlplane.storage.db import Database

    Database.connect(args.db).dispose()
    print("database schema is up to date")
    return 0


_USAGE_COLUMNS = (
    Column("time", time=True),
    Column("subject"),
    Column("model"),
    Column("type"),
    Column("tokens", right=True),
    Column("status", right=True),
    Column("latency_ms", "latency ms", right=True),
    Column("id"),
)


def _usage_row(event: usage_pb2.UsageEvent) -> dict[str, Any]:
    d = event.data
    return {
        "id": event.id,
        "time": rfc3339(event.time.ToDatetime(tzinfo=UTC)),
        "subject": event.subject,
        "model": f"{d.get('provider', '')}/{d.get('model', '')}",
        "type": d.get("type", ""),
        "tokens": event.value,
        "status": d.get("status_code", ""),
        "latency_ms": d.get("latency_ms", ""),
        "time_to_first_token_ms": d.get("time_to_first_token_ms", ""),
        "data": dict(sorted(d.items())),
    }


def _cmd_usage_list(args: argparse.Namespace) -> int:
    with admin_client(args.cp) as client:
        response = client.usage.ListUsageEvents(
            usage_pb2.ListUsageEventsRequest(
                subject=args.subject or "",
                page_size=args.limit,
                page_token=args.page_token,
                order_by="time desc",
            )
        )
    rows = [_usage_row(e) for e in response.usage_events]
    emit_list(
        args,
        rows,
        _USAGE_COLUMNS,
        noun=("usage event", "usage events"),
        next_page_token=response.next_page_token,
    )
    return 0


def _cmd_completion(args: argparse.Namespace) -> int:
    from controlplane.cli.completion import script

    print(script(args.shell, build_parser()), end="")
    return 0


def _cmd_fake_provider(args: argparse.Namespace) -> int:
    from controlplane.cli.fake_provider import run

    return run(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from controlplane.demo import run_demo

    return run_demo(serve=args.serve, console_port=args.console_port)


def _with_config_flag(parser: argparse.ArgumentParser) -> None:
    # Taken from argv by main() before parsing; declared so that --help documents it.
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML file of flag values by command (`dataplane: {listen: ...}`); the command "
        "line wins over METERLINE_* variables, which win over the file [env METERLINE_CONFIG]",
    )


def build_parser(
    config: dict[str, Any] | None = None, *, dataplane_flags: bool = True
) -> argparse.ArgumentParser:
    """The whole CLI; ``config`` is a loaded --config file (raises ConfigFileError).

    ``dataplane_flags=False`` leaves out the ``dataplane`` command's flags (main() parses that
    command with ``dataplane_parser``): they import the data plane (~0.3 s), which the other
    commands never use."""
    from controlplane.storage.urls import default_url

    parser = argparse.ArgumentParser(
        prog="meterline", description="Meterline: a token-billing AI gateway."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    _with_config_flag(parser)
    parser.add_argument(
        "--token", help="operator token for the control plane (default: $METERLINE_TOKEN)"
    )
    parser.add_argument(
        "--ca-file",
        type=Path,
        help="speak TLS to the control plane, trusting this CA (default: $METERLINE_CA_FILE)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        metavar="SECONDS",
        help="how long to wait for the control plane to answer before giving up "
        "(default: $METERLINE_CONNECT_TIMEOUT or 2)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_db(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--db",
            default=default_url(),
            metavar="URL",
            help="SQLAlchemy database URL (default: $DATABASE_URL or a SQLite file meterline.db)",
        )

    cp = commands.add_parser("controlplane", help="run the control plane (gRPC)")
    with_db(cp)
    cp.add_argument(
        "--listen",
        default="127.0.0.1:50051",
        metavar="HOST:PORT",
        help="operator API (admin services, health, reflection; bearer tokens) "
        "(default: %(default)s)",
    )
    cp.add_argument(
        "--cluster-listen",
        default="127.0.0.1:50052",
        metavar="HOST:PORT",
        help="data-plane services over mutual TLS (default: %(default)s)",
    )
    cp.add_argument("--cluster-cert", type=Path, metavar="FILE", help="control plane certificate")
    cp.add_argument("--cluster-key", type=Path, metavar="FILE", help="its private key")
    cp.add_argument(
        "--cluster-ca", type=Path, metavar="FILE", help="CA that signs data-plane certificates"
    )
    cp.add_argument(
        "--tokens-file", type=Path, metavar="FILE", help="operator tokens (meterline tokens create)"
    )
    cp.add_argument(
        "--operator-tls",
        action="store_true",
        help="serve --listen over TLS with the cluster certificate (clients: --ca-file)",
    )
    cp.add_argument(
        "--secrets-key-file",
        type=Path,
        metavar="FILE",
        help="Fernet key(s), one per line, the first encrypting: provider keys are stored "
        "encrypted with it (or $METERLINE_SECRETS_KEY, comma-separated)",
    )
    cp.add_argument(
        "--insecure-dev",
        action="store_true",
        help="development only: plaintext, no tokens, data-plane services on --listen too",
    )
    cp.add_argument(
        "--migrations",
        choices=["auto", "check"],
        default="auto",
        help="auto: upgrade the schema at start (replicas take turns); check: refuse to start "
        "unless `meterline migrate` has run (default: %(default)s)",
    )
    cp.add_argument(
        "--invoice-grace",
        default="PT1H",
        metavar="DURATION",
        help="ISO 8601 duration after a billing period during which late usage still lands on"
        " its own invoice, before it becomes a draft (default: %(default)s)",
    )
    cp.add_argument(
        "--invoice-job-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how often the invoicing job runs; 0 = never (default: %(default)s)",
    )
    cp.add_argument("--auto-issue", action="store_true", help="issue drafts automatically (job)")
    cp.add_argument(
        "--notification-job-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="alerts are evaluated and due webhooks delivered after usage arrives and at least "
        "this often; 0 = only on request (default: %(default)s)",
    )
    cp.add_argument(
        "--balance-slicing",
        choices=["on", "off"],
        default="on",
        help="on: each data plane admits against 1/N of every hard entitlement balance and "
        "budget (N data planes connected), bounding the overshoot by the requests in flight; "
        "off: each admits against the whole balance (default: %(default)s)",
    )
    cp.add_argument(
        "--webhook-listen",
        metavar="HOST:PORT",
        help="serve Stripe webhooks (POST /stripe/webhook) here; needs METERLINE_STRIPE_API_KEY"
        " and METERLINE_STRIPE_WEBHOOK_SECRET",
    )
    cp.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics (GET /metrics) here (default: off)",
    )
    cp.add_argument(
        "--allow-private-webhook-urls",
        action="store_true",
        help="let notification channels name loopback, link-local (169.254.0.0/16, fe80::/10)"
        " or unspecified addresses (default: refused)",
    )
    cp.add_argument(
        "--console-listen",
        metavar="HOST:PORT",
        help="serve the operator console and the customer portal (HTTP) here (default: off)",
    )
    cp.add_argument(
        "--console-tls",
        action="store_true",
        help="serve the console over TLS with --cluster-cert/--cluster-key (Secure cookies)",
    )
    cp.add_argument(
        "--console-secure-cookies",
        action="store_true",
        help="mark console cookies Secure (the console is behind a TLS-terminating proxy)",
    )
    cp.add_argument(
        "--console-session-ttl",
        default="PT8H",
        metavar="DURATION",
        help="console sign-ins expire after this ISO 8601 duration (default: %(default)s)",
    )
    cp.add_argument(
        "--portal-frame-ancestor",
        action="append",
        metavar="ORIGIN",
        help="an origin allowed to embed portal pages in a frame (CSP frame-ancestors); "
        "repeat for several; operator pages are never frame-able",
    )
    add_log_format_argument(cp)
    cp.set_defaults(func=_cmd_controlplane)

    dp = commands.add_parser("dataplane", help="run a data plane (the HTTP gateway)")
    if dataplane_flags:
        from dataplane.cli import add_arguments

        add_arguments(dp)
    dp.set_defaults(func=_cmd_dataplane)

    migrate = commands.add_parser("migrate", help="create or upgrade the database schema")
    with_db(migrate)
    migrate.set_defaults(func=_cmd_migrate)

    from controlplane.cli import deck

    deck.register(commands)  # apply, diff, sync, dump

    from controlplane.cli import invoices

    invoices.register(commands)

    from controlplane.cli import plans, resources, subscriptions

    resources.register(
        commands,
        existing={
            "subscriptions": subscriptions.register(commands),
            "plans": plans.register(commands),
        },
    )

    usage = commands.add_parser("usage", help="usage events")
    usage_commands = usage.add_subparsers(dest="usage_command", required=True)
    usage_list = usage_commands.add_parser("list", help="stored usage events, newest first")
    usage_list.add_argument("--subject", help="only this subject (consumer)")
    add_paging_arguments(usage_list)
    add_output_arguments(usage_list)
    add_cp_argument(usage_list)
    usage_list.set_defaults(func=_cmd_usage_list)
    from controlplane.cli import usage as usage_cli

    usage_cli.register(usage_commands)

    from controlplane.cli import dataplanes

    dataplanes.register(commands)

    from controlplane.cli import budgets, entitlements

    entitlements.register(commands)
    budgets.register(commands)

    from controlplane.cli import notifications

    notifications.register(commands)

    from controlplane.cli import credits as credits_cli

    credits_cli.register(commands)

    from controlplane.cli import pki

    pki.register(commands)

    from controlplane.cli import tokens

    tokens.register(commands)

    from controlplane.cli import portal_tokens

    portal_tokens.register(commands)

    demo = commands.add_parser(
        "demo", help="run the walkthrough: control plane, data plane, six requests, an invoice"
    )
    demo.add_argument(
        "--serve",
        action="store_true",
        help="keep the demo running with the console: print its URL and a sign-in token",
    )
    demo.add_argument(
        "--console-port",
        type=int,
        default=0,
        metavar="PORT",
        help="the console's port on 127.0.0.1 with --serve (default: a free one)",
    )
    demo.set_defaults(func=_cmd_demo)

    fake = commands.add_parser(
        "fake-provider",
        help="run a fake model provider (OpenAI or Anthropic wire format) to try things offline",
    )
    from controlplane.cli.fake_provider import add_arguments as add_fake_arguments

    add_fake_arguments(fake)
    fake.set_defaults(func=_cmd_fake_provider)

    completion = commands.add_parser(
        "completion",
        help="print a shell completion script (bash: source <(meterline completion bash))",
    )
    from controlplane.cli.completion import SHELLS

    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(func=_cmd_completion)
    apply_env_defaults(parser, config=config)
    return parser


def dataplane_parser(config: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    """`meterline dataplane` alone: the data plane needs none of the control plane's modules,
    so its process stays ~45 MB smaller than with the whole CLI loaded."""
    from dataplane.cli import add_arguments

    parser = argparse.ArgumentParser(
        prog="meterline dataplane", description="Run a data plane (the HTTP gateway)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    add_arguments(parser)
    apply_env_defaults(parser, command=("dataplane",), config=config)
    parser.set_defaults(func=_cmd_dataplane)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        config_file, argv = split_config_argument(argv)
        config = load_config_file(config_file) if config_file else None
        if argv[:1] == ["dataplane"]:
            args = dataplane_parser(config).parse_args(argv[1:])
        else:
            # The data plane's flags: for `dataplane` after global options (-v dataplane) and
            # for the completion scripts; any word that may be either keeps them.
            full = not {"dataplane", "completion"}.isdisjoint(argv)
            args = build_parser(config, dataplane_flags=full).parse_args(argv)
    except ConfigFileError as exc:
        print(f"meterline: error: --config: {exc}", file=sys.stderr)
        return 2
    if argv[:1] != ["dataplane"]:
        configure(token=args.token, ca_file=args.ca_file, connect_timeout=args.connect_timeout)
    if args.func is not _cmd_dataplane:  # the data plane sets up its own logging
        configure_logging(
            log_format=getattr(args, "log_format", "text"),
            level=logging.DEBUG if args.verbose else logging.INFO,
        )
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not in Python's flush at exit
        return code
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:
        if not isinstance(exc.code, str):
            raise
        # A command's "error: ..." (an unreachable control plane, a bad flag value): one line.
        print(exc.code, file=sys.stderr)
        return 1
    except BrokenPipeError:
        return _closed_pipe()


def _closed_pipe() -> int:
    """The reader went away (``meterline ... | head``): stop quietly, as cat does.

    Python would report the broken pipe again when it flushes stdout at exit, so stdout is
    pointed at /dev/null first (the recipe of the signal module's documentation).
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (an in-process caller's stdout)
        pass
    return 141  # 128 + SIGPIPE, what a shell reports for a command a closed pipe ended


if __name__ == "__main__":
    raise SystemExit(main())
