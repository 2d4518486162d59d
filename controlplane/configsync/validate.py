"""Checking a gateway config with the data plane's own compiler before it is stored.

The control plane never imports the data plane (the planes meet only in the ``meterline.*``
contract): the composition root is handed a :data:`SnapshotValidator` (``meterline
controlplane`` passes the data plane's ``check_snapshot``) and apply runs it, inside its
transaction, on the snapshot the data planes would receive once the file is stored. A
refusal rolls the transaction back, so a config that passes apply never makes a data plane
of the same version NACK.

The snapshot checked is the gateway's (services, routes, consumers, plugins); the
consumers' entitlement state is the control plane's own computation from billing data, not
something a file writes, and is left out (it changes with every usage batch).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from sqlalchemy import Connection

from controlplane.configsync.snapshot import build_snapshot, entity_id
from controlplane.errors import InvalidArgument
from controlplane.gateway import storage as gateway
from controlplane.gateway.secrets import SecretBox
from controlplane.gateway.types import GatewayConfig, Plugin
from meterline.dataplane.v1 import snapshot_pb2

# Raises ValueError, its message naming what a data plane would refuse (one line each).
SnapshotValidator = Callable[[snapshot_pb2.Snapshot], None]

# Lines of refusals shown in one error; the rest are counted.
MAX_SHOWN = 20

# How the data plane's compiler names an entity by id: `plugin "<uuid>"`,
# `anonymous consumer "<uuid>"`.
_BY_ID = re.compile(
    r'(?P<kind>plugin|consumer|route|service) "(?P<id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-'
    r'[0-9a-f]{4}-[0-9a-f]{12})"'
)


class RefusedByDataPlanes(InvalidArgument):
    """Data planes of this version would refuse the config: ``problems``, one per line."""

    def __init__(self, problems: tuple[str, ...]) -> None:
        self.problems = problems
        shown = problems[:MAX_SHOWN]
        more = len(problems) - len(shown)
        lines = [f"- {problem}" for problem in shown]
        if more:
            lines.append(f"- and {more} more")
        super().__init__(
            "data planes of this version would refuse the gateway config this file leaves "
            "(nothing was changed):\n" + "\n".join(lines)
        )


def check_gateway(
    conn: Connection,
    validator: SnapshotValidator,
    *,
    secrets: SecretBox | None,
    listed: GatewayConfig,
) -> None:
    """Run ``validator`` on the snapshot of the gateway config stored in ``conn`` (read
    within its transaction, so uncommitted writes included); RefusedByDataPlanes if it refuses.

    ``listed``: the gateway entities of the file, so that the message can tell an entity of the
    file from one already stored that the file does not list.
    """
    config = gateway.load_config(conn, secrets=secrets)
    built = build_snapshot(config)
    try:
        validator(built.snapshot)
    except ValueError as exc:
        labels = _labels(config, listed)
        problems = tuple(
            _BY_ID.sub(lambda m: labels.get(m["id"], m[0]), line)
            for line in str(exc).splitlines()
            if line.strip()
        )
        raise RefusedByDataPlanes(problems or (str(exc),)) from None


def _labels(config: GatewayConfig, listed: GatewayConfig) -> dict[str, str]:
    """Entity id -> how a decK user names it (`ai-proxy plugin for service "ai"`)."""
    labels: dict[str, str] = {}
    listed_scopes = {plugin.scope for plugin in listed.plugins}
    for plugin in config.plugins:
        stored = "" if plugin.scope in listed_scopes else " (stored; this file does not list it)"
        labels[entity_id("plugin", *plugin.scope)] = (
            f"{plugin.name.value} plugin {_scope_text(plugin)}{stored}"
        )
    labels.update(_named("consumer", (c.username for c in config.consumers)))
    labels.update(_named("route", (r.name for r in config.routes)))
    labels.update(_named("service", (s.name for s in config.services)))
    return labels


def _named(kind: str, names: Iterable[str]) -> dict[str, str]:
    return {entity_id(kind, name): f'{kind} "{name}"' for name in names}


def _scope_text(plugin: Plugin) -> str:
    parts = [
        f'{kind} "{value}"'
        for kind, value in (
            ("service", plugin.service),
            ("route", plugin.route),
            ("consumer", plugin.consumer),
        )
        if value
    ]
    return "for " + ", ".join(parts) if parts else "(global)"
