"""``GET <route>/models`` and ``GET /v1/models``: the models a consumer may ask for.

Agent frameworks and SDKs list models at start-up (``client.models.list()``). A route serves:
its fixed model, else its allow-list; its aliases; on ai-proxy-advanced, every target's model.
A route that passes the client's model through with no allow-list names no model of its own.
``GET /v1/models`` where no route's path covers it lists the models of every route the
caller's key opens. Preserve routes pass ``/models`` to the provider like any other path.
"""

from __future__ import annotations

from dataplane.config.keys import authenticate
from dataplane.errors import Rejection
from dataplane.http.asgi import Scope
from dataplane.proxy.runtime import CompiledRoute, RuntimeConfig
from dataplane.translate.models import model_list, model_object

RESERVED_MODELS_PATH = "/v1/models"
_SUFFIXES = ("/models", "/v1/models")


def models_request(subpath: str) -> tuple[bool, str | None]:
    """Whether ``subpath`` (below a route's prefix) asks for models, and which one if any."""
    path = subpath.rstrip("/")
    for suffix in _SUFFIXES:
        if path == suffix:
            return True, None
        if path.startswith(suffix + "/") and len(path) > len(suffix) + 1:
            return True, path[len(suffix) + 1 :]
    return False, None


def route_models(route: CompiledRoute) -> list[tuple[str, str]]:
    """(model, owner) pairs a route serves, in a stable order, without duplicates."""
    policy = route.ai_proxy
    if policy is None:
        return []
    found: dict[str, str] = {}
    owner = policy.target.provider
    if route.balancer is not None:
        for target in route.balancer.targets:
            if target.policy.model:
                found.setdefault(target.policy.model, target.policy.target.provider)
            if target.policy.model_alias:
                # Kong's model_alias: a name clients may ask for (it picks the target).
                found.setdefault(target.policy.model_alias, target.policy.target.provider)
    elif policy.model:
        found[policy.model] = owner
    for model in sorted(policy.model_allow_list):
        found.setdefault(model, owner)
    for alias in sorted(policy.model_aliases):
        found.setdefault(alias, owner)
    return list(found.items())


def answer_on_route(route: CompiledRoute, model: str | None) -> bytes:
    """The model list (or one model) of ``route``; Rejection 404 for a model it does not serve."""
    policy = route.ai_proxy
    llm_format = policy.llm_format if policy is not None else "openai"
    models = route_models(route)
    if model is None:
        return model_list(llm_format, models)
    for name, owner in models:
        if name == model:
            return model_object(llm_format, name, owner)
    raise Rejection(
        404,
        f"The model '{model}' does not exist or is not served by this route.",
        type="invalid_request_error",
        code="model_not_found",
        param="model",
    )


def answer_for_key(config: RuntimeConfig, scope: Scope) -> bytes:
    """``GET /v1/models`` outside every route: the models of the routes the caller's key opens
    (routes without key-auth count); Rejection 401 when a key is needed and none opens any."""
    found: dict[str, str] = {}
    refusal: Rejection | None = None
    opened = False
    for route in config.routes:
        if route.ai_proxy is None:
            continue
        try:
            authenticate(route.key_auth, config.consumers_by_key_hash, scope)
        except Rejection as exc:
            refusal = refusal or exc
            continue
        opened = True
        for model, owner in route_models(route):
            found.setdefault(model, owner)
    if not opened and refusal is not None:
        raise refusal
    return model_list("openai", list(found.items()))
