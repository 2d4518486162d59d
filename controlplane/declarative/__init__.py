"""Declarative configuration: one YAML/JSON document describing the gateway and billing.

The gateway half is Kong decK's ``_format_version: "3.0"`` format (services, routes, consumers
with ``keyauth_credentials``, consumer groups and upstreams, plugins ``key-auth``,
``rate-limiting``, ``rate-limiting-advanced``, ``ai-proxy``, ``ai-proxy-advanced`` and
``ai-rate-limiting-advanced``), top-level or nested; the ``billing:`` section holds features,
plans, customers and subscriptions. Parsing is pure and validates everything; every problem is
reported, each naming the entry it is about. Every field of Kong's published schema
(``kong_fields.tsv``, see kong_schema.py) is accepted, and either honoured or reported as a
note (accepted, not enforced); docs/declarative.md has the tables. ``${{ env "DECK_..." }}``
references are resolved by the CLI (envsubst.py), several files merged as decK does (merge.py).
Route matching fields (regex paths, hosts, headers, protocols) are checked as data planes
compile them (route_match.py).

Differences from Kong: the ``key-auth`` plugin also accepts ``Authorization: Bearer <key>``
(``key_in_bearer``, default true) because that is how the openai and anthropic SDKs send an
API key; entities are referred to by name only (ids are derived from names); prices and costs
must be quoted decimal strings or integers, never YAML floats, so money stays exact.

``apply.py`` stores a parsed document, gateway and billing, in one transaction, all or nothing
(``meterline apply``, ``ApplyConfig``); each domain's storage does the writes.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controlplane.declarative.document import FORMAT_VERSION, parse_document
    from controlplane.declarative.errors import DeclarativeError
    from controlplane.declarative.plugins import KEY_AUTH_DEFAULTS
    from controlplane.declarative.types import (
        BillingConfig,
        DeclarativeConfig,
        SubscriptionSpec,
    )

# Imported when first asked for (PEP 562): the package's light modules (envsubst, merge,
# load) serve CLI commands that must not pay for the whole parser and what it imports (the
# domains' services, SQLAlchemy: ~0.5 s per `meterline` call).
_LAZY = {
    "FORMAT_VERSION": "document",
    "parse_document": "document",
    "DeclarativeError": "errors",
    "KEY_AUTH_DEFAULTS": "plugins",
    "BillingConfig": "types",
    "DeclarativeConfig": "types",
    "SubscriptionSpec": "types",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value

__all__ = [
    "FORMAT_VERSION",
    "KEY_AUTH_DEFAULTS",
    "BillingConfig",
    "DeclarativeConfig",
    "DeclarativeError",
    "SubscriptionSpec",
    "parse_document",
]
