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


def test_a_token_meter_without_event_type_points_at_llm_tokens() -> None:
    # As a Konnect user declares one: a meter of their own for the gateway's tokens
    text = DOC.replace(
        "METERS", "    - {key: ai_tokens, aggregation: SUM, value_property: $.tokens}"
    )
    with pytest.raises(DeclarativeError) as raised:
        parse_document(text)
    (problem,) = raised.value.problems
    assert problem.startswith("billing.meters[1] (ai_tokens): event_type is required: ")
    assert 'built-in meter "llm_tokens"' in problem and "meter: llm_tokens" in problem
    for dimension in ("model", "provider", "type", "status_code", "route"):
        assert dimension in problem
    # and the fix it gives parses
    fixed = DOC.replace("METERS\n", "").replace(
        "    - {key: calls, meter: api_calls, filters: {region: eu}}",
        "    - {key: tokens-in, meter: llm_tokens, filters: {type: input}}",
    )
    assert parse_document(fixed).billing.features[0].meter == "llm_tokens"


def test_an_unknown_feature_lists_the_declared_ones() -> None:
    text = DOC.replace("METERS\n", "") + (
        "  plans:\n"
        "    - key: p\n"
        "      name: P\n"
        "      currency: USD\n"
        "      billing_cadence: P1M\n"
        "      rate_cards: [{feature: cals, price: {type: unit, amount: '1'}}]\n"
    )
    with pytest.raises(DeclarativeError) as raised:
        parse_document(text)
    assert raised.value.problems == (
        'billing.plans[0] (p).rate_cards[0]: unknown feature "cals": declare it under'
        ' billing.features (the features are "calls")',
    )
