"""``meterline portal-tokens create|list|revoke``: customer-scoped tokens for the usage portal."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from controlplane.cli.client import add_cp_argument, admin_client
from meterline.admin.v1 import customers_pb2

# Units of --ttl: a number and one of these (24h, 90m, 7d).
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def ttl_seconds(text: str) -> int:
    """``24h`` -> 86400; an error naming the accepted forms otherwise."""
    value, unit = text[:-1], text[-1:]
    if unit not in _UNITS or not value.isdigit() or int(value) <= 0:
        raise SystemExit(f"error: --ttl: {text!r} is not a duration like 30m, 24h or 7d")
    return int(value) * _UNITS[unit]


def register(subparsers: Any) -> None:
    """Add ``portal-tokens`` to the ``meterline`` subcommands."""
    parser = subparsers.add_parser(
        "portal-tokens", help="tokens that open one customer's usage portal (console)"
    )
    commands = parser.add_subparsers(dest="portal_tokens_command", required=True)
    create = commands.add_parser("create", help="create a token (printed once)")
    create.add_argument("customer", help="customer key")
    create.add_argument(
        "--ttl", default="24h", help="validity: 30m, 24h, 7d (default: %(default)s)"
    )
    create.add_argument("--json", action="store_true", help="print JSON")
    add_cp_argument(create)
    create.set_defaults(func=_cmd_create)
    listing = commands.add_parser("list", help="a customer's tokens (never the tokens themselves)")
    listing.add_argument("customer", nargs="?", help="customer key (default: every customer)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    add_cp_argument(listing)
    listing.set_defaults(func=_cmd_list)
    revoke = commands.add_parser("revoke", help="end a token now")
    revoke.add_argument("customer", help="customer key")
    revoke.add_argument("id", help="token id (portal-tokens list)")
    add_cp_argument(revoke)
    revoke.set_defaults(func=_cmd_revoke)


def _json(token: customers_pb2.PortalToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "customer": token.customer.removeprefix("customers/"),
        "create_time": token.create_time.ToJsonString(),
        "expire_time": token.expire_time.ToJsonString(),
        "revoke_time": token.revoke_time.ToJsonString() if token.HasField("revoke_time") else None,
    }


def _cmd_create(args: argparse.Namespace) -> int:
    seconds = ttl_seconds(args.ttl)
    with admin_client(args.cp) as client:
        created = client.customers.CreatePortalToken(
            customers_pb2.CreatePortalTokenRequest(
                parent=f"customers/{args.customer}", ttl_seconds=seconds
            )
        )
    if args.json:
        print(json.dumps({**_json(created), "token": created.token}, indent=2))
    else:
        # The token alone on stdout, so scripts can capture it; the note for people on stderr.
        print(created.token)
        print(
            f"(shown once; id {created.id}, expires {created.expire_time.ToJsonString()})",
            file=sys.stderr,
        )
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    found: list[customers_pb2.PortalToken] = []
    with admin_client(args.cp) as client:
        token = ""
        while True:
            response = client.customers.ListPortalTokens(
                customers_pb2.ListPortalTokensRequest(
                    parent=f"customers/{args.customer}" if args.customer else "",
                    page_size=1000,
                    page_token=token,
                )
            )
            found.extend(response.portal_tokens)
            token = response.next_page_token
            if not token:
                break
    rows = [_json(t) for t in found]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'ID':<34} {'CUSTOMER':<20} {'EXPIRES':<22} REVOKED")
    for row in rows:
        print(
            f"{row['id']:<34} {row['customer']:<20} {row['expire_time']:<22} "
            f"{row['revoke_time'] or '-'}"
        )
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    with admin_client(args.cp) as client:
        revoked = client.customers.RevokePortalToken(
            customers_pb2.RevokePortalTokenRequest(
                name=f"customers/{args.customer}/portalTokens/{args.id}"
            )
        )
    print(f"revoked portal token {revoked.id} of {args.customer}")
    return 0
