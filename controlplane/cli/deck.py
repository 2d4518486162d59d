"""decK's workflow: ``meterline apply``, ``diff``, ``sync`` and ``dump``.

The files are read, merged (several files or a directory, as decK merges them) and their
``${{ env "DECK_..." }}`` references resolved here, from the environment of the shell that
runs the command, before the document goes to the control plane. Resolved values are never
printed. Notes (fields accepted and not enforced) go to stderr, one line per path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import grpc
import yaml

from controlplane.cli.client import add_cp_argument, admin_client
from controlplane.cli.output import plural
from controlplane.cli.progress import elapsed
from controlplane.declarative.envsubst import redact, referenced, resolve
from controlplane.declarative.merge import read_files
from controlplane.errors import InvalidArgument
from meterline.admin.v1 import gateway_pb2


def _document(args: argparse.Namespace) -> tuple[str, dict[str, str]] | None:
    """The merged, resolved document as JSON and the values resolved (by variable), or None
    after printing why not."""
    try:
        stdin_text = sys.stdin.read() if "-" in args.files else None
        merged = read_files(args.files, stdin_text=stdin_text)
        data = resolve(merged, os.environ)
    except InvalidArgument as exc:
        _print_error(exc)
        return None
    # default=str: an explicitly tagged YAML timestamp goes as text, which the parser reads.
    return json.dumps(data, default=str), referenced(merged, os.environ)


def _print_error(exc: InvalidArgument) -> None:
    problems: tuple[str, ...] = getattr(exc, "problems", ()) or (str(exc),)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)


def _send(
    args: argparse.Namespace, *, validate_only: bool, sync: bool, fields: bool = False
) -> int:
    prepared = _document(args)
    if prepared is None:
        return 2
    document, resolved = prepared
    try:
        with admin_client(args.cp) as client, elapsed("applying " + " ".join(args.files)):
            response = client.gateway.ApplyConfig(
                gateway_pb2.ApplyConfigRequest(
                    document=document, validate_only=validate_only, sync=sync
                )
            )
    except grpc.RpcError as exc:
        # The control plane may quote a value it refuses: never one from the environment.
        details = redact(str(exc.details()), resolved)
        print(f"error: {exc.code().name}: {details}", file=sys.stderr)
        return 1
    for note in response.notes:
        print(f"note: {note}", file=sys.stderr)
    verb = "would change" if validate_only else "changed"
    if response.changes:
        detail = _field_detail(args, document, list(response.changes)) if fields else {}
        for change in response.changes:
            print(f"  {change}")
            for line in detail.get(change, ()):
                # The control plane's values are compared, never printed: nor the shell's.
                print(f"      {redact(line, resolved)}")
        changed = plural(len(response.changes), "entity", "entities")
        print(f"{verb} {changed}; config version {response.config_version}")
    else:
        print(f"nothing to change; config version {response.config_version}")
    return 0


def _field_detail(args: argparse.Namespace, document: str, changes: list[str]) -> dict[str, Any]:
    """The changed fields of each updated entity: the gateway as it is (exported with its
    secrets, which are compared and never printed) against the files."""
    if not any(change.startswith("updated ") for change in changes):
        return {}
    with admin_client(args.cp) as client:
        exported = client.gateway.ExportConfig(
            gateway_pb2.ExportConfigRequest(include_secrets=True)
        )
    current = json.dumps(yaml.safe_load(exported.document), default=str)
    # The whole parser, imported only here: every other command of the CLI goes without it.
    from controlplane.cli.deck_diff import updated_fields

    try:
        return updated_fields(current, document, changes)
    except InvalidArgument:
        return {}


def _apply(args: argparse.Namespace) -> int:
    return _send(args, validate_only=args.validate_only, sync=False)


def _diff(args: argparse.Namespace) -> int:
    return _send(args, validate_only=True, sync=True, fields=True)


def _sync(args: argparse.Namespace) -> int:
    return _send(args, validate_only=args.validate_only, sync=True)


def _dump(args: argparse.Namespace) -> int:
    with admin_client(args.cp) as client:
        response = client.gateway.ExportConfig(
            gateway_pb2.ExportConfigRequest(
                include_secrets=args.with_secrets, select_tags=args.select_tag or []
            )
        )
    if args.output == "-":
        sys.stdout.write(response.document)
    else:
        Path(args.output).write_text(response.document)
    if response.secret_variables:
        print(
            "secrets are written as references; set these before applying the file: "
            + ", ".join(response.secret_variables),
            file=sys.stderr,
        )
    return 0


def _files_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="decK files (YAML or JSON), directories of them, or - for standard input; "
        "merged as decK merges them",
    )


def register(commands: Any) -> None:
    """Add ``apply``, ``diff``, ``sync`` and ``dump`` to the CLI."""
    apply = commands.add_parser(
        "apply", help="apply declarative files: create and update, delete nothing (all or nothing)"
    )
    _files_argument(apply)
    apply.add_argument("--validate-only", action="store_true", help="check, change nothing")
    add_cp_argument(apply)
    apply.set_defaults(func=_apply)

    diff = commands.add_parser(
        "diff",
        help="show what sync would change (per updated entity, each changed field: "
        "path: old -> new, secrets not shown), change nothing",
    )
    _files_argument(diff)
    add_cp_argument(diff)
    diff.set_defaults(func=_diff)

    sync = commands.add_parser(
        "sync",
        help="make the gateway what the files say: also delete gateway entities they do not "
        "list (only those with the files' _info.select_tags); billing is never deleted",
    )
    _files_argument(sync)
    sync.add_argument("--validate-only", action="store_true", help="check, change nothing")
    add_cp_argument(sync)
    sync.set_defaults(func=_sync)

    dump = commands.add_parser("dump", help="write the gateway as a decK file")
    dump.add_argument(
        "-o", "--output", default="-", metavar="FILE", help="where to write (default: stdout)"
    )
    dump.add_argument(
        "--with-secrets",
        action="store_true",
        help='write provider keys as they are (default: ${{ env "DECK_..." }} references)',
    )
    dump.add_argument(
        "--select-tag",
        action="append",
        metavar="TAG",
        help="only entities with this tag (repeatable; written as _info.select_tags)",
    )
    add_cp_argument(dump)
    dump.set_defaults(func=_dump)
