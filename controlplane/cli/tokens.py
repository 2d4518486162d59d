"""``meterline tokens create``: operator bearer tokens, stored hashed in a tokens file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from controlplane.api.tokens import Scope, add_token, load_tokens
from controlplane.errors import MeterlineError


def _create(args: argparse.Namespace) -> int:
    if args.exist_ok and Path(args.file).exists():
        try:
            names = {entry.name for entry in load_tokens(Path(args.file))}
        except MeterlineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if args.name in names:
            print(
                f"a token named {args.name!r} exists in {args.file}; kept (not shown again)",
                file=sys.stderr,
            )
            return 0
    try:
        token = add_token(Path(args.file), name=args.name, scope=Scope(args.scope))
    except MeterlineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # The token alone on stdout, so scripts can capture it; the note for people on stderr.
    print(token)
    print(
        f"(shown once; its hash was added to {args.file} with scope {args.scope})",
        file=sys.stderr,
    )
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
    create.add_argument(
        "--exist-ok", action="store_true", help="succeed if the name exists (init jobs)"
    )
    create.set_defaults(func=_create)
