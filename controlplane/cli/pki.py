"""``meterline pki``: the private CA of the control-plane/data-plane link."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from controlplane.clock import SystemClock
from controlplane.errors import MeterlineError

# controlplane.pki (the cryptography package, ~75 ms) is imported by these commands only: the
# CLI's parser registers them on every call.


def _init(args: argparse.Namespace) -> int:
    from controlplane import pki

    if args.exist_ok and (Path(args.dir) / pki.CA_KEY).exists():
        print(f"a PKI exists in {args.dir}; kept")
        return 0
    issued = pki.init(
        Path(args.dir),
        hosts=args.host or ["localhost", "127.0.0.1"],
        now=SystemClock().now(),
        force=args.force,
    )
    directory = Path(args.dir)
    print(f"CA:            {directory / pki.CA_CERT} (key {directory / pki.CA_KEY}: keep it safe)")
    print(f"control plane: {issued.cert_path} (key {issued.key_path})")
    print(f"valid until    {issued.not_after:%Y-%m-%d}")
    return 0


def _issue_dataplane(args: argparse.Namespace) -> int:
    from controlplane import pki

    issued = pki.issue_dataplane(Path(args.dir), name=args.name, now=SystemClock().now())
    print(f"data plane {args.name}: {issued.cert_path} (key {issued.key_path})")
    print(f"valid until {issued.not_after:%Y-%m-%d}")
    return 0


def _run(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(handler(args))
        except MeterlineError as exc:
            print(f"error: {exc}")
            return 1

    return run


def register(commands: Any) -> None:
    """Add ``pki init`` and ``pki issue-dataplane`` to the CLI."""
    parser = commands.add_parser("pki", help="certificates for mutual TLS between the planes")
    sub = parser.add_subparsers(dest="pki_command", required=True)
    init = sub.add_parser("init", help="create a CA and the control plane's certificate")
    init.add_argument(
        "--dir", default="pki", help="where to write the files (default: %(default)s)"
    )
    init.add_argument(
        "--host",
        action="append",
        help="a DNS name or IP of the control plane (repeatable; default: localhost, 127.0.0.1)",
    )
    init.add_argument("--force", action="store_true", help="replace an existing PKI")
    init.add_argument(
        "--exist-ok", action="store_true", help="keep an existing PKI and succeed (init jobs)"
    )
    init.set_defaults(func=_run(_init))
    issue = sub.add_parser("issue-dataplane", help="create a client certificate for a data plane")
    issue.add_argument("name", help="the data plane's name (its certificate's common name)")
    issue.add_argument("--dir", default="pki", help="the PKI directory (default: %(default)s)")
    issue.set_defaults(func=_run(_issue_dataplane))
