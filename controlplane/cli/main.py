"""Argument parsing and dispatch of the ``meterline`` subcommands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from controlplane.cli.client import admin_client, default_cp
from controlplane.cli.env import apply_env_defaults
from controlplane.cli.render import invoice_json, invoice_table
from controlplane.storage.db import Database, default_url
from meterline.admin.v1 import billing_pb2, gateway_pb2, usage_pb2


def _cmd_controlplane(args: argparse.Namespace) -> int:
    from controlplane.server import serve

    asyncio.run(serve(db_url=args.db, listen=args.listen))
    return 0


def _cmd_dataplane(args: argparse.Namespace) -> int:
    # The data plane is its own package; the CLI only mounts its arguments.
    from dataplane.cli import run

    return run(args)


def _cmd_migrate(args: argparse.Namespace) -> int:
    Database.connect(args.db).dispose()
    print("database schema is up to date")
    return 0


def _cmd_apply(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    with admin_client(args.cp) as client:
        response = client.gateway.ApplyConfig(
            gateway_pb2.ApplyConfigRequest(document=text, validate_only=args.validate_only)
        )
    verb = "would change" if args.validate_only else "changed"
    if response.changes:
        for change in response.changes:
            print(f"  {change}")
        print(f"{verb} {len(response.changes)} entities; config version {response.config_version}")
    else:
        print(f"nothing to change; config version {response.config_version}")
    return 0


def _cmd_invoice_preview(args: argparse.Namespace) -> int:
    with admin_client(args.cp) as client:
        invoice = client.billing.PreviewInvoice(
            billing_pb2.PreviewInvoiceRequest(customer=f"customers/{args.customer}")
        )
    print(invoice_json(invoice) if args.json else invoice_table(invoice))
    return 0


def _cmd_usage_list(args: argparse.Namespace) -> int:
    with admin_client(args.cp) as client:
        response = client.usage.ListUsageEvents(
            usage_pb2.ListUsageEventsRequest(subject=args.subject or "", page_size=args.limit)
        )
    for event in response.usage_events:
        d = event.data
        print(
            f"{event.time.ToJsonString()}  {event.subject or '-':<16} {d['provider']}/{d['model']}"
            f"  {d['type']:<6} {event.value:>8}  status={d['status_code']}  {event.id}"
        )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from controlplane.demo import run_demo

    return run_demo()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meterline", description="Meterline: a token-billing AI gateway."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_cp(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--cp",
            default=default_cp(),
            metavar="HOST:PORT",
            help="control plane gRPC address (default: $METERLINE_CP or %(default)s)",
        )

    def with_db(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--db",
            default=default_url(),
            metavar="URL",
            help="SQLAlchemy database URL (default: $DATABASE_URL or a SQLite file meterline.db)",
        )

    cp = commands.add_parser("controlplane", help="run the control plane (gRPC)")
    with_db(cp)
    cp.add_argument("--listen", default="127.0.0.1:50051", metavar="HOST:PORT")
    cp.set_defaults(func=_cmd_controlplane)

    dp = commands.add_parser("dataplane", help="run a data plane (the HTTP gateway)")
    from dataplane.cli import add_arguments

    add_arguments(dp)
    dp.set_defaults(func=_cmd_dataplane)

    migrate = commands.add_parser("migrate", help="create or upgrade the database schema")
    with_db(migrate)
    migrate.set_defaults(func=_cmd_migrate)

    apply = commands.add_parser("apply", help="apply a declarative YAML file (all or nothing)")
    apply.add_argument("file", help="the YAML file, or - for standard input")
    apply.add_argument("--validate-only", action="store_true", help="check, change nothing")
    with_cp(apply)
    apply.set_defaults(func=_cmd_apply)

    invoice = commands.add_parser("invoice", help="invoices")
    invoice_commands = invoice.add_subparsers(dest="invoice_command", required=True)
    preview = invoice_commands.add_parser("preview", help="preview a customer's current invoice")
    preview.add_argument("customer", help="customer key")
    preview.add_argument("--json", action="store_true", help="print JSON")
    with_cp(preview)
    preview.set_defaults(func=_cmd_invoice_preview)

    usage = commands.add_parser("usage", help="usage events")
    usage_commands = usage.add_subparsers(dest="usage_command", required=True)
    usage_list = usage_commands.add_parser("list", help="list stored usage events")
    usage_list.add_argument("--subject", help="only this subject (consumer)")
    usage_list.add_argument("--limit", type=int, default=100)
    with_cp(usage_list)
    usage_list.set_defaults(func=_cmd_usage_list)

    from controlplane.cli import dataplanes

    dataplanes.register(commands)

    from controlplane.cli import pki

    pki.register(commands)

    from controlplane.cli import tokens

    tokens.register(commands)

    demo = commands.add_parser(
        "demo", help="run the walkthrough: control plane, data plane, six requests, an invoice"
    )
    demo.set_defaults(func=_cmd_demo)
    apply_env_defaults(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
