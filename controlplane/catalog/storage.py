"""Storage of features and plan versions."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, update

from controlplane.catalog.types import (
    LLM_TOKENS,
    Commitments,
    Discounts,
    Entitlement,
    EntitlementType,
    Feature,
    ModelPrice,
    PaymentTerm,
    Plan,
    PlanState,
    Price,
    PriceList,
    PriceType,
    RateCard,
    SettlementMode,
    Tier,
    TierMode,
)
from controlplane.catalog.validation import check_plan, check_price_list
from controlplane.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from controlplane.storage import schema as s


def _feature(row: Row[Any]) -> Feature:
    return Feature(
        key=row.key,
        name=row.name,
        meter=row.meter,
        filters=dict(row.filters),
    )


def list_features(conn: Connection) -> list[Feature]:
    return [_feature(r) for r in conn.execute(select(s.features).order_by(s.features.c.key))]


def get_feature(conn: Connection, key: str) -> Feature:
    row = conn.execute(select(s.features).where(s.features.c.key == key)).first()
    if row is None:
        raise NotFound(f"feature {key!r} not found")
    return _feature(row)


def create_feature(conn: Connection, feature: Feature, *, now: datetime) -> None:
    if conn.execute(select(s.features.c.key).where(s.features.c.key == feature.key)).first():
        raise AlreadyExists(f"feature {feature.key!r} already exists")
    upsert_feature(conn, feature, now=now)


def upsert_feature(conn: Connection, feature: Feature, *, now: datetime) -> str | None:
    t = s.features
    values = {"name": feature.name, "meter": feature.meter, "filters": dict(feature.filters)}
    row = conn.execute(select(t).where(t.c.key == feature.key)).first()
    if row is None:
        conn.execute(insert(t).values(key=feature.key, create_time=now, update_time=now, **values))
        return f"created feature {feature.key}"
    if {k: getattr(row, k) for k in values} != values:
        conn.execute(update(t).where(t.c.key == feature.key).values(update_time=now, **values))
        return f"updated feature {feature.key}"
    return None


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _number(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in data.items() if v is not None}, sort_keys=True)


def price_to_json(price: Price) -> str:
    """A price as JSON text; every amount is a decimal string."""
    return _dumps(
        {
            "type": price.type.value,
            "amount": str(price.amount),
            "payment_term": price.payment_term.value if price.payment_term else None,
            "mode": price.mode.value if price.mode else None,
            "tiers": [
                {
                    "up_to": _text(t.up_to),
                    "unit_price": str(t.unit_price),
                    "flat_price": str(t.flat_price),
                }
                for t in price.tiers
            ]
            or None,
            "quantity_per_package": _text(price.quantity_per_package),
            "price_list": price.price_list,
            "markup_percent": _text(price.markup_percent),
        }
    )


def price_from_json(text: str) -> Price:
    data = json.loads(text)
    return Price(
        type=PriceType(data["type"]),
        amount=Decimal(data.get("amount", "0")),
        payment_term=PaymentTerm(data["payment_term"]) if "payment_term" in data else None,
        mode=TierMode(data["mode"]) if "mode" in data else None,
        tiers=tuple(
            Tier(
                up_to=_number(t.get("up_to")),
                unit_price=Decimal(t["unit_price"]),
                flat_price=Decimal(t["flat_price"]),
            )
            for t in data.get("tiers", ())
        ),
        quantity_per_package=_number(data.get("quantity_per_package")),
        price_list=data.get("price_list"),
        markup_percent=_number(data.get("markup_percent")),
    )


def entitlement_to_json(entitlement: Entitlement) -> str | None:
    """The fields of an entitlement beyond its type, as JSON text; None for a boolean one."""
    data = {
        "config": entitlement.config,
        "limit": entitlement.limit,
        "usage_period": entitlement.usage_period,
        "soft_limit": entitlement.soft_limit or None,
        "preserve_overage_at_reset": entitlement.preserve_overage_at_reset or None,
    }
    return _dumps(data) if any(v is not None for v in data.values()) else None


def entitlement_from_row(kind: str | None, text: str | None) -> Entitlement | None:
    if not kind:
        return None
    data = json.loads(text) if text else {}
    return Entitlement(
        type=EntitlementType(kind),
        config=data.get("config"),
        limit=data.get("limit"),
        usage_period=data.get("usage_period"),
        soft_limit=bool(data.get("soft_limit", False)),
        preserve_overage_at_reset=bool(data.get("preserve_overage_at_reset", False)),
    )


def _discounts_from_json(text: str | None) -> Discounts | None:
    if text is None:
        return None
    data = json.loads(text)
    return Discounts(percentage=_number(data.get("percentage")), usage=_number(data.get("usage")))


def _commitments_from_json(text: str | None) -> Commitments | None:
    if text is None:
        return None
    data = json.loads(text)
    return Commitments(
        minimum_amount=_number(data.get("minimum_amount")),
        maximum_amount=_number(data.get("maximum_amount")),
    )


def _rate_cards(conn: Connection) -> dict[tuple[str, int], list[RateCard]]:
    cards: dict[tuple[str, int], list[RateCard]] = defaultdict(list)
    rc = s.rate_cards
    rows = conn.execute(select(rc).order_by(rc.c.plan_key, rc.c.plan_version, rc.c.position))
    for r in rows:
        entitlement = entitlement_from_row(r.entitlement_type, r.entitlement)
        cards[(r.plan_key, r.plan_version)].append(
            RateCard(
                key=r.key,
                feature=r.feature,
                price=price_from_json(r.price) if r.price is not None else None,
                entitlement=entitlement,
                discounts=_discounts_from_json(r.discounts),
                commitments=_commitments_from_json(r.commitments),
                settlement_mode=SettlementMode(
                    r.settlement_mode or SettlementMode.CREDIT_THEN_INVOICE.value
                ),
            )
        )
    return cards


def list_plans(conn: Connection) -> list[Plan]:
    """Every version of every plan, by key then version."""
    cards = _rate_cards(conn)
    rows = conn.execute(select(s.plans).order_by(s.plans.c.key, s.plans.c.version))
    return [
        Plan(
            key=r.key,
            version=r.version,
            name=r.name,
            currency=r.currency,
            billing_cadence=r.billing_cadence,
            state=PlanState(r.state),
            rate_cards=tuple(cards[(r.key, r.version)]),
            create_time=r.create_time,
            publish_time=r.publish_time,
            billing_anchor=r.billing_anchor,
        )
        for r in rows
    ]


def get_plan(conn: Connection, key: str, version: int | None = None) -> Plan:
    """One version of a plan; without a version, the newest one."""
    versions = [p for p in list_plans(conn) if p.key == key]
    if version is not None:
        versions = [p for p in versions if p.version == version]
    if not versions:
        what = f"plan {key!r}" + (f" version {version}" if version is not None else "")
        raise NotFound(f"{what} not found")
    return versions[-1]


def active_plan(conn: Connection, key: str) -> Plan:
    """The published version of a plan, which new subscriptions use."""
    active = [p for p in list_plans(conn) if p.key == key and p.state is PlanState.ACTIVE]
    if not active:
        get_plan(conn, key)  # NotFound if the plan does not exist at all
        raise FailedPrecondition(f"plan {key!r} has no published version; publish it first")
    return active[-1]


def _check_references(conn: Connection, plan: Plan) -> None:
    """Features and price lists the plan names exist (and the lists are in its currency)."""
    for card in plan.rate_cards:
        feature = get_feature(conn, card.feature) if card.feature is not None else None
        price = card.price
        model_list = price is not None and price.type is PriceType.MODEL_LIST
        if model_list and feature is not None and feature.meter != LLM_TOKENS.key:
            raise InvalidArgument(
                f"rate card {card.key!r}: a model_list price prices tokens per model; its"
                f" feature must meter {LLM_TOKENS.key}, not {feature.meter!r}"
            )
        if price is not None and price.type is PriceType.MODEL_LIST and price.price_list:
            try:
                price_list = get_price_list(conn, price.price_list)
            except NotFound:
                raise InvalidArgument(
                    f"rate card {card.key!r}: price list {price.price_list!r} does not exist"
                ) from None
            if price_list.currency != plan.currency:
                raise InvalidArgument(
                    f"rate card {card.key!r}: price list {price_list.key!r} is in"
                    f" {price_list.currency}, the plan in {plan.currency}"
                )


def _write_rate_cards(conn: Connection, plan: Plan, version: int) -> None:
    for position, card in enumerate(plan.rate_cards):
        discounts, commitments = card.discounts, card.commitments
        conn.execute(
            insert(s.rate_cards).values(
                plan_key=plan.key,
                plan_version=version,
                key=card.key,
                position=position,
                feature=card.feature,
                # NULL is the default, so rows written before credits read the same.
                settlement_mode=None
                if card.settlement_mode is SettlementMode.CREDIT_THEN_INVOICE
                else card.settlement_mode.value,
                price=price_to_json(card.price) if card.price else None,
                entitlement_type=card.entitlement.type.value if card.entitlement else None,
                entitlement=entitlement_to_json(card.entitlement) if card.entitlement else None,
                discounts=_dumps(
                    {
                        "percentage": _text(discounts.percentage),
                        "usage": _text(discounts.usage),
                    }
                )
                if discounts
                else None,
                commitments=_dumps(
                    {
                        "minimum_amount": _text(commitments.minimum_amount),
                        "maximum_amount": _text(commitments.maximum_amount),
                    }
                )
                if commitments
                else None,
            )
        )


def insert_plan_version(conn: Connection, plan: Plan, *, now: datetime) -> Plan:
    """Store a plan as a new draft version (version = newest + 1); nothing if it is invalid."""
    check_plan(plan)
    _check_references(conn, plan)
    newest = conn.execute(
        select(func.max(s.plans.c.version)).where(s.plans.c.key == plan.key)
    ).scalar()
    version = (newest or 0) + 1
    conn.execute(
        insert(s.plans).values(
            key=plan.key,
            version=version,
            name=plan.name,
            currency=plan.currency,
            billing_cadence=plan.billing_cadence,
            state=PlanState.DRAFT.value,
            create_time=now,
            publish_time=None,
            billing_anchor=plan.billing_anchor,
        )
    )
    _write_rate_cards(conn, plan, version)
    return get_plan(conn, plan.key, version)


def _published_is_immutable(plan: Plan) -> FailedPrecondition:
    word = "published" if plan.state is PlanState.ACTIVE else plan.state.value
    return FailedPrecondition(
        f"plan {plan.key!r} version {plan.version} is {word}; a {word} version never changes:"
        f" create a new version (meterline plans new-version {plan.key}), edit and publish it"
    )


def update_draft(conn: Connection, plan: Plan, *, version: int, now: datetime) -> Plan:
    """Replace a draft version's content; published and archived versions are immutable."""
    current = get_plan(conn, plan.key, version)
    if current.state is not PlanState.DRAFT:
        raise _published_is_immutable(current)
    check_plan(plan)
    _check_references(conn, plan)
    t = s.plans
    conn.execute(
        update(t)
        .where((t.c.key == plan.key) & (t.c.version == version))
        .values(
            name=plan.name,
            currency=plan.currency,
            billing_cadence=plan.billing_cadence,
            billing_anchor=plan.billing_anchor,
        )
    )
    rc = s.rate_cards
    conn.execute(delete(rc).where((rc.c.plan_key == plan.key) & (rc.c.plan_version == version)))
    _write_rate_cards(conn, plan, version)
    return get_plan(conn, plan.key, version)


def new_version(conn: Connection, key: str, *, source: int | None, now: datetime) -> Plan:
    """A new draft version copied from ``source`` (default: the newest version)."""
    return insert_plan_version(conn, get_plan(conn, key, source), now=now)


def subscription_anchor(plan: Plan, start: datetime) -> datetime | None:
    """The anchor of a new subscription without its own: the plan's, unless after ``start``."""
    if plan.billing_anchor is not None and plan.billing_anchor <= start:
        return plan.billing_anchor
    return None


def archive_plan(conn: Connection, key: str, version: int, *, now: datetime) -> Plan:
    """Published -> archived: no new subscriptions; running ones keep it until migrated."""
    plan = get_plan(conn, key, version)
    if plan.state is not PlanState.ACTIVE:
        raise FailedPrecondition(
            f"plan {key!r} version {version} is {plan.state.value}; only the published"
            " version can be archived"
        )
    t = s.plans
    conn.execute(
        update(t)
        .where((t.c.key == key) & (t.c.version == version))
        .values(state=PlanState.ARCHIVED.value)
    )
    return get_plan(conn, key, version)


def publish_plan(conn: Connection, key: str, version: int, *, now: datetime) -> Plan:
    """Make a draft version the active one; the previously active version is archived."""
    plan = get_plan(conn, key, version)
    if plan.state is not PlanState.DRAFT:
        raise FailedPrecondition(
            f"plan {key!r} version {version} is {plan.state.value}; only drafts can be published"
        )
    # Checked again: a draft stored before a referenced price list changed must still hold.
    check_plan(plan)
    _check_references(conn, plan)
    t = s.plans
    conn.execute(
        update(t)
        .where((t.c.key == key) & (t.c.state == PlanState.ACTIVE.value))
        .values(state=PlanState.ARCHIVED.value)
    )
    conn.execute(
        update(t)
        .where((t.c.key == key) & (t.c.version == version))
        .values(state=PlanState.ACTIVE.value, publish_time=now)
    )
    return get_plan(conn, key, version)


def same_content(a: Plan, b: Plan) -> bool:
    """Two plan versions sell the same thing (ignoring version, state and times)."""
    return (a.name, a.currency, a.billing_cadence, a.billing_anchor, a.rate_cards) == (
        b.name,
        b.currency,
        b.billing_cadence,
        b.billing_anchor,
        b.rate_cards,
    )


# Price lists ----------------------------------------------------------------------------------

_TOKEN_COLUMNS = ("input", "output", "cached_input", "reasoning")


def list_price_lists(conn: Connection) -> list[PriceList]:
    mp = s.model_prices
    entries: dict[str, list[ModelPrice]] = defaultdict(list)
    for r in conn.execute(select(mp).order_by(mp.c.price_list, mp.c.model, mp.c.effective_from)):
        entries[r.price_list].append(
            ModelPrice(
                model=r.model,
                effective_from=r.effective_from,
                **{c: _number(getattr(r, c)) for c in _TOKEN_COLUMNS},
            )
        )
    rows = conn.execute(select(s.price_lists).order_by(s.price_lists.c.key))
    return [
        PriceList(
            key=r.key,
            name=r.name,
            currency=r.currency,
            prices=tuple(entries[r.key]),
            create_time=r.create_time,
            update_time=r.update_time,
        )
        for r in rows
    ]


def get_price_list(conn: Connection, key: str) -> PriceList:
    for price_list in list_price_lists(conn):
        if price_list.key == key:
            return price_list
    raise NotFound(f"price list {key!r} not found")


def _insert_prices(conn: Connection, key: str, prices: tuple[ModelPrice, ...]) -> None:
    if prices:
        conn.execute(
            insert(s.model_prices),
            [
                {
                    "price_list": key,
                    "model": p.model,
                    "effective_from": p.effective_from,
                    **{c: _text(getattr(p, c)) for c in _TOKEN_COLUMNS},
                }
                for p in prices
            ],
        )


def create_price_list(conn: Connection, price_list: PriceList, *, now: datetime) -> PriceList:
    check_price_list(price_list)
    if conn.execute(
        select(s.price_lists.c.key).where(s.price_lists.c.key == price_list.key)
    ).first():
        raise AlreadyExists(f"price list {price_list.key!r} already exists")
    conn.execute(
        insert(s.price_lists).values(
            key=price_list.key,
            name=price_list.name,
            currency=price_list.currency,
            create_time=now,
            update_time=now,
        )
    )
    _insert_prices(conn, price_list.key, price_list.prices)
    return get_price_list(conn, price_list.key)


def _check_history_kept(current: PriceList, wanted: PriceList, *, now: datetime) -> None:
    """Prices that took effect (effective_from <= now) are history: kept as they are."""
    if wanted.currency != current.currency:
        raise FailedPrecondition(
            f"price list {current.key!r} is in {current.currency}; its currency never changes"
            " (create another list)"
        )
    old = {(p.model, p.effective_from): p for p in current.prices}
    new = {(p.model, p.effective_from): p for p in wanted.prices}
    for where, entry in old.items():
        if entry.effective_from <= now and new.get(where) != entry:
            raise FailedPrecondition(
                f"price list {current.key!r}: the price of {entry.model} from"
                f" {entry.effective_from.isoformat()} is in effect; it cannot change or go."
                " Add an entry with a later effective_from instead"
            )
    for where, entry in new.items():
        if where not in old and entry.effective_from <= now:
            raise FailedPrecondition(
                f"price list {current.key!r}: a new price for {entry.model} cannot take effect"
                f" in the past ({entry.effective_from.isoformat()} <= {now.isoformat()}); it"
                " would reprice usage already metered"
            )


def add_model_prices(
    conn: Connection, key: str, prices: tuple[ModelPrice, ...], *, now: datetime
) -> PriceList:
    """Add entries that take effect later; earlier usage keeps its prices."""
    current = get_price_list(conn, key)
    wanted = PriceList(
        key=key, name=current.name, currency=current.currency, prices=current.prices + prices
    )
    check_price_list(wanted)
    _check_history_kept(current, wanted, now=now)
    _insert_prices(conn, key, prices)
    conn.execute(update(s.price_lists).where(s.price_lists.c.key == key).values(update_time=now))
    return get_price_list(conn, key)


def upsert_price_list(conn: Connection, price_list: PriceList, *, now: datetime) -> str | None:
    """The declarative flow: create a list, or add and change its entries not yet in effect."""
    check_price_list(price_list)
    try:
        current = get_price_list(conn, price_list.key)
    except NotFound:
        create_price_list(conn, price_list, now=now)
        return f"created price list {price_list.key}"
    same = {(p.model, p.effective_from): p for p in current.prices} == {
        (p.model, p.effective_from): p for p in price_list.prices
    }
    if same and (current.name, current.currency) == (price_list.name, price_list.currency):
        return None
    _check_history_kept(current, price_list, now=now)
    mp = s.model_prices
    conn.execute(delete(mp).where(mp.c.price_list == price_list.key))
    _insert_prices(conn, price_list.key, price_list.prices)
    conn.execute(
        update(s.price_lists)
        .where(s.price_lists.c.key == price_list.key)
        .values(name=price_list.name, update_time=now)
    )
    return f"updated price list {price_list.key}"


def feature_times(conn: Connection) -> dict[str, datetime]:
    """Each feature's create_time, by key (the operator API lists features newest first)."""
    f = s.features
    return {r.key: r.create_time for r in conn.execute(select(f.c.key, f.c.create_time))}


def delete_feature(conn: Connection, key: str) -> None:
    """Delete a feature no rate card or grant uses; refused otherwise."""
    get_feature(conn, key)
    rc = s.rate_cards
    plans = sorted(
        {
            f"{r.plan_key} v{r.plan_version}"
            for r in conn.execute(
                select(rc.c.plan_key, rc.c.plan_version).where(rc.c.feature == key)
            )
        }
    )
    if plans:
        raise FailedPrecondition(
            f"feature {key!r} is priced by plan(s) {', '.join(plans)}: features priced by a plan"
            " are kept"
        )
    if conn.execute(select(s.grants.c.id).where(s.grants.c.feature == key).limit(1)).first():
        raise FailedPrecondition(f"feature {key!r} has grants and is kept")
    conn.execute(delete(s.features).where(s.features.c.key == key))


def delete_draft_plan(conn: Connection, key: str, version: int) -> None:
    """Delete a draft version; published and archived ones are history and stay."""
    plan = get_plan(conn, key, version)
    if plan.state is not PlanState.DRAFT:
        raise FailedPrecondition(
            f"plan {key!r} version {version} is {plan.state.value}; only a draft version can be"
            " deleted (archive a published one)"
        )
    where = (s.rate_cards.c.plan_key == key) & (s.rate_cards.c.plan_version == version)
    conn.execute(delete(s.rate_cards).where(where))
    conn.execute(delete(s.plans).where((s.plans.c.key == key) & (s.plans.c.version == version)))
