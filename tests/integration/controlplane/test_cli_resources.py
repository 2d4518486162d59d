"""The CLI's nouns and verbs against a real in-process control plane.

``meterline <noun> list|get|delete``: one table style, --output json|yaml, newest first,
paging, humane local times (--utc), one-line errors with a non-zero exit.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
import yaml

from controlplane.cli.main import main
from meterline.admin.v1 import customers_pb2, gateway_pb2, usage_pb2
from meterline.dataplane.v1 import usage_pb2 as dp_usage_pb2

Cli = Callable[..., Awaitable[tuple[int, str, str]]]


@pytest.fixture
def cli(harness, capsys: pytest.CaptureFixture[str]) -> Cli:
    async def run(*args: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, [*args, "--cp", harness.address])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def paris(monkeypatch: pytest.MonkeyPatch):
    """The local zone of this process is Paris (CET in November) for the test."""
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _columns(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()]


async def test_gateway_nouns_list_get_delete(harness, walkthrough, cli: Cli, tmp_path) -> None:
    # Given the walkthrough applied with the CLI, and a consumer created an hour later
    path = tmp_path / "walkthrough.yaml"
    path.write_text(walkthrough)
    code, out, _ = await cli("apply", str(path))
    assert code == 0 and "created route chat" in out
    harness.clock.set(harness.clock.now() + timedelta(hours=1))
    await harness.gateway.CreateConsumer(
        gateway_pb2.CreateConsumerRequest(consumer=gateway_pb2.Consumer(username="beta"))
    )

    # list: upper-case headers, aligned columns, times to the second, a count on stderr
    code, out, err = await cli("routes", "list", "--utc")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "SERVICE", "PATHS", "METHODS", "CREATED"]
    assert lines[1].split() == ["chat", "ai-service", "/chat", "-", "2026-11-01", "12:00:00", "UTC"]
    assert lines[0].index("SERVICE") == lines[1].index("ai-service")
    assert err == "1 route\n"

    # newest first: beta (created an hour later) before acme-corp
    code, out, err = await cli("consumers", "list", "--utc")
    assert [row[0] for row in _columns(out)] == ["USERNAME", "beta", "acme-corp"]
    assert _columns(out)[2][1:] == ["-", "1", "2026-11-01", "12:00:00", "UTC"]
    assert err == "2 consumers\n"

    # paging: --limit, then the token stderr names
    code, out, err = await cli("consumers", "list", "--limit", "1")
    assert [row[0] for row in _columns(out)] == ["USERNAME", "beta"]
    token = err.split("--page-token ")[1].strip()
    code, out, err = await cli("consumers", "list", "--limit", "1", "--page-token", token)
    assert [row[0] for row in _columns(out)] == ["USERNAME", "acme-corp"]
    assert err == "1 consumer\n"

    # get, as JSON and YAML: the whole resource, RFC 3339 UTC times
    code, out, _ = await cli("routes", "get", "chat", "-o", "json")
    route = json.loads(out)
    assert (route["route_name"], route["service"], route["paths"]) == (
        "chat",
        "services/ai-service",
        ["/chat"],
    )
    assert route["create_time"] == "2026-11-01T12:00:00Z"
    code, out, _ = await cli("services", "list", "--output", "yaml")
    assert [s["url"] for s in yaml.safe_load(out)] == ["http://127.0.0.1:9/"]
    code, out, _ = await cli("consumers", "get", "acme-corp", "--json")
    assert json.loads(out)["key_count"] == 1

    # plugins: list shows their scope; get by id; secrets stay redacted
    code, out, _ = await cli("plugins", "list", "-o", "json")
    plugins = {p["plugin_name"]: p for p in json.loads(out)}
    assert set(plugins) == {"ai-proxy", "key-auth"}
    code, out, _ = await cli("plugins", "list")
    scopes = {row[1]: row[2] for row in _columns(out)[1:]}
    assert scopes == {"ai-proxy": "service=ai-service", "key-auth": "global"}
    proxy_id = plugins["ai-proxy"]["id"]
    code, out, _ = await cli("plugins", "get", proxy_id, "-o", "yaml")
    assert yaml.safe_load(out)["config"]["auth"]["header_value"] == "<redacted>"

    # delete: a service routes use is refused, in one line, nothing changed
    code, out, err = await cli("services", "delete", "ai-service")
    assert code == 1 and out == ""
    assert err.startswith("error: FAILED_PRECONDITION: ") and "chat" in err
    assert err.count("\n") == 1
    code, out, _ = await cli("routes", "delete", "chat")
    assert (code, out) == (0, "deleted route chat\n")
    code, out, _ = await cli("plugins", "delete", proxy_id)
    assert code == 0
    code, out, _ = await cli("services", "delete", "ai-service")
    assert (code, out) == (0, "deleted service ai-service\n")
    code, out, _ = await cli("consumers", "delete", "beta")
    assert code == 0

    # what is gone is gone, and says so
    code, out, err = await cli("routes", "get", "chat")
    assert code == 1 and err == "error: NOT_FOUND: route 'chat' not found\n"
    code, out, err = await cli("routes", "list")
    assert (code, out, err) == (0, "", "no routes\n")
    listed = await harness.gateway.ListPlugins(gateway_pb2.ListPluginsRequest())
    assert [p.plugin_name for p in listed.plugins] == ["key-auth"]
    consumers = await harness.gateway.ListConsumers(gateway_pb2.ListConsumersRequest())
    assert [c.username for c in consumers.consumers] == ["acme-corp"]


async def test_times_are_local_unless_utc(harness, walkthrough, cli: Cli, paris) -> None:
    await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=walkthrough))
    code, out, _ = await cli("customers", "list")
    assert code == 0 and _columns(out)[1][-3:] == ["2026-11-01", "13:00:00", "CET"]
    _, out, _ = await cli("customers", "list", "--utc")
    assert _columns(out)[1][-3:] == ["2026-11-01", "12:00:00", "UTC"]
    # machine formats keep UTC whatever the zone
    _, out, _ = await cli("customers", "get", "acme", "-o", "json")
    assert json.loads(out)["create_time"] == "2026-11-01T12:00:00Z"


async def test_billing_nouns_list_get_delete(harness, walkthrough, cli: Cli) -> None:
    await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=walkthrough))
    harness.clock.set(harness.clock.now() + timedelta(minutes=5))
    await harness.customers.CreateCustomer(
        customers_pb2.CreateCustomerRequest(
            customer=customers_pb2.Customer(key="typo", display_name="Mistyped")
        )
    )

    code, out, err = await cli("customers", "list")
    rows = _columns(out)
    assert rows[0] == ["KEY", "NAME", "SUBJECTS", "STRIPE", "CREATED"]
    assert [r[0] for r in rows[1:]] == ["typo", "acme"]
    assert err == "2 customers\n"
    code, out, _ = await cli("customers", "get", "acme", "-o", "json")
    assert json.loads(out)["subjects"] == ["acme-corp"]
    # a customer with a subscription is kept for the books; one with nothing goes
    code, _, err = await cli("customers", "delete", "acme")
    assert code == 1 and "FAILED_PRECONDITION" in err and "subscriptions" in err
    code, out, _ = await cli("customers", "delete", "typo")
    assert (code, out) == (0, "deleted customer typo\n")

    code, out, _ = await cli("features", "list")
    assert _columns(out)[1][:3] == ["ai-token", "-", "llm_tokens"]
    assert "provider=openai,type=input" in out
    code, _, err = await cli("features", "delete", "ai-token")
    assert code == 1 and "starter v1" in err

    code, out, err = await cli("plans", "list")
    assert _columns(out)[0][:4] == ["KEY", "VERSION", "STATE", "CURRENCY"]
    assert _columns(out)[1][:6] == ["starter", "v1", "published", "USD", "P1M", "1"]
    assert err == "1 plan version\n"
    code, out, _ = await cli("plans", "get", "starter", "-o", "yaml")
    assert yaml.safe_load(out)["rate_cards"][0]["feature"] == "ai-token"
    code, _, err = await cli("plans", "delete", "starter", "--version", "1")
    assert code == 1 and "only a draft version can be deleted" in err
    code, out, _ = await cli("plans", "new-version", "starter")
    assert out.split()[:3] == ["starter", "v2", "draft"]
    code, out, _ = await cli("plans", "list", "starter")
    assert [r[1] for r in _columns(out)[1:]] == ["v2", "v1"]  # newest first
    code, out, _ = await cli("plans", "delete", "starter", "--version", "2")
    assert (code, out) == (0, "deleted draft plans/starter/versions/2\n")

    code, out, _ = await cli("subscriptions", "list", "--customer", "acme", "-o", "json")
    (sub,) = json.loads(out)
    assert sub["plan"] == "plans/starter/versions/1"
    code, out, _ = await cli("subscription", "get", sub["id"])
    assert _columns(out)[0] == ["ID", "CUSTOMER", "PLAN", "STATE", "START", "END"]
    assert _columns(out)[1][:4] == [sub["id"], "acme", "plans/starter/versions/1", "active"]
    # a running subscription is cancelled, never deleted; one not started yet may be deleted
    code, _, err = await cli("subscriptions", "delete", sub["id"])
    assert code == 1 and "FAILED_PRECONDITION" in err and "cancel it instead" in err
    await harness.customers.CreateCustomer(
        customers_pb2.CreateCustomerRequest(customer=customers_pb2.Customer(key="later"))
    )
    future = customers_pb2.Subscription(customer="customers/later", plan="plans/starter")
    future.start_time.FromDatetime(harness.clock.now() + timedelta(days=30))
    later = await harness.customers.CreateSubscription(
        customers_pb2.CreateSubscriptionRequest(subscription=future)
    )
    code, out, _ = await cli("subscriptions", "delete", later.id)
    assert (code, out) == (0, f"deleted subscription {later.id}\n")
    listed = await harness.customers.ListSubscriptions(customers_pb2.ListSubscriptionsRequest())
    assert [s.id for s in listed.subscriptions] == [sub["id"]]


async def test_usage_list_is_newest_first_and_pages(harness, cli: Cli) -> None:
    # Given three events a minute apart
    t0 = harness.clock.now()
    events = []
    for minute in range(3):
        event = dp_usage_pb2.UsageEvent(
            id=f"r{minute}:input",
            source="dp-test",
            type="llm.tokens",
            subject="acme-corp",
            llm_tokens=dp_usage_pb2.LlmTokens(
                provider="openai",
                model="gpt-4o-mini",
                token_type=dp_usage_pb2.TOKEN_TYPE_INPUT,
                tokens=10 + minute,
                status_code=200,
                route="chat",
                request_id=f"r{minute}",
            ),
        )
        event.time.FromDatetime(t0 + timedelta(minutes=minute))
        events.append(event)
    call = harness.usage_stream.StreamUsage()
    await call.write(dp_usage_pb2.UsageBatch(batch_id="b", events=events))
    assert (await call.read()).accepted_count == 3
    await call.done_writing()

    code, out, err = await cli("usage", "list", "--utc")
    assert code == 0
    rows = _columns(out)
    assert rows[0][:5] == ["TIME", "SUBJECT", "MODEL", "TYPE", "TOKENS"]
    assert [r[-1] for r in rows[1:]] == ["r2:input", "r1:input", "r0:input"]
    assert rows[1][:7] == [
        *("2026-11-01", "12:02:00", "UTC"),
        *("acme-corp", "openai/gpt-4o-mini", "input", "12"),
    ]
    assert err == "3 usage events\n"
    _, out, err = await cli("usage", "list", "--limit", "2", "-o", "json")
    assert [e["id"] for e in json.loads(out)] == ["r2:input", "r1:input"]
    token = err.split("--page-token ")[1].strip()
    _, out, _ = await cli("usage", "list", "--limit", "2", "--page-token", token, "--json")
    assert [e["id"] for e in json.loads(out)] == ["r0:input"]
    # the API keeps its default order (oldest first) for existing clients
    listed = await harness.usage.ListUsageEvents(usage_pb2.ListUsageEventsRequest())
    assert [e.id for e in listed.usage_events] == ["r0:input", "r1:input", "r2:input"]


async def test_a_closed_pipe_ends_quietly(harness) -> None:
    # Given 300 usage events: `meterline usage list | head -1` fills a small pipe
    t0 = harness.clock.now()
    events = []
    for n in range(300):
        event = dp_usage_pb2.UsageEvent(
            id=f"r{n}:output",
            source="dp-test",
            type="llm.tokens",
            subject="acme-corp",
            llm_tokens=dp_usage_pb2.LlmTokens(
                provider="openai",
                model="gpt-4o-mini",
                token_type=dp_usage_pb2.TOKEN_TYPE_OUTPUT,
                tokens=n + 1,
                status_code=200,
                route="chat",
                request_id=f"r{n}",
            ),
        )
        event.time.FromDatetime(t0 + timedelta(seconds=n))
        events.append(event)
    call = harness.usage_stream.StreamUsage()
    await call.write(dp_usage_pb2.UsageBatch(batch_id="many", events=events))
    assert (await call.read()).accepted_count == 300
    await call.done_writing()

    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "controlplane",
        "usage",
        "list",
        "--limit",
        "300",
        "--cp",
        harness.address,
        stdout=write_end,
        stderr=asyncio.subprocess.PIPE,
    )
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        header = await asyncio.to_thread(reader.readline)
    # When the reader is gone, the CLI stops without a traceback
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert header.split()[:2] == ["TIME", "SUBJECT"]
    assert err.decode() == ""
    assert process.returncode == 141


async def test_bad_order_by_is_refused(harness) -> None:
    import grpc

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await harness.gateway.ListRoutes(gateway_pb2.ListRoutesRequest(order_by="name"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "create_time desc" in err.value.details()


async def test_entitlements_list_needs_no_customer_key(harness, walkthrough, cli: Cli) -> None:
    # Given acme (walkthrough) and beta, both on the starter plan
    await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=walkthrough))
    await harness.customers.CreateCustomer(
        customers_pb2.CreateCustomerRequest(customer=customers_pb2.Customer(key="beta"))
    )
    await harness.customers.CreateSubscription(
        customers_pb2.CreateSubscriptionRequest(
            subscription=customers_pb2.Subscription(customer="customers/beta", plan="plans/starter")
        )
    )
    code, out, err = await cli("entitlements", "list")
    assert code == 0
    rows = _columns(out)
    assert rows[0] == [
        "CUSTOMER",
        "FEATURE",
        "TYPE",
        "LIMIT",
        "USAGE",
        "BALANCE",
        "OVERAGE",
        "ACCESS",
        "RESETS",
    ]
    assert sorted((r[0], r[1], r[2], r[-2]) for r in rows[1:]) == [
        ("acme", "ai-token", "boolean", "yes"),
        ("beta", "ai-token", "boolean", "yes"),
    ]
    assert err == "2 entitlements\n"
    code, out, _ = await cli("entitlements", "list", "--customer", "beta", "-o", "json")
    assert [(v["customer"], v["feature"]) for v in json.loads(out)] == [("beta", "ai-token")]
    code, out, err = await cli("entitlements", "list", "--feature", "nothing-like-it")
    assert (code, out, err) == (0, "", "no entitlements\n")


async def test_dataplanes_list_in_the_table_style(harness, cli: Cli) -> None:
    from meterline.dataplane.v1 import config_pb2

    call = harness.config_stream.StreamConfig()
    await call.write(
        config_pb2.ConfigRequest(node=config_pb2.Node(id="edge-1", hostname="h1", version="0.1"))
    )
    await asyncio.wait_for(call.read(), 5)
    code, out, err = await cli("dataplanes", "list", "--utc")
    call.cancel()
    assert code == 0
    rows = _columns(out)
    assert rows[0][:4] == ["NODE", "ID", "HOSTNAME", "VERSION"]
    assert rows[1][:3] == ["edge-1", "h1", "0.1"]
    assert "UTC" in rows[1] and "." not in rows[1][rows[1].index("UTC") - 1]  # no microseconds
    # (the in-process control plane logs to the same stderr)
    assert err.endswith("1 data plane\n")
