"""Validate a wire Snapshot and compile it into a RuntimeConfig, or explain why not.

Compilation is pure (no I/O) so a bad snapshot is rejected before anything changes. A data
plane compiles with ``compile_isolating``: a route or plugin it cannot serve (a provider an
older data plane lacks, a newer plugin) is refused alone, the rest is served.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from dataplane.admission.entitlements import compile_enforcement
from dataplane.admission.ratelimit import PLUGIN_NAMES as RATE_LIMIT_PLUGINS
from dataplane.admission.ratelimit import check_config as check_rate_limit_config
from dataplane.admission.ratelimit import compile_route_limits
from dataplane.config.aws import CLIENT_SIGNATURE_HEADERS, shared_signer
from dataplane.config.gcp_tokens import ServiceAccountTokens, parse_service_account
from dataplane.config.keys import is_key_hash
from dataplane.config.model import AiProxyPolicy, Consumer, KeyAuthPolicy, ProviderTarget
from dataplane.config.providers import (
    AZURE_PATHS,
    DEFAULT_AZURE_API_VERSION,
    DEFAULT_URLS,
    GEMINI_PATH,
    LLM_FORMAT_ANTHROPIC,
    LLM_FORMAT_BEDROCK,
    LLM_FORMAT_COHERE,
    LLM_FORMAT_GEMINI,
    LLM_FORMAT_OLLAMA,
    LLM_FORMAT_OPENAI,
    NOT_YET_SUPPORTED_PROVIDERS,
    NOT_YET_SUPPORTED_ROUTE_TYPES,
    OPENAI_COMPATIBLE_PROVIDERS,
    PROVIDER_ROUTE_TYPES,
    ROUTE_TYPE_CHAT,
    ROUTE_TYPE_PRESERVE,
    SUPPORTED_ROUTE_TYPES,
    VERTEX_ENDPOINT_PATH,
    VERTEX_PATH,
    bedrock_base_url,
    vertex_host,
)
from dataplane.config.routing import RouteCriteria, RouteTable
from dataplane.errors import CompileError, ConfigError
from dataplane.http.client import Timeouts
from dataplane.proxy import kong_options
from dataplane.proxy.balancer import (
    ALGORITHMS,
    CONSISTENT_HASHING,
    COST,
    DEFAULT_FAIL_TIMEOUT_MS,
    DEFAULT_FAILOVER_CRITERIA,
    FAILOVER_CRITERIA,
    LATENCY_STRATEGIES,
    PRIORITY,
    TOKENS_COUNT_STRATEGIES,
    Balancer,
    BalancerTarget,
)
from dataplane.proxy.compatible import (
    check_compatible,
    cohere_url,
    compatible_url,
    ollama_url,
    wire_provider,
)
from dataplane.proxy.runtime import CompiledRoute, RuntimeConfig
from dataplane.translate.anthropic_format import DEFAULT_ANTHROPIC_VERSION
from dataplane.translate.base import Translator
from dataplane.translate.gemini_format import MODEL_PLACEHOLDER, OPERATION_PLACEHOLDER
from dataplane.translate.select import OPENAI, translator_for
from meterline.dataplane.v1 import snapshot_pb2

KEY_AUTH = "key-auth"
AI_PROXY = "ai-proxy"
AI_PROXY_ADVANCED = "ai-proxy-advanced"
_CONFIG_FIELD = {KEY_AUTH: "key_auth", AI_PROXY: "ai_proxy", AI_PROXY_ADVANCED: "ai_proxy"}
# ai-proxy and ai-proxy-advanced fill the same slot of a route: one of them per scope.
_KIND = {AI_PROXY_ADVANCED: AI_PROXY}
# Upstream defaults where a config leaves a timeout at 0 (see dataplane.http.client).
_DEFAULT_CONNECT_S = 10.0
_DEFAULT_READ_S = 600.0
_DEFAULT_KEY_NAMES = ("apikey",)
# Kong's https_redirect_status_code values (0 in the snapshot: Kong's default, 426).
_REDIRECT_CODES = frozenset({301, 302, 307, 308, 426})
# rate-limiting-advanced and ai-rate-limiting-advanced (dataplane.admission.ratelimit).
_CONFIG_FIELD.update(dict.fromkeys(RATE_LIMIT_PLUGINS, "rate_limiting"))

# Never forwarded upstream: credentials of the client, and hop-by-hop or length headers that
# the upstream HTTP client sets itself.
_ALWAYS_DROPPED = frozenset(
    {
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"expect",
        b"accept-encoding",
        b"content-type",
        b"authorization",
        b"proxy-authorization",
        b"cookie",
        b"apikey",
        b"api-key",
        b"x-api-key",
        # Gemini's key header: a Gemini client's gateway key, never the provider's.
        b"x-goog-api-key",
    }
)


# The provider credential headers a client may send itself to an ai-proxy without auth.
_CLIENT_PROVIDER_CREDENTIALS = frozenset(
    {b"authorization", b"api-key", b"x-api-key", b"x-goog-api-key"}
)


def _has_credentials(target: ProviderTarget) -> bool:
    return bool(
        target.auth_headers
        or target.auth_body_params
        or target.auth_query
        or target.credentials is not None
        or target.signer is not None
    )


@dataclass(frozen=True, slots=True)
class _Resolved:
    key_auth: snapshot_pb2.KeyAuthConfig | None
    ai_proxy: snapshot_pb2.AiProxyConfig | None
    advanced: bool = False


def compile_snapshot(
    snapshot: snapshot_pb2.Snapshot, *, version: str, isolate: bool = False
) -> RuntimeConfig:
    """Return the runtime form of ``snapshot``; raise CompileError if it is invalid.

    With ``isolate``, a route or plugin this data plane cannot serve does not fail the whole
    snapshot: a route whose plugins do not compile answers 503 naming the route and why, a
    route whose matching criteria do not compile is left out, and ``refused`` of the result
    says what was refused (the NACK's text). Snapshot-wide faults (ids, references,
    consumers) still raise.
    """
    service_ids = _service_ids(snapshot)
    route_ids = _check_routes(snapshot, service_ids)
    consumers = _consumers_by_key_hash(snapshot)
    consumer_ids = {consumer.id for consumer in snapshot.consumers}
    by_id = {c.id: Consumer(id=c.id, username=c.username) for c in snapshot.consumers}
    plugins: list[snapshot_pb2.Plugin] = []
    # Plugins refused (isolate), with why: the routes in their scope are not served.
    refused_plugins: list[tuple[snapshot_pb2.Plugin, str]] = []
    scopes: set[tuple[str, str, str, str]] = set()
    for plugin in snapshot.plugins:
        try:
            plugins += _check_plugins([plugin], service_ids, route_ids, consumer_ids, scopes)
        except CompileError as exc:
            if not isolate:
                raise
            refused_plugins.append((plugin, str(exc)))

    refused: list[str] = []
    tainted_plugins: set[int] = set()
    compiled: list[tuple[CompiledRoute, RouteCriteria]] = []
    for route in snapshot.routes:
        name = route.name or route.id
        try:
            criteria = _route_criteria(route)
            RouteTable.check(criteria)
        except CompileError as exc:
            if not isolate:
                raise CompileError(f'route "{name}": {exc}') from None
            refused.append(f'route "{name}" is not served by this data plane: {exc}')
            continue
        problem = None
        for index, (plugin, why) in enumerate(refused_plugins):
            if _in_scope(plugin, route):
                tainted_plugins.add(index)
                problem = problem or why
        if problem is None:
            try:
                compiled.append((_compile_route(route, plugins, by_id), criteria))
                continue
            except CompileError as exc:
                if not isolate:
                    raise
                problem = str(exc)
        message = f'route "{name}" is not served by this data plane: {problem}'
        refused.append(message)
        compiled.append((_refused_route(route, plugins, message), criteria))
    for index, (plugin, why) in enumerate(refused_plugins):
        if index not in tainted_plugins:
            label = f'plugin "{plugin.id or plugin.name}"'
            why = why.removeprefix(f"{label}: ")
            refused.append(f"{label} is not applied by this data plane: {why}")
    return RuntimeConfig(
        version=version,
        routes=RouteTable(compiled),
        consumers_by_key_hash=MappingProxyType(consumers),
        enforcement=compile_enforcement(snapshot),
        refused=tuple(refused),
    )


def compile_isolating(snapshot: snapshot_pb2.Snapshot, *, version: str) -> RuntimeConfig:
    """``compile_snapshot`` as a data plane serves: what it cannot compile is refused alone."""
    return compile_snapshot(snapshot, version=version, isolate=True)


def check_snapshot(snapshot: snapshot_pb2.Snapshot) -> None:
    """Raise CompileError if a data plane of this version would refuse any of ``snapshot``
    (NACK it), naming every route and plugin it would not serve, one line each.

    What a control plane runs before it stores a config (``meterline controlplane`` injects
    it), so that a config that passes ``meterline apply`` never makes a data plane NACK.
    """
    refused = compile_isolating(snapshot, version="").refused
    if refused:
        # Said of a config not stored yet: what is refused, and why.
        lines = (
            line.replace(_NOT_SERVED, ":", 1).replace(_NOT_APPLIED, ":", 1) for line in refused
        )
        raise CompileError("\n".join(lines))


_NOT_SERVED = " is not served by this data plane:"
_NOT_APPLIED = " is not applied by this data plane:"


def _compile_route(
    route: snapshot_pb2.Route, plugins: list[snapshot_pb2.Plugin], consumers: dict[str, Consumer]
) -> CompiledRoute:
    resolved = _resolve_plugins(route, plugins)
    key_auth = _compile_key_auth(resolved.key_auth, consumers) if resolved.key_auth else None
    ai_proxy = None
    balancer: Balancer | None = None
    translator: Translator = OPENAI
    if resolved.ai_proxy is not None:
        translator = _translator(resolved.ai_proxy)
        if resolved.advanced:
            ai_proxy, balancer = _compile_ai_proxy_advanced(resolved.ai_proxy)
            translator = balancer.targets[0].translator
        else:
            ai_proxy = _compile_ai_proxy(
                resolved.ai_proxy,
                timeout=_timeout(resolved.ai_proxy.connect_timeout, resolved.ai_proxy.read_timeout),
            )
    dropped = set(_ALWAYS_DROPPED)
    if key_auth is not None:
        dropped |= key_auth.header_names
    if ai_proxy is not None:
        targets = [t.policy.target for t in balancer.targets] if balancer else []
        for target in [*targets, ai_proxy.target]:
            dropped |= {name for name, _ in target.auth_headers}
            if target.signer is not None:
                # The client's own SigV4 headers: the gateway signs again.
                dropped |= CLIENT_SIGNATURE_HEADERS
        if key_auth is None and not any(map(_has_credentials, [*targets, ai_proxy.target])):
            # Kong's ai-proxy without auth (its "get started" guide, self-hosted vLLM and
            # Ollama): the client sends the provider credential itself. Without key-auth it
            # is no gateway key, so it is forwarded as sent.
            dropped -= _CLIENT_PROVIDER_CREDENTIALS
    return CompiledRoute(
        id=route.id,
        name=route.name or route.id,
        service_id=route.service_id,
        methods=frozenset(route.methods),
        key_auth=key_auth,
        ai_proxy=ai_proxy,
        dropped_headers=frozenset(dropped),
        rate_limits=compile_route_limits(route, plugins, ai_proxy=resolved.ai_proxy),
        translator=translator,
        balancer=balancer,
        logs_payloads=ai_proxy is not None
        and (
            ai_proxy.log_payloads
            or (balancer is not None and any(t.policy.log_payloads for t in balancer.targets))
        ),
        **_route_behaviour(route),
    )


def _route_behaviour(route: snapshot_pb2.Route) -> dict[str, Any]:
    """The CompiledRoute fields of Kong's route settings (strip_path, preserve_host...)."""
    protocols = set(route.protocols) or {"http", "https"}
    https_only = "https" in protocols and "http" not in protocols
    return {
        "strip_path": route.strip_path,
        "preserve_host": route.preserve_host,
        "https_redirect": (route.https_redirect_status_code or 426) if https_only else 0,
    }


def _refused_route(
    route: snapshot_pb2.Route, plugins: list[snapshot_pb2.Plugin], message: str
) -> CompiledRoute:
    """A route this data plane matches but does not serve: it answers 503 ``message``."""
    # The error shape of its ai-proxy, if one of the plugins that compiled gives it one.
    ai_proxy = _resolve_plugins(route, plugins).ai_proxy
    translator = _translator(ai_proxy) if ai_proxy is not None else OPENAI
    return CompiledRoute(
        id=route.id,
        name=route.name or route.id,
        service_id=route.service_id,
        methods=frozenset(route.methods),
        key_auth=None,
        ai_proxy=None,
        dropped_headers=_ALWAYS_DROPPED,
        translator=translator,
        refused=message,
        **_route_behaviour(route),
    )


def _in_scope(plugin: snapshot_pb2.Plugin, route: snapshot_pb2.Route) -> bool:
    """Whether ``plugin`` could apply to requests of ``route`` (a consumer-scoped one may)."""
    return (not plugin.route_id or plugin.route_id == route.id) and (
        not plugin.service_id or plugin.service_id == route.service_id
    )


def _route_criteria(route: snapshot_pb2.Route) -> RouteCriteria:
    """What ``route`` matches on; CompileError if this data plane cannot match it."""
    protocols = set(route.protocols)
    if protocols and not protocols & {"http", "https"}:
        raise CompileError(
            f"protocols {', '.join(sorted(protocols))}: data planes serve only http and https"
        )
    code = route.https_redirect_status_code
    if code and code not in _REDIRECT_CODES:
        raise CompileError(
            f"https_redirect_status_code {code} is not one of 301, 302, 307, 308, 426"
        )
    return RouteCriteria(
        paths=tuple(route.paths),
        methods=frozenset(route.methods),
        hosts=tuple(route.hosts),
        headers=tuple((header.name, tuple(header.values)) for header in route.headers),
        regex_priority=route.regex_priority,
    )


def _service_ids(snapshot: snapshot_pb2.Snapshot) -> set[str]:
    ids: set[str] = set()
    for service in snapshot.services:
        if not service.id:
            raise CompileError(f'service "{service.name}" has no id')
        if service.id in ids:
            raise CompileError(f'duplicate service id "{service.id}"')
        ids.add(service.id)
    return ids


def _check_routes(snapshot: snapshot_pb2.Snapshot, service_ids: set[str]) -> set[str]:
    ids: set[str] = set()
    for route in snapshot.routes:
        label = f'route "{route.name or route.id}"'
        if not route.id:
            raise CompileError(f"{label} has no id")
        if route.id in ids:
            raise CompileError(f'duplicate route id "{route.id}"')
        ids.add(route.id)
        if route.service_id not in service_ids:
            raise CompileError(f'{label}: unknown service_id "{route.service_id}"')
    return ids


def _consumers_by_key_hash(snapshot: snapshot_pb2.Snapshot) -> dict[str, Consumer]:
    by_hash: dict[str, Consumer] = {}
    ids: set[str] = set()
    for wire in snapshot.consumers:
        if not wire.id:
            raise CompileError(f'consumer "{wire.username}" has no id')
        if wire.id in ids:
            raise CompileError(f'duplicate consumer id "{wire.id}"')
        ids.add(wire.id)
        if not wire.username:
            # The username is the metering subject: usage without one could not be billed.
            raise CompileError(f'consumer "{wire.id}" has no username')
        consumer = Consumer(id=wire.id, username=wire.username)
        for key_hash in wire.key_hashes:
            if not is_key_hash(key_hash):
                raise CompileError(
                    f'consumer "{wire.username}": key hash is not "sha256:" + 64 lower-case hex'
                )
            other = by_hash.get(key_hash)
            if other is not None and other.id != consumer.id:
                raise CompileError(
                    f'duplicate key hash: consumers "{other.username}" and "{consumer.username}" '
                    "share a key"
                )
            by_hash[key_hash] = consumer
    return by_hash


def _check_plugins(
    plugins: Iterable[snapshot_pb2.Plugin],
    service_ids: set[str],
    route_ids: set[str],
    consumer_ids: set[str],
    scopes: set[tuple[str, str, str, str]],
) -> list[snapshot_pb2.Plugin]:
    """Validate ``plugins`` (enabled or not) and return the enabled ones; ``scopes`` holds
    the (kind, service, route, consumer) scopes taken so far."""
    enabled: list[snapshot_pb2.Plugin] = []
    for plugin in plugins:
        label = f'plugin "{plugin.id or plugin.name}"'
        expected_field = _CONFIG_FIELD.get(plugin.name)
        if expected_field is None:
            raise CompileError(
                f'{label}: unknown plugin name "{plugin.name}" '
                '(expected "key-auth", "ai-proxy" or "ai-proxy-advanced")'
            )
        actual_field = plugin.WhichOneof("config")
        if actual_field != expected_field:
            raise CompileError(
                f'{label}: a "{plugin.name}" plugin needs config "{expected_field}", '
                f'got "{actual_field or "none"}"'
            )
        if plugin.service_id and plugin.service_id not in service_ids:
            raise CompileError(f'{label}: unknown service_id "{plugin.service_id}"')
        if plugin.route_id and plugin.route_id not in route_ids:
            raise CompileError(f'{label}: unknown route_id "{plugin.route_id}"')
        if plugin.consumer_id and plugin.consumer_id not in consumer_ids:
            raise CompileError(f'{label}: unknown consumer_id "{plugin.consumer_id}"')
        kind = _KIND.get(plugin.name, plugin.name)
        scope = (kind, plugin.service_id, plugin.route_id, plugin.consumer_id)
        if scope in scopes:
            raise CompileError(f'{label}: a second "{kind}" plugin on the same scope')
        scopes.add(scope)
        if plugin.name == AI_PROXY:
            _check_ai_proxy(label, plugin.ai_proxy)
            _check_model_policy(label, plugin.ai_proxy)
            kong_options.check(label, plugin.ai_proxy)
        elif plugin.name == AI_PROXY_ADVANCED:
            _check_ai_proxy_advanced(label, plugin.ai_proxy)
            kong_options.check(label, plugin.ai_proxy)
        elif plugin.name == KEY_AUTH:
            _check_key_auth(label, plugin.key_auth, consumer_ids)
        elif plugin.name in RATE_LIMIT_PLUGINS:
            problem = check_rate_limit_config(plugin.rate_limiting, plugin=plugin.name)
            if problem is not None:
                raise CompileError(f"{label}: {problem}")
        if plugin.enabled:
            enabled.append(plugin)
    return enabled


def _check_key_auth(label: str, config: snapshot_pb2.KeyAuthConfig, consumer_ids: set[str]) -> None:
    anonymous = config.anonymous_consumer_id
    if anonymous and anonymous not in consumer_ids:
        raise CompileError(f'{label}: anonymous consumer "{anonymous}" is not in the snapshot')
    if any(c in config.realm for c in '"\\\r\n\0'):
        raise CompileError(f"{label}: realm contains a quote, backslash or line break")


def _check_ai_proxy(label: str, config: snapshot_pb2.AiProxyConfig) -> None:
    provider = config.model.provider
    route_type = config.route_type
    _check_provider(label, provider, route_type)
    _check_llm_format(label, config)
    _check_gemini(label, config)
    if provider == "bedrock":
        _check_bedrock(label, config)
    check_compatible(label, config)
    options = config.model.options
    _check_upstream(label, options, provider, route_type)
    auth = config.auth
    if bool(auth.header_name) != bool(auth.header_value):
        raise CompileError(f"{label}: auth needs both header_name and header_value")
    if auth.param_name and auth.param_location not in ("query", "body"):
        raise CompileError(f'{label}: auth.param_location must be "query" or "body"')
    if options.max_tokens < 0:
        raise CompileError(f"{label}: model.options.max_tokens is negative")
    kong_options.check_target(label, options, provider)


def _check_provider(label: str, provider: str, route_type: str) -> None:
    """A provider this data plane serves, and a route_type it serves for that provider."""
    if provider in NOT_YET_SUPPORTED_PROVIDERS:
        raise CompileError(f'{label}: provider "{provider}" is not supported yet')
    if provider not in DEFAULT_URLS:
        supported = ", ".join(sorted(DEFAULT_URLS))
        raise CompileError(f'{label}: unknown provider "{provider}" (supported: {supported})')
    if route_type in NOT_YET_SUPPORTED_ROUTE_TYPES:
        raise CompileError(f'{label}: route_type "{route_type}" is not supported yet')
    if route_type not in SUPPORTED_ROUTE_TYPES:
        supported = ", ".join(sorted(SUPPORTED_ROUTE_TYPES))
        raise CompileError(f'{label}: unknown route_type "{route_type}" (supported: {supported})')
    if route_type not in PROVIDER_ROUTE_TYPES[provider]:
        raise CompileError(
            f'{label}: provider "{provider}" does not serve route_type "{route_type}"'
        )


def _check_llm_format(label: str, config: snapshot_pb2.AiProxyConfig) -> None:
    """A known client format, on a provider that speaks it."""
    provider = config.model.provider
    llm_format = config.llm_format or LLM_FORMAT_OPENAI
    if llm_format not in (
        LLM_FORMAT_OPENAI,
        LLM_FORMAT_ANTHROPIC,
        LLM_FORMAT_GEMINI,
        LLM_FORMAT_BEDROCK,
        LLM_FORMAT_OLLAMA,
        LLM_FORMAT_COHERE,
    ):
        raise CompileError(
            f'{label}: unknown llm_format "{llm_format}" '
            "(supported: anthropic, bedrock, cohere, gemini, ollama, openai)"
        )
    if llm_format == LLM_FORMAT_ANTHROPIC and provider not in ("anthropic", "bedrock"):
        raise CompileError(
            f'{label}: llm_format "anthropic" needs provider "anthropic" (or "bedrock"), '
            f'got "{provider}"'
        )
    for native in (LLM_FORMAT_GEMINI, LLM_FORMAT_BEDROCK, LLM_FORMAT_OLLAMA, LLM_FORMAT_COHERE):
        if llm_format == native and wire_provider(config) != native:
            raise CompileError(
                f'{label}: llm_format "{native}" needs provider "{native}", got "{provider}"'
            )


def _check_upstream(
    label: str, options: snapshot_pb2.AiProxyModelOptions, provider: str, route_type: str
) -> None:
    """Where requests go: an http(s) upstream_url, an Azure deployment, or a known URL."""
    upstream_url = options.upstream_url
    if upstream_url:
        parts = urlsplit(upstream_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CompileError(f'{label}: upstream_url "{upstream_url}" is not an http(s) URL')
    elif provider == "azure":
        if not options.azure_instance:
            raise CompileError(
                f'{label}: provider "azure" needs model.options.azure_instance '
                "(or model.options.upstream_url)"
            )
        if route_type != ROUTE_TYPE_PRESERVE and not options.azure_deployment_id:
            raise CompileError(
                f'{label}: provider "azure" needs model.options.azure_deployment_id '
                "(or model.options.upstream_url)"
            )
        if not _is_dns_label(options.azure_instance):
            raise CompileError(
                f'{label}: azure_instance "{options.azure_instance}" is not a host name label'
            )
    elif provider not in OPENAI_COMPATIBLE_PROVIDERS and route_type not in DEFAULT_URLS[provider]:
        raise CompileError(f'{label}: provider "{provider}" needs model.options.upstream_url')


def _check_gemini(label: str, config: snapshot_pb2.AiProxyConfig) -> None:
    """Gemini's options and Google Cloud auth: only on provider gemini, and consistent."""
    auth = config.auth
    if config.model.provider != "gemini":
        if config.model.options.HasField("gemini"):
            raise CompileError(f'{label}: model.options.gemini is only for provider "gemini"')
        if auth.gcp_use_service_account or auth.gcp_service_account_json:
            raise CompileError(f'{label}: auth.gcp_* is only for provider "gemini"')
        return
    _check_vertex(label, config.model.options.gemini)
    if auth.param_name and auth.param_location != "query":
        raise CompileError(
            f'{label}: provider "gemini" takes its key in a header (x-goog-api-key) or the '
            'query (param_location: "query"), not the body'
        )
    _check_gcp_auth(label, auth)


def _check_vertex(label: str, gemini: snapshot_pb2.GeminiOptions) -> None:
    """Vertex AI's project, location and endpoint: all or none, each a name."""
    if bool(gemini.project_id) != bool(gemini.location_id):
        raise CompileError(
            f"{label}: model.options.gemini needs both project_id and location_id (Vertex AI)"
        )
    if (gemini.api_endpoint or gemini.endpoint_id) and not gemini.project_id:
        raise CompileError(
            f"{label}: model.options.gemini.api_endpoint and endpoint_id need project_id and "
            "location_id (Vertex AI)"
        )
    for name in ("project_id", "location_id", "endpoint_id"):
        value = getattr(gemini, name)
        if value and not _is_path_segment(value):
            raise CompileError(f'{label}: model.options.gemini.{name} "{value}" is not a name')
    if gemini.api_endpoint:
        endpoint = gemini.api_endpoint
        parts = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
        try:
            parts.port  # noqa: B018 (raises ValueError on a malformed port)
        except ValueError:
            parts = urlsplit("")
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            raise CompileError(
                f'{label}: model.options.gemini.api_endpoint "{endpoint}" is not a host name'
            )


def _check_gcp_auth(label: str, auth: snapshot_pb2.AiProxyAuth) -> None:
    """A Google Cloud service account replaces key auth; its JSON and token URL parse."""
    if auth.gcp_service_account_json and not auth.gcp_use_service_account:
        raise CompileError(
            f"{label}: auth.gcp_service_account_json needs auth.gcp_use_service_account: true"
        )
    if not auth.gcp_use_service_account:
        return
    if auth.header_name or auth.param_name:
        raise CompileError(
            f"{label}: auth.gcp_use_service_account replaces header_name/param_name auth; "
            "set one of them"
        )
    if auth.gcp_service_account_json:
        try:
            parse_service_account(auth.gcp_service_account_json, label=label)
        except ConfigError as exc:
            raise CompileError(str(exc)) from None
    if auth.gcp_oauth_token_url:
        token_url = urlsplit(auth.gcp_oauth_token_url)
        if token_url.scheme not in ("http", "https") or not token_url.hostname:
            raise CompileError(f"{label}: auth.gcp_oauth_token_url is not an http(s) URL")


def _is_path_segment(value: str) -> bool:
    return value.isascii() and all(c.isalnum() or c in "-_." for c in value)


def _check_bedrock(label: str, config: snapshot_pb2.AiProxyConfig) -> None:
    auth, bedrock = config.auth, config.model.options.bedrock
    if not bedrock.aws_region:
        # The region is part of every signature, even with an upstream_url.
        raise CompileError(f'{label}: provider "bedrock" needs model.options.bedrock.aws_region')
    if not _is_dns_label(bedrock.aws_region):
        raise CompileError(f'{label}: aws_region "{bedrock.aws_region}" is not a region name')
    if bool(auth.aws_access_key_id) != bool(auth.aws_secret_access_key):
        raise CompileError(
            f"{label}: auth needs both aws_access_key_id and aws_secret_access_key "
            "(or neither: the data plane's AWS credential chain)"
        )
    if bedrock.aws_role_session_name and not bedrock.aws_assume_role_arn:
        raise CompileError(f"{label}: aws_role_session_name needs aws_assume_role_arn")
    sts = bedrock.aws_sts_endpoint_url
    if sts and (urlsplit(sts).scheme not in ("http", "https") or not urlsplit(sts).hostname):
        raise CompileError(f'{label}: aws_sts_endpoint_url "{sts}" is not an http(s) URL')


def _check_model_policy(label: str, config: snapshot_pb2.AiProxyConfig) -> None:
    for alias, model in config.model_aliases.items():
        if not alias or not model:
            raise CompileError(f"{label}: model_aliases needs non-empty names")
    if any(not model for model in config.model_allow_list):
        raise CompileError(f"{label}: model_allow_list has an empty model name")
    for name in ("connect_timeout", "read_timeout", "write_timeout"):
        if getattr(config, name) < 0:
            raise CompileError(f"{label}: {name} is negative")


def _target_config(
    config: snapshot_pb2.AiProxyConfig, target: snapshot_pb2.AiProxyTarget
) -> snapshot_pb2.AiProxyConfig:
    """One ai-proxy-advanced target as the ai-proxy config it amounts to."""
    single = snapshot_pb2.AiProxyConfig(
        route_type=target.route_type or config.route_type,
        llm_format=config.llm_format,
        auth=target.auth,
        model=target.model,
        response_streaming=config.response_streaming,
        max_request_body_size=config.max_request_body_size,
        log_payloads=target.log_payloads,
    )
    if config.HasField("model_name_header"):
        single.model_name_header = config.model_name_header
    return single


def _check_ai_proxy_advanced(label: str, config: snapshot_pb2.AiProxyConfig) -> None:
    if not config.targets:
        raise CompileError(f"{label}: ai-proxy-advanced needs at least one target")
    _check_model_policy(label, config)
    for index, target in enumerate(config.targets):
        if target.connect_timeout < 0 or target.read_timeout < 0:
            raise CompileError(f"{label}: targets[{index}] has a negative timeout")
    route_types = {target.route_type or config.route_type for target in config.targets}
    if len(route_types) > 1:
        raise CompileError(
            f"{label}: every target needs the same route_type, got {', '.join(sorted(route_types))}"
        )
    for index, target in enumerate(config.targets):
        target_label = f"{label} targets[{index}]"
        _check_ai_proxy(target_label, _target_config(config, target))
        if target.weight < 1:
            raise CompileError(f"{target_label}: weight must be at least 1, got {target.weight}")
    _check_algorithm(label, config)
    _check_balancer_options(label, config.balancer)


def _check_algorithm(label: str, config: snapshot_pb2.AiProxyConfig) -> None:
    """A known balancer algorithm, with what it needs of the balancer and the targets."""
    balancer = config.balancer
    algorithm = balancer.algorithm or "round-robin"
    if algorithm not in ALGORITHMS:
        raise CompileError(
            f'{label}: unknown balancer.algorithm "{algorithm}" '
            f"(supported: {', '.join(ALGORITHMS)})"
        )
    if algorithm == CONSISTENT_HASHING and not balancer.hash_on_header:
        raise CompileError(f"{label}: algorithm consistent-hashing needs balancer.hash_on_header")
    if algorithm == PRIORITY and len({t.priority for t in config.targets}) < 2:
        raise CompileError(
            f"{label}: algorithm priority needs targets with at least two different priorities"
        )
    if algorithm == COST:
        for index, target in enumerate(config.targets):
            if _target_cost(target) is None:
                raise CompileError(
                    f"{label} targets[{index}]: algorithm cost needs model.options.input_cost "
                    "and output_cost (decimal strings)"
                )


def _check_balancer_options(label: str, balancer: snapshot_pb2.AiProxyBalancer) -> None:
    """Failover criteria, strategies and counts the balancer knows."""
    for criterion in balancer.failover_criteria:
        if criterion not in FAILOVER_CRITERIA:
            raise CompileError(
                f'{label}: unknown failover criterion "{criterion}" '
                f"(supported: {', '.join(sorted(FAILOVER_CRITERIA))})"
            )
    strategy = balancer.tokens_count_strategy
    if strategy and strategy not in TOKENS_COUNT_STRATEGIES:
        raise CompileError(f'{label}: unknown balancer.tokens_count_strategy "{strategy}"')
    latency = balancer.latency_strategy
    if latency and latency not in LATENCY_STRATEGIES:
        raise CompileError(f'{label}: unknown balancer.latency_strategy "{latency}"')
    for name in (
        "retries",
        "max_fails",
        "fail_timeout",
        "connect_timeout",
        "read_timeout",
        "write_timeout",
    ):
        if getattr(balancer, name) < 0:
            raise CompileError(f"{label}: balancer.{name} is negative")


def _target_cost(target: snapshot_pb2.AiProxyTarget) -> Decimal | None:
    options = target.model.options
    if not options.input_cost or not options.output_cost:
        return None
    try:
        cost = Decimal(options.input_cost) + Decimal(options.output_cost)
    except InvalidOperation:
        return None
    return cost if cost.is_finite() and cost >= 0 else None


def _is_dns_label(value: str) -> bool:
    return value.replace("-", "").isalnum() and value.isascii() and len(value) <= 63


def _resolve_plugins(route: snapshot_pb2.Route, plugins: list[snapshot_pb2.Plugin]) -> _Resolved:
    """Pick each plugin kind for ``route``: route-scoped > service-scoped > global (Kong)."""
    best: dict[str, tuple[int, snapshot_pb2.Plugin]] = {}
    for plugin in plugins:
        if plugin.consumer_id:
            # Consumer-scoped plugins need the consumer, known only after key-auth; not yet used.
            continue
        if plugin.route_id:
            if plugin.route_id != route.id or (
                plugin.service_id and plugin.service_id != route.service_id
            ):
                continue
            rank = 3 if plugin.service_id else 2
        elif plugin.service_id:
            if plugin.service_id != route.service_id:
                continue
            rank = 1
        else:
            rank = 0
        kind = _KIND.get(plugin.name, plugin.name)
        current = best.get(kind)
        if current is None or rank > current[0]:
            best[kind] = (rank, plugin)
    key_auth = best.get(KEY_AUTH)
    ai_proxy = best.get(AI_PROXY)
    return _Resolved(
        key_auth=key_auth[1].key_auth if key_auth else None,
        ai_proxy=ai_proxy[1].ai_proxy if ai_proxy else None,
        advanced=ai_proxy is not None and ai_proxy[1].name == AI_PROXY_ADVANCED,
    )


def _compile_key_auth(
    config: snapshot_pb2.KeyAuthConfig, consumers: dict[str, Consumer]
) -> KeyAuthPolicy:
    names = tuple(config.key_names) or _DEFAULT_KEY_NAMES
    realm = config.realm
    return KeyAuthPolicy(
        header_names=frozenset(name.lower().encode("latin-1") for name in names),
        query_names=frozenset(names),
        key_in_query=config.key_in_query,
        key_in_bearer=config.key_in_bearer,
        hide_credentials=config.hide_credentials,
        key_in_body=config.key_in_body,
        anonymous=consumers.get(config.anonymous_consumer_id)
        if config.anonymous_consumer_id
        else None,
        run_on_preflight=config.run_on_preflight if config.HasField("run_on_preflight") else True,
        www_authenticate=((b"www-authenticate", f'Key realm="{realm}"'.encode()),) if realm else (),
    )


def _gemini_url(config: snapshot_pb2.AiProxyConfig) -> str:
    """A Gemini target's URL template ({model} and {operation} filled per request).

    An upstream_url with a path is Kong's full URL, used as is; one without a path is a base
    URL the provider's own path is appended to, as is the Vertex AI endpoint's.
    """
    options = config.model.options
    gemini = options.gemini
    base = options.upstream_url.rstrip("/")
    if options.upstream_url and urlsplit(options.upstream_url).path.strip("/"):
        return options.upstream_url
    if not gemini.project_id:
        return (base or DEFAULT_URLS["gemini"][ROUTE_TYPE_CHAT]) + GEMINI_PATH
    if not base:
        endpoint = gemini.api_endpoint or vertex_host(gemini.location_id)
        base = (endpoint if "://" in endpoint else "https://" + endpoint).rstrip("/")
    if gemini.endpoint_id:
        path = VERTEX_ENDPOINT_PATH.format(
            project=gemini.project_id, location=gemini.location_id, endpoint=gemini.endpoint_id
        )
        return f"{base}{path}:{OPERATION_PLACEHOLDER}"
    path = VERTEX_PATH.format(project=gemini.project_id, location=gemini.location_id)
    return f"{base}{path}{MODEL_PLACEHOLDER}:{OPERATION_PLACEHOLDER}"


def _has_path(url: str) -> bool:
    return urlsplit(url).path not in ("", "/")


def _upstream_url(config: snapshot_pb2.AiProxyConfig) -> str:
    options = config.model.options
    provider, route_type = config.model.provider, config.route_type
    if provider == "gemini":
        return _gemini_url(config)
    if wire_provider(config) == "ollama":
        return ollama_url(options.upstream_url)
    if provider == "cohere" and options.upstream_url:
        return cohere_url(options.upstream_url)
    if options.upstream_url:
        return options.upstream_url
    if provider == "bedrock":
        return bedrock_base_url(options.bedrock.aws_region)
    if provider in OPENAI_COMPATIBLE_PROVIDERS:
        url = compatible_url(config)
        assert url is not None  # check_compatible refused the route otherwise
        return url
    if provider == "azure":
        base = f"https://{options.azure_instance}.openai.azure.com"
        if route_type == ROUTE_TYPE_PRESERVE:
            return base
        version = options.azure_api_version or DEFAULT_AZURE_API_VERSION
        return (
            f"{base}/openai/deployments/{quote(options.azure_deployment_id, safe='')}/"
            f"{AZURE_PATHS[route_type]}?{urlencode({'api-version': version})}"
        )
    return DEFAULT_URLS[provider][route_type]


def _translator(config: snapshot_pb2.AiProxyConfig) -> Translator:
    return translator_for(
        provider=wire_provider(config),
        route_type=config.route_type,
        llm_format=config.llm_format or LLM_FORMAT_OPENAI,
    )


def _timeout(connect_ms: int, read_ms: int) -> Timeouts | None:
    if not connect_ms and not read_ms:
        return None
    connect = connect_ms / 1000 if connect_ms else _DEFAULT_CONNECT_S
    return Timeouts(
        # Waiting for a pooled connection counts as connecting.
        connect=connect * 4,
        sock_connect=connect,
        sock_read=read_ms / 1000 if read_ms else _DEFAULT_READ_S,
    )


def _compile_ai_proxy_advanced(
    config: snapshot_pb2.AiProxyConfig,
) -> tuple[AiProxyPolicy, Balancer]:
    balancer_config = config.balancer
    targets = [
        BalancerTarget(
            translator=_translator(_target_config(config, target)),
            policy=_compile_ai_proxy(
                _target_config(config, target),
                # A target's own timeouts win over the balancer's, field by field.
                timeout=_timeout(
                    target.connect_timeout or balancer_config.connect_timeout,
                    target.read_timeout or balancer_config.read_timeout,
                ),
                model_policy=config,
            ),
            weight=target.weight,
            priority=target.priority,
            cost=_target_cost(target),
            description=target.description,
        )
        for target in config.targets
    ]
    balancer = Balancer(
        targets=targets,
        algorithm=balancer_config.algorithm or "round-robin",
        hash_on_header=balancer_config.hash_on_header,
        # Kong's default is 5; each target is tried at most once anyway.
        retries=balancer_config.retries if balancer_config.HasField("retries") else 5,
        failover_criteria=tuple(balancer_config.failover_criteria) or DEFAULT_FAILOVER_CRITERIA,
        tokens_count_strategy=balancer_config.tokens_count_strategy or "total-tokens",
        latency_strategy=balancer_config.latency_strategy or "e2e",
        max_fails=balancer_config.max_fails,
        fail_timeout_ms=balancer_config.fail_timeout or DEFAULT_FAIL_TIMEOUT_MS,
        # A digest, so the balancer does not hold another copy of the provider keys.
        fingerprint=hashlib.sha256(config.SerializeToString(deterministic=True)).digest(),
    )
    return targets[0].policy, balancer


def _compile_ai_proxy(
    config: snapshot_pb2.AiProxyConfig,
    *,
    timeout: Timeouts | None = None,
    model_policy: snapshot_pb2.AiProxyConfig | None = None,
) -> AiProxyPolicy:
    provider = config.model.provider
    url = kong_options.with_upstream_path(_upstream_url(config), config.model.options.upstream_path)
    auth = config.auth
    body_params: tuple[tuple[str, str], ...] = ()
    query: tuple[tuple[str, str], ...] = ()
    credentials: ServiceAccountTokens | None = None
    if provider == "gemini":
        # The URL is completed per request (model, operation, alt=sse): the key joins then.
        if auth.param_name:
            query = ((auth.param_name, auth.param_value),)
        if auth.gcp_use_service_account:
            try:
                info = None
                if auth.gcp_service_account_json:
                    info = parse_service_account(auth.gcp_service_account_json, label="ai-proxy")
                credentials = ServiceAccountTokens(info=info, token_url=auth.gcp_oauth_token_url)
            except ConfigError as exc:
                raise CompileError(f"ai-proxy: {exc}") from None
    elif auth.param_name and auth.param_location == "query":
        url += ("&" if urlsplit(url).query else "?") + urlencode(
            {auth.param_name: auth.param_value}
        )
    elif auth.param_name:
        body_params = ((auth.param_name, auth.param_value),)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    headers: list[tuple[bytes, bytes]] = []
    if auth.header_name:
        if any(c in auth.header_name + auth.header_value for c in "\r\n\0"):
            # Written into the upstream request as is: a line break would inject headers.
            raise CompileError("ai-proxy: auth header name or value contains a line break")
        headers.append((auth.header_name.lower().encode("latin-1"), auth.header_value.encode()))
    signer = None
    base_url = ""
    if provider == "bedrock":
        bedrock = config.model.options.bedrock
        signer = shared_signer(
            region=bedrock.aws_region,
            access_key_id=auth.aws_access_key_id,
            secret_access_key=auth.aws_secret_access_key,
            assume_role_arn=bedrock.aws_assume_role_arn,
            role_session_name=bedrock.aws_role_session_name,
            sts_endpoint_url=bedrock.aws_sts_endpoint_url,
        )
        # A URL without a path is a base: the model and operation are appended per request.
        if not _has_path(url):
            base_url = url.rstrip("/")
    if provider == "anthropic" and config.route_type == ROUTE_TYPE_CHAT:
        # The route's version replaces the client's, so one route speaks one API version.
        version = config.model.options.anthropic_version or DEFAULT_ANTHROPIC_VERSION
        headers.append((b"anthropic-version", version.encode("latin-1")))
    return AiProxyPolicy(
        route_type=config.route_type,
        target=ProviderTarget(
            provider=provider,
            url=url,
            origin=f"{parts.scheme}://{parts.hostname}:{port}",
            auth_headers=tuple(headers),
            auth_body_params=body_params,
            auth_query=query,
            credentials=credentials,
            signer=signer,
            base_url=base_url,
            allow_override=auth.allow_override,
            query_auth_name=auth.param_name
            if auth.param_name and (provider == "gemini" or auth.param_location == "query")
            else "",
        ),
        model=config.model.name,
        max_tokens=config.model.options.max_tokens,
        llm_format=config.llm_format or LLM_FORMAT_OPENAI,
        model_aliases=MappingProxyType(dict((model_policy or config).model_aliases)),
        model_allow_list=frozenset((model_policy or config).model_allow_list),
        timeout=timeout,
        anthropic_version=config.model.options.anthropic_version if provider == "bedrock" else "",
        deny_streaming=config.response_streaming == kong_options.STREAMING_DENY,
        max_body_bytes=config.max_request_body_size,
        # Kong's default is true: unset means on.
        model_name_header=config.model_name_header
        if config.HasField("model_name_header")
        else True,
        defaults=kong_options.request_defaults(
            config, provider=wire_provider(config), route_type=config.route_type
        ),
        model_alias=config.model.model_alias,
        log_payloads=config.log_payloads,
    )
