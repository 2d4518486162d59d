"""``meterline tokens create``: operator bearer tokens, stored hashed in a tokens file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from controlplane.api.auth import Scope, add_token
from controlplane.errors import MeterlineError


def _create(args: argparse.Namespace) -> int:
    try:
        token = add_token(Path(args.file), name=args.name, scope=Scope(args.scope))
    except MeterlineError as exc:
        print(f"error: {exc}")
        return 1
    print(token)
    print(f"(shown once; its hash was added to {args.file} with scope {args.scope})")
    return 0


def register(commands: Any) -> None:
    """Add ``tokens create`` to the CLI."""
    parser = commands.add_parser("tokens", help="operator API tokens")
    sub = parser.add_subparsers(dest="tokens_command", required=True)
    create = sub.add_parser("create", help="create a token and add its hash to the tokens file")
    create.add_argument("name", help="who or what the token is for")
    create.add_argument("--scope", choices=[s.value for s in Scope], default=Scope.READ.value)
    create.add_argument(
        "--file", default="tokens.yaml", help="the tokens file (default: %(default)s)"
    )
    create.set_defaults(func=_create)
