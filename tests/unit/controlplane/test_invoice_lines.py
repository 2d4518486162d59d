"""Invoice lines from snapshotted quantities (controlplane/invoicing/lines.py), no database.

Each case is one rate card of one segment: the quantities storage would have read
(``CardUsage``) and the lines the pure builder must make of them, amounts to the cent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from controlplane.catalog.types import (
    Commitments,
    Discounts,
    Feature,
    ModelPrice,
    Plan,
    Price,
    PriceList,
    PriceType,
    RateCard,
    Tier,
    TierMode,
)
from controlplane.invoicing.lines import CardUsage, Segment, card_lines, segment_lines
from controlplane.rating.charge import LineType
from controlplane.rating.modellist import ModelUsage
from controlplane.subscriptions.types import Subscription

D = Decimal
OCT_1 = datetime(2026, 10, 1, tzinfo=UTC)
NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
NOV_11 = datetime(2026, 11, 11, tzinfo=UTC)
NOV_16 = datetime(2026, 11, 16, tzinfo=UTC)
DEC_1 = datetime(2026, 12, 1, tzinfo=UTC)

CALLS = Feature(key="calls", meter="api_calls", name="calls")
TOKENS = Feature(key="tokens", meter="llm_tokens", name="tokens")
OPENAI = PriceList(
    key="openai-list",
    currency="USD",
    prices=(
        ModelPrice(model="gpt-4o", effective_from=OCT_1, input=D("0.0000025"), output=D("0.00001")),
    ),
)


def unit(
    amount: str, *, discounts: Discounts | None = None, commitments: Commitments | None = None
) -> RateCard:
    return RateCard(
        key="calls",
        feature="calls",
        price=Price(PriceType.UNIT, D(amount)),
        discounts=discounts,
        commitments=commitments,
    )


def flat(amount: str) -> RateCard:
    return RateCard(key="base", feature=None, price=Price(PriceType.FLAT, D(amount)))


# Up to 1,000 calls free, then 0.01 each.
GRADUATED = RateCard(
    key="calls",
    feature="calls",
    price=Price(
        PriceType.TIERED,
        mode=TierMode.GRADUATED,
        tiers=(Tier(up_to=D(1000)), Tier(up_to=None, unit_price=D("0.01"))),
    ),
)
MODEL_LIST = RateCard(
    key="tokens",
    feature="tokens",
    price=Price(PriceType.MODEL_LIST, price_list="openai-list", markup_percent=D(10)),
)


def plan(card: RateCard) -> Plan:
    return Plan(key="pro", name="Pro", currency="USD", billing_cadence="P1M", rate_cards=(card,))


def segment(
    card: RateCard,
    *,
    start: datetime = NOV_1,
    end: datetime = DEC_1,
    sub_start: datetime = NOV_1,
    late: bool = False,
) -> Segment:
    """A segment of November (or, late, of October) on a plan holding ``card``."""
    sub = Subscription(
        id="sub-1", customer="acme", plan_key="pro", plan_version=1, start_time=sub_start
    )
    if late:
        start, end = OCT_1, NOV_1
    return Segment(
        sub=sub,
        plan=plan(card),
        start=start,
        end=end,
        period_start=start if late else NOV_1,
        period_end=end if late else DEC_1,
        late=late,
    )


def tokens(n: int, kind: str = "input") -> ModelUsage:
    return ModelUsage(model="gpt-4o", token_type=kind, start=OCT_1, quantity=D(n))


@dataclass(frozen=True)
class Case:
    segment: Segment
    usage: CardUsage
    # (type, quantity, amount) of each line, in order.
    lines: tuple[tuple[LineType, str, str], ...]
    # The first line's description, when the case is about it.
    description: str | None = None


CASES = {
    "unit": Case(
        segment(unit("0.5")),
        CardUsage(unit("0.5"), CALLS, quantity=D(100)),
        ((LineType.USAGE, "100", "50.00"),),
        "calls: 100 x 0.5",
    ),
    "unit-nothing-used": Case(
        segment(unit("0.5")),
        CardUsage(unit("0.5"), CALLS),
        ((LineType.USAGE, "0", "0.00"),),
    ),
    "flat-whole-period": Case(
        segment(flat("30")),
        CardUsage(flat("30")),
        ((LineType.FLAT, "1", "30.00"),),
        "base: flat fee 30 per period, in advance",
    ),
    "flat-prorated-10-of-30-days": Case(
        segment(flat("30"), end=NOV_11),
        CardUsage(flat("30")),
        ((LineType.FLAT, "1", "10.00"),),
        "base: flat fee 30 per period, in advance, prorated for 2026-11-01..2026-11-11",
    ),
    "graduated-over-the-free-tier": Case(
        segment(GRADUATED),
        CardUsage(GRADUATED, CALLS, quantity=D(1500)),
        ((LineType.USAGE, "1500", "5.00"),),
    ),
    "usage-discount": Case(
        segment(unit("0.1", discounts=Discounts(usage=D(100)))),
        CardUsage(unit("0.1", discounts=Discounts(usage=D(100))), CALLS, quantity=D(150)),
        ((LineType.USAGE, "150", "5.00"),),
        "calls: 150 (100 free) x 0.1",
    ),
    "percentage-discount": Case(
        segment(unit("1", discounts=Discounts(percentage=D(10)))),
        CardUsage(unit("1", discounts=Discounts(percentage=D(10))), CALLS, quantity=D(25)),
        ((LineType.USAGE, "25", "25.00"), (LineType.DISCOUNT, "1", "-2.50")),
    ),
    "minimum-commitment-top-up": Case(
        segment(unit("0.1", commitments=Commitments(minimum_amount=D(20)))),
        CardUsage(
            unit("0.1", commitments=Commitments(minimum_amount=D(20))), CALLS, quantity=D(50)
        ),
        ((LineType.USAGE, "50", "5.00"), (LineType.MINIMUM_COMMITMENT, "1", "15.00")),
    ),
    "minimum-prorated-to-the-half-month-served": Case(
        segment(
            unit("0.1", commitments=Commitments(minimum_amount=D(20))),
            start=NOV_16,
            sub_start=NOV_16,
        ),
        CardUsage(
            unit("0.1", commitments=Commitments(minimum_amount=D(20))), CALLS, quantity=D(50)
        ),
        ((LineType.USAGE, "50", "5.00"), (LineType.MINIMUM_COMMITMENT, "1", "5.00")),
    ),
    "no-price": Case(
        segment(RateCard(key="access", feature="calls", price=None)),
        CardUsage(RateCard(key="access", feature="calls", price=None), CALLS),
        (),
    ),
    # Late usage: one line, the difference the late quantity makes to the issued period.
    "late-unit": Case(
        segment(unit("0.1"), late=True),
        CardUsage(unit("0.1"), CALLS, quantity=D(150), billed_before=D(100)),
        ((LineType.USAGE, "50", "5.00"),),
        "calls: late usage for 2026-10-01..2026-11-01: 50 (billed before: 100)",
    ),
    "late-crossing-the-free-tier": Case(
        segment(GRADUATED, late=True),
        CardUsage(GRADUATED, CALLS, quantity=D(1100), billed_before=D(900)),
        ((LineType.USAGE, "200", "1.00"),),
    ),
    "late-inside-the-free-units": Case(
        segment(unit("0.1", discounts=Discounts(usage=D(100))), late=True),
        CardUsage(
            unit("0.1", discounts=Discounts(usage=D(100))),
            CALLS,
            quantity=D(120),
            billed_before=D(50),
        ),
        ((LineType.USAGE, "70", "2.00"),),
    ),
    "late-above-the-maximum": Case(
        segment(unit("1", commitments=Commitments(maximum_amount=D(10))), late=True),
        CardUsage(
            unit("1", commitments=Commitments(maximum_amount=D(10))),
            CALLS,
            quantity=D(15),
            billed_before=D(8),
        ),
        ((LineType.USAGE, "7", "2.00"),),
    ),
    "late-latest-lowered-is-a-credit": Case(
        segment(unit("1"), late=True),
        CardUsage(unit("1"), CALLS, quantity=D(7), billed_before=D(10)),
        ((LineType.USAGE, "-3", "-3.00"),),
    ),
    "late-trailing-zeros-dropped": Case(
        segment(unit("1"), late=True),
        CardUsage(unit("1"), CALLS, quantity=D("14.75"), billed_before=D("13.75")),
        ((LineType.USAGE, "1", "1.00"),),
        "calls: late usage for 2026-10-01..2026-11-01: 1 (billed before: 13.75)",
    ),
    "late-max-unchanged": Case(
        segment(unit("1"), late=True),
        CardUsage(unit("1"), CALLS, quantity=D(10), billed_before=D(10)),
        (),
    ),
    "late-flat-charged-with-its-period": Case(
        segment(flat("30"), late=True),
        CardUsage(flat("30")),
        (),
    ),
    "late-without-feature": Case(
        segment(unit("1"), late=True),
        CardUsage(RateCard(key="calls", feature=None, price=Price(PriceType.UNIT, D(1)))),
        (),
    ),
    # model_list: a line per model and token type; late, one line of the difference.
    "model-list": Case(
        segment(MODEL_LIST),
        CardUsage(
            MODEL_LIST,
            TOKENS,
            price_list=OPENAI,
            models=(tokens(1_000_000), tokens(100_000, "output")),
        ),
        ((LineType.USAGE, "1000000", "2.75"), (LineType.USAGE, "100000", "1.10")),
    ),
    "model-list-late": Case(
        segment(MODEL_LIST, late=True),
        CardUsage(
            MODEL_LIST,
            TOKENS,
            price_list=OPENAI,
            models=(tokens(1_000_000),),
            models_before=(tokens(2_000_000),),
        ),
        ((LineType.USAGE, "1000000", "2.75"),),
        "tokens: late usage for 2026-10-01..2026-11-01: 1000000 tokens at openai-list prices",
    ),
    "model-list-late-nothing": Case(
        segment(MODEL_LIST, late=True),
        CardUsage(MODEL_LIST, TOKENS, price_list=OPENAI, models_before=(tokens(5),)),
        (),
    ),
    "model-list-without-price-list": Case(
        segment(MODEL_LIST),
        CardUsage(MODEL_LIST, TOKENS, models=(tokens(1_000_000),)),
        (),
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_card_lines(case: Case) -> None:
    lines = card_lines(case.segment, case.usage)
    assert [(line.type, line.quantity, line.amount) for line in lines] == [
        (kind, D(quantity), D(amount)) for kind, quantity, amount in case.lines
    ]
    # Amounts are exact cents; quantities as the snapshot had them (no exponent notation).
    assert [str(line.amount) for line in lines] == [amount for _, _, amount in case.lines]
    assert [str(line.quantity) for line in lines] == [quantity for _, quantity, _ in case.lines]
    for line in lines:
        assert line.subscription == "sub-1"
        assert line.rate_card == case.usage.card.key
        assert (line.period_start, line.period_end) == (case.segment.start, case.segment.end)
        assert line.late_usage is case.segment.late
    if case.description is not None:
        assert lines[0].description == case.description


def test_segment_lines_keeps_the_order_of_the_rate_cards() -> None:
    cards = [
        CardUsage(flat("30")),
        CardUsage(unit("0.5"), CALLS, quantity=D(100)),
        CardUsage(GRADUATED, CALLS, quantity=D(1500)),
    ]
    lines = segment_lines(segment(flat("30")), cards)
    assert [(line.rate_card, line.amount) for line in lines] == [
        ("base", D("30.00")),
        ("calls", D("50.00")),
        ("calls", D("5.00")),
    ]
    assert sum(line.amount for line in lines) == D("85.00")


def test_a_late_line_carries_no_unit_price_and_its_price_type() -> None:
    (line,) = card_lines(
        segment(GRADUATED, late=True),
        CardUsage(GRADUATED, CALLS, quantity=D(1100), billed_before=D(900)),
    )
    assert line.unit_price is None
    assert line.price_type is PriceType.TIERED
    assert line.feature == "calls"
