"""The gateway half of a decK ``_format_version: "3.0"`` document.

Both of decK's shapes are read: top-level ``services``/``routes``/``consumers``/``plugins``
lists that refer to each other by name, and entities nested under their parent
(``services[].routes[]``, ``services[].plugins[]``, ``services[].routes[].plugins[]``,
``consumers[].plugins[]``). Both give the same :class:`GatewayConfig`, whose entities are
sorted by name so that equal configs compare equal whatever their layout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.declarative.entry import Entry, closest, describe, known, quoted, suggestion
from controlplane.declarative.errors import Problems
from controlplane.declarative.kong_entities import (
    CONSUMER_FIELDS,
    CREDENTIAL_FIELDS,
    PLUGIN_FIELDS,
    PLUGIN_NARROWING,
    ROUTE_FIELDS,
    SERVICE_FIELDS,
    EntityField,
    read_fields,
)
from controlplane.declarative.kong_schema import check_plugin_config, set_path, split_path
from controlplane.declarative.plugins import is_http_url, normalise_plugin_config
from controlplane.declarative.route_match import REGEX_MARK, check_matching, check_paths
from controlplane.gateway.keys import hash_key, is_key_hash
from controlplane.gateway.types import Consumer, GatewayConfig, Plugin, PluginName, Route, Service

# Stored in a plugin's config beside the normalised fields: the fields a file set that
# Meterline does not enforce, in the config's own shape (so secrets among them are sealed
# like the others), for dump. The snapshot builder reads typed fields only, so they never
# reach a data plane.
UNENFORCED_KEY = "kong_unenforced"

# Kong's rule for entity names.
_NAME = re.compile(r"^[A-Za-z0-9._~-]+$")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCOPES = ("service", "route", "consumer")


@dataclass
class _Gateway:
    """Entities read so far, each with where it was defined, and every name seen."""

    problems: Problems
    services: list[Service] = field(default_factory=list)
    routes: list[tuple[str, Route, bool]] = field(default_factory=list)  # (where, route, nested)
    consumers: list[Consumer] = field(default_factory=list)
    plugins: list[tuple[str, Plugin]] = field(default_factory=list)
    # name -> where it was first defined; includes entities that had other problems, so one
    # mistake is not reported again by every entity referring to it.
    names: dict[str, dict[str, str]] = field(
        default_factory=lambda: {"service": {}, "route": {}, "consumer": {}}
    )
    custom_ids: dict[str, str] = field(default_factory=dict)
    key_hashes: dict[str, str] = field(default_factory=dict)
    # _info.select_tags: added to every entity's tags.
    select_tags: tuple[str, ...] = ()

    def attributes(self, entry: Entry, fields: Mapping[str, EntityField]) -> dict[str, Any]:
        """The fields of ``entry`` to store, with the file's select_tags added to its tags."""
        stored = read_fields(entry, fields)
        if self.select_tags:
            tags = list(stored.get("tags") or ())
            stored["tags"] = tags + [tag for tag in self.select_tags if tag not in tags]
        return stored

    def claim(self, kind: str, entry: Entry, key: str) -> str | None:
        """Read the entry's name field and register it; None if invalid or already taken."""
        name = entry.string(key, required=True)
        if name is None:
            return None
        seen = self.names[kind]
        if name in seen:
            entry.fail(f'duplicate {kind} {key} "{name}", already defined at {seen[name]}')
            return None
        seen[name] = entry.where
        if kind != "consumer" and not _NAME.match(name):
            entry.fail_field(key, f'"{name}" may contain only letters, digits and "._~-"')
            return None
        return name


def parse_gateway(document: Entry, *, select_tags: tuple[str, ...] = ()) -> GatewayConfig:
    """Read the gateway entities of ``document``; problems go to ``document.problems``."""
    gateway = _Gateway(document.problems, select_tags=select_tags)
    for entry in document.entries("services", label="name"):
        _service(gateway, entry)
    for entry in document.entries("routes", label="name"):
        _route(gateway, entry, service=None)
    for entry in document.entries("consumers", label="username"):
        _consumer(gateway, entry)
    for entry in document.entries("plugins", label="name"):
        _plugin(gateway, entry, nested={})
    for entry in document.entries("consumer_groups", label="name"):
        _consumer_group(entry)
    for entry in document.entries("upstreams", label="name"):
        _upstream(entry)
    _check_references(gateway)
    return GatewayConfig(
        services=tuple(sorted(gateway.services, key=lambda s: s.name)),
        routes=tuple(sorted((route for _, route, _ in gateway.routes), key=lambda r: r.name)),
        consumers=tuple(sorted(gateway.consumers, key=lambda c: c.username)),
        plugins=tuple(sorted((plugin for _, plugin in gateway.plugins), key=lambda p: p.scope)),
    )


def _service(gateway: _Gateway, entry: Entry) -> None:
    before = len(gateway.problems)
    entry.check_keys(
        ("name", "url", "protocol", "host", "port", "path", "routes", "plugins", *SERVICE_FIELDS)
    )
    name = gateway.claim("service", entry, "name")
    url = _service_url(entry)
    attributes = gateway.attributes(entry, SERVICE_FIELDS)
    own_problems = len(gateway.problems) > before
    for route in entry.entries("routes", label="name"):
        _route(gateway, route, service=name or "")
    for plugin in entry.entries("plugins", label="name"):
        _plugin(gateway, plugin, nested={"service": name or ""})
    if not own_problems and name is not None and url is not None:
        gateway.services.append(Service(name=name, url=url, attributes=attributes))


def _service_url(entry: Entry) -> str | None:
    """The service's URL, given whole or as Kong's protocol/host/port/path parts."""
    parts = [key for key in ("protocol", "host", "port", "path") if entry.has(key)]
    if entry.has("url"):
        if parts:
            entry.fail(f"give either url or {'/'.join(parts)}, not both")
            return None
        url = entry.string("url", required=True)
        if url is not None and not is_http_url(url):
            entry.fail_field("url", f'must be an http(s) URL, got "{url}"')
            return None
        return url
    if not entry.has("host"):
        entry.fail("url (or host) is required")
        return None
    protocol = entry.choice("protocol", tuple(_DEFAULT_PORTS), default="http")
    host = entry.string("host", required=True)
    port = entry.integer("port", minimum=1)
    if port is not None and port > 65535:
        entry.fail_field("port", f"must be at most 65535, got {port}")
        return None
    path = entry.string("path", default="")
    if path and not path.startswith("/"):
        entry.fail_field("path", f'must start with "/", got "{path}"')
        return None
    if protocol is None or host is None or path is None:
        return None
    return f"{protocol}://{host}:{port or _DEFAULT_PORTS[protocol]}{path}"


# Answered by every data plane before route matching (RESERVED_PATHS of
# dataplane/observability/metrics.py; the control plane does not import data-plane modules).
RESERVED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def _route(gateway: _Gateway, entry: Entry, *, service: str | None) -> None:
    """Read a route; ``service`` is the enclosing service's name for a nested route."""
    before = len(gateway.problems)
    nested = service is not None
    if nested and entry.has("service"):
        entry.fail("service must not be set on a route nested under a service")
    entry.check_keys(
        ("name", "service", "paths", "methods", "strip_path", "plugins", *ROUTE_FIELDS)
    )
    name = gateway.claim("route", entry, "name")
    if not nested:
        service = _reference(entry, "service", required=True)
    attributes = gateway.attributes(entry, ROUTE_FIELDS)
    paths = entry.string_list("paths", required=True)
    for index, path in enumerate(paths or ()):
        if path.startswith(REGEX_MARK):
            continue  # a regex path (Kong's ~/...), checked below
        if not path.startswith("/"):
            entry.fail_field(f"paths[{index}]", 'must start with "/"')
        elif path in RESERVED_PATHS:
            entry.fail_field(
                f"paths[{index}]",
                f'"{path}" is reserved: data planes answer it themselves (health and metrics)',
            )
    check_paths(entry, paths or ())
    check_matching(entry)
    methods = entry.string_list("methods")
    for index, method in enumerate(methods or ()):
        if method.upper() not in HTTP_METHODS:
            entry.fail_field(f"methods[{index}]", f'"{method}" is not an HTTP method')
    strip_path = entry.boolean("strip_path", default=True)
    own_problems = len(gateway.problems) > before
    for plugin in entry.entries("plugins", label="name"):
        _plugin(gateway, plugin, nested={"route": name or ""})
    if (
        own_problems
        or name is None
        or not service
        or paths is None
        or methods is None
        or strip_path is None
    ):
        return
    route = Route(
        name=name,
        service=service,
        paths=paths,
        methods=tuple(method.upper() for method in methods),
        strip_path=strip_path,
        attributes=attributes,
    )
    gateway.routes.append((entry.where, route, nested))


def _consumer(gateway: _Gateway, entry: Entry) -> None:
    before = len(gateway.problems)
    entry.check_keys(("username", "custom_id", "keyauth_credentials", "plugins", *CONSUMER_FIELDS))
    username = gateway.claim("consumer", entry, "username")
    attributes = gateway.attributes(entry, CONSUMER_FIELDS)
    custom_id = entry.string("custom_id", default="")
    if custom_id:
        if custom_id in gateway.custom_ids:
            entry.fail_field(
                "custom_id", f'"{custom_id}" is already used by {gateway.custom_ids[custom_id]}'
            )
        else:
            gateway.custom_ids[custom_id] = entry.where
    hashes: list[str] = []
    for credential in entry.entries("keyauth_credentials", label=""):
        credential.check_keys(("key", "key_hash", *CREDENTIAL_FIELDS))
        read_fields(credential, CREDENTIAL_FIELDS)
        hashed = _credential_hash(credential)
        if hashed is None:
            continue
        # Never echo the key itself: it is a secret.
        if hashed in gateway.key_hashes:
            credential.fail_field("key", f"is already used by {gateway.key_hashes[hashed]}")
            continue
        gateway.key_hashes[hashed] = credential.where
        hashes.append(hashed)
    own_problems = len(gateway.problems) > before
    for plugin in entry.entries("plugins", label="name"):
        _plugin(gateway, plugin, nested={"consumer": username or ""})
    if not own_problems and username is not None and custom_id is not None:
        gateway.consumers.append(
            Consumer(
                username=username,
                custom_id=custom_id,
                key_hashes=tuple(hashes),
                attributes=attributes,
            )
        )


def _credential_hash(credential: Entry) -> str | None:
    """The hash of a key credential: of its ``key``, or its ``key_hash`` as dump writes it
    (keys are stored hashed, so a dump cannot give them back)."""
    if credential.has("key") and credential.has("key_hash"):
        credential.fail("give either key or key_hash, not both")
        return None
    if credential.has("key_hash"):
        value = credential.string("key_hash", required=True)
        if value is not None and not is_key_hash(value):
            credential.fail_field("key_hash", 'must be "sha256:" and 64 hex digits')
            return None
        return value
    key = credential.string("key", required=True)
    return None if key is None else hash_key(key)


def _consumer_group(entry: Entry) -> None:
    """Kong's consumer groups: accepted and reported, not stored (Meterline has none)."""
    entry.check_keys(("name", "consumers", "plugins", "id", "tags", "created_at", "updated_at"))
    for plugin in entry.entries("plugins", label="name"):
        # Checked against Kong's schema (a misspelling is still an error), never applied.
        plugin.check_keys(("name", "config", "id", "tags", "created_at", "updated_at"))
        name = _plugin_name(plugin)
        config = plugin.sub("config")
        if name is not None and config is not None:
            check_plugin_config(name, config)
    if entry.string("name", required=True) is not None:
        entry.problems.note(entry.where, "name", "consumer groups are not supported")


# Kong's upstream entity fields (load balancing across targets).
_UPSTREAM_FIELDS = (
    "name",
    "targets",
    "algorithm",
    "hash_on",
    "hash_fallback",
    "hash_on_header",
    "hash_fallback_header",
    "hash_on_cookie",
    "hash_on_cookie_path",
    "hash_on_query_arg",
    "hash_fallback_query_arg",
    "hash_on_uri_capture",
    "hash_fallback_uri_capture",
    "healthchecks",
    "host_header",
    "client_certificate",
    "slots",
    "use_srv_name",
    "sticky_sessions_cookie",
    "sticky_sessions_cookie_path",
    "id",
    "tags",
    "created_at",
    "updated_at",
)


def _upstream(entry: Entry) -> None:
    """Kong's upstreams and targets: accepted and reported (ai-proxy picks the upstream)."""
    entry.check_keys(_UPSTREAM_FIELDS)
    for target in entry.entries("targets", label="target"):
        target.check_keys(("target", "weight", "id", "tags", "created_at", "updated_at"))
        target.string("target", required=True)
    if entry.string("name", required=True) is not None:
        entry.problems.note(
            entry.where,
            "name",
            "upstream load balancing is not supported (the ai-proxy plugins pick the upstream)",
        )


_PLUGIN_NAMES = tuple(plugin.value for plugin in PluginName)


def _plugin(gateway: _Gateway, entry: Entry, *, nested: Mapping[str, str]) -> None:
    """Read a plugin; ``nested`` holds the scope given by its parent entity, if any."""
    before = len(gateway.problems)
    for parent in nested:
        if entry.has(parent):
            entry.fail(f"{parent} must not be set on a plugin nested under a {parent}")
    entry.check_keys(("name", "enabled", "config", *_SCOPES, *PLUGIN_FIELDS, *PLUGIN_NARROWING))
    name = _plugin_name(entry)
    scope: dict[str, str | None] = {
        key: nested[key] if key in nested else _reference(entry, key, required=False)
        for key in _SCOPES
    }
    enabled = entry.boolean("enabled", default=True)
    attributes = gateway.attributes(entry, PLUGIN_FIELDS)
    protocols = attributes.get("protocols")
    if protocols is not None and not {"http", "https"} <= set(map(str, protocols)):
        entry.note("protocols", "the plugin runs on every request (http and https)")
    config_entry = entry.sub("config") or Entry(entry.where, {}, entry.problems, prefix="config.")
    if name is None:
        return
    honoured, unenforced = check_plugin_config(name, config_entry)
    config = normalise_plugin_config(
        PluginName(name),
        Entry(config_entry.where, honoured, entry.problems, prefix=config_entry.prefix),
        has_policies=bool(config_entry.data.get("policies")),
    )
    for item in unenforced:
        config_entry.note(item.path, item.reason)
    if unenforced:
        kept: dict[str, Any] = {}
        for item in unenforced:
            set_path(kept, split_path(item.path), item.value)
        config[UNENFORCED_KEY] = kept
    narrowed = [key for key in PLUGIN_NARROWING if entry.has(key)]
    for key in narrowed:
        entry.note(key, PLUGIN_NARROWING[key])
    if len(gateway.problems) > before or enabled is None or narrowed:
        return
    if any(value is None for value in scope.values()) or any(nested[key] == "" for key in nested):
        return
    plugin = Plugin(
        name=PluginName(name),
        service=scope["service"] or "",
        route=scope["route"] or "",
        consumer=scope["consumer"] or "",
        enabled=enabled,
        config=config,
        attributes=attributes,
    )
    gateway.plugins.append((entry.where, plugin))


def _plugin_name(entry: Entry) -> str | None:
    name = entry.string("name", required=True)
    if name is None or name in _PLUGIN_NAMES:
        return name
    close = closest(name, _PLUGIN_NAMES)
    hint = f'did you mean "{close}"?' if close else f"Meterline serves {quoted(_PLUGIN_NAMES)}"
    entry.fail_field("name", f'"{name}" is not a plugin Meterline serves ({hint})')
    return None


def _reference(entry: Entry, key: str, *, required: bool) -> str | None:
    """A reference by name: ``key: NAME`` or ``key: {name: NAME}``; "" if absent."""
    value = entry.data.get(key)
    if value is None:
        if required:
            entry.fail_field(key, "is required")
            return None
        return ""
    if isinstance(value, Mapping) and set(value) == {"name"}:
        return Entry(entry.where, value, entry.problems, prefix=f"{key}.").string(
            "name", required=True
        )
    if isinstance(value, str) and value.strip():
        return value
    # decK also refers by id, but ids are Meterline's to assign (derived from names).
    entry.fail_field(key, f"must be a name or {{name: NAME}}, got {_shape(value)}")
    return None


def _shape(value: object) -> str:
    if isinstance(value, Mapping):
        return "a mapping with " + ", ".join(f'"{key}"' for key in value)
    return describe(value)


_PROXY_KINDS = {
    PluginName.AI_PROXY: "ai-proxy",
    PluginName.AI_PROXY_ADVANCED: "ai-proxy",
    # Served as one: data planes run the open-source plugin as a rate-limiting-advanced.
    PluginName.RATE_LIMITING: "rate-limiting-advanced",
    PluginName.RATE_LIMITING_ADVANCED: "rate-limiting-advanced",
}


def _check_references(gateway: _Gateway) -> None:
    """Report references to undefined entities and plugins that share a scope."""
    problems = gateway.problems
    for where, route, nested in gateway.routes:
        if not nested and route.service not in gateway.names["service"]:
            names = gateway.names["service"]
            hint = suggestion(route.service, names) or known("services", names, "services")
            problems.add(where, f'service "{route.service}" is not defined{hint}')
    scopes: dict[tuple[str, str, str, str], tuple[PluginName, str]] = {}
    for where, plugin in gateway.plugins:
        for kind, reference in (
            ("service", plugin.service),
            ("route", plugin.route),
            ("consumer", plugin.consumer),
        ):
            if reference and reference not in gateway.names[kind]:
                names = gateway.names[kind]
                hint = suggestion(reference, names) or known(f"{kind}s", names, f"{kind}s")
                problems.add(where, f'{kind} "{reference}" is not defined{hint}')
        if plugin.name is PluginName.KEY_AUTH and plugin.consumer:
            # Authentication is what identifies the consumer, so it cannot depend on one.
            problems.add(where, "key-auth cannot be scoped to a consumer")
        anonymous = plugin.config.get("anonymous") if plugin.name is PluginName.KEY_AUTH else None
        if anonymous and anonymous not in gateway.names["consumer"]:
            problems.add(where, f'config.anonymous: consumer "{anonymous}" is not defined')
        # ai-proxy and ai-proxy-advanced both pick the upstream: one of them per scope.
        kind = _PROXY_KINDS.get(plugin.name, plugin.name.value)
        scope = (kind, *plugin.scope[1:])
        if scope in scopes:
            scope_text = _describe_scope(plugin)
            other, other_where = scopes[scope]
            what = (
                f"duplicate {plugin.name.value} plugin"
                if other is plugin.name
                else f"{plugin.name.value} plugin beside the {other.value} plugin"
            )
            problems.add(
                where,
                f"{what} {scope_text}, already defined at {other_where} (one plugin of a kind "
                "per scope; ai-proxy and ai-proxy-advanced are one kind, rate-limiting and "
                "rate-limiting-advanced another)",
            )
        else:
            scopes[scope] = (plugin.name, where)


def _describe_scope(plugin: Plugin) -> str:
    parts = [
        f'{kind} "{value}"'
        for kind, value in (
            ("service", plugin.service),
            ("route", plugin.route),
            ("consumer", plugin.consumer),
        )
        if value
    ]
    return "for " + ", ".join(parts) if parts else "at global scope"
