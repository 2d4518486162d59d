"""The catalog page and its admin forms: features, plans (with rate cards of every price type,
versions, publish, archive) and price lists (create, set a model's price).

Every form builds the admin API's request and calls ``CatalogService``'s servicer in process
(``ConsoleApi.call``), exactly as ``meterline`` and gRPC clients do; the servicer validates and
stores in one transaction, so a refused form changes nothing. A read token's POST is refused by
``ConsoleApi.call`` before anything runs. Bad input comes back as the catalog page with the
servicer's message beside the form that sent it and the typed values kept (400, or 409 for a
state conflict), or as ``{"error": ...}`` to ``Accept: application/json``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from google.protobuf import field_mask_pb2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from controlplane.clock import Clock
from controlplane.console.api import ConsoleApi, to_json
from controlplane.console.sessions import Session
from controlplane.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from meterline.admin.v1 import catalog_pb2, usage_pb2

Run = Callable[[ConsoleApi, dict[str, str], Session | None], Awaitable[str | Response]]
Change = Callable[[Request, Run], Awaitable[Response]]
# A page rendered as the answer of a POST: (template, data, api, session, path, status).
Render = Callable[..., Response]

PRICE_TYPES = {
    "unit": catalog_pb2.PRICE_TYPE_UNIT,
    "flat": catalog_pb2.PRICE_TYPE_FLAT,
    "tiered": catalog_pb2.PRICE_TYPE_TIERED,
    "package": catalog_pb2.PRICE_TYPE_PACKAGE,
    "model_list": catalog_pb2.PRICE_TYPE_MODEL_LIST,
}
PAYMENT_TERMS = {
    "": catalog_pb2.PAYMENT_TERM_UNSPECIFIED,
    "in_advance": catalog_pb2.PAYMENT_TERM_IN_ADVANCE,
    "in_arrears": catalog_pb2.PAYMENT_TERM_IN_ARREARS,
}
TIER_MODES = {
    "graduated": catalog_pb2.TIER_MODE_GRADUATED,
    "volume": catalog_pb2.TIER_MODE_VOLUME,
}
_ERRORS: dict[type[Exception], int] = {
    InvalidArgument: 400,
    NotFound: 404,
    AlreadyExists: 409,
    FailedPrecondition: 409,
}


def parse_filters(text: str) -> dict[str, str]:
    """``provider=openai, type=input`` (commas or new lines) as a dict."""
    filters: dict[str, str] = {}
    for item in text.replace("\n", ",").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise InvalidArgument(f"filters: each filter is DIMENSION=VALUE, got {item!r}")
        if name.strip() in filters:
            raise InvalidArgument(f"filters: {name.strip()!r} is given twice")
        filters[name.strip()] = value.strip()
    return filters


def parse_tiers(text: str) -> list[catalog_pb2.PriceTier]:
    """One tier a line: ``UP_TO UNIT_PRICE [FLAT_PRICE]``; the last tier's UP_TO is ``-``
    (no bound). The servicer checks the numbers; this only splits the lines."""
    tiers = []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.replace(",", " ").split()
        if not parts:
            continue
        if len(parts) not in (2, 3):
            raise InvalidArgument(
                f"tiers line {number}: write UP_TO UNIT_PRICE [FLAT_PRICE] (UP_TO '-' on the "
                f"last tier), got {line.strip()!r}"
            )
        tier = catalog_pb2.PriceTier(
            unit_price=parts[1], flat_price=parts[2] if len(parts) == 3 else ""
        )
        if parts[0] not in ("-", "inf", "∞"):
            tier.up_to = parts[0]
        tiers.append(tier)
    return tiers


def rate_card_from_form(form: dict[str, str]) -> catalog_pb2.RateCard | None:
    """The rate card a form describes (None when it names neither feature nor price)."""
    feature = form.get("feature", "").strip()
    price_type = form.get("price_type", "").strip()
    key = form.get("rate_card_key", "").strip()
    if not feature and not price_type and not key:
        return None
    card = catalog_pb2.RateCard(key=key, feature=feature)
    if not price_type:
        return card
    if price_type not in PRICE_TYPES:
        raise InvalidArgument(f"price type must be one of {', '.join(PRICE_TYPES)}")
    term = form.get("payment_term", "").strip()
    if term not in PAYMENT_TERMS:
        raise InvalidArgument("payment term must be in_advance or in_arrears")
    mode = form.get("tier_mode", "").strip()
    price = catalog_pb2.Price(
        type=PRICE_TYPES[price_type],
        amount=form.get("amount", "").strip(),
        quantity_per_package=form.get("quantity_per_package", "").strip(),
        price_list=form.get("price_list", "").strip(),
        markup_percent=form.get("markup_percent", "").strip(),
    )
    if price_type == "flat":
        price.payment_term = PAYMENT_TERMS[term]
    if price_type == "tiered":
        if mode not in TIER_MODES:
            raise InvalidArgument("tier mode must be graduated or volume")
        price.tier_mode = TIER_MODES[mode]
        price.tiers.extend(parse_tiers(form.get("tiers", "")))
    card.price.CopyFrom(price)
    return card


def model_price_from_form(form: dict[str, str], *, default: datetime) -> catalog_pb2.ModelPrice:
    """A model's prices from ``effective_from`` (ISO, UTC when naive), else ``default``."""
    model = form.get("model", "").strip()
    if not model:
        raise InvalidArgument("model is required")
    price = catalog_pb2.ModelPrice(
        model=model,
        input=form.get("input", "").strip(),
        output=form.get("output", "").strip(),
        cached_input=form.get("cached_input", "").strip(),
        reasoning=form.get("reasoning", "").strip(),
    )
    text = form.get("effective_from", "").strip()
    if text:
        try:
            at = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidArgument(
                f"effective from must be an ISO date or time, got {text!r}"
            ) from None
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
    else:
        at = default
    price.effective_from_time.FromDatetime(at)
    return price


def _plan_name(key: str, version: int) -> str:
    return f"plans/{key}/versions/{version}"


class CatalogPages:
    """``/catalog`` (and ``.json``) and the catalog's admin POSTs."""

    def __init__(self, *, change: Change, render: Render, clock: Clock) -> None:
        self._change = change
        self._render = render
        self._clock = clock

    def routes(self) -> list[Route]:
        version = "/plans/{key}/versions/{version:int}"
        return [
            Route("/catalog/features", self.create_feature, methods=["POST"]),
            Route("/catalog/plans", self.create_plan, methods=["POST"]),
            Route(version + "/rate-cards", self.add_rate_card, methods=["POST"]),
            Route(version + "/rate-cards/{card}/delete", self.remove_rate_card, methods=["POST"]),
            Route(version + "/{action}", self.plan_action, methods=["POST"]),
            Route("/catalog/price-lists", self.create_price_list, methods=["POST"]),
            Route("/catalog/price-lists/{key}/prices", self.set_price, methods=["POST"]),
        ]

    async def page(self, request: Request, api: ConsoleApi) -> tuple[str, dict[str, Any]]:
        return "catalog.html", await self._data(api)

    async def _data(self, api: ConsoleApi) -> dict[str, Any]:
        def listing(service: str, method: str, message: Any) -> Awaitable[Any]:
            return api.call(service, method, message(page_size=1000))

        meters, features, plans, price_lists = await asyncio.gather(
            listing("usage", "ListMeters", usage_pb2.ListUsageMetersRequest),
            listing("catalog", "ListFeatures", catalog_pb2.ListFeaturesRequest),
            listing("catalog", "ListPlans", catalog_pb2.ListPlansRequest),
            listing("catalog", "ListPriceLists", catalog_pb2.ListPriceListsRequest),
        )
        return {
            "meters": [to_json(m) for m in meters.meters],
            "features": [to_json(f) for f in features.features],
            "plans": [to_json(p) for p in plans.plans],
            "price_lists": [to_json(p) for p in price_lists.price_lists],
            "price_types": list(PRICE_TYPES),
            "tier_modes": list(TIER_MODES),
            "form_error": {},
            "form": {},
            "title": "Catalog",
        }

    def _guarded(self, request: Request, which: str, run: Run) -> Awaitable[Response]:
        """``run`` inside ``_change``; a domain error comes back beside the form ``which``
        (the catalog page, typed values kept), not as a bare error page."""

        async def guarded(
            api: ConsoleApi, form: dict[str, str], session: Session | None
        ) -> str | Response:
            try:
                return await run(api, form, session)
            except tuple(_ERRORS) as exc:
                status = _ERRORS[type(exc)]
                if "application/json" in request.headers.get("accept", ""):
                    return JSONResponse({"error": str(exc)}, status)
                data = await self._data(api)
                kept = {k: v for k, v in form.items() if k != "csrf"}
                data.update(form_error={which: str(exc)}, form={which: kept})
                return self._render(
                    "catalog.html", data, api, session, path="/catalog", status=status
                )

        return self._change(request, guarded)

    async def create_feature(self, request: Request) -> Response:
        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            key = form.get("key", "").strip()
            feature = catalog_pb2.Feature(
                key=key,
                display_name=form.get("display_name", "").strip(),
                meter=form.get("meter", "").strip(),
                filters=parse_filters(form.get("filters", "")),
            )
            await api.call(
                "catalog", "CreateFeature", catalog_pb2.CreateFeatureRequest(feature=feature)
            )
            return f"/catalog?done=feature+{quote(key)}+created"

        return await self._guarded(request, "feature", run)

    async def create_plan(self, request: Request) -> Response:
        """A draft version of a plan with one rate card (more from the draft's own form).
        A key that exists gets its next draft version, as ``CreatePlan`` does."""

        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            plan = catalog_pb2.Plan(
                key=form.get("key", "").strip(),
                display_name=form.get("display_name", "").strip(),
                currency=form.get("currency", "").strip().upper(),
                billing_cadence=form.get("billing_cadence", "").strip(),
            )
            card = rate_card_from_form(form)
            if card is not None:
                plan.rate_cards.append(card)
            created = await api.call(
                "catalog", "CreatePlan", catalog_pb2.CreatePlanRequest(plan=plan)
            )
            return f"/catalog?done=plan+{quote(created.key)}+v{created.version}+created#plans"

        return await self._guarded(request, "plan", run)

    async def add_rate_card(self, request: Request) -> Response:
        """Another rate card on a draft version (``UpdatePlan``, rate_cards only)."""
        key = request.path_params["key"]
        version = request.path_params["version"]

        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            card = rate_card_from_form(form)
            if card is None:
                raise InvalidArgument("name a feature or a price for the rate card")
            plan = await api.call(
                "catalog", "GetPlan", catalog_pb2.GetPlanRequest(name=_plan_name(key, version))
            )
            plan.rate_cards.append(card)
            await api.call(
                "catalog",
                "UpdatePlan",
                catalog_pb2.UpdatePlanRequest(
                    plan=plan, update_mask=field_mask_pb2.FieldMask(paths=["rate_cards"])
                ),
            )
            return f"/catalog?done=rate+card+added+to+{quote(key)}+v{version}#plans"

        return await self._guarded(request, f"rate-card-{key}-{version}", run)

    async def remove_rate_card(self, request: Request) -> Response:
        key = request.path_params["key"]
        version = request.path_params["version"]
        card_key = request.path_params["card"]

        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            plan = await api.call(
                "catalog", "GetPlan", catalog_pb2.GetPlanRequest(name=_plan_name(key, version))
            )
            kept = [c for c in plan.rate_cards if c.key != card_key]
            if len(kept) == len(plan.rate_cards):
                raise NotFound(f"plan {key} version {version} has no rate card {card_key!r}")
            del plan.rate_cards[:]
            plan.rate_cards.extend(kept)
            await api.call(
                "catalog",
                "UpdatePlan",
                catalog_pb2.UpdatePlanRequest(
                    plan=plan, update_mask=field_mask_pb2.FieldMask(paths=["rate_cards"])
                ),
            )
            return f"/catalog?done=rate+card+removed+from+{quote(key)}+v{version}#plans"

        return await self._guarded(request, f"rate-card-{key}-{version}", run)

    async def plan_action(self, request: Request) -> Response:
        """Plan versions' lifecycle: draft -> published (active) -> archived; a new draft
        version copied from any version."""
        key = request.path_params["key"]
        version = request.path_params["version"]
        action = request.path_params["action"]
        methods = {
            "publish": ("PublishPlan", catalog_pb2.PublishPlanRequest),
            "archive": ("ArchivePlan", catalog_pb2.ArchivePlanRequest),
            "new-version": ("CreatePlanVersion", catalog_pb2.CreatePlanVersionRequest),
        }
        if action not in methods:
            return JSONResponse({"error": "not found"}, 404)
        method, message = methods[action]

        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            answer = await api.call("catalog", method, message(name=_plan_name(key, version)))
            return f"/catalog?done={quote(action)}+{quote(key)}+v{answer.version}#plans"

        return await self._guarded(request, f"plan-{key}-{version}", run)

    async def create_price_list(self, request: Request) -> Response:
        """A price list, with its first model's prices when a model is given."""

        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            key = form.get("key", "").strip()
            price_list = catalog_pb2.PriceList(
                key=key,
                display_name=form.get("display_name", "").strip(),
                currency=form.get("currency", "").strip().upper(),
            )
            if form.get("model", "").strip():
                now = self._clock.now().replace(microsecond=0)
                price_list.prices.append(model_price_from_form(form, default=now))
            await api.call(
                "catalog",
                "CreatePriceList",
                catalog_pb2.CreatePriceListRequest(price_list=price_list),
            )
            return f"/catalog?done=price+list+{quote(key)}+created#price-lists"

        return await self._guarded(request, "price-list", run)

    async def set_price(self, request: Request) -> Response:
        """A model's per-token prices from a time on (default: the next whole minute, since a
        new price never takes effect in the past). Earlier entries stay: usage before that
        time keeps the price it had (``AddModelPrices``)."""
        key = request.path_params["key"]

        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            now = self._clock.now()
            next_minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
            price = model_price_from_form(form, default=next_minute)
            await api.call(
                "catalog",
                "AddModelPrices",
                catalog_pb2.AddModelPricesRequest(name=f"priceLists/{key}", prices=[price]),
            )
            return f"/catalog?done=price+of+{quote(price.model)}+set+in+{quote(key)}#price-lists"

        return await self._guarded(request, f"prices-{key}", run)
