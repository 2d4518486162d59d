"""``meterline diff``'s field-level detail: for each entity the control plane would update,
the fields that change (``path: old -> new``), secrets never shown.

Both sides go through the same declarative parser (the gateway as ``dump --with-secrets``
writes it, and the files), so defaults a file leaves out are not reported as changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from controlplane.declarative import parse_document

# Fields whose values are credentials: a change is reported, never the values.
SECRET_FIELDS = frozenset(
    {
        "header_value",
        "param_value",
        "password",
        "sentinel_password",
        "aws_access_key_id",
        "aws_secret_access_key",
        "gcp_service_account_json",
        "azure_client_secret",
        "key_hashes",
    }
)
_UNSET = object()


def entities(document: str) -> dict[str, dict[str, Any]]:
    """The gateway entities of a decK document (JSON), by the name ``apply`` reports them."""
    gateway = parse_document(document).gateway
    out: dict[str, dict[str, Any]] = {}
    for service in gateway.services:
        out[f"service {service.name}"] = {"url": service.url, **service.attributes}
    for route in gateway.routes:
        out[f"route {route.name}"] = {
            "service": route.service,
            "paths": list(route.paths),
            "methods": list(route.methods),
            "strip_path": route.strip_path,
            **route.attributes,
        }
    for consumer in gateway.consumers:
        out[f"consumer {consumer.username}"] = {
            "custom_id": consumer.custom_id,
            "key_hashes": sorted(consumer.key_hashes),
            **consumer.attributes,
        }
    for plugin in gateway.plugins:
        where = plugin.route or plugin.service or plugin.consumer or "global"
        out[f"plugin {plugin.name.value} ({where})"] = {
            "enabled": plugin.enabled,
            "config": plugin.config,
            **plugin.attributes,
        }
    return out


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping) and value:
        for key in sorted(value, key=str):
            yield from _leaves(value[key], f"{path}.{key}" if path else str(key))
    else:
        yield path, value


def _show(value: Any) -> str:
    if value is _UNSET:
        return "(unset)"
    return json.dumps(value, default=str, sort_keys=True)


def field_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``path: old -> new`` for each leaf that differs; secrets as ``(secret changed)``."""
    before, after = dict(_leaves(old, "")), dict(_leaves(new, ""))
    lines: list[str] = []
    for path in sorted(before.keys() | after.keys()):
        was, now = before.get(path, _UNSET), after.get(path, _UNSET)
        if was == now:
            continue
        if path.rsplit(".", 1)[-1] in SECRET_FIELDS:
            lines.append(f"{path}: (secret changed, not shown)")
        else:
            lines.append(f"{path}: {_show(was)} -> {_show(now)}")
    return lines


def updated_fields(current: str, wanted: str, changes: list[str]) -> dict[str, list[str]]:
    """For each ``updated <entity>`` of ``changes``: its field changes, current -> wanted."""
    have, want = entities(current), entities(wanted)
    out: dict[str, list[str]] = {}
    for change in changes:
        name = change.removeprefix("updated ")
        if name != change and name in have and name in want:
            out[change] = field_changes(have[name], want[name])
    return out
