"""The model_list pricer: per model and token type at list price plus markup, split at price
changes, one rounding per line (ROUND_HALF_UP to the minor unit)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from controlplane.catalog.types import Commitments, Discounts, ModelPrice, PriceList
from controlplane.errors import InvalidArgument
from controlplane.rating.charge import LineType
from controlplane.rating.modellist import ModelUsage, marked_up, model_list_lines

JAN = datetime(2026, 1, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
NOV_15 = datetime(2026, 11, 15, tzinfo=UTC)
D = Decimal

OPENAI = PriceList(
    key="openai-list",
    currency="USD",
    prices=(
        ModelPrice(
            model="gpt-4o",
            effective_from=JAN,
            input=D("0.0000025"),
            output=D("0.00001"),
            cached_input=D("0.00000125"),
            reasoning=D("0.00001"),
        ),
        # From 15 Nov the input price drops to 0.000002; the rest is unchanged.
        ModelPrice(
            model="gpt-4o",
            effective_from=NOV_15,
            input=D("0.000002"),
            output=D("0.00001"),
            cached_input=D("0.00000125"),
            reasoning=D("0.00001"),
        ),
        ModelPrice(
            model="gpt-4o-mini", effective_from=JAN, input=D("0.00000015"), output=D("0.0000006")
        ),
    ),
)


def use(model: str, kind: str, tokens: int, at: datetime = NOV) -> ModelUsage:
    return ModelUsage(model=model, token_type=kind, start=at, quantity=D(tokens))


def rows(lines) -> list[tuple]:  # type: ignore[no-untyped-def]
    return [
        (line.model, line.token_type, str(line.quantity), str(line.amount), line.price_from)
        for line in lines
    ]


def rate(usage, markup: str | None = None, **kw):  # type: ignore[no-untyped-def]
    return model_list_lines(
        usage=usage,
        price_list=OPENAI,
        markup_percent=D(markup) if markup else None,
        currency="USD",
        **kw,
    )


def test_list_prices_per_model_and_token_type() -> None:
    # 1M input x 0.0000025 = 2.50; 200k output x 0.00001 = 2.00; 400k cached x 0.00000125 =
    # 0.50; 50k reasoning x 0.00001 = 0.50; mini: 1M input x 0.00000015 = 0.15
    lines = rate(
        [
            use("gpt-4o", "output", 200_000),
            use("gpt-4o", "input", 1_000_000),
            use("gpt-4o", "cached_input", 400_000),
            use("gpt-4o", "reasoning", 50_000),
            use("gpt-4o-mini", "input", 1_000_000),
        ]
    )
    assert rows(lines) == [
        ("gpt-4o", "input", "1000000", "2.50", JAN),
        ("gpt-4o", "output", "200000", "2.00", JAN),
        ("gpt-4o", "cached_input", "400000", "0.50", JAN),
        ("gpt-4o", "reasoning", "50000", "0.50", JAN),
        ("gpt-4o-mini", "input", "1000000", "0.15", JAN),
    ]
    assert all(line.type is LineType.USAGE for line in lines)


def test_markup_of_twenty_percent() -> None:
    # 2.50 x 1.2 = 3.00 and 2.00 x 1.2 = 2.40; unit price shown marked up, list price kept
    lines = rate([use("gpt-4o", "input", 1_000_000), use("gpt-4o", "output", 200_000)], "20")
    assert [(str(x.amount), str(x.unit_price), str(x.list_price)) for x in lines] == [
        ("3.00", "0.0000030", "0.0000025"),
        ("2.40", "0.000012", "0.00001"),
    ]


def test_a_price_change_mid_period_splits_the_usage_at_its_time() -> None:
    # 400k input before 15 Nov at 0.0000025 = 1.00, 600k after at 0.000002 = 1.20; output is
    # the same price on both sides but still one line per price period
    lines = rate(
        [
            use("gpt-4o", "input", 400_000, NOV),
            use("gpt-4o", "input", 600_000, NOV_15),
            use("gpt-4o", "output", 10_000, NOV),
            use("gpt-4o", "output", 10_000, NOV_15),
        ],
        "20",
    )
    assert rows(lines) == [
        ("gpt-4o", "input", "400000", "1.20", JAN),
        ("gpt-4o", "input", "600000", "1.44", NOV_15),
        ("gpt-4o", "output", "10000", "0.12", JAN),
        ("gpt-4o", "output", "10000", "0.12", NOV_15),
    ]


@pytest.mark.parametrize(
    ("tokens", "markup", "amount"),
    [
        # 8000 x 0.0000025 x 1.25 = 0.025 exactly: a tie rounds away from zero (half-up)
        pytest.param(8000, "25", "0.03", id="tie-rounds-up"),
        pytest.param(7999, "25", "0.02", id="just-below-the-tie"),
        # 333 x 0.000003 = 0.000999
        pytest.param(333, "20", "0.00", id="tiny-rounds-to-zero"),
        # 1,234,567 x 0.0000025 x 1.2 = 3.703701
        pytest.param(1_234_567, "20", "3.70", id="odd-count"),
        # 1,234,567 x 0.0000025 x 1.125 = 3.47222...
        pytest.param(1_234_567, "12.5", "3.47", id="fractional-markup"),
        pytest.param(10**15, "20", "3000000000.00", id="very-large"),
        pytest.param(1_000_000, "0", "2.50", id="zero-markup"),
    ],
)
def test_markup_rounding_once_per_line(tokens: int, markup: str, amount: str) -> None:
    (line,) = rate([use("gpt-4o", "input", tokens)], markup)
    assert str(line.amount) == amount


def test_windows_of_one_price_are_one_line_rounded_once() -> None:
    # 1,000 tokens at 0.000003 in each of three windows: 0.003 each would round to 0.00 three
    # times; as one line 0.009 rounds to 0.01
    usage = [use("gpt-4o", "input", 1000, datetime(2026, 11, d, tzinfo=UTC)) for d in (2, 3, 4)]
    (line,) = rate(usage, "20")
    assert (str(line.quantity), str(line.amount)) == ("3000", "0.01")


def test_unknown_models_and_unpriced_types_are_visible_lines_at_zero() -> None:
    lines = rate(
        [
            use("o9-preview", "input", 5000),
            use("gpt-4o-mini", "reasoning", 700),  # the list has no reasoning price for mini
            use("gpt-4o", "cache_write", 10),  # a token type lists never price
        ]
    )
    assert [
        (x.model, x.token_type, str(x.quantity), str(x.amount), x.unit_price) for x in lines
    ] == [
        ("gpt-4o", "cache_write", "10", "0.00", None),
        ("gpt-4o-mini", "reasoning", "700", "0.00", None),
        ("o9-preview", "input", "5000", "0.00", None),
    ]


def test_usage_before_a_models_first_price_is_unpriced() -> None:
    early = datetime(2025, 12, 31, tzinfo=UTC)
    (line,) = rate([use("gpt-4o", "input", 1000, early)])
    assert (line.unit_price, line.amount, line.price_from) == (None, D(0), None)


def test_discounts_and_commitments_apply_to_the_cards_total() -> None:
    # 2.50 + 2.00 = 4.50; 10% off = -0.45; maximum 4.00 caps 4.05 by -0.05
    lines = rate(
        [use("gpt-4o", "input", 1_000_000), use("gpt-4o", "output", 200_000)],
        discounts=Discounts(percentage=D("10")),
        commitments=Commitments(maximum_amount=D("4")),
    )
    assert [(x.type, str(x.amount)) for x in lines] == [
        (LineType.USAGE, "2.50"),
        (LineType.USAGE, "2.00"),
        (LineType.DISCOUNT, "-0.45"),
        (LineType.MAXIMUM_COMMITMENT, "-0.05"),
    ]
    # no usage: the minimum tops up on its own line
    (top_up,) = rate([], commitments=Commitments(minimum_amount=D("5")))
    assert (top_up.type, str(top_up.amount)) == (LineType.MINIMUM_COMMITMENT, "5.00")


def test_bad_inputs_raise() -> None:
    with pytest.raises(InvalidArgument, match="markup_percent must not be negative"):
        marked_up(D("0.1"), D("-1"))
    with pytest.raises(InvalidArgument, match="quantity must not be negative"):
        rate([use("gpt-4o", "input", -1)])
    with pytest.raises(TypeError):
        marked_up(D("0.1"), 20.0)  # type: ignore[arg-type]
