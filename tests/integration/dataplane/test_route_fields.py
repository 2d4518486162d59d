"""Kong's route fields, served: hosts, headers and regex paths pick the route; strip_path,
preserve_host and https-only routes behave as in Kong; a route this data plane cannot compile
answers 503 naming it while the others serve."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from dataplane.http.server import serve_http
from dataplane.proxy.compiler import compile_isolating
from dataplane.proxy.gateway import Gateway
from meterline.dataplane.v1 import snapshot_pb2

BODY = {"model": "client-model", "messages": [{"role": "user", "content": "hi"}]}


def _ai_proxy(
    route_id: str, url: str, *, model: str = "", route_type: str = "llm/v1/chat", provider="openai"
) -> snapshot_pb2.Plugin:
    return snapshot_pb2.Plugin(
        id=f"ai-{route_id}",
        name="ai-proxy",
        route_id=route_id,
        enabled=True,
        ai_proxy=snapshot_pb2.AiProxyConfig(
            route_type=route_type,
            auth=snapshot_pb2.AiProxyAuth(header_name="Authorization", header_value="Bearer sk-p"),
            model=snapshot_pb2.AiProxyModel(
                provider=provider,
                name=model,
                options=snapshot_pb2.AiProxyModelOptions(upstream_url=url),
            ),
        ),
    )


def _snapshot(url: str, *routes: tuple[snapshot_pb2.Route, str]) -> snapshot_pb2.Snapshot:
    """One service; each route with its own ai-proxy to the fake, naming ``model``."""
    snapshot = snapshot_pb2.Snapshot(
        services=[snapshot_pb2.Service(id="s", name="ai", url="http://ai.invalid")]
    )
    for route, model in routes:
        route.service_id = "s"
        route.id = route.id or route.name
        snapshot.routes.append(route)
        snapshot.plugins.append(_ai_proxy(route.id, url, model=model))
    return snapshot


@asynccontextmanager
async def _serving(snapshot: snapshot_pb2.Snapshot) -> AsyncIterator[httpx.AsyncClient]:
    gateway = Gateway(node_id="dp", usage_sink=lambda event: None)
    gateway.apply(compile_isolating(snapshot, version="v1"))
    try:
        async with serve_http(gateway) as address, httpx.AsyncClient(base_url=address.url) as http:
            yield http
    finally:
        await gateway.aclose()


async def test_hosts_headers_and_regex_paths_pick_the_route(fake) -> None:
    snapshot = _snapshot(
        fake.chat_url,
        (snapshot_pb2.Route(name="prefix", paths=["/ai"]), "by-prefix"),
        (
            snapshot_pb2.Route(name="regex", paths=[r"~/ai/v\d+/chat"], regex_priority=1),
            "by-regex",
        ),
        (snapshot_pb2.Route(name="host", paths=["/ai"], hosts=["*.tenant.example"]), "by-host"),
        (
            snapshot_pb2.Route(
                name="header",
                paths=["/ai"],
                headers=[snapshot_pb2.RouteHeader(name="X-Tier", values=["gold"])],
            ),
            "by-header",
        ),
    )

    async def served_model(path: str, headers: dict[str, str] | None = None) -> str:
        response = await http.post(path, json=BODY, headers=headers)
        assert response.status_code == 200, response.text
        return fake.provider.requests[-1].body["model"]

    async with _serving(snapshot) as http:
        assert await served_model("/ai/chat/completions") == "by-prefix"
        assert await served_model("/ai/v2/chat/completions") == "by-regex"
        assert await served_model("/ai/chat/completions", {"host": "a.tenant.example"}) == "by-host"
        assert await served_model("/ai/chat/completions", {"x-tier": "GOLD"}) == "by-header"
        missing = await http.post("/other", json=BODY)
        assert missing.status_code == 404
        assert missing.json()["error"]["message"] == "no Route matched with those values"


async def test_strip_path_decides_the_path_a_preserve_route_forwards(fake) -> None:
    base = fake.address.url
    snapshot = snapshot_pb2.Snapshot(
        services=[snapshot_pb2.Service(id="s", name="ai", url="http://ai.invalid")],
        routes=[
            snapshot_pb2.Route(id="strip", name="strip", service_id="s", paths=["/strip"]),
            snapshot_pb2.Route(id="keep", name="keep", service_id="s", paths=["/keep"]),
            snapshot_pb2.Route(id="rx", name="rx", service_id="s", paths=[r"~/rx/\d+"]),
        ],
        plugins=[
            _ai_proxy(route_id, base, route_type="preserve") for route_id in ("strip", "keep", "rx")
        ],
    )
    snapshot.routes[0].strip_path = True
    snapshot.routes[1].strip_path = False
    snapshot.routes[2].strip_path = True
    async with _serving(snapshot) as http:
        for path, upstream in [
            ("/strip/v1/chat/completions", "/v1/chat/completions"),
            ("/keep/v1/chat/completions", "/keep/v1/chat/completions"),
            # A regex path strips all it matched.
            ("/rx/42/v1/chat/completions", "/v1/chat/completions"),
        ]:
            response = await http.post(path, json=BODY)
            assert response.status_code == 200, response.text
            assert fake.provider.requests[-1].path == upstream


async def test_preserve_host_sends_the_clients_host(fake) -> None:
    snapshot = _snapshot(
        fake.chat_url,
        (snapshot_pb2.Route(name="kept", paths=["/kept"], preserve_host=True), "m"),
        (snapshot_pb2.Route(name="own", paths=["/own"]), "m"),
    )
    async with _serving(snapshot) as http:
        await http.post("/kept/chat/completions", json=BODY, headers={"host": "api.client.test"})
        assert fake.provider.requests[-1].headers["host"] == "api.client.test"
        await http.post("/own/chat/completions", json=BODY, headers={"host": "api.client.test"})
        assert fake.provider.requests[-1].headers["host"] == fake.address.url.split("//")[1]


async def test_an_https_only_route_answers_plain_http_as_kong(fake) -> None:
    snapshot = _snapshot(
        fake.chat_url,
        (snapshot_pb2.Route(name="tls", paths=["/tls"], protocols=["https"]), "m"),
        (
            snapshot_pb2.Route(
                name="moved", paths=["/moved"], protocols=["https"], https_redirect_status_code=308
            ),
            "m",
        ),
    )
    async with _serving(snapshot) as http:
        upgrade = await http.post("/tls/chat/completions", json=BODY)
        assert upgrade.status_code == 426
        assert upgrade.headers["upgrade"] == "TLS/1.2, HTTP/1.1"
        assert upgrade.json()["error"]["message"] == "Please use HTTPS protocol"
        moved = await http.post(
            "/moved/chat/completions?x=1", json=BODY, headers={"host": "gw.example"}
        )
        assert moved.status_code == 308
        assert moved.headers["location"] == "https://gw.example/moved/chat/completions?x=1"
    assert fake.provider.requests == []


async def test_a_route_this_data_plane_cannot_compile_answers_503_and_the_rest_serve(fake) -> None:
    snapshot = _snapshot(
        fake.chat_url,
        (snapshot_pb2.Route(name="good", paths=["/good"]), "m"),
        (snapshot_pb2.Route(name="future", paths=["/future"]), "m"),
    )
    snapshot.plugins[1].ai_proxy.model.provider = "provider-of-the-future"
    async with _serving(snapshot) as http:
        assert (await http.post("/good/chat/completions", json=BODY)).status_code == 200
        refused = await http.post("/future/chat/completions", json=BODY)
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert error["code"] == "route_not_served"
    assert error["message"].startswith(
        'route "future" is not served by this data plane: plugin "ai-future": unknown provider '
        '"provider-of-the-future"'
    )
    assert len(fake.provider.requests) == 1
