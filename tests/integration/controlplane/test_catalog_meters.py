"""CatalogService.ListMeters lists every meter a feature can use, like UsageService.ListMeters."""

from __future__ import annotations

from meterline.admin.v1 import catalog_pb2, usage_pb2

from .conftest import Harness


async def test_catalog_lists_built_in_and_operator_meters(harness: Harness) -> None:
    # Given two operator meters besides the built-in one
    for meter in (
        usage_pb2.UsageMeter(
            key="api_calls",
            event_type="api.request",
            aggregation=usage_pb2.USAGE_METER_AGGREGATION_SUM,
            value_property="$.units",
            group_by={"region": "$.region", "plan": "$.plan"},
        ),
        usage_pb2.UsageMeter(
            key="gb_stored",
            event_type="storage",
            aggregation=usage_pb2.USAGE_METER_AGGREGATION_LATEST,
            value_property="$.gb",
        ),
    ):
        await harness.usage.CreateMeter(usage_pb2.CreateMeterRequest(meter=meter))

    # When the catalog lists its meters
    listed = await harness.catalog.ListMeters(catalog_pb2.ListMetersRequest())

    # Then it lists all of them, as the usage service does
    assert [
        (m.name, m.event_type, m.aggregation, m.value_property, list(m.group_by))
        for m in listed.meters
    ] == [
        (
            "meters/llm_tokens",
            "llm.tokens",
            catalog_pb2.METER_AGGREGATION_SUM,
            "tokens",
            ["model", "provider", "type", "status_code"],
        ),
        (
            "meters/api_calls",
            "api.request",
            catalog_pb2.METER_AGGREGATION_SUM,
            "$.units",
            ["plan", "region"],
        ),
        ("meters/gb_stored", "storage", catalog_pb2.METER_AGGREGATION_UNSPECIFIED, "$.gb", []),
    ]
    usage = await harness.usage.ListMeters(usage_pb2.ListUsageMetersRequest())
    assert [m.key for m in listed.meters] == [m.key for m in usage.meters]
    assert listed.next_page_token == ""

    # And pages through them
    first = await harness.catalog.ListMeters(catalog_pb2.ListMetersRequest(page_size=2))
    rest = await harness.catalog.ListMeters(
        catalog_pb2.ListMetersRequest(page_size=2, page_token=first.next_page_token)
    )
    assert [m.key for m in (*first.meters, *rest.meters)] == [m.key for m in listed.meters]
    assert len(first.meters) == 2 and rest.next_page_token == ""
