"""Gateway entities in Kong's vocabulary. Entities refer to each other by name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class PluginName(StrEnum):
    KEY_AUTH = "key-auth"
    AI_PROXY = "ai-proxy"
    AI_PROXY_ADVANCED = "ai-proxy-advanced"
    RATE_LIMITING_ADVANCED = "rate-limiting-advanced"
    # Kong's open-source rate-limiting (served as a fixed-window rate-limiting-advanced).
    RATE_LIMITING = "rate-limiting"
    AI_RATE_LIMITING_ADVANCED = "ai-rate-limiting-advanced"


# ``attributes`` of an entity: the Kong fields a file set that Meterline stores as written
# (``tags``, a route's ``hosts``/``headers``/``protocols``..., a service's timeouts), so that
# dump gives them back and select_tags can find the entity. JSON-shaped.


def tags_of(attributes: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(tag) for tag in attributes.get("tags") or ())


@dataclass(frozen=True)
class Service:
    name: str
    url: str
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    name: str
    service: str
    paths: tuple[str, ...]
    methods: tuple[str, ...] = ()
    strip_path: bool = True
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Consumer:
    username: str
    custom_id: str = ""
    # Hashes ("sha256:<hex>") of the consumer's keys; plain keys are never stored.
    key_hashes: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plugin:
    """A plugin instance; its scope is the set of non-empty service/route/consumer names.

    ``config`` is the plugin's validated, normalised config (JSON-shaped, defaults filled in).
    A plugin is identified by (name, service, route, consumer), as Kong allows one plugin of a
    kind per scope.
    """

    name: PluginName
    service: str = ""
    route: str = ""
    consumer: str = ""
    enabled: bool = True
    config: Mapping[str, Any] = field(default_factory=dict)
    # tags, instance_name, protocols, ordering as written.
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def scope(self) -> tuple[str, str, str, str]:
        return (self.name.value, self.service, self.route, self.consumer)


@dataclass(frozen=True)
class GatewayConfig:
    """The whole gateway configuration, as a declarative file describes it."""

    services: tuple[Service, ...] = ()
    routes: tuple[Route, ...] = ()
    consumers: tuple[Consumer, ...] = ()
    plugins: tuple[Plugin, ...] = ()
