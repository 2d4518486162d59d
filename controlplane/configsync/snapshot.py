"""Building the data-plane snapshot of a gateway config, with a content-hash version.

The same config always gives byte-identical snapshots and the same version: ids are uuid5 of
each entity's name (plugins: their scope) in a fixed namespace, entities are sorted, and the
version hashes the deterministic serialisation. So the version changes exactly when the
content does, which is what lets data planes ACK/NACK versions and the control plane push only
on change. The snapshot carries provider secrets (ai-proxy auth), as data planes need them: it
must only ever be sent to data planes, never logged.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from controlplane.budgets.types import BudgetMode
from controlplane.catalog.types import LLM_TOKENS, SettlementMode
from controlplane.declarative import rate_limits
from controlplane.entitlements.types import ConsumerAccess, EntitlementValue
from controlplane.errors import InvalidArgument
from controlplane.gateway.types import Consumer, GatewayConfig, Plugin, PluginName, Route, Service
from meterline.dataplane.v1 import snapshot_pb2

if TYPE_CHECKING:
    from controlplane.credits.live import GatewayCredits

# Fixed forever: changing it changes every id and so every data plane's config.
ID_NAMESPACE = uuid.UUID("6f1d7f0e-3c59-5d8a-9a51-0b6c2e4d7a10")
VERSION_PREFIX = "sha256:"


@dataclass(frozen=True)
class BuiltSnapshot:
    """A snapshot and its version: ``"sha256:"`` + 16 hex digits of its serialised bytes."""

    snapshot: snapshot_pb2.Snapshot
    version: str
    # The control plane's count of usage stores when the build began (not content: the
    # version ignores it); see ConfigResponse.usage_sequence.
    usage_sequence: int = 0
    # False when a usage store overlapped the build: the snapshot may hold usage stored after
    # ``usage_sequence`` (counted twice by a data plane until a later snapshot says it holds
    # it). A config stream sends the next build even of the same version (session.py).
    exact: bool = True


@functools.lru_cache(maxsize=1 << 17)
def entity_id(kind: str, *parts: str) -> str:
    """The stable id of a gateway entity, from its kind and its identifying names.

    Cached: every build names the same entities again (a uuid5 per consumer, route and
    plugin was a third of building a 10,000-consumer snapshot).
    """
    # "\x1f" cannot appear in names, so different part lists never collide.
    return str(uuid.uuid5(ID_NAMESPACE, "\x1f".join((kind, *parts))))


def build_snapshot(
    config: GatewayConfig,
    entitlements: Sequence[ConsumerAccess] = (),
    *,
    balance_slices: int = 0,
    credits: Mapping[str, GatewayCredits] | None = None,
) -> BuiltSnapshot:
    """The data-plane snapshot of ``config`` and the consumers' entitlement state.

    InvalidArgument if a reference is dangling. Entitlement state of subjects that are not
    consumers of ``config`` is left out: no data plane can authenticate them.
    ``balance_slices``: how many data planes share the balances (0: slicing off). It is only
    carried when it matters (more than one, and some entitlement state), so that data planes
    joining or leaving do not change the version of a snapshot without balances.
    ``credits``: customer -> its live credits (``controlplane.credits.live``); the consumers of
    a customer listed get ``ConsumerEntitlements.credits`` and its credit_only prices say so.
    """
    if balance_slices < 0:
        raise InvalidArgument(f"balance_slices must be >= 0, got {balance_slices}")
    service_ids = {service.name: entity_id("service", service.name) for service in config.services}
    route_ids = {route.name: entity_id("route", route.name) for route in config.routes}
    consumer_ids = {
        consumer.username: entity_id("consumer", consumer.username) for consumer in config.consumers
    }
    snapshot = snapshot_pb2.Snapshot(
        services=[_service(s, service_ids) for s in sorted(config.services, key=_by_name)],
        routes=[_route(r, route_ids, service_ids) for r in sorted(config.routes, key=_by_name)],
        consumers=[
            _consumer(c, consumer_ids)
            for c in sorted(config.consumers, key=lambda consumer: consumer.username)
        ],
        plugins=[
            _plugin(p, service_ids=service_ids, route_ids=route_ids, consumer_ids=consumer_ids)
            for p in sorted(config.plugins, key=lambda plugin: plugin.scope)
            if _limits_something(p)
        ],
        consumer_entitlements=[
            _consumer_entitlements(
                access, consumer_ids[access.subject], (credits or {}).get(access.customer)
            )
            for access in sorted(entitlements, key=lambda a: a.subject)
            if access.subject in consumer_ids
        ],
    )
    if balance_slices > 1 and snapshot.consumer_entitlements:
        snapshot.balance_slices = balance_slices
    digest = hashlib.sha256(snapshot.SerializeToString(deterministic=True)).hexdigest()
    return BuiltSnapshot(snapshot=snapshot, version=VERSION_PREFIX + digest[:16])


def _limits_something(plugin: Plugin) -> bool:
    """False for an ai-rate-limiting-advanced without any window (no llm_providers limit and no
    policy limit, e.g. every policy matched consumer groups): data planes refuse a rate limit
    without one."""
    if plugin.name is not PluginName.AI_RATE_LIMITING_ADVANCED:
        return True
    return any(item.get("limit") for item in plugin.config.get("llm_providers") or ()) or any(
        policy.get("limits") for policy in plugin.config.get("policies") or ()
    )


def _by_name(entity: Service | Route) -> str:
    return entity.name


def _resolve(ids: Mapping[str, str], kind: str, name: str, owner: str) -> str:
    try:
        return ids[name]
    except KeyError:
        raise InvalidArgument(f'{owner} refers to unknown {kind} "{name}"') from None


def _service(service: Service, ids: Mapping[str, str]) -> snapshot_pb2.Service:
    return snapshot_pb2.Service(id=ids[service.name], name=service.name, url=service.url)


def _route(
    route: Route, ids: Mapping[str, str], service_ids: Mapping[str, str]
) -> snapshot_pb2.Route:
    message = snapshot_pb2.Route(
        id=ids[route.name],
        name=route.name,
        service_id=_resolve(service_ids, "service", route.service, f'route "{route.name}"'),
        paths=list(route.paths),
        methods=list(route.methods),
        strip_path=route.strip_path,
    )
    _route_attributes(message, route.attributes)
    return message


def _route_attributes(message: snapshot_pb2.Route, attributes: Mapping[str, Any]) -> None:
    """Kong's further route fields, as stored (the data plane decides what it honours)."""
    message.hosts.extend(str(host) for host in attributes.get("hosts") or ())
    for name, values in sorted((attributes.get("headers") or {}).items()):
        listed = values if isinstance(values, list) else [values]
        message.headers.add(name=str(name), values=[str(value) for value in listed])
    message.protocols.extend(str(p) for p in attributes.get("protocols") or ())
    message.preserve_host = bool(attributes.get("preserve_host") or False)
    message.regex_priority = int(attributes.get("regex_priority") or 0)
    message.path_handling = str(attributes.get("path_handling") or "")
    message.https_redirect_status_code = int(attributes.get("https_redirect_status_code") or 0)
    for key in ("request_buffering", "response_buffering"):
        if attributes.get(key) is not None:
            setattr(message, key, bool(attributes[key]))
    message.snis.extend(str(sni) for sni in attributes.get("snis") or ())


def _consumer(consumer: Consumer, ids: Mapping[str, str]) -> snapshot_pb2.Consumer:
    return snapshot_pb2.Consumer(
        id=ids[consumer.username],
        username=consumer.username,
        custom_id=consumer.custom_id,
        # Key order means nothing; sorting keeps the version a function of the key set.
        key_hashes=sorted(consumer.key_hashes),
    )


def balance_id(value: EntitlementValue) -> str:
    """One id per balance: every consumer of a customer spends the same one."""
    return entity_id("balance", value.customer, value.subscription, value.feature)


def credit_id(customer: str) -> str:
    """One id per customer's credits: every consumer of the customer spends the same ones."""
    return entity_id("credits", customer)


def _money_text(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _consumer_entitlements(
    access: ConsumerAccess, consumer_id: str, credits: GatewayCredits | None = None
) -> snapshot_pb2.ConsumerEntitlements:
    message = snapshot_pb2.ConsumerEntitlements(
        consumer_id=consumer_id,
        username=access.subject,
        customer=access.customer,
        has_access=access.has_access,
    )
    for value in sorted(access.metered, key=lambda v: v.feature):
        # Only what the gateway meters itself can be enforced by it.
        if value.balance is None or value.meter != LLM_TOKENS.key:
            continue
        item = message.metered.add(
            balance_id=balance_id(value),
            feature=value.feature,
            filters=dict(value.filters),
            has_access=value.has_access,
            balance=value.balance.balance,
            soft_limit=value.soft_limit,
            limit=value.limit or 0,
        )
        item.period_end_time.FromDatetime(value.balance.period_end)
    message.currency = access.currency
    credit_only = credits.credit_only if credits is not None else frozenset()
    for price in access.prices:
        message.prices.add(
            feature=price.feature,
            filters=dict(price.filters),
            unit_price=str(price.unit_price),
            settlement_mode=SettlementMode.CREDIT_ONLY.value
            if price.feature in credit_only
            else "",
        )
    if credits is not None:
        message.credits.credit_id = credit_id(access.customer)
        message.credits.balance = _money_text(credits.balance)
        for feature, left in sorted(credits.feature_balances.items()):
            message.credits.feature_balances[feature] = _money_text(left)
    for state in sorted(access.budgets, key=lambda b: b.budget.id):
        budget = message.budgets.add(
            budget_id=state.budget.id,
            amount=str(state.budget.amount),
            spent=str(state.spent),
            hard=state.budget.mode is BudgetMode.HARD,
        )
        budget.period_end_time.FromDatetime(state.period_end)
    return message


def _plugin(
    plugin: Plugin,
    *,
    service_ids: Mapping[str, str],
    route_ids: Mapping[str, str],
    consumer_ids: Mapping[str, str],
) -> snapshot_pb2.Plugin:
    owner = f"{plugin.name.value} plugin"
    message = snapshot_pb2.Plugin(
        id=entity_id("plugin", *plugin.scope),
        name=plugin.name.value,
        service_id=_resolve(service_ids, "service", plugin.service, owner)
        if plugin.service
        else "",
        route_id=_resolve(route_ids, "route", plugin.route, owner) if plugin.route else "",
        consumer_id=(
            _resolve(consumer_ids, "consumer", plugin.consumer, owner) if plugin.consumer else ""
        ),
        enabled=plugin.enabled,
    )
    if plugin.name is PluginName.KEY_AUTH:
        message.key_auth.CopyFrom(key_auth_config(plugin.config))
        anonymous = plugin.config.get("anonymous")
        if anonymous:
            # Kong names the anonymous consumer by id or username; the wire carries the id.
            ids = set(consumer_ids.values())
            message.key_auth.anonymous_consumer_id = (
                str(anonymous)
                if str(anonymous) in ids
                else _resolve(consumer_ids, "consumer", str(anonymous), f"{owner} (anonymous)")
            )
    elif plugin.name is PluginName.AI_PROXY:
        message.ai_proxy.CopyFrom(ai_proxy_config(plugin.config))
    elif plugin.name is PluginName.AI_PROXY_ADVANCED:
        message.ai_proxy.CopyFrom(ai_proxy_advanced_config(plugin.config))
    elif plugin.name in (PluginName.RATE_LIMITING_ADVANCED, PluginName.AI_RATE_LIMITING_ADVANCED):
        message.rate_limiting.CopyFrom(rate_limits.snapshot_config(plugin.config))
    elif plugin.name is PluginName.RATE_LIMITING:
        # Data planes serve Kong's open-source plugin as a fixed-window
        # rate-limiting-advanced (its id stays the rate-limiting plugin's).
        message.name = PluginName.RATE_LIMITING_ADVANCED.value
        message.rate_limiting.CopyFrom(rate_limits.oss_snapshot_config(plugin.config))
    else:  # pragma: no cover - PluginName has no other members
        raise InvalidArgument(f'plugin "{plugin.name}" has no snapshot form')
    return message


def _text(config: Mapping[str, Any], key: str, default: str = "") -> str:
    # Stored configs may hold JSON nulls for unset fields; proto3 strings say "unset" with "".
    value = config.get(key)
    return default if value is None else str(value)


def _flag(config: Mapping[str, Any], key: str, default: bool) -> bool:
    value = config.get(key)
    return default if value is None else bool(value)


def _log_payloads(config: Mapping[str, Any]) -> bool:
    """Kong's ``logging.log_payloads`` (default false)."""
    logging = config.get("logging")
    return isinstance(logging, Mapping) and logging.get("log_payloads") is True


def key_auth_config(config: Mapping[str, Any]) -> snapshot_pb2.KeyAuthConfig:
    """The typed key-auth config of a normalised config dict (defaults for missing fields)."""
    return snapshot_pb2.KeyAuthConfig(
        key_names=[str(name) for name in config.get("key_names") or ["apikey"]],
        hide_credentials=_flag(config, "hide_credentials", False),
        key_in_query=_flag(config, "key_in_query", True),
        key_in_bearer=_flag(config, "key_in_bearer", True),
        key_in_body=_flag(config, "key_in_body", False),
        # Unset (Kong's default, true) unless the config turns it off.
        run_on_preflight=False if config.get("run_on_preflight") is False else None,
        realm=_text(config, "realm"),
    )


def _proxy_fields(config: Mapping[str, Any], message: snapshot_pb2.AiProxyConfig) -> None:
    """Kong's response_streaming, max_request_body_size and model_name_header."""
    streaming = _text(config, "response_streaming")
    message.response_streaming = "" if streaming == "allow" else streaming
    message.max_request_body_size = int(config.get("max_request_body_size") or 0)
    if isinstance(config.get("model_name_header"), bool):
        message.model_name_header = config["model_name_header"]


def _model_policy(config: Mapping[str, Any], message: snapshot_pb2.AiProxyConfig) -> None:
    message.model_allow_list.extend(str(m) for m in config.get("model_allow_list") or ())
    for alias, model in sorted((config.get("model_aliases") or {}).items()):
        message.model_aliases[str(alias)] = str(model)


def ai_proxy_advanced_config(config: Mapping[str, Any]) -> snapshot_pb2.AiProxyConfig:
    """The typed ai-proxy-advanced config (targets and balancer) of a normalised config dict."""
    targets = list(config.get("targets") or ())
    balancer: Mapping[str, Any] = config.get("balancer") or {}
    message = snapshot_pb2.AiProxyConfig(
        route_type=_text(targets[0] if targets else {}, "route_type", "llm/v1/chat"),
        llm_format=_text(config, "llm_format", "openai"),
        balancer=snapshot_pb2.AiProxyBalancer(
            algorithm=_text(balancer, "algorithm", "round-robin"),
            hash_on_header=_text(balancer, "hash_on_header"),
            failover_criteria=[str(c) for c in balancer.get("failover_criteria") or ()],
            connect_timeout=int(balancer.get("connect_timeout") or 0),
            read_timeout=int(balancer.get("read_timeout") or 0),
            write_timeout=int(balancer.get("write_timeout") or 0),
            tokens_count_strategy=_text(balancer, "tokens_count_strategy"),
            latency_strategy=_text(balancer, "latency_strategy"),
            max_fails=int(balancer.get("max_fails") or 0),
            fail_timeout=int(balancer.get("fail_timeout") or 0),
        ),
    )
    if balancer.get("retries") is not None:
        message.balancer.retries = int(balancer["retries"])
    for target in targets:
        single = ai_proxy_config(target)
        message.targets.add(
            route_type=single.route_type,
            auth=single.auth,
            model=single.model,
            weight=int(target.get("weight") or 100),
            description=_text(target, "description"),
            priority=int(target.get("priority") or 0),
            connect_timeout=int(target.get("connect_timeout") or 0),
            read_timeout=int(target.get("read_timeout") or 0),
            log_payloads=single.log_payloads,
        )
    _model_policy(config, message)
    _proxy_fields(config, message)
    return message


def _gemini_options(gemini: Mapping[str, Any] | None) -> snapshot_pb2.GeminiOptions | None:
    """Kong's model.options.gemini (None when absent, so the field stays unset)."""
    if not gemini:
        return None
    return snapshot_pb2.GeminiOptions(
        api_endpoint=_text(gemini, "api_endpoint"),
        project_id=_text(gemini, "project_id"),
        location_id=_text(gemini, "location_id"),
        endpoint_id=_text(gemini, "endpoint_id"),
    )


def _bedrock_options(bedrock: Mapping[str, Any]) -> snapshot_pb2.AiProxyBedrockOptions:
    return snapshot_pb2.AiProxyBedrockOptions(
        aws_region=_text(bedrock, "aws_region"),
        aws_assume_role_arn=_text(bedrock, "aws_assume_role_arn"),
        aws_role_session_name=_text(bedrock, "aws_role_session_name"),
        aws_sts_endpoint_url=_text(bedrock, "aws_sts_endpoint_url"),
    )


def _provider_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Kong's mistral_format, llama2_format, dashscope and databricks options (set ones only)."""
    fields: dict[str, Any] = {
        key: _text(options, key) for key in ("mistral_format", "llama2_format") if options.get(key)
    }
    dashscope = options.get("dashscope")
    if isinstance(dashscope, Mapping):
        international = dashscope.get("international")
        fields["dashscope"] = snapshot_pb2.DashscopeOptions(
            international=international if isinstance(international, bool) else None
        )
    databricks = options.get("databricks")
    if isinstance(databricks, Mapping):
        fields["databricks"] = snapshot_pb2.DatabricksOptions(
            workspace_instance_id=_text(databricks, "workspace_instance_id")
        )
    return fields


def ai_proxy_config(config: Mapping[str, Any]) -> snapshot_pb2.AiProxyConfig:
    """The typed ai-proxy config of a normalised config dict (defaults for missing fields)."""
    auth: Mapping[str, Any] = config.get("auth") or {}
    model: Mapping[str, Any] = config.get("model") or {}
    options: Mapping[str, Any] = model.get("options") or {}
    message = snapshot_pb2.AiProxyConfig(
        route_type=_text(config, "route_type", "llm/v1/chat"),
        llm_format=_text(config, "llm_format", "openai"),
        connect_timeout=int(config.get("connect_timeout") or 0),
        read_timeout=int(config.get("read_timeout") or 0),
        write_timeout=int(config.get("write_timeout") or 0),
        log_payloads=_log_payloads(config),
        auth=snapshot_pb2.AiProxyAuth(
            header_name=_text(auth, "header_name"),
            header_value=_text(auth, "header_value"),
            param_name=_text(auth, "param_name"),
            param_value=_text(auth, "param_value"),
            param_location=_text(auth, "param_location"),
            gcp_use_service_account=bool(auth.get("gcp_use_service_account")),
            gcp_service_account_json=_text(auth, "gcp_service_account_json"),
            gcp_oauth_token_url=_text(auth, "gcp_oauth_token_url"),
            aws_access_key_id=_text(auth, "aws_access_key_id"),
            aws_secret_access_key=_text(auth, "aws_secret_access_key"),
            allow_override=bool(auth.get("allow_override")),
        ),
        model=snapshot_pb2.AiProxyModel(
            provider=_text(model, "provider"),
            name=_text(model, "name"),
            model_alias=_text(model, "model_alias"),
            options=snapshot_pb2.AiProxyModelOptions(
                upstream_url=_text(options, "upstream_url"),
                anthropic_version=_text(options, "anthropic_version"),
                max_tokens=int(options.get("max_tokens") or 0),
                input_cost=_text(options, "input_cost"),
                output_cost=_text(options, "output_cost"),
                azure_instance=_text(options, "azure_instance"),
                azure_deployment_id=_text(options, "azure_deployment_id"),
                azure_api_version=_text(options, "azure_api_version"),
                gemini=_gemini_options(options.get("gemini")),
                bedrock=_bedrock_options(options.get("bedrock") or {}),
                **_provider_options(options),
                **_sampling_options(options),
            ),
        ),
    )
    _model_policy(config, message)
    _proxy_fields(config, message)
    return message


def _sampling_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Kong's temperature, top_p, top_k (set ones only) and upstream_path."""
    fields: dict[str, Any] = {
        key: float(options[key]) for key in ("temperature", "top_p") if options.get(key) is not None
    }
    if options.get("top_k") is not None:
        fields["top_k"] = int(options["top_k"])
    if options.get("upstream_path"):
        fields["upstream_path"] = str(options["upstream_path"])
    return fields
