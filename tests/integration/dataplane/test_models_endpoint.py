"""GET /models on a route and GET /v1/models: what SDKs list at start-up."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from dataplane.proxy.compiler import compile_snapshot

from .test_providers import KEY, build_snapshot, claude, oai, stack  # noqa: F401 (fixture)


async def test_openai_sdk_lists_and_retrieves_the_models_of_a_route(stack) -> None:  # noqa: F811
    # Given the route "oa-claude", whose ai-proxy fixes the model
    async with oai(stack, "oa-claude") as client:
        # When the openai SDK lists models, then it gets that model, owned by its provider
        listed = await client.models.list()
        assert [(m.id, m.owned_by) for m in listed.data] == [("claude-fake-large", "anthropic")]
        # And retrieving it works; another model is a 404 in OpenAI's shape
        model = await client.models.retrieve("claude-fake-large")
        assert model.id == "claude-fake-large"
        with pytest.raises(openai.NotFoundError) as missing:
            await client.models.retrieve("gpt-4o")
    assert missing.value.body["code"] == "model_not_found"
    # Listing is free: no provider call, no usage
    assert stack.anthropic_fake.requests == [] and stack.events == []


async def test_anthropic_sdk_lists_models_in_anthropics_shape(stack) -> None:  # noqa: F811
    # Given an Anthropic-format route with an allow-list and an alias
    config = build_snapshot(stack.openai_fake_url, stack.anthropic_fake_url)
    for plugin in config.plugins:
        if plugin.id == "p-claude":
            plugin.ai_proxy.model_allow_list.extend(["claude-fake-small", "claude-fake-large"])
            plugin.ai_proxy.model_aliases["fast"] = "claude-fake-small"
    stack.gateway.apply(compile_snapshot(config, version="v2"))
    async with claude(stack) as client:
        page = await client.models.list()
    assert [m.id for m in page.data] == ["claude-fake-large", "claude-fake-small", "fast"]
    assert all(m.type == "model" for m in page.data)


async def test_v1_models_outside_routes_lists_what_the_key_opens(stack) -> None:  # noqa: F811
    async with httpx.AsyncClient(base_url=stack.url) as http:
        # With a key: the models of every ai-proxy route (preserve routes name none)
        response = await http.get("/v1/models", headers={"authorization": f"Bearer {KEY}"})
        assert response.status_code == 200
        ids = {m["id"] for m in response.json()["data"]}
        assert "claude-fake-large" in ids
        # Without one: 401, as the routes would answer
        refused = await http.get("/v1/models")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "missing_api_key"


async def test_a_wrong_key_cannot_list_models(stack) -> None:  # noqa: F811
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/oa-claude", api_key="nope", max_retries=0)
    async with client:
        with pytest.raises(openai.AuthenticationError):
            await client.models.list()
    bad = anthropic.AsyncAnthropic(base_url=f"{stack.url}/claude", api_key="nope", max_retries=0)
    async with bad:
        with pytest.raises(anthropic.AuthenticationError):
            await bad.models.list()
