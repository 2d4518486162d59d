"""The console's routes: pages with JSON twins, sign-in, changes behind CSRF and scope checks.

Every page is ``GET /x`` (HTML) and ``GET /x.json`` (the same data as JSON, Datasette style).
Who may do what is decided here, per request, on the server:

- no session (or an expired one): pages redirect to ``/signin``, JSON and POSTs get 401;
- a portal session opens ``/portal/customers/{its customer}`` only: other customers are 404,
  operator pages 403;
- a read operator sees every operator page; every POST is refused with 403 by
  ``ConsoleApi.call`` (the gRPC interceptor's rule), whatever the form looked like;
- every POST from a cookie session carries the session's CSRF token or gets 403. A request
  with ``Authorization: Bearer`` instead of a cookie (scripts, a product's backend) needs none:
  browsers never attach that header on their own.
"""

from __future__ import annotations

import asyncio
import csv
import difflib
import io
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
import yaml
from sqlalchemy import Connection
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from controlplane.api.auth import TokenEntry
from controlplane.clock import Clock
from controlplane.console import margin, usage
from controlplane.console.api import ConsoleApi, Forbidden, Servicers, to_json
from controlplane.console.auth import Kind, Principal, operator_principal
from controlplane.console.catalog_forms import CatalogPages
from controlplane.console.credits import CreditPages, portal_credits
from controlplane.console.margin import Selection as MarginSelection
from controlplane.console.sessions import Session, SessionStore, csrf_ok
from controlplane.customers import storage as customer_storage
from controlplane.declarative.load import load_text
from controlplane.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from controlplane.invoicing import monthly, totals
from controlplane.portal import service as portal_service
from controlplane.portal import storage as portal_storage
from controlplane.portal.types import PORTAL_TOKEN_PREFIX
from controlplane.storage.db import Database
from controlplane.usage.storage import llm_dimensions_match
from meterline.admin.v1 import (
    billing_pb2,
    catalog_pb2,
    customers_pb2,
    dataplanes_pb2,
    entitlements_pb2,
    gateway_pb2,
    notifications_pb2,
    usage_pb2,
)

log = logging.getLogger(__name__)

SESSION_COOKIE = "ml_session"
SIGNIN_COOKIE = "ml_signin"
PAGE_SIZE = 50
MAX_FORM_BYTES = 64 * 1024
_STATUS = {
    NotFound: 404,
    InvalidArgument: 400,
    AlreadyExists: 409,
    FailedPrecondition: 409,
}
INVOICE_STATES = ["gathering", "draft", "issued", "paid", "payment_failed", "void"]
_STATE_ENUM = {s: getattr(billing_pb2, f"INVOICE_STATE_{s.upper()}", None) for s in INVOICE_STATES}


@dataclass(frozen=True)
class ConsoleSettings:
    """How the console is exposed (set by ``meterline controlplane --console-*``)."""

    # Cookies get Secure: the console is served over TLS (directly or behind a TLS proxy).
    secure_cookies: bool = False
    session_ttl: timedelta = timedelta(hours=8)
    # Origins allowed to frame portal pages (CSP frame-ancestors); operator pages: none.
    portal_frame_ancestors: tuple[str, ...] = field(default_factory=tuple)


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class NeedSignIn(Exception):
    pass


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("controlplane.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = _when
    env.filters["money"] = _money
    env.filters["num"] = lambda v: f"{int(v):,}" if v not in (None, "") else ""
    env.filters["state"] = lambda v: str(v).removeprefix("INVOICE_STATE_").lower()
    env.filters["shortenum"] = lambda v, prefix: str(v).removeprefix(prefix).lower()
    env.filters["idof"] = lambda v: str(v).rsplit("/", 1)[-1]
    return env


def _when(value: str | None) -> str:
    """An RFC 3339 / ISO time as "2026-12-07 14:20:05 UTC" (the API's times are all UTC)."""
    if not value:
        return ""
    text = value.replace("T", " ").removesuffix("Z").removesuffix("+00:00")
    return text.split(".")[0] + " UTC"


def _money(value: str | None, currency: str = "") -> str:
    if value in (None, ""):
        return ""
    amount = Decimal(str(value))
    return (
        f"{amount:,.2f} {currency}".strip()
        if amount == amount.quantize(Decimal("0.01"))
        else f"{amount:,} {currency}".strip()
    )


class Console:
    """The console ASGI app over the control plane's servicers."""

    def __init__(
        self,
        *,
        servicers: Servicers,
        db: Database,
        clock: Clock,
        tokens: list[TokenEntry],
        settings: ConsoleSettings | None = None,
    ) -> None:
        self.servicers = servicers
        self.db = db
        self.clock = clock
        self.tokens = tokens
        self.settings = settings or ConsoleSettings()
        self.sessions = SessionStore(db=db, clock=clock, ttl=self.settings.session_ttl)
        self.templates = _templates()
        static = StaticFiles(packages=[("controlplane.console", "static")])
        credit_pages = CreditPages(change=self._change)
        catalog_pages = CatalogPages(
            change=self._change, render=self._page_response, clock=self.clock
        )
        self.app = Starlette(
            routes=[
                Route("/", self.home),
                Route("/signin", self.signin_form, methods=["GET"]),
                Route("/signin", self.signin, methods=["POST"]),
                Route("/signout", self.signout, methods=["POST"]),
                *self._page("/overview", self.overview),
                *self._page("/margin", self.margin),
                *self._page("/customers", self.customers),
                *self._page("/customers/{key}/preview", self.preview),
                *self._page("/customers/{key}/credits", credit_pages.page),
                *credit_pages.routes(),
                Route("/customers/{key}/portal-tokens", self.create_portal_token, methods=["POST"]),
                *self._page("/customers/{key}", self.customer),
                *self._page("/invoices", self.invoices),
                Route("/invoices/{id}/{action}", self.invoice_action, methods=["POST"]),
                *self._page("/invoices/{id}", self.invoice),
                Route("/gateway/consumers", self.create_consumer, methods=["POST"]),
                Route("/gateway/plugins/{id}/edit", self.plugin_form, methods=["GET"]),
                Route("/gateway/plugins/{id}/edit", self.edit_plugin, methods=["POST"]),
                Route("/customers", self.create_customer, methods=["POST"]),
                Route("/customers/{key}/subscriptions", self.create_subscription, methods=["POST"]),
                Route("/subscriptions/{id}/{action}", self.subscription_action, methods=["POST"]),
                Route("/alerts/channels", self.create_channel, methods=["POST"]),
                Route("/alerts/rules", self.create_rule, methods=["POST"]),
                Route("/alerts/evaluate", self.evaluate_alerts, methods=["POST"]),
                Route("/alerts/{kind}/{key}/delete", self.delete_alert, methods=["POST"]),
                *self._page("/alerts", self.alerts),
                Route("/gateway/apply", self.apply_form, methods=["GET"]),
                Route("/gateway/apply", self.apply, methods=["POST"]),
                *self._page("/gateway", self.gateway),
                *self._page("/catalog", catalog_pages.page),
                *catalog_pages.routes(),
                Route("/usage.csv", self.usage_csv),
                *self._page("/usage", self.usage_explorer),
                Route("/portal/signin", self.portal_signin_form, methods=["GET"]),
                Route("/portal/signin", self.portal_signin, methods=["POST"]),
                *self._page("/portal/customers/{key}", self.portal, portal=True),
                Mount("/static", app=static, name="static"),
            ],
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    # -- plumbing ---------------------------------------------------------------------------

    def _page(
        self,
        path: str,
        build: Callable[[Request, ConsoleApi], Awaitable[tuple[str, dict[str, Any]]]],
        *,
        portal: bool = False,
    ) -> list[Route]:
        """``path`` and ``path.json``: one builder, two renderings."""

        async def html(request: Request) -> Response:
            return await self._render(request, build, as_json=False, portal=portal)

        async def as_json(request: Request) -> Response:
            return await self._render(request, build, as_json=True, portal=portal)

        return [Route(path + ".json", as_json), Route(path, html)]

    def _headers(self, *, portal: bool) -> dict[str, str]:
        ancestors = (
            " ".join(["'self'", *self.settings.portal_frame_ancestors]) if portal else "'none'"
        )
        headers = {
            "Content-Security-Policy": (
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                f"object-src 'none'; base-uri 'none'; form-action 'self'; "
                f"frame-ancestors {ancestors}"
            ),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        }
        if not portal:
            headers["X-Frame-Options"] = "DENY"
        return headers

    def _principal(self, request: Request) -> tuple[Principal | None, Session | None]:
        """From a bearer header (no session) or the session cookie."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token:
            principal = self._authenticate(token.strip())
            if principal is None:
                raise HttpError(401, "unknown, expired or revoked token")
            return principal, None
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return None, None
        if not self._still_valid(session.principal):
            self.sessions.delete(session.id)
            return None, None
        return session.principal, session

    def _authenticate(self, token: str) -> Principal | None:
        if token.startswith(PORTAL_TOKEN_PREFIX):
            now = self.clock.now()
            with self.db.begin() as conn:
                found = portal_service.authenticate(conn, token, now=now)
            if found is None:
                return None
            return Principal(
                kind=Kind.PORTAL,
                name=found.id,
                customer=found.customer,
                expire_time=found.expire_time,
            )
        return operator_principal(self.tokens, token)

    def _still_valid(self, principal: Principal) -> bool:
        """A stored session acts only while its token does: a portal token not revoked or
        expired; an operator token still in this replica's tokens file with the same scope."""
        if principal.kind is Kind.PORTAL:
            return self._portal_valid(principal)
        return any(e.name == principal.name and e.scope is principal.scope for e in self.tokens)

    def _portal_valid(self, principal: Principal) -> bool:
        """Revocation reaches open sessions: each request re-reads the token's row."""

        def check(conn: Connection) -> bool:
            try:
                return portal_storage.get_token(conn, principal.name).valid_at(self.clock.now())
            except NotFound:
                return False

        with self.db.begin() as conn:
            return check(conn)

    async def _render(
        self,
        request: Request,
        build: Callable[[Request, ConsoleApi], Awaitable[tuple[str, dict[str, Any]]]],
        *,
        as_json: bool,
        portal: bool,
    ) -> Response:
        headers = self._headers(portal=portal)
        try:
            principal, session = self._principal(request)
            if principal is None:
                raise NeedSignIn
            if portal:
                if principal.kind is Kind.PORTAL and principal.customer != request.path_params.get(
                    "key"
                ):
                    raise HttpError(404, "not found")
            elif not principal.is_operator:
                raise HttpError(403, "a portal token opens no operator page")
            api = ConsoleApi(self.servicers, principal)
            template, data = await build(request, api)
        except NeedSignIn:
            if as_json:
                return JSONResponse({"error": "sign in first"}, 401, headers=headers)
            target = "/portal/signin" if portal else "/signin"
            return RedirectResponse(target, 303, headers=headers)
        except HttpError as exc:
            return self._error(exc.status, exc.message, as_json=as_json, headers=headers)
        except Forbidden as exc:
            return self._error(403, str(exc), as_json=as_json, headers=headers)
        except tuple(_STATUS) as exc:
            status = _STATUS[type(exc)]
            return self._error(status, str(exc), as_json=as_json, headers=headers)
        if as_json:
            return JSONResponse({k: v for k, v in data.items() if k != "title"}, headers=headers)
        context = {
            **data,
            "principal": principal,
            "csrf": session.csrf if session else "",
            "flash": request.query_params.get("done", ""),
            "path": request.url.path,
            "query_string": request.url.query,
        }
        return HTMLResponse(
            self.templates.get_template(template).render(**context), headers=headers
        )

    def _error(
        self, status: int, message: str, *, as_json: bool, headers: dict[str, str]
    ) -> Response:
        if as_json:
            return JSONResponse({"error": message}, status, headers=headers)
        body = self.templates.get_template("error.html").render(
            status=status, message=message, principal=None, csrf="", flash="", path=""
        )
        return HTMLResponse(body, status, headers=headers)

    async def _form(self, request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise HttpError(413, "form too large")
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[0] for k, v in parsed.items()}

    async def _change(
        self,
        request: Request,
        run: Callable[[ConsoleApi, dict[str, str], Session | None], Awaitable[str | Response]],
    ) -> Response:
        """A POST: principal, CSRF (cookie sessions), then ``run``; redirect to its answer
        (a path) or send it (a response)."""
        headers = self._headers(portal=False)
        wants_json = "application/json" in request.headers.get("accept", "")
        try:
            principal, session = self._principal(request)
            if principal is None:
                raise HttpError(401, "sign in first")
            form = await self._form(request)
            if session is not None and not csrf_ok(session, form.get("csrf")):
                raise HttpError(403, "missing or wrong CSRF token; reload the page")
            if not principal.is_operator:
                raise HttpError(403, "a portal token changes nothing")
            target = await run(ConsoleApi(self.servicers, principal), form, session)
        except HttpError as exc:
            return self._error(exc.status, exc.message, as_json=wants_json, headers=headers)
        except Forbidden as exc:
            return self._error(403, str(exc), as_json=wants_json, headers=headers)
        except tuple(_STATUS) as exc:
            status = _STATUS[type(exc)]
            return self._error(status, str(exc), as_json=wants_json, headers=headers)
        if isinstance(target, Response):
            return target
        if wants_json:
            return JSONResponse({"ok": True, "location": target}, headers=headers)
        return RedirectResponse(target, 303, headers=headers)

    def _set_session(self, response: Response, session: Session) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            session.id,
            max_age=int((session.expire_time - self.clock.now()).total_seconds()),
            httponly=True,
            samesite="strict",
            secure=self.settings.secure_cookies,
            path="/",
        )

    # -- sign-in ----------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        principal, _ = self._principal(request)
        if principal is not None and principal.kind is Kind.PORTAL:
            return RedirectResponse(f"/portal/customers/{quote(principal.customer or '')}", 303)
        return RedirectResponse("/overview" if principal else "/signin", 303)

    def _signin_page(self, template: str, *, error: str = "", status: int = 200) -> Response:
        # Login CSRF: the form's token must match a cookie only this site could have set.
        nonce = secrets.token_urlsafe(24)
        body = self.templates.get_template(template).render(
            nonce=nonce, error=error, principal=None, csrf="", flash="", path=""
        )
        portal = template.startswith("portal")
        response = HTMLResponse(body, status, headers=self._headers(portal=portal))
        response.set_cookie(
            SIGNIN_COOKIE,
            nonce,
            max_age=600,
            httponly=True,
            samesite="strict",
            secure=self.settings.secure_cookies,
            path="/",
        )
        return response

    async def signin_form(self, request: Request) -> Response:
        return self._signin_page("signin.html")

    async def portal_signin_form(self, request: Request) -> Response:
        return self._signin_page("portal_signin.html")

    async def _signin(self, request: Request, *, portal: bool) -> Response:
        template = "portal_signin.html" if portal else "signin.html"
        form = await self._form(request)
        nonce = request.cookies.get(SIGNIN_COOKIE, "")
        if not nonce or not secrets.compare_digest(nonce, form.get("nonce", "")):
            return self._signin_page(template, error="The form expired; try again.", status=403)
        token = form.get("token", "").strip()
        principal = self._authenticate(token) if token else None
        if principal is None or (portal != (principal.kind is Kind.PORTAL)):
            # Never echo or log the token; say only that it did not work.
            log.info(
                "console sign-in refused from %s", request.client.host if request.client else "?"
            )
            return self._signin_page(template, error="That token is not valid here.", status=401)
        session = self.sessions.create(principal)
        target = f"/portal/customers/{quote(principal.customer or '')}" if portal else "/overview"
        response = RedirectResponse(target, 303, headers=self._headers(portal=portal))
        self._set_session(response, session)
        response.delete_cookie(SIGNIN_COOKIE, path="/")
        log.info("console sign-in: %s %s", principal.kind.value, principal.name)
        return response

    async def signin(self, request: Request) -> Response:
        return await self._signin(request, portal=False)

    async def portal_signin(self, request: Request) -> Response:
        return await self._signin(request, portal=True)

    async def signout(self, request: Request) -> Response:
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        form = await self._form(request)
        if session is None or not csrf_ok(session, form.get("csrf")):
            return self._error(403, "missing or wrong CSRF token", as_json=False, headers={})
        self.sessions.delete(session.id)
        response = RedirectResponse("/signin", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # -- pages ------------------------------------------------------------------------------

    async def overview(self, request: Request, api: ConsoleApi) -> tuple[str, dict[str, Any]]:
        now = self.clock.now()
        start = usage.month_start(now)
        window = request.query_params.get("window", "day")
        if window not in usage.WINDOWS:
            raise InvalidArgument(f"window must be hour or day, got {window!r}")
        # The open invoices' total is the longest read: it starts first, the rest beside it.
        billed_task = asyncio.ensure_future(self._open_totals(api))
        try:
            costs = await usage.route_costs(api)
        except BaseException:
            billed_task.cancel()
            raise
        reader = usage.UsageReader(self.db, api)
        # By hour, the charts show the last hours only (the figures stay the month's): a month
        # by hour is hours x dimension sets rows, and its chart too many points to read.
        chart_start = (
            max(start, now.replace(minute=0, second=0, microsecond=0) - HOURLY_CHART)
            if window == "hour"
            else start
        )

        async def period_usage() -> usage.Usage:
            if window == "day":
                return await usage.span_usage(reader, start=start, end=now, costs=costs)
            month, hours = await asyncio.gather(
                usage.span_usage(reader, start=start, end=now, costs=costs),
                usage.span_usage(reader, start=chart_start, end=now, window="hour"),
            )
            return replace(month, chart=hours.chart, chart_by_type=hours.chart_by_type)

        async def top_customers() -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, str]]:
            top, chart = await usage.top_subjects(
                reader,
                start=start,
                end=now,
                window=window,
                chart_start=chart_start,
                costs=costs,
                top=TOP_CUSTOMERS,
            )
            owners = await asyncio.to_thread(self._owners, [e["subject"] for e in top])
            return top, chart, owners

        # Independent reads, each in its own transaction (threads): their database time overlaps.
        period, (top, by_subject_chart, owners), open_totals, features = await asyncio.gather(
            period_usage(),
            top_customers(),
            billed_task,
            api.call("catalog", "ListFeatures", catalog_pb2.ListFeaturesRequest(page_size=1000)),
        )
        billed = {c: str(v) for c, v in sorted(open_totals.by_currency.items())}
        margin = {
            currency: str(Decimal(amount) - (period.provider_cost if currency == "USD" else 0))
            for currency, amount in billed.items()
        }
        customers, by_customer_chart = _by_customer(top, by_subject_chart, owners, open_totals)
        return "overview.html", {
            "period": {"start": start.isoformat(), "end": now.isoformat()},
            **period.to_json(),
            "billed": billed,
            "margin": margin,
            "chart_by_customer": by_customer_chart,
            "margin_by_customer": customers,
            "margin_by_model": _margin_by_model(period, open_totals),
            "margin_by_feature": _margin_by_feature(period, open_totals, features.features),
            "title": "Overview",
        }

    async def margin(self, request: Request, api: ConsoleApi) -> tuple[str, dict[str, Any]]:
        """Billed revenue beside provider cost per month, for all or one customer, model or
        feature (``margin.over_time``)."""
        params = request.query_params
        text = params.get("months", "6")
        try:
            months = int(text)
        except ValueError:
            raise InvalidArgument(f"months must be a whole number, got {text!r}") from None
        selection = margin.Selection(
            customer=params.get("customer", "").strip(),
            model=params.get("model", "").strip(),
            feature=params.get("feature", "").strip(),
        )
        figures, features = await asyncio.gather(
            margin.over_time(
                api,
                now=self.clock.now(),
                months=months,
                selection=selection,
                open_totals=lambda: self._open_totals(api),
                closed_billed=lambda starts, chosen: self._closed_billed(api, starts, chosen),
                reader=usage.UsageReader(self.db, api),
            ),
            api.call("catalog", "ListFeatures", catalog_pb2.ListFeaturesRequest(page_size=1000)),
        )
        return "margin.html", {
            **figures,
            "months_shown": months,
            "features": sorted(f.key for f in features.features),
            "title": "Margin over time",
        }

    def _owners(self, subjects: list[str]) -> dict[str, str]:
        with self.db.begin() as conn:
            return customer_storage.customers_of_subjects(conn, subjects)

    async def _open_totals(self, api: ConsoleApi) -> totals.OpenTotals:
        """Every customer's open invoice now: exactly the sum of their previews, previewing
        only customers with usage or credits one by one (``invoicing.totals``)."""
        if not api.principal.may_call("PreviewInvoice"):
            raise Forbidden(f"{api.principal.name!r} may not call PreviewInvoice")
        at = self.clock.now()

        return await asyncio.to_thread(totals.open_totals_concurrently, self.db, at=at)

    async def _closed_billed(
        self, api: ConsoleApi, starts: list[datetime], selection: MarginSelection
    ) -> list[dict[str, Decimal]]:
        """The closed invoices' totals per month (what ``ListInvoices`` returns, summed by the
        database: ``invoicing.monthly``)."""
        if not api.principal.may_call("ListInvoices"):
            raise Forbidden(f"{api.principal.name!r} may not call ListInvoices")

        def read() -> list[dict[str, Decimal]]:
            with self.db.begin() as conn:
                return monthly.billed_by_month(
                    conn,
                    starts=starts,
                    customer=selection.customer,
                    model=selection.model,
                    feature=selection.feature,
                )

        return await asyncio.to_thread(read)

    async def customers(self, request: Request, api: ConsoleApi) -> tuple[str, dict[str, Any]]:
        q = request.query_params.get("q", "").strip()
        answer = await api.call(
            "customers",
            "ListCustomers",
            customers_pb2.ListCustomersRequest(
                page_size=PAGE_SIZE,
                page_token=request.query_params.get("page_token", ""),
                search=q,
            ),
        )
        return "customers.html", {
            "customers": [to_json(c) for c in answer.customers],
            "next_page_token": answer.next_page_token,
            "q": q,
            "title": "Customers",
        }

    async def customer(self, request: Request, api: ConsoleApi) -> tuple[str, dict[str, Any]]:
        key = request.path_params["key"]
        name = f"customers/{key}"
        # Independent reads, each in its own transaction (threads): their database time overlaps.
        (
            customer,
            subs,
            entitlements,
            invoices,
            budgets,
            portal_tokens,
            plans,
        ) = await asyncio.gather(
            api.call("customers", "GetCustomer", customers_pb2.GetCustomerRequest(name=name)),
            api.call(
                "customers",
                "ListSubscriptions",
                customers_pb2.ListSubscriptionsRequest(parent=name, page_size=1000),
            ),
            api.call(
                "entitlements",
                "ListEntitlements",
                entitlements_pb2.ListEntitlementsRequest(customer=name),
            ),
            api.call(
                "billing",
                "ListInvoices",
                billing_pb2.ListInvoicesRequest(parent=name, page_size=1000),
            ),
            api.call(
                "entitlements",
                "ListBudgets",
                entitlements_pb2.ListBudgetsRequest(parent=name, page_size=1000),
            ),
            api.call(
                "customers",
                "ListPortalTokens",
                customers_pb2.ListPortalTokensRequest(parent=name, page_size=1000),
            ),
            api.call("catalog", "ListPlans", catalog_pb2.ListPlansRequest(page_size=1000)),
        )
        active = sorted({p.key for p in plans.plans if p.state == catalog_pb2.PLAN_STATE_ACTIVE})
        return "customer.html", {
            "plans": active,
            "customer": to_json(customer),
            "subscriptions": [to_json(s) for s in subs.subscriptions],
            "entitlements": [to_json(e) for e in entitlements.entitlements],
            "invoices": [to_json(i) for i in invoices.invoices],
            "budgets": [to_json(b) for b in budgets.budgets],
            "portal_tokens": [to_json(t) for t in portal_tokens.portal_tokens],
            "new_portal_token": "",
            "title": f"Customer {key}",
        }

    async def preview(self, request: Request, api: ConsoleApi) -> tuple[str, dict[str, Any]]:
        key = request.path_params["key"]
        invoice = await api.call(
            "billing",
            "PreviewInvoice",
            billing_pb2.PreviewInvoiceRequest(customer=f"customers/{key}"),
        )
        return "invoice.html", {
            "invoice": to_json(invoice),
            "preview": True,
            "customer_key": key,
            "title": f"Invoice preview: {key}",
        }

    async def invoices(self, request: Request, api: ConsoleApi) -> tuple[str, dict[str, Any]]:
        state = request.query_params.get("state", "")
        if state and state not in INVOICE_STATES:
            raise InvalidArgument(f"state must be one of {', '.join(INVOICE_STATES)}")
        states: list[Any] = [_STATE_ENUM[state]] if state else []
        answer = await api.call(
            "billing",
            "ListInvoices",
            billing_pb2.ListInvoicesRequest(
                states=states,
                page_size=PAGE_SIZE,
                page_token=request.query_params.get("page_token", ""),
            ),
        )
        return "invoices.html", {
            "invoices": [to_json(i) for i in answer.invoices],
            "next_page_token": answer.next_page_token,
            "state": state,
            "states": INVOICE_STATES,
            "title": "Invoices",
        }

    async def invoice(self, request: Request, api: ConsoleApi) -> tuple[str, dict[str, Any]]:
        id = request.path_params["id"]
        invoice = await api.call(
            "billing", "GetInvoice", billing_pb2.GetInvoiceRequest(name=f"invoices/{id}")
        )
        return "invoice.html", {
            "invoice": to_json(invoice),
            "preview": False,
            "customer_key": invoice.customer.removeprefix("customers/"),
            "title": f"Invoice {invoice.number or id}",
        }

    async def invoice_action(self, request: Request) -> Response:
        id = request.path_params["id"]
        action = request.path_params["action"]
        methods = {
            "issue": ("IssueInvoice", billing_pb2.IssueInvoiceRequest),
            "void": ("VoidInvoice", billing_pb2.VoidInvoiceRequest),
            "mark-paid": ("MarkInvoicePaid", billing_pb2.MarkInvoicePaidRequest),
            "retry-sync": ("RetryInvoiceSync", billing_pb2.RetryInvoiceSyncRequest),
        }
        if action not in methods:
            return self._error(404, "not found", as_json=False, headers=self._headers(portal=False))
        method, message = methods[action]

        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            request_message = message(name=f"invoices/{id}")
            if action == "issue" and form.get("force") == "1":
                # An open period's invoice is issued before its end only when asked to.
                request_message.force = True
            await api.call("billing", method, request_message)
            return f"/invoices/{quote(id)}?done={quote(action)}"

        return await self._change(request, run)

    async def create_portal_token(self, request: Request) -> Response:
        key = request.path_params["key"]

        async def run(
            api: ConsoleApi, form: dict[str, str], session: Session | None
        ) -> str | Response:
            hours = form.get("ttl_hours", "24")
            try:
                ttl = int(float(hours) * 3600)
            except ValueError:
                raise InvalidArgument(f"ttl_hours must be a number, got {hours!r}") from None
            created = await api.call(
                "customers",
                "CreatePortalToken",
                customers_pb2.CreatePortalTokenRequest(parent=f"customers/{key}", ttl_seconds=ttl),
            )
            if "application/json" in request.headers.get("accept", ""):
                return JSONResponse(to_json(created), headers=self._headers(portal=False))
            # Shown once, in this answer's body, never in a URL.
            _, data = await self.customer(request, api)
            body = self.templates.get_template("customer.html").render(
                **{**data, "new_portal_token": created.token},
                principal=api.principal,
                csrf=session.csrf if session else "",
                flash="",
                path=f"/customers/{key}",
            )
            return HTMLResponse(body, headers=self._headers(portal=False))

        return await self._change(request, run)

    async def gateway(self, request: Request, api: ConsoleApi) -> tuple[str, dict[str, Any]]:
        def listing(method: str, message: Any) -> Awaitable[Any]:
            return api.call("gateway", method, message(page_size=1000))

        services, routes, consumers, plugins = await asyncio.gather(
            listing("ListServices", gateway_pb2.ListServicesRequest),
            listing("ListRoutes", gateway_pb2.ListRoutesRequest),
            listing("ListConsumers", gateway_pb2.ListConsumersRequest),
            listing("ListPlugins", gateway_pb2.ListPluginsRequest),
        )
        planes = await api.call(
            "dataplanes",
            "ListDataPlanes",
            dataplanes_pb2.ListDataPlanesRequest(page_size=1000),
        )
        return "gateway.html", {
            "services": [to_json(s) for s in services.services],
            "routes": [to_json(r) for r in routes.routes],
            "consumers": [to_json(c) for c in consumers.consumers],
            "plugins": [to_json(p) for p in plugins.plugins],
            "data_planes": [to_json(d) for d in planes.data_planes],
            "title": "Gateway",
        }

    async def apply_form(self, request: Request) -> Response:
        return await self._render(request, self._apply_page, as_json=False, portal=False)

    async def _apply_page(self, request: Request, api: ConsoleApi) -> tuple[str, dict[str, Any]]:
        return "apply.html", _apply_context()

    async def apply(self, request: Request) -> Response:
        """A declarative document, as ``meterline apply`` takes it: preview (validate only,
        the changes it would make), then apply. Bad documents come back with their error."""

        async def run(
            api: ConsoleApi, form: dict[str, str], session: Session | None
        ) -> str | Response:
            document = form.get("document", "")
            preview = form.get("mode") != "apply"
            context = _apply_context(document=document)
            try:
                answer = await api.call(
                    "gateway",
                    "ApplyConfig",
                    gateway_pb2.ApplyConfigRequest(document=document, validate_only=preview),
                )
            except InvalidArgument as exc:
                context["error"] = str(exc)
                status = 400
            else:
                context.update(
                    changes=list(answer.changes),
                    previewed=preview,
                    applied=not preview,
                    config_version=answer.config_version,
                )
                status = 200
            if "application/json" in request.headers.get("accept", ""):
                body = {k: v for k, v in context.items() if k not in ("title", "no_twin")}
                return JSONResponse(body, status, headers=self._headers(portal=False))
            html = self.templates.get_template("apply.html").render(
                **context,
                principal=api.principal,
                csrf=session.csrf if session else "",
                flash="",
                path="/gateway/apply",
            )
            return HTMLResponse(html, status, headers=self._headers(portal=False))

        return await self._change(request, run)

    async def _usage_query(self, request: Request, api: ConsoleApi) -> tuple[dict[str, Any], Any]:
        """The explorer's query from its URL: meter, group_by (repeated), filter k=v
        (repeated), window, from/to (ISO dates or times; default this month so far)."""
        params = request.query_params
        meter = params.get("meter", "llm_tokens")
        group_by = [g for g in params.getlist("group_by") if g]
        filters: dict[str, str] = {}
        for item in params.getlist("filter"):
            if not item:
                continue
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise InvalidArgument(f"filter must be DIMENSION=VALUE, got {item!r}")
            filters[name.strip()] = value.strip()
        window = params.get("window", "day")
        if window not in ("", "minute", "hour", "day"):
            raise InvalidArgument(f"window must be minute, hour, day or empty, got {window!r}")
        now = self.clock.now()
        start = _parse_time(params.get("from", ""), "from") or usage.month_start(now)
        end = _parse_time(params.get("to", ""), "to") or now
        message = usage_pb2.QueryMeterRequest(
            meter=meter,
            group_by=group_by,
            filters=filters,
            window_size={
                "": usage_pb2.WINDOW_SIZE_UNSPECIFIED,
                "minute": usage_pb2.WINDOW_SIZE_MINUTE,
                "hour": usage_pb2.WINDOW_SIZE_HOUR,
                "day": usage_pb2.WINDOW_SIZE_DAY,
            }[window],
        )
        message.start_time.FromDatetime(start)
        message.end_time.FromDatetime(end)
        answer = await api.call("usage", "QueryMeter", message)
        query = {
            "meter": meter,
            "group_by": group_by,
            "filters": filters,
            "window": window,
            "from": start.isoformat(),
            "to": end.isoformat(),
        }
        return query, answer

    async def usage_explorer(self, request: Request, api: ConsoleApi) -> tuple[str, dict[str, Any]]:
        query, answer = await self._usage_query(request, api)
        meters = await api.call(
            "usage", "ListMeters", usage_pb2.ListUsageMetersRequest(page_size=1000)
        )
        rows = [to_json(r) for r in answer.rows]
        return "usage.html", {
            "query": query,
            "rows": rows,
            "chart": _explorer_chart(answer.rows, query),
            "meters": [{"key": m.key, "dimensions": sorted(m.group_by)} for m in meters.meters],
            "csv_query": str(request.query_params),
            "title": "Usage explorer",
        }

    async def usage_csv(self, request: Request) -> Response:
        """The explorer's rows as CSV (same query string as /usage)."""
        headers = self._headers(portal=False)
        try:
            principal, _ = self._principal(request)
            if principal is None:
                raise HttpError(401, "sign in first")
            if not principal.is_operator:
                raise HttpError(403, "a portal token opens no operator page")
            query, answer = await self._usage_query(request, ConsoleApi(self.servicers, principal))
        except HttpError as exc:
            return self._error(exc.status, exc.message, as_json=True, headers=headers)
        except tuple(_STATUS) as exc:
            return self._error(_STATUS[type(exc)], str(exc), as_json=True, headers=headers)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["window_start", "window_end", *query["group_by"], "value", "events"])
        for row in answer.rows:
            writer.writerow(
                [
                    row.window_start.ToJsonString() if row.HasField("window_start") else "",
                    row.window_end.ToJsonString() if row.HasField("window_end") else "",
                    *(row.group.get(g, "") for g in query["group_by"]),
                    row.value,
                    row.event_count,
                ]
            )
        return Response(
            out.getvalue(),
            media_type="text/csv",
            headers={
                **headers,
                "Content-Disposition": f'attachment; filename="{query["meter"]}.csv"',
            },
        )

    # -- per-resource forms (admin; CSRF and scope checked by ``_change``) -------------------

    def _page_response(
        self,
        template: str,
        data: dict[str, Any],
        api: ConsoleApi,
        session: Session | None,
        *,
        path: str,
        status: int = 200,
    ) -> Response:
        """A page rendered as the answer of a POST (for what is shown once, or an error)."""
        body = self.templates.get_template(template).render(
            **data,
            principal=api.principal,
            csrf=session.csrf if session else "",
            flash="",
            path=path,
            query_string="",
        )
        return HTMLResponse(body, status, headers=self._headers(portal=False))

    async def create_consumer(self, request: Request) -> Response:
        """A consumer and its first key credential; the key is shown once, in this answer."""

        async def run(
            api: ConsoleApi, form: dict[str, str], session: Session | None
        ) -> str | Response:
            username = form.get("username", "").strip()
            if not username:
                raise InvalidArgument("username is required")
            consumer = gateway_pb2.Consumer(
                username=username, custom_id=form.get("custom_id", "").strip()
            )
            await api.call(
                "gateway", "CreateConsumer", gateway_pb2.CreateConsumerRequest(consumer=consumer)
            )
            credential = await api.call(
                "gateway",
                "CreateKeyAuthCredential",
                gateway_pb2.CreateKeyAuthCredentialRequest(parent=f"consumers/{username}"),
            )
            if "application/json" in request.headers.get("accept", ""):
                return JSONResponse(
                    {"consumer": username, "key": credential.key},
                    headers=self._headers(portal=False),
                )
            _, data = await self.gateway(request, api)
            data.update(new_key=credential.key, new_key_consumer=username)
            return self._page_response("gateway.html", data, api, session, path="/gateway")

        return await self._change(request, run)

    async def _plugin_yaml(self, api: ConsoleApi, id: str) -> tuple[dict[str, Any], str]:
        """The plugin and its document: for an admin, the plugin with the entities it names
        as ``meterline dump`` writes them (so apply validates it alone and changes only what
        was edited); for a read token, the plugin alone (secrets redacted)."""
        plugin = to_json(
            await api.call(
                "gateway", "GetPlugin", gateway_pb2.GetPluginRequest(name=f"plugins/{id}")
            )
        )
        if not api.principal.can_change:
            return plugin, plugin_document(plugin)
        exported = await api.call("gateway", "ExportConfig", gateway_pb2.ExportConfigRequest())
        return plugin, plugin_edit_document(exported.document, plugin)

    async def plugin_form(self, request: Request) -> Response:
        return await self._render(request, self._plugin_page, as_json=False, portal=False)

    async def _plugin_page(self, request: Request, api: ConsoleApi) -> tuple[str, dict[str, Any]]:
        plugin, document = await self._plugin_yaml(api, request.path_params["id"])
        return "plugin.html", _plugin_context(plugin, document=document)

    async def edit_plugin(self, request: Request) -> Response:
        """One plugin as YAML: preview (the same validation as ``meterline apply`` and a diff
        against the stored plugin), then apply. The document must stay this one plugin."""
        id = request.path_params["id"]

        async def run(
            api: ConsoleApi, form: dict[str, str], session: Session | None
        ) -> str | Response:
            plugin, original = await self._plugin_yaml(api, id)
            document = form.get("document", "").replace("\r\n", "\n")
            preview = form.get("mode") != "apply"
            context = _plugin_context(plugin, document=document)
            context["diff"] = "".join(
                difflib.unified_diff(
                    original.splitlines(keepends=True),
                    document.splitlines(keepends=True)
                    if document.endswith("\n")
                    else (document + "\n").splitlines(keepends=True),
                    "stored",
                    "edited",
                )
            )
            status = 200
            try:
                check_plugin_document(document, original, plugin)
                answer = await api.call(
                    "gateway",
                    "ApplyConfig",
                    gateway_pb2.ApplyConfigRequest(document=document, validate_only=preview),
                )
            except InvalidArgument as exc:
                context["error"] = str(exc)
                status = 400
            else:
                context.update(
                    changes=list(answer.changes),
                    notes=list(answer.notes),
                    previewed=preview,
                    applied=not preview,
                    config_version=answer.config_version,
                )
            if "application/json" in request.headers.get("accept", ""):
                body = {k: v for k, v in context.items() if k not in ("title", "no_twin")}
                return JSONResponse(body, status, headers=self._headers(portal=False))
            return self._page_response(
                "plugin.html",
                context,
                api,
                session,
                path=f"/gateway/plugins/{id}/edit",
                status=status,
            )

        return await self._change(request, run)

    async def create_customer(self, request: Request) -> Response:
        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            key = form.get("key", "").strip()
            subjects = [x.strip() for x in form.get("subjects", "").split(",") if x.strip()]
            customer = customers_pb2.Customer(
                key=key, display_name=form.get("display_name", "").strip(), subjects=subjects
            )
            await api.call(
                "customers",
                "CreateCustomer",
                customers_pb2.CreateCustomerRequest(customer=customer),
            )
            return f"/customers/{quote(key)}?done=created"

        return await self._change(request, run)

    async def create_subscription(self, request: Request) -> Response:
        key = request.path_params["key"]

        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            plan = form.get("plan", "").strip()
            if not plan:
                raise InvalidArgument("choose a plan")
            sub = customers_pb2.Subscription(customer=f"customers/{key}", plan=f"plans/{plan}")
            start = _parse_time(form.get("start", "").strip(), "start")
            sub.start_time.FromDatetime(start or self.clock.now())
            await api.call(
                "customers",
                "CreateSubscription",
                customers_pb2.CreateSubscriptionRequest(subscription=sub),
            )
            return f"/customers/{quote(key)}?done=subscribed"

        return await self._change(request, run)

    async def subscription_action(self, request: Request) -> Response:
        """Cancel (now or at the period's end) or change the plan of a running subscription."""
        id = request.path_params["id"]
        action = request.path_params["action"]
        if action not in ("cancel", "change-plan"):
            return self._error(404, "not found", as_json=False, headers=self._headers(portal=False))

        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            name = f"subscriptions/{id}"
            if action == "cancel":
                timing = {
                    "now": customers_pb2.CANCEL_TIMING_IMMEDIATELY,
                    "period_end": customers_pb2.CANCEL_TIMING_PERIOD_END,
                }.get(form.get("timing", "now"))
                if timing is None:
                    raise InvalidArgument("timing must be now or period_end")
                sub = await api.call(
                    "customers",
                    "CancelSubscription",
                    customers_pb2.CancelSubscriptionRequest(name=name, timing=timing),
                )
            else:
                plan = form.get("plan", "").strip()
                if not plan:
                    raise InvalidArgument("choose a plan")
                sub = await api.call(
                    "customers",
                    "ChangeSubscriptionPlan",
                    customers_pb2.ChangeSubscriptionPlanRequest(name=name, plan=f"plans/{plan}"),
                )
            customer = sub.customer.removeprefix("customers/")
            return f"/customers/{quote(customer)}?done={quote(action)}"

        return await self._change(request, run)

    # -- alerts -----------------------------------------------------------------------------

    async def alerts(self, request: Request, api: ConsoleApi) -> tuple[str, dict[str, Any]]:
        """Channels, rules, the newest events and deliveries (the notification service's)."""
        channels, rules, events, deliveries = await asyncio.gather(
            api.call(
                "notifications",
                "ListChannels",
                notifications_pb2.ListChannelsRequest(page_size=1000),
            ),
            api.call(
                "notifications", "ListRules", notifications_pb2.ListRulesRequest(page_size=1000)
            ),
            api.call(
                "notifications",
                "ListEvents",
                notifications_pb2.ListEventsRequest(page_size=ALERT_ROWS),
            ),
            api.call(
                "notifications",
                "ListDeliveries",
                notifications_pb2.ListDeliveriesRequest(page_size=ALERT_ROWS),
            ),
        )
        return "alerts.html", {
            "channels": [to_json(c) for c in channels.channels],
            "rules": [to_json(r) for r in rules.rules],
            "events": [to_json(e) for e in events.events],
            "deliveries": [to_json(d) for d in deliveries.deliveries],
            "rule_types": list(RULE_TYPES),
            "title": "Alerts",
        }

    async def create_channel(self, request: Request) -> Response:
        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            channel = notifications_pb2.NotificationChannel(
                key=form.get("key", "").strip(),
                url=form.get("url", "").strip(),
                signing_secret=form.get("signing_secret", ""),
            )
            await api.call(
                "notifications",
                "CreateChannel",
                notifications_pb2.CreateChannelRequest(channel=channel),
            )
            return "/alerts?done=channel+created"

        return await self._change(request, run)

    async def create_rule(self, request: Request) -> Response:
        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            kind = RULE_TYPES.get(form.get("type", ""))
            if kind is None:
                raise InvalidArgument(f"type must be one of {', '.join(RULE_TYPES)}")
            listed = [x.strip() for x in form.get("thresholds", "").split(",") if x.strip()]
            events = [x.strip() for x in form.get("invoice_events", "").split(",") if x.strip()]
            customer = form.get("customer", "").strip()
            rule = notifications_pb2.NotificationRule(
                key=form.get("key", "").strip(),
                type=kind,
                channel=form.get("channel", "").strip(),
                thresholds=listed,
                feature=form.get("feature", "").strip(),
                customer=f"customers/{customer}" if customer else "",
                invoice_events=events,
            )
            await api.call(
                "notifications", "CreateRule", notifications_pb2.CreateRuleRequest(rule=rule)
            )
            return "/alerts?done=rule+created"

        return await self._change(request, run)

    async def delete_alert(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        key = request.path_params["key"]
        methods = {
            "channels": ("DeleteChannel", notifications_pb2.DeleteChannelRequest),
            "rules": ("DeleteRule", notifications_pb2.DeleteRuleRequest),
        }
        if kind not in methods:
            return self._error(404, "not found", as_json=False, headers=self._headers(portal=False))
        method, message = methods[kind]

        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            await api.call("notifications", method, message(name=f"{kind}/{key}"))
            return f"/alerts?done={quote(kind.rstrip('s'))}+deleted"

        return await self._change(request, run)

    async def evaluate_alerts(self, request: Request) -> Response:
        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            answer = await api.call(
                "notifications",
                "EvaluateNotifications",
                notifications_pb2.EvaluateNotificationsRequest(),
            )
            return (
                f"/alerts?done={answer.events_created}+events,+{answer.attempts}+delivery+attempts"
            )

        return await self._change(request, run)

    # -- the portal -------------------------------------------------------------------------

    async def portal(self, request: Request, api: ConsoleApi) -> tuple[str, dict[str, Any]]:
        """One customer's usage portal: an operator may open any, a portal token its own."""
        key = request.path_params["key"]
        name = f"customers/{key}"
        customer = await api.unchecked(
            "customers", "GetCustomer", customers_pb2.GetCustomerRequest(name=name)
        )
        now = self.clock.now()
        start = usage.month_start(now)
        costs: dict[str, usage.RouteCost] = {}

        async def preview() -> dict[str, Any] | None:
            try:
                return to_json(
                    await api.unchecked(
                        "billing",
                        "PreviewInvoice",
                        billing_pb2.PreviewInvoiceRequest(customer=name),
                    )
                )
            except (NotFound, FailedPrecondition):
                return None

        # Independent reads, each in its own transaction (threads): their database time overlaps.
        used, preview_json, entitlements, invoices, budgets, credits = await asyncio.gather(
            usage.span_usage(
                usage.UsageReader(self.db, api, checked=False),
                start=start,
                end=now,
                subjects=list(customer.subjects),
                costs=costs,
            ),
            preview(),
            api.unchecked(
                "entitlements",
                "ListEntitlements",
                entitlements_pb2.ListEntitlementsRequest(customer=name),
            ),
            api.unchecked(
                "billing",
                "ListInvoices",
                billing_pb2.ListInvoicesRequest(parent=name, page_size=1000),
            ),
            api.unchecked(
                "entitlements",
                "ListBudgets",
                entitlements_pb2.ListBudgetsRequest(parent=name, page_size=1000),
            ),
            portal_credits(api, name),
        )
        usage_json = used.to_json()
        # A customer sees its tokens, never its provider's cost.
        usage_json.pop("provider_cost")
        for model in usage_json["models"]:
            model.pop("provider_cost", None)
        return "portal.html", {
            "customer": {"key": customer.key, "display_name": customer.display_name},
            "period": {"start": start.isoformat(), "end": now.isoformat()},
            "usage": usage_json,
            "cost_so_far": (
                {"amount": preview_json["total"], "currency": preview_json["currency"]}
                if preview_json
                else None
            ),
            "preview": preview_json,
            "credits": credits,
            "entitlements": [to_json(e) for e in entitlements.entitlements],
            "budgets": [to_json(b) for b in budgets.budgets],
            "invoices": [
                _portal_invoice(to_json(i))
                for i in invoices.invoices
                if i.state != billing_pb2.INVOICE_STATE_GATHERING
            ],
            "title": customer.display_name or customer.key,
        }


def _parse_time(text: str, what: str) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(f"{what} must be an ISO date or time, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _explorer_chart(rows: Any, query: dict[str, Any]) -> dict[str, Any]:
    """Windowed rows as uPlot series, one per group (the group's values joined)."""
    if not query["window"]:
        return {"times": [], "series": {}, "window": ""}
    times = sorted({r.window_start.seconds for r in rows})
    index = {t: i for i, t in enumerate(times)}
    series: dict[str, list[float | None]] = {}
    for row in rows:
        label = ", ".join(row.group.get(g, "") for g in query["group_by"]) or query["meter"]
        values = series.setdefault(label, [None] * len(times))
        # Chart coordinates only: the table and the JSON keep the exact decimal strings.
        values[index[row.window_start.seconds]] = float(Decimal(row.value))
    start = int(datetime.fromisoformat(query["from"]).timestamp())
    end = int(datetime.fromisoformat(query["to"]).timestamp())
    return {
        "times": times,
        "series": dict(sorted(series.items())),
        "window": query["window"],
        "start": start,
        "end": end,
    }


def _apply_context(document: str = "") -> dict[str, Any]:
    return {
        "document": document,
        "changes": [],
        "previewed": False,
        "applied": False,
        "config_version": "",
        "error": "",
        "title": "Apply a configuration",
        "no_twin": True,
    }


def _portal_invoice(invoice: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "id",
        "number",
        "currency",
        "period_start_time",
        "period_end_time",
        "total",
        "state",
        "issue_time",
        "lines",
    )
    return {k: invoice[k] for k in keep if k in invoice}


ALERT_ROWS = 50
RULE_TYPES = {
    "entitlement_threshold": notifications_pb2.NOTIFICATION_RULE_TYPE_ENTITLEMENT_THRESHOLD,
    "budget_threshold": notifications_pb2.NOTIFICATION_RULE_TYPE_BUDGET_THRESHOLD,
    "invoice": notifications_pb2.NOTIFICATION_RULE_TYPE_INVOICE,
}
REDACTED = "<redacted>"


def plugin_document(plugin: dict[str, Any]) -> str:
    """One plugin as a declarative document ``meterline apply`` takes (secrets redacted)."""
    entry: dict[str, Any] = {"name": plugin["plugin_name"]}
    for scope in ("service", "route", "consumer"):
        if plugin.get(scope):
            entry[scope] = str(plugin[scope]).rsplit("/", 1)[-1]
    entry["enabled"] = bool(plugin.get("enabled"))
    entry.update(plugin.get("attributes") or {})
    # Sorted keys: the same plugin always reads the same, so the diff shows only edits.
    entry["config"] = _sorted(_whole_numbers(plugin.get("config") or {}))
    return yaml.safe_dump(
        {"_format_version": "3.0", "plugins": [entry]}, sort_keys=False, allow_unicode=True
    )


def _whole_numbers(value: Any) -> Any:
    """A Struct's numbers are doubles: 600.0 is written back as the 600 the file had."""
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def _scope(entry: dict[str, Any]) -> tuple[str, ...]:
    return tuple(
        str(entry.get(k) or "").rsplit("/", 1)[-1] for k in ("service", "route", "consumer")
    )


def plugin_edit_document(exported: str, plugin: dict[str, Any]) -> str:
    """From ``meterline dump``'s document: the plugin and the entities it names, as they are."""
    data = yaml.safe_load(exported) or {}
    scope = _scope(plugin)
    service, route, consumer = scope
    routes = [r for r in data.get("routes") or [] if route and r.get("name") == route]
    services_named = {service} | {str(r.get("service") or "") for r in routes}
    document: dict[str, Any] = {"_format_version": data.get("_format_version", "3.0")}
    for kind, keep in (
        ("services", [s for s in data.get("services") or [] if s.get("name") in services_named]),
        ("routes", routes),
        (
            "consumers",
            [c for c in data.get("consumers") or [] if consumer and c.get("username") == consumer],
        ),
        (
            "plugins",
            [
                p
                for p in data.get("plugins") or []
                if p.get("name") == plugin["plugin_name"] and _scope(p) == scope
            ],
        ),
    ):
        if keep:
            document[kind] = keep
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def check_plugin_document(document: str, original: str, plugin: dict[str, Any]) -> None:
    """InvalidArgument unless ``document`` edits this one plugin only, secrets typed in."""
    if "${{" in document or REDACTED in document:
        raise InvalidArgument(
            'secrets are never shown: replace each ${{ env "DECK_..." }} reference (or '
            f"{REDACTED}) with the value itself, or apply the whole configuration from a file"
        )
    data = load_text(document)
    before = yaml.safe_load(original) or {}
    plugins = data.get("plugins") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or set(data) != set(before)
        or not isinstance(plugins, list)
        or len(plugins) != 1
        or not isinstance(plugins[0], dict)
    ):
        raise InvalidArgument("this form edits one plugin: keep the document's sections as shown")
    for kind in ("services", "routes", "consumers"):
        if data.get(kind) != before.get(kind):
            raise InvalidArgument(
                f"this form edits the plugin only: {kind} must stay as shown "
                "(change them from Gateway > Apply)"
            )
    entry = plugins[0]
    if entry.get("name") != plugin["plugin_name"] or _scope(entry) != _scope(plugin):
        raise InvalidArgument(
            f"this form edits plugin {plugin['plugin_name']} where it is: its name, service, "
            "route and consumer must stay (apply a new plugin from Gateway > Apply)"
        )


def _plugin_context(plugin: dict[str, Any], *, document: str) -> dict[str, Any]:
    return {
        "plugin": plugin,
        "document": document,
        "diff": "",
        "changes": [],
        "notes": [],
        "previewed": False,
        "applied": False,
        "config_version": "",
        "error": "",
        "title": f"Plugin {plugin.get('plugin_name', '')}",
        "no_twin": True,
    }


TOP_CUSTOMERS = 5
HOURLY_CHART = timedelta(hours=47)  # plus the current hour: 48 points


def _by_customer(
    top: list[dict[str, Any]],
    chart: dict[str, Any],
    owners: dict[str, str],
    found: totals.OpenTotals,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The top subjects as their customers: tokens, provider cost, billed (the customer's open
    invoice), margin (USD: billed - provider cost); the chart's series per customer."""
    rows: dict[str, dict[str, Any]] = {}
    for entry in top:
        customer = owners.get(entry["subject"], "")
        label = customer or f"({entry['subject']})"
        row = rows.setdefault(
            label, {"customer": customer, "tokens": 0, "provider_cost": Decimal(0)}
        )
        row["tokens"] += entry["tokens"]
        row["provider_cost"] += entry["provider_cost"]
    result = []
    for label, row in sorted(rows.items(), key=lambda item: -item[1]["tokens"]):
        currency, amount = found.by_customer.get(row["customer"], ("", None))
        result.append(
            {
                "customer": label,
                "tokens": row["tokens"],
                "provider_cost": str(row["provider_cost"]),
                "billed": str(amount) if amount is not None else "",
                "currency": currency,
                "margin": (
                    str(amount - row["provider_cost"])
                    if amount is not None and currency == "USD"
                    else ""
                ),
            }
        )
    series: dict[str, list[int]] = {}
    for subject, values in chart["series"].items():
        label = owners.get(subject) or f"({subject})"
        if label in series:
            series[label] = [a + b for a, b in zip(series[label], values, strict=True)]
        else:
            series[label] = list(values)
    return result, {**chart, "series": dict(sorted(series.items()))}


def _margin_by_model(period: usage.Usage, found: totals.OpenTotals) -> list[dict[str, Any]]:
    """Per model: provider cost, and billed where lines price models (model_list prices)."""
    rows = []
    for model in period.models:
        billed = found.by_model.get(("USD", model["model"]))
        cost = Decimal(model["provider_cost"])
        rows.append(
            {
                "model": model["model"],
                "provider_cost": str(cost),
                "billed": str(billed) if billed is not None else "",
                "margin": str(billed - cost) if billed is not None else "",
            }
        )
    return rows


def _margin_by_feature(
    period: usage.Usage, found: totals.OpenTotals, features: Any
) -> list[dict[str, Any]]:
    """Per feature (or rate card) on the open invoices: billed, and the provider cost of the
    tokens it bills (llm_tokens features: billable requests matching its filters)."""
    filters = {f.key: (f.meter.rsplit("/", 1)[-1], dict(f.filters)) for f in features}
    rows = []
    for (currency, key), billed in sorted(found.by_feature.items()):
        meter, wanted = filters.get(key, ("", {}))
        cost: Decimal | None = None
        if currency == "USD" and meter == "llm_tokens":
            cost = sum(
                (
                    g.cost
                    for g in period.groups
                    if llm_dimensions_match(g.dimensions, wanted, billable_only=True)
                ),
                Decimal(0),
            )
        rows.append(
            {
                "feature": key,
                "currency": currency,
                "billed": str(billed),
                "provider_cost": str(cost) if cost is not None else "",
                "margin": str(billed - cost) if cost is not None else "",
            }
        )
    return rows
