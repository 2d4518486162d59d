"""The fields of Kong's gateway entities (services, routes, consumers, key credentials, plugin
entities, consumer groups, upstreams) beyond the ones Meterline models, and what it does with
each: store and give back (dump), report as accepted and not enforced, or both.

A field with a ``reason`` is reported by apply when set to something other than Kong's
default; a ``stored`` field is kept in the entity's attributes (and, for routes, shipped to
data planes in the snapshot, whose route matching is the data plane's to honour).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.declarative.entry import Entry, describe

# Route fields data planes of this version honour; the others are stored, shipped in the
# snapshot and reported as not enforced yet (route matching is the data plane's).
ROUTE_FIELDS_HONOURED = frozenset(
    {
        "paths",
        "methods",
        "strip_path",
        "hosts",
        "headers",
        "protocols",
        "preserve_host",
        "regex_priority",
        "https_redirect_status_code",
    }
)
_NOT_YET = "data planes of this version do not match on it yet"


@dataclass(frozen=True)
class EntityField:
    type: str
    default: Any = None
    reason: str | None = None
    stored: bool = True


_META = {
    "id": EntityField("string", reason="ids are derived from names", stored=False),
    "created_at": EntityField("integer", stored=False),
    "updated_at": EntityField("integer", stored=False),
    "tags": EntityField("array"),
}

SERVICE_FIELDS: Mapping[str, EntityField] = {
    **_META,
    "retries": EntityField("integer", 5, "the ai-proxy plugins decide retries"),
    "connect_timeout": EntityField("integer", 60000, "set timeouts on the ai-proxy plugin"),
    "write_timeout": EntityField("integer", 60000, "set timeouts on the ai-proxy plugin"),
    "read_timeout": EntityField("integer", 60000, "set timeouts on the ai-proxy plugin"),
    "tls_verify": EntityField("boolean", None, "upstream certificates are always verified"),
    "tls_verify_depth": EntityField("integer", None, "upstream certificates are always verified"),
    "ca_certificates": EntityField("array", None, "the system trust store is used"),
    "client_certificate": EntityField("any", None, "client certificates are not supported"),
    "tls_sans": EntityField("object", None, "upstream certificates are always verified"),
    "enabled": EntityField("boolean", True, "a service's routes are served while it is listed"),
}

ROUTE_FIELDS: Mapping[str, EntityField] = {
    **_META,
    # Matched on by data planes (controlplane.declarative.route_match checks the values).
    "hosts": EntityField("array"),
    "headers": EntityField("object"),
    "protocols": EntityField("array"),
    "preserve_host": EntityField("boolean"),
    "regex_priority": EntityField("integer"),
    "path_handling": EntityField("string", "v0", _NOT_YET),
    "https_redirect_status_code": EntityField("integer"),
    "request_buffering": EntityField("boolean", True, _NOT_YET),
    "response_buffering": EntityField("boolean", True, _NOT_YET),
    "snis": EntityField("array", None, _NOT_YET),
    "sources": EntityField("array", None, _NOT_YET),
    "destinations": EntityField("array", None, _NOT_YET),
    "expression": EntityField("string", None, "expression routes are not supported"),
    "priority": EntityField("integer", None, "expression routes are not supported"),
}

CONSUMER_FIELDS: Mapping[str, EntityField] = {
    **_META,
    "groups": EntityField("array", None, "consumer groups are not supported", stored=False),
    **{
        kind: EntityField("array", None, "only key-auth credentials are used", stored=False)
        for kind in (
            "basicauth_credentials",
            "hmacauth_credentials",
            "jwt_secrets",
            "oauth2_credentials",
            "mtls_auth_credentials",
            "acls",
        )
    },
}

CREDENTIAL_FIELDS: Mapping[str, EntityField] = {
    **_META,
    "tags": EntityField("array", stored=False),
    "ttl": EntityField("integer", None, "keys do not expire", stored=False),
}

PLUGIN_FIELDS: Mapping[str, EntityField] = {
    **_META,
    "instance_name": EntityField("string"),
    # Noted by the plugin reader unless it includes http and https (what data planes serve).
    "protocols": EntityField("array"),
    "ordering": EntityField("object", None, "plugins run in Meterline's fixed order"),
    "partials": EntityField(
        "array", None, "partials are not supported: set the plugin's own config", stored=False
    ),
}
# A plugin narrowed by these is not applied at all (applying it more widely would be wrong).
PLUGIN_NARROWING: Mapping[str, str] = {
    "consumer_group": "consumer groups are not supported: this plugin is not applied",
    "condition": "plugin conditions are not supported: this plugin is not applied",
}

_TYPE_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, Mapping),
}
_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
}


def read_fields(entry: Entry, fields: Mapping[str, EntityField]) -> dict[str, Any]:
    """Check the ``fields`` an entry sets, note the ones not enforced, return the stored ones."""
    stored: dict[str, Any] = {}
    for key, spec in fields.items():
        value = entry.data.get(key)
        if value is None:
            continue
        check = _TYPE_CHECKS.get(spec.type)
        if check is not None and not check(value):
            entry.fail_field(key, f"must be {_TYPE_NAMES[spec.type]}, got {describe(value)}")
            continue
        if key == "tags" and not all(isinstance(tag, str) and tag for tag in value):
            entry.fail_field(key, "must be a list of non-empty strings")
            continue
        if spec.reason is not None and value != spec.default:
            entry.note(key, spec.reason)
        if spec.stored:
            stored[key] = value
    return stored
