"""The admin UsageService over gRPC, and `meterline usage ingest|query` on a control plane."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import grpc

from meterline.admin.v1 import catalog_pb2, usage_pb2, usage_pb2_grpc
from support.processes import free_port, grpc_ready, meterline, wait_until

from .conftest import T0, Harness

SUM = usage_pb2.USAGE_METER_AGGREGATION_SUM
COUNT = usage_pb2.USAGE_METER_AGGREGATION_COUNT

API_CALLS = usage_pb2.UsageMeter(
    key="api_calls",
    event_type="api.request",
    aggregation=SUM,
    value_property="$.units",
    group_by={"region": "$.region"},
)


def cloudevent(id: str, *, minutes: int = 0, subject: str = "acme", **data: object) -> str:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": id,
            "source": "billing-app",
            "type": "api.request",
            "subject": subject,
            "time": (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z"),
            "data": data,
        }
    )


async def code_of(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    raise AssertionError("the call succeeded")


async def test_meters_are_created_listed_and_refused_with_clear_errors(harness: Harness) -> None:
    created = await harness.usage.CreateMeter(usage_pb2.CreateMeterRequest(meter=API_CALLS))
    assert created.name == "meters/api_calls" and created.create_time.seconds > 0
    listed = await harness.usage.ListMeters(usage_pb2.ListUsageMetersRequest())
    assert [m.key for m in listed.meters] == ["llm_tokens", "api_calls"]
    got = await harness.usage.GetMeter(usage_pb2.GetMeterRequest(name="meters/llm_tokens"))
    assert got.group_by["model"] == "$.model"

    bad = [
        (API_CALLS, grpc.StatusCode.ALREADY_EXISTS, "already exists"),
        (
            usage_pb2.UsageMeter(key="x", event_type="e", value_property="$.n"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "aggregation is required",
        ),
        (
            usage_pb2.UsageMeter(key="x", event_type="e", aggregation=SUM, value_property="$.a[*]"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "must select one value",
        ),
        (
            usage_pb2.UsageMeter(key="x", event_type="e", aggregation=COUNT, value_property="$.n"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "takes no value_property",
        ),
        (
            usage_pb2.UsageMeter(key="llm_tokens", event_type="e", aggregation=COUNT),
            grpc.StatusCode.INVALID_ARGUMENT,
            "reserved",
        ),
    ]
    for meter, code, message in bad:
        got_code, details = await code_of(
            harness.usage.CreateMeter(usage_pb2.CreateMeterRequest(meter=meter))
        )
        assert got_code == code and message in details, (details, message)
    listed = await harness.usage.ListMeters(usage_pb2.ListUsageMetersRequest())
    assert len(listed.meters) == 2  # nothing was stored by the refused requests
    assert (await code_of(harness.usage.GetMeter(usage_pb2.GetMeterRequest(name="meters/no"))))[
        0
    ] == grpc.StatusCode.NOT_FOUND


async def test_features_bill_operator_meters_by_their_dimensions(harness: Harness) -> None:
    await harness.usage.CreateMeter(usage_pb2.CreateMeterRequest(meter=API_CALLS))
    feature = catalog_pb2.Feature(key="eu-calls", meter="api_calls", filters={"region": "eu"})
    created = await harness.catalog.CreateFeature(catalog_pb2.CreateFeatureRequest(feature=feature))
    assert created.meter == "api_calls"
    for meter, filters, message in [
        ("api_calls", {"model": "x"}, "'model' is not a dimension of meter api_calls (region)"),
        ("nope", {}, "'nope' is not a meter"),
    ]:
        bad = catalog_pb2.Feature(key="bad", meter=meter, filters=filters)
        code, details = await code_of(
            harness.catalog.CreateFeature(catalog_pb2.CreateFeatureRequest(feature=bad))
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details, details
    code, details = await code_of(
        harness.usage.DeleteMeter(usage_pb2.DeleteMeterRequest(name="meters/api_calls"))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "eu-calls" in details


async def test_ingest_reports_each_rejected_event_and_query_windows(harness: Harness) -> None:
    await harness.usage.CreateMeter(usage_pb2.CreateMeterRequest(meter=API_CALLS))
    events = [
        cloudevent("1", minutes=10, units=2, region="eu"),
        cloudevent("2", minutes=70, units=3, region="eu"),
        cloudevent("3", minutes=75, units=5, region="us"),
        "{not json",
        cloudevent("4", units="lots"),
    ]
    response = await harness.usage.IngestEvents(usage_pb2.IngestEventsRequest(events_json=events))
    assert (response.accepted, response.duplicates) == (3, 0)
    assert [(r.index, r.id) for r in response.rejected] == [(3, ""), (4, "4")]
    assert response.rejected[0].reason.startswith("not JSON")
    again = await harness.usage.IngestEvents(usage_pb2.IngestEventsRequest(events_json=events[:3]))
    assert (again.accepted, again.duplicates) == (0, 3)

    start = T0.replace(minute=5)
    request = usage_pb2.QueryMeterRequest(
        meter="api_calls",
        subjects=["acme"],
        group_by=["region"],
        window_size=usage_pb2.WINDOW_SIZE_HOUR,
    )
    request.start_time.FromDatetime(start)
    result = await harness.usage.QueryMeter(request)
    assert [
        (
            r.window_start.ToDatetime().hour,
            r.window_start.ToDatetime().minute,
            r.group["region"],
            r.value,
        )
        for r in result.rows
    ] == [(12, 5, "eu", "2"), (13, 0, "eu", "3"), (13, 0, "us", "5")]

    code, details = await code_of(
        harness.usage.QueryMeter(usage_pb2.QueryMeterRequest(meter="api_calls", group_by=["x"]))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'x' is not a dimension" in details
    big = usage_pb2.IngestEventsRequest(events_json=["{}"] * 10_001)
    code, details = await code_of(harness.usage.IngestEvents(big))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "at most 10000" in details


def test_cli_ingests_a_jsonl_file_and_queries_a_real_control_plane(tmp_path: Path) -> None:
    import subprocess
    import sys

    port = free_port()
    address = f"127.0.0.1:{port}"
    log = (tmp_path / "cp.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controlplane",
            "controlplane",
            "--db",
            f"sqlite:///{tmp_path / 'cp.db'}",
            "--listen",
            address,
            "--insecure-dev",
            "--invoice-job-interval",
            "0",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: grpc_ready(address), what="the control plane")
        with grpc.insecure_channel(address) as channel:
            stub = usage_pb2_grpc.UsageServiceStub(channel)  # type: ignore[no-untyped-call, unused-ignore]
            stub.CreateMeter(usage_pb2.CreateMeterRequest(meter=API_CALLS))
        lines = [
            cloudevent("a", minutes=1, units=1.5, region="eu"),
            "",
            cloudevent("b", minutes=61, units=2, region="eu"),
            cloudevent("c", minutes=62, units=4, region="us", subject="globex"),
            cloudevent("d", units=1, region="eu").replace("api.request", "api.unknown"),
        ]
        events = tmp_path / "events.jsonl"
        events.write_text("\n".join(lines) + "\n")

        first = meterline("usage", "ingest", str(events), "--cp", address)
        assert first.returncode == 1, first.stderr
        assert first.stdout.strip() == "accepted 3, duplicates 0, rejected 1"
        assert "line 5 (id 'd'): rejected: no meter reads events of type 'api.unknown'" in (
            first.stderr
        )
        again = meterline("usage", "ingest", "-", "--cp", address, input=lines[0] + "\n")
        assert again.returncode == 0 and "accepted 0, duplicates 1" in again.stdout

        query = meterline(
            "usage",
            "query",
            "api_calls",
            "--subject",
            "acme",
            "--group-by",
            "region",
            "--window",
            "hour",
            "--json",
            "--cp",
            address,
        )
        assert query.returncode == 0, query.stderr
        rows = json.loads(query.stdout)["rows"]
        assert [(r["window_start"], r["region"], r["value"]) for r in rows] == [
            ("2026-11-01T12:00:00Z", "eu", "1.5"),
            ("2026-11-01T13:00:00Z", "eu", "2"),
        ]
        table = meterline("usage", "query", "api_calls", "--group-by", "subject", "--cp", address)
        assert table.stdout.split("\n")[0].split() == ["SUBJECT", "VALUE"]
        assert table.stdout.split("\n")[1].split() == ["acme", "3.5"]
        bad = meterline("usage", "query", "nope", "--cp", address)
        assert bad.returncode == 1 and "unknown meter 'nope'" in bad.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


async def test_cli_lists_meters(harness: Harness) -> None:
    # The in-process server answers the CLI (run in a thread so the loop keeps serving).
    await harness.usage.CreateMeter(usage_pb2.CreateMeterRequest(meter=API_CALLS))
    result = await asyncio.to_thread(meterline, "usage", "meters", "--cp", harness.address)
    assert result.returncode == 0 and "api_calls" in result.stdout and "llm_tokens" in result.stdout


OPERATOR_BILLING = """\
_format_version: "3.0"
billing:
  meters:
    - {key: api_calls, event_type: api.request, value_property: $.units,
       aggregation: SUM, group_by: {region: $.region}}
  features:
    - {key: calls, meter: api_calls, filters: {region: eu}}
  plans:
    - key: api
      name: API
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - feature: calls
          price:
            type: tiered
            mode: graduated
            tiers:
              - {up_to: "10", unit_price: "1"}
              - {unit_price: "0.5"}
  customers:
    - {key: acme, name: Acme, subjects: [acme]}
  subscriptions:
    - {customer: acme, plan: api, start: now}
"""


async def test_an_operator_meter_from_yaml_is_billed_on_the_invoice(harness: Harness) -> None:
    from meterline.admin.v1 import billing_pb2, gateway_pb2

    # Given the meter and a feature on it, applied from YAML (twice: no change).
    first = await harness.gateway.ApplyConfig(
        gateway_pb2.ApplyConfigRequest(document=OPERATOR_BILLING)
    )
    assert "created meter api_calls" in first.changes
    again = await harness.gateway.ApplyConfig(
        gateway_pb2.ApplyConfigRequest(document=OPERATOR_BILLING)
    )
    assert "created meter api_calls" not in again.changes
    # When fractional eu units and us units arrive,
    events = [
        cloudevent("1", minutes=1, units=7.5, region="eu"),
        cloudevent("2", minutes=90, units=5, region="eu"),
        cloudevent("3", minutes=95, units=100, region="us"),
    ]
    response = await harness.usage.IngestEvents(usage_pb2.IngestEventsRequest(events_json=events))
    assert response.accepted == 3
    # then the preview bills 12.5 eu units: 10 x 1 + 2.5 x 0.5.
    request = billing_pb2.PreviewInvoiceRequest(customer="customers/acme")
    request.as_of_time.FromDatetime(T0 + timedelta(hours=3))
    invoice = await harness.billing.PreviewInvoice(request)
    [line] = [line for line in invoice.lines if line.feature == "calls"]
    assert (line.quantity, line.amount, invoice.total) == ("12.5", "11.25", "11.25")
