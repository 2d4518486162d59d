"""The stored gateway written back as a decK file (``meterline dump``).

Applying the file changes nothing: every entity is written with the fields apply stores
(normalised plugin configs, the Kong fields kept as written, the ones accepted and not
enforced), key credentials as ``key_hash`` (keys are stored hashed and cannot be given back),
and secrets (provider keys, Redis passwords) as ``${{ env "DECK_..." }}`` references unless
``include_secrets``; set those variables to the values and apply resolves them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from controlplane.declarative import FORMAT_VERSION
from controlplane.declarative.gateway import UNENFORCED_KEY
from controlplane.gateway.secrets import SECRET_FIELDS
from controlplane.gateway.types import GatewayConfig, Plugin, tags_of


@dataclass(frozen=True)
class DeckExport:
    document: str
    # The DECK_ variables the document's secret references name, in document order.
    secret_variables: tuple[str, ...]


def export_document(
    config: GatewayConfig, *, include_secrets: bool = False, select_tags: Sequence[str] = ()
) -> DeckExport:
    """``config`` (only entities carrying all ``select_tags``) as a decK YAML document."""
    wanted = set(select_tags)

    def selected(attributes: Mapping[str, Any]) -> bool:
        return wanted <= set(tags_of(attributes))

    document: dict[str, Any] = {"_format_version": FORMAT_VERSION}
    if select_tags:
        document["_info"] = {"select_tags": list(select_tags)}
    services = [
        {"name": s.name, "url": s.url, **s.attributes}
        for s in config.services
        if selected(s.attributes)
    ]
    routes = [
        {
            "name": r.name,
            "service": r.service,
            "paths": list(r.paths),
            **({"methods": list(r.methods)} if r.methods else {}),
            "strip_path": r.strip_path,
            **r.attributes,
        }
        for r in config.routes
        if selected(r.attributes)
    ]
    consumers = [
        {
            "username": c.username,
            **({"custom_id": c.custom_id} if c.custom_id else {}),
            **(
                {"keyauth_credentials": [{"key_hash": h} for h in sorted(c.key_hashes)]}
                if c.key_hashes
                else {}
            ),
            **c.attributes,
        }
        for c in config.consumers
        if selected(c.attributes)
    ]
    variables: list[str] = []
    plugins = [
        _plugin(p, include_secrets=include_secrets, variables=variables)
        for p in config.plugins
        if selected(p.attributes)
    ]
    for key, items in (
        ("services", services),
        ("routes", routes),
        ("consumers", consumers),
        ("plugins", plugins),
    ):
        if items:
            document[key] = items
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    return DeckExport(document=text, secret_variables=tuple(variables))


def _plugin(plugin: Plugin, *, include_secrets: bool, variables: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": plugin.name.value}
    for kind in ("service", "route", "consumer"):
        if getattr(plugin, kind):
            entry[kind] = getattr(plugin, kind)
    entry["enabled"] = plugin.enabled
    config = _clean({k: v for k, v in plugin.config.items() if k != UNENFORCED_KEY})
    _merge(config, plugin.config.get(UNENFORCED_KEY) or {})
    if not include_secrets:
        prefix = _variable_prefix(plugin)
        config = _placeholders(config, prefix, variables)
    if config:
        entry["config"] = config
    entry.update(plugin.attributes)
    return entry


def _clean(value: Any) -> Any:
    """Drop what apply fills in by itself (nulls, empty strings and mappings)."""
    if isinstance(value, Mapping):
        cleaned = {k: _clean(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v is not None and v != "" and v != {}}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value


def _merge(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        current = into.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            _merge(current, value)
        elif isinstance(value, list) and isinstance(current, list):
            for index, item in enumerate(value):
                if index < len(current) and isinstance(item, Mapping):
                    if isinstance(current[index], dict):
                        _merge(current[index], item)
                elif index >= len(current):
                    current.append(item)
        else:
            into[key] = value


def _variable_prefix(plugin: Plugin) -> str:
    scope = [
        f"{kind}_{name}"
        for kind, name in (
            ("service", plugin.service),
            ("route", plugin.route),
            ("consumer", plugin.consumer),
        )
        if name
    ] or ["global"]
    return _variable("DECK", plugin.name.value, *scope)


def _variable(*parts: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", "_".join(parts).upper()).strip("_")


def _placeholders(value: Any, name: str, variables: list[str]) -> Any:
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key, item in value.items():
            here = _variable(name, str(key))
            if key in SECRET_FIELDS and isinstance(item, str) and item:
                variables.append(here)
                result[key] = f'${{{{ env "{here}" }}}}'
            else:
                result[key] = _placeholders(item, here, variables)
        return result
    if isinstance(value, list):
        return [_placeholders(item, f"{name}_{i}", variables) for i, item in enumerate(value)]
    return value
