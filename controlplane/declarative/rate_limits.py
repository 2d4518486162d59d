"""Validation of Kong's rate-limiting-advanced and ai-rate-limiting-advanced plugin configs.

Kong's field names: ``limit`` and ``window_size`` (lists of the same length: one window per
pair; a window is a number of seconds, or ``second``/``minute``/``hour``/``day``),
``window_type`` (``sliding`` default, ``fixed``), ``identifier`` (``consumer`` default, ``ip``,
``service``, ``header`` + ``header_name``), ``strategy`` (``local`` default, ``redis``) with
``redis.host``/``port``/``database``/``username``/``password``/``timeout`` (ms), ``namespace``,
``fault_tolerant`` (default true), ``hide_client_headers``. ai-rate-limiting-advanced puts the
windows per provider in ``llm_providers: [{name, limit, window_size}]`` and counts what
``tokens_count_strategy`` says: ``total_tokens`` (default), ``prompt_tokens``,
``completion_tokens`` or ``cost`` (then limits are decimal amounts of money).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controlplane.declarative.entry import Entry, describe
from meterline.dataplane.v1 import snapshot_pb2

WINDOW_NAMES = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
WINDOW_TYPES = ("sliding", "fixed")
IDENTIFIERS = ("consumer", "ip", "service", "header")
STRATEGIES = ("local", "redis")
TOKENS_COUNT_STRATEGIES = ("total_tokens", "prompt_tokens", "completion_tokens", "cost")
_COMMON = (
    "window_type",
    "identifier",
    "header_name",
    "strategy",
    "redis",
    "namespace",
    "fault_tolerant",
    "hide_client_headers",
    "error_code",
    "error_message",
)
_REDIS_FIELDS = ("host", "port", "database", "username", "password", "timeout")
# The open-source rate-limiting plugin's windows (fixed, clock-aligned; a month is 30 days).
OSS_WINDOWS = (
    ("second", 1),
    ("minute", 60),
    ("hour", 3600),
    ("day", 86400),
    ("month", 2592000),
    ("year", 31536000),
)
# limit_by values served (as rate-limiting-advanced's identifier of the same name).
OSS_LIMIT_BY = ("consumer", "ip", "service", "header")


def rate_limiting(config: Entry) -> dict[str, Any]:
    """The normalised config of a rate-limiting-advanced plugin (counts requests)."""
    config.check_keys(("limit", "window_size", *_COMMON))
    result = _common(config)
    limits, windows = _windows(config, cost=False)
    result["limit"], result["window_size"] = limits, windows
    return result


def oss_rate_limiting(config: Entry) -> dict[str, Any]:
    """The normalised config of Kong's open-source rate-limiting plugin, kept in Kong's shape.

    Served as a fixed-window rate-limiting-advanced (see :func:`oss_snapshot_config`).
    """
    config.check_keys(
        (
            *(name for name, _ in OSS_WINDOWS),
            "limit_by",
            "header_name",
            "policy",
            "fault_tolerant",
            "hide_client_headers",
            "redis",
            "error_code",
            "error_message",
        )
    )
    result: dict[str, Any] = {}
    _error(config, result)
    bad = False
    for name, _ in OSS_WINDOWS:
        value = config.data.get(name)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or value < 0
            or value != int(value)
        ):
            config.fail_field(name, f"must be a whole number of requests, got {value!r}")
            bad = True
            continue
        result[name] = int(value)
    if not result and not bad:
        config.fail("set at least one of second, minute, hour, day, month or year")
    limit_by = config.string("limit_by", default="consumer")
    if limit_by is not None and limit_by not in OSS_LIMIT_BY:
        config.fail_field(
            "limit_by",
            f'"{limit_by}" is not supported yet (supported: {", ".join(OSS_LIMIT_BY)})',
        )
    result["limit_by"] = limit_by
    result["header_name"] = config.string("header_name", default="") or ""
    if limit_by == "header" and not result["header_name"]:
        config.fail_field("header_name", 'is required with limit_by "header"')
    policy = config.data.get("policy")
    if policy == "cluster":
        config.fail_field("policy", 'must be "local" or "redis" ("cluster" needs a database)')
        result["policy"] = None
    else:
        result["policy"] = config.choice("policy", STRATEGIES, default="local")
    result["fault_tolerant"] = config.boolean("fault_tolerant", default=True)
    result["hide_client_headers"] = config.boolean("hide_client_headers", default=False)
    redis = config.sub("redis")
    result["redis"] = _redis(redis) if redis is not None else {}
    if result["policy"] == "redis" and not result["redis"].get("host"):
        config.fail_field("redis.host", 'is required with policy "redis"')
    return result


def oss_snapshot_config(config: Mapping[str, Any]) -> snapshot_pb2.RateLimitingConfig:
    """The data-plane form of a normalised open-source rate-limiting config: a fixed-window
    rate-limiting-advanced with one window per period set."""
    message = snapshot_config(
        {
            "window_type": "fixed",
            "identifier": config.get("limit_by") or "consumer",
            "header_name": config.get("header_name") or "",
            "strategy": config.get("policy") or "local",
            "redis": config.get("redis") or {},
            "fault_tolerant": config.get("fault_tolerant", True),
            "hide_client_headers": config.get("hide_client_headers", False),
            "error_code": config.get("error_code"),
            "error_message": config.get("error_message"),
            "limit": [config[name] for name, _ in OSS_WINDOWS if config.get(name) is not None],
            "window_size": [size for name, size in OSS_WINDOWS if config.get(name) is not None],
        }
    )
    return message


def ai_rate_limiting(
    config: Entry, *, providers: tuple[str, ...], require_providers: bool = True
) -> dict[str, Any]:
    """The normalised config of an ai-rate-limiting-advanced plugin (counts tokens or cost)."""
    config.check_keys(("llm_providers", "tokens_count_strategy", "policies", *_COMMON))
    result = _common(config)
    strategy = config.choice(
        "tokens_count_strategy", TOKENS_COUNT_STRATEGIES, default="total_tokens"
    )
    result["tokens_count_strategy"] = strategy
    entries = list(config.entries("llm_providers", label="name"))
    if not config.has("llm_providers"):
        if require_providers:
            config.fail_field("llm_providers", "is required (a list of {name, limit, window_size})")
    elif not entries:
        config.fail_field("llm_providers", "must not be empty")
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    for entry in entries:
        entry.check_keys(("name", "limit", "window_size"))
        name = entry.choice("name", providers)
        if name is not None and name in seen:
            entry.fail_field("name", f'repeats provider "{name}"')
        if name is not None:
            seen.add(name)
        limits, windows = _windows(entry, cost=strategy == "cost")
        items.append({"name": name, "limit": limits, "window_size": windows})
    result["llm_providers"] = items
    if config.has("policies"):
        result["policies"] = _policies(config, providers=providers)
    return result


# Kong 3.14's policies[].match[].type values Meterline matches on (consumer_group: none).
MATCH_TYPES = ("consumer", "ip", "header", "model", "provider", "path")


def _policies(config: Entry, *, providers: tuple[str, ...]) -> list[dict[str, Any]]:
    """Kong 3.14's ``policies``: each ``{id, match: [...], limits: [...], window_type}``."""
    policies: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, entry in enumerate(config.entries("policies", label="id")):
        entry.check_keys(("id", "match", "limits", "window_type"))
        # Kong's documented examples leave id out: the policy is then named by its position.
        policy_id = entry.string("id", default=f"policy-{number + 1}")
        if policy_id is not None and policy_id in seen:
            entry.fail_field("id", f'repeats policy "{policy_id}"')
        seen.add(policy_id or "")
        policy: dict[str, Any] = {
            "id": policy_id,
            "window_type": entry.choice("window_type", WINDOW_TYPES, default="sliding"),
            "match": [],
            "limits": [],
        }
        never = False
        for index, match in enumerate(entry.entries("match", label="type")):
            match.check_keys(("type", "key", "values", "partition_by"))
            kind = match.data.get("type")
            if kind == "consumer_group":
                # Meterline has no consumer groups: a policy matching on one never applies.
                entry.note(f"match[{index}].type", "consumer groups are not supported")
                never = True
                continue
            kind = match.choice("type", MATCH_TYPES)
            key = match.string("key", default="") or ""
            if kind == "header" and not key:
                match.fail_field("key", 'is required with type "header" (the header name)')
            values = match.string_list("values") or ()
            if kind == "provider":
                for position, value in enumerate(values):
                    if value not in providers:
                        match.fail_field(f"values[{position}]", f'"{value}" is not a provider')
            policy["match"].append(
                {
                    "type": kind,
                    "key": key,
                    "values": list(values),
                    "partition_by": match.boolean("partition_by", default=False),
                }
            )
        if not entry.has("limits"):
            entry.fail_field("limits", "is required (a list of {limit, window_size})")
        for limit in entry.entries("limits", label="window_size"):
            limit.check_keys(("limit", "window_size", "tokens_count_strategy"))
            strategy = limit.choice(
                "tokens_count_strategy", TOKENS_COUNT_STRATEGIES, default="total_tokens"
            )
            amounts, sizes = _windows(limit, cost=strategy == "cost")
            if len(amounts) != 1 or len(sizes) != 1:
                if amounts and sizes:
                    limit.fail("needs one limit and one window_size")
                continue
            policy["limits"].append(
                {"limit": amounts[0], "window_size": sizes[0], "tokens_count_strategy": strategy}
            )
        if not never:
            policies.append(policy)
    return policies


def _common(config: Entry) -> dict[str, Any]:
    result: dict[str, Any] = {
        "window_type": config.choice("window_type", WINDOW_TYPES, default="sliding"),
        "identifier": config.choice("identifier", IDENTIFIERS, default="consumer"),
        "header_name": config.string("header_name", default="") or "",
        "namespace": config.string("namespace", default="") or "",
        "fault_tolerant": config.boolean("fault_tolerant", default=True),
        "hide_client_headers": config.boolean("hide_client_headers", default=False),
    }
    if result["identifier"] == "header" and not result["header_name"]:
        config.fail_field("header_name", 'is required with identifier "header"')
    _error(config, result)
    strategy = config.data.get("strategy")
    if strategy == "cluster":
        # Kong's "cluster" keeps counters in its database; Meterline's data planes have none.
        config.fail_field("strategy", 'must be "local" or "redis" ("cluster" needs a database)')
        result["strategy"] = None
    else:
        result["strategy"] = config.choice("strategy", STRATEGIES, default="local")
    redis = config.sub("redis")
    result["redis"] = _redis(redis) if redis is not None else {}
    if result["strategy"] == "redis" and not result["redis"].get("host"):
        _no_redis_host(config)
    return result


def _no_redis_host(config: Entry) -> None:
    """Strategy redis without redis.host (Kong's documented ElastiCache/Memorystore examples
    give cluster_nodes instead): say which Kong topologies are not served."""
    config.fail_field(
        "redis.host",
        'is required with strategy "redis" (Redis Cluster, redis.cluster_nodes, and Redis '
        "Sentinel, redis.sentinel_nodes, are not supported yet by data planes of this version)",
    )


def _error(config: Entry, result: dict[str, Any]) -> None:
    """Kong's ``error_code`` and ``error_message`` of a refusal (set ones only)."""
    code = config.data.get("error_code")
    if code is not None:
        # Kong types it as a number: 429.0 is 429.
        if isinstance(code, float) and code.is_integer():
            code = int(code)
        if isinstance(code, bool) or not isinstance(code, int) or not 400 <= code <= 599:
            config.fail_field("error_code", f"must be an HTTP error status (400-599), got {code!r}")
        else:
            result["error_code"] = code
    if config.has("error_message"):
        message = config.string("error_message", required=True)
        if message is not None and any(c in message for c in "\r\n\0"):
            config.fail_field("error_message", "must be one line")
        result["error_message"] = message


def _redis(redis: Entry) -> dict[str, Any]:
    redis.check_keys(_REDIS_FIELDS)
    result: dict[str, Any] = {}
    for key in ("host", "username", "password"):
        if redis.has(key):
            result[key] = redis.string(key, required=True)
    port = redis.integer("port", minimum=1)
    if port is not None and port > 65535:
        redis.fail_field("port", f"must be at most 65535, got {port}")
    result["port"] = port or 6379
    result["database"] = redis.integer("database", minimum=0) or 0
    result["timeout"] = redis.integer("timeout", minimum=1) or 2000
    return result


def _windows(entry: Entry, *, cost: bool) -> tuple[list[Any], list[int]]:
    """``limit`` and ``window_size``: lists of the same length (a scalar is a list of one)."""
    limits = _as_list(entry, "limit")
    sizes = _as_list(entry, "window_size")
    if limits is None or sizes is None:
        return [], []
    if len(limits) != len(sizes):
        entry.fail(
            f"limit has {len(limits)} value(s) but window_size has {len(sizes)}: "
            "one limit per window"
        )
    return _window_limits(entry, limits, cost=cost), _window_sizes(entry, sizes)


def _window_limits(entry: Entry, limits: list[Any], *, cost: bool) -> list[Any]:
    """Each ``limit``: a decimal string for cost, else a non-negative integer (5.0 is 5)."""
    out_limits: list[Any] = []
    for index, value in enumerate(limits):
        key = f"limit[{index}]"
        where = f"{entry.prefix}{key}"
        if cost:
            amount = Entry(entry.where, {key: value}, entry.problems, prefix=entry.prefix).decimal(
                key, required=True, kong_number=True
            )
            if amount is not None:
                out_limits.append(str(amount))
        elif isinstance(value, float) and value.is_integer():
            # Kong types limits as numbers: 5.0 is 5 requests.
            if value < 0:
                entry.problems.add(entry.where, f"{where} must not be negative, got {value}")
            else:
                out_limits.append(int(value))
        elif isinstance(value, bool) or not isinstance(value, int):
            entry.problems.add(entry.where, f"{where} must be an integer, got {describe(value)}")
        elif value < 0:
            entry.problems.add(entry.where, f"{where} must not be negative, got {value}")
        else:
            out_limits.append(value)
    return out_limits


def _window_sizes(entry: Entry, sizes: list[Any]) -> list[int]:
    """Each ``window_size``: seconds > 0 or a window's name, each window once."""
    out_sizes: list[int] = []
    for index, value in enumerate(sizes):
        where = f"{entry.prefix}window_size[{index}]"
        if isinstance(value, str) and value.lower() in WINDOW_NAMES:
            size = WINDOW_NAMES[value.lower()]
        elif isinstance(value, int) and not isinstance(value, bool) and value > 0:
            size = value
        else:
            if isinstance(value, str):
                shown = f'"{value}"'
            elif isinstance(value, int) and not isinstance(value, bool):
                shown = str(value)
            else:
                shown = describe(value)
            entry.problems.add(
                entry.where,
                f"{where} {shown} is not a window: a number of seconds > 0, or "
                "second, minute, hour or day",
            )
            continue
        if size in out_sizes:
            entry.problems.add(entry.where, f"{where} repeats the window of {size} s")
            continue
        out_sizes.append(size)
    return out_sizes


def _as_list(entry: Entry, key: str) -> list[Any] | None:
    value = entry.data.get(key)
    if value is None:
        entry.fail_field(key, "is required")
        return None
    if not isinstance(value, list):
        value = [value]
    if not value:
        entry.fail_field(key, "must not be empty")
        return None
    return list(value)


def snapshot_config(config: Mapping[str, Any]) -> snapshot_pb2.RateLimitingConfig:
    """The data-plane form of a normalised (ai-)rate-limiting-advanced config."""
    redis: Mapping[str, Any] = config.get("redis") or {}
    message = snapshot_pb2.RateLimitingConfig(
        window_type=str(config.get("window_type") or "sliding"),
        identifier=str(config.get("identifier") or "consumer"),
        header_name=str(config.get("header_name") or ""),
        strategy=str(config.get("strategy") or "local"),
        redis=snapshot_pb2.RateLimitRedis(
            host=str(redis.get("host") or ""),
            port=int(redis.get("port") or 6379),
            database=int(redis.get("database") or 0),
            username=str(redis.get("username") or ""),
            password=str(redis.get("password") or ""),
            timeout=int(redis.get("timeout") or 2000),
        ),
        namespace=str(config.get("namespace") or ""),
        fault_tolerant=bool(config.get("fault_tolerant", True)),
        hide_client_headers=bool(config.get("hide_client_headers", False)),
        tokens_count_strategy=str(config.get("tokens_count_strategy") or ""),
        error_code=int(config.get("error_code") or 0),
        error_message=str(config.get("error_message") or ""),
    )
    for policy in config.get("policies") or ():
        wire = message.policies.add(
            id=str(policy.get("id") or ""), window_type=str(policy.get("window_type") or "")
        )
        for match in policy.get("match") or ():
            wire.matches.add(
                type=str(match.get("type") or ""),
                key=str(match.get("key") or ""),
                values=[str(value) for value in match.get("values") or ()],
                partition_by=bool(match.get("partition_by")),
            )
        for limit in policy.get("limits") or ():
            wire.limits.add(
                limit=str(limit["limit"]),
                window_size=int(limit["window_size"]),
                tokens_count_strategy=str(limit.get("tokens_count_strategy") or "total_tokens"),
            )
    groups: list[tuple[str, Mapping[str, Any]]] = [("", config)]
    if "llm_providers" in config:
        groups = [(str(item.get("name") or ""), item) for item in config["llm_providers"]]
    for provider, group in groups:
        for limit, size in zip(
            group.get("limit") or (), group.get("window_size") or (), strict=False
        ):
            message.windows.add(limit=str(limit), window_size=int(size), provider=provider)
    return message
