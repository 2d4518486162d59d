"""Operator meters in the declarative format (`billing: meters:`), as the issue writes them."""

from __future__ import annotations

import pytest

from controlplane.declarative import DeclarativeError, parse_document
from controlplane.usage.meters import MeterAggregation, OperatorMeter

DOC = """\
_format_version: "3.0"
billing:
  meters:
    - {key: api_calls, event_type: api.request, value_property: $.units,
       aggregation: SUM, group_by: {region: $.region}}
METERS
  features:
    - {key: calls, meter: api_calls, filters: {region: eu}}
"""


def test_the_issue_example_parses() -> None:
    billing = parse_document(DOC.replace("METERS\n", "")).billing
    assert billing.meters == (
        OperatorMeter(
            key="api_calls",
            event_type="api.request",
            aggregation=MeterAggregation.SUM,
            value_property="$.units",
            group_by={"region": "$.region"},
        ),
    )
    assert billing.features[0].meter == "api_calls"
    assert billing.features[0].filters == {"region": "eu"}


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        pytest.param(
            "    - {key: m, event_type: e, value_property: $.n, aggregation: AVG}",
            "billing.meters[1] (m): aggregation unknown aggregation 'AVG'",
            id="unknown-aggregation",
        ),
        pytest.param(
            "    - {key: m, event_type: e, value_property: '$.n[*]', aggregation: SUM}",
            "billing.meters[1] (m): value_property: JSONPath '$.n[*]' must select one value",
            id="bad-jsonpath",
        ),
        pytest.param(
            "    - {key: m, event_type: e, value_property: $.n, aggregation: COUNT}",
            "billing.meters[1] (m): a COUNT meter counts events and takes no value_property",
            id="count-with-value",
        ),
        pytest.param(
            "    - {key: api_calls, event_type: e, aggregation: COUNT}",
            'billing.meters[1] (api_calls): duplicate meter key "api_calls"',
            id="duplicate-key",
        ),
        pytest.param(
            "    - {key: llm_tokens, event_type: e, aggregation: COUNT}",
            'billing.meters[1] (llm_tokens): key "llm_tokens" is reserved',
            id="reserved-key",
        ),
        pytest.param(
            "    - {key: m, event_type: e, aggregation: COUNT, group_by: [a]}",
            "billing.meters[1] (m): group_by must be a mapping",
            id="group-by-list",
        ),
    ],
)
def test_bad_meters_are_clear_errors(extra: str, problem: str) -> None:
    with pytest.raises(DeclarativeError) as raised:
        parse_document(DOC.replace("METERS", extra))
    assert any(p.startswith(problem) for p in raised.value.problems), raised.value.problems


def test_a_feature_filters_only_on_its_meters_dimensions() -> None:
    text = DOC.replace("METERS\n", "").replace("{region: eu}", "{model: gpt-4o}")
    with pytest.raises(DeclarativeError) as raised:
        parse_document(text)
    assert any(
        'filters.model is not a dimension of meter "api_calls"' in p for p in raised.value.problems
    ), raised.value.problems
