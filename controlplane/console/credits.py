"""The console's credit pages: a customer's credits (balance, burn, run-out, grants, ledger,
recharge rule, alerts) with admin forms, and the portal's credit summary.

Like every console page these call the CreditService servicer in process (``ConsoleApi``);
its errors (bad amounts, wrong currency, unknown grant) come back as the servicer says them,
and a read token's POST is refused by ``ConsoleApi.call`` before anything runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controlplane.console.api import ConsoleApi, to_json
from controlplane.console.sessions import Session
from controlplane.errors import InvalidArgument, NotFound
from meterline.admin.v1 import credits_pb2, customers_pb2, notifications_pb2

LEDGER_PAGE_SIZE = 50
FUNDINGS = {
    "promotional": credits_pb2.CREDIT_FUNDING_PROMOTIONAL,
    "external": credits_pb2.CREDIT_FUNDING_EXTERNAL,
    "invoice": credits_pb2.CREDIT_FUNDING_INVOICE,
}
MODES = {
    "threshold": credits_pb2.CREDIT_RECHARGE_MODE_THRESHOLD,
    "target": credits_pb2.CREDIT_RECHARGE_MODE_TARGET,
}

Run = Callable[[ConsoleApi, dict[str, str], Session | None], Awaitable[str | Response]]
Change = Callable[[Request, Run], Awaitable[Response]]


def _time(text: str, what: str) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(f"{what} must be an ISO date or time, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _int(text: str, what: str) -> int:
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"{what} must be a whole number, got {text!r}") from None


async def balance(api: ConsoleApi, name: str, *, portal: bool) -> dict[str, Any]:
    call = api.unchecked if portal else api.call
    found = await call(
        "credits", "GetCreditBalance", credits_pb2.GetCreditBalanceRequest(customer=name)
    )
    return to_json(found)


async def grants(api: ConsoleApi, name: str, *, portal: bool) -> list[dict[str, Any]]:
    call = api.unchecked if portal else api.call
    found = await call(
        "credits",
        "ListCreditGrants",
        credits_pb2.ListCreditGrantsRequest(parent=name, page_size=1000),
    )
    return [to_json(g) for g in found.credit_grants]


async def portal_credits(api: ConsoleApi, name: str) -> dict[str, Any]:
    """What a customer sees of its credits: balance, burn, run-out and its grants."""
    shown, listed = await asyncio.gather(
        balance(api, name, portal=True), grants(api, name, portal=True)
    )
    return {
        "balance": {k: v for k, v in shown.items() if k != "grants"},
        "grants": [
            {
                k: g[k]
                for k in (
                    "id",
                    "amount",
                    "currency",
                    "remaining",
                    "funding",
                    "priority",
                    "effective_time",
                    "expire_time",
                    "features",
                    "description",
                    "void_time",
                )
                if k in g
            }
            for g in listed
        ],
    }


class CreditPages:
    """``/customers/{key}/credits`` (and ``.json``) and its admin POSTs."""

    def __init__(self, change: Change) -> None:
        self._change = change

    def routes(self) -> list[Route]:
        base = "/customers/{key}/credits"
        return [
            Route(base + "/grants", self.grant, methods=["POST"]),
            Route(base + "/grants/{id}/void", self.void, methods=["POST"]),
            Route(base + "/top-ups", self.top_up, methods=["POST"]),
            Route(base + "/recharge-rule", self.set_rule, methods=["POST"]),
            Route(base + "/recharge-rule/delete", self.delete_rule, methods=["POST"]),
            Route(base + "/alerts", self.create_alert, methods=["POST"]),
            Route(base + "/alerts/{alert}/delete", self.delete_alert, methods=["POST"]),
        ]

    async def page(self, request: Request, api: ConsoleApi) -> tuple[str, dict[str, Any]]:
        key = request.path_params["key"]
        name = f"customers/{key}"

        async def rule() -> dict[str, Any] | None:
            try:
                return to_json(
                    await api.call(
                        "credits",
                        "GetCreditRechargeRule",
                        credits_pb2.GetCreditRechargeRuleRequest(name=f"{name}/creditRechargeRule"),
                    )
                )
            except NotFound:
                return None

        # Independent reads, each in its own transaction (threads): their database time overlaps.
        customer, shown, listed, ledger, recharge_rule, alerts, channels = await asyncio.gather(
            api.call("customers", "GetCustomer", customers_pb2.GetCustomerRequest(name=name)),
            balance(api, name, portal=False),
            grants(api, name, portal=False),
            api.call(
                "credits",
                "ListCreditTransactions",
                credits_pb2.ListCreditTransactionsRequest(
                    parent=name,
                    page_size=LEDGER_PAGE_SIZE,
                    page_token=request.query_params.get("page_token", ""),
                ),
            ),
            rule(),
            api.call(
                "credits",
                "ListCreditAlerts",
                credits_pb2.ListCreditAlertsRequest(parent=name, page_size=1000),
            ),
            api.call(
                "notifications",
                "ListChannels",
                notifications_pb2.ListChannelsRequest(page_size=1000),
            ),
        )
        return "credits.html", {
            "customer": {"key": customer.key, "display_name": customer.display_name},
            "balance": shown,
            "grants": listed,
            "ledger": [to_json(e) for e in ledger.credit_transactions],
            "next_page_token": ledger.next_page_token,
            "recharge_rule": recharge_rule,
            "credit_alerts": [to_json(a) for a in alerts.credit_alerts],
            "fundings": list(FUNDINGS),
            "channels": [c.key for c in channels.channels],
            "title": f"Credits: {key}",
        }

    @staticmethod
    def _back(key: str, done: str) -> str:
        return f"/customers/{quote(key)}/credits?done={quote(done)}"

    async def grant(self, request: Request) -> Response:
        key = request.path_params["key"]

        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            funding = form.get("funding", "promotional").strip() or "promotional"
            if funding not in FUNDINGS:
                raise InvalidArgument(
                    f"funding must be one of {', '.join(FUNDINGS)}, got {funding!r}"
                )
            grant = credits_pb2.CreditGrant(
                amount=form.get("amount", "").strip(),
                funding=FUNDINGS[funding],
                key=form.get("grant_key", "").strip(),
                priority=_int(form.get("priority", "").strip(), "priority"),
                description=form.get("description", "").strip(),
                expires_after=form.get("expires_after", "").strip(),
                features=[f.strip() for f in form.get("features", "").split(",") if f.strip()],
            )
            expire = _time(form.get("expire", "").strip(), "expiry")
            if expire is not None:
                grant.expire_time.FromDatetime(expire)
            effective = _time(form.get("effective", "").strip(), "effective time")
            if effective is not None:
                grant.effective_time.FromDatetime(effective)
            await api.call(
                "credits",
                "CreateCreditGrant",
                credits_pb2.CreateCreditGrantRequest(parent=f"customers/{key}", credit_grant=grant),
            )
            return self._back(key, "granted")

        return await self._change(request, run)

    async def void(self, request: Request) -> Response:
        key = request.path_params["key"]
        id = request.path_params["id"]

        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            await api.call(
                "credits",
                "VoidCreditGrant",
                credits_pb2.VoidCreditGrantRequest(name=f"customers/{key}/creditGrants/{id}"),
            )
            return self._back(key, "voided")

        return await self._change(request, run)

    async def top_up(self, request: Request) -> Response:
        key = request.path_params["key"]

        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            invoice = await api.call(
                "credits",
                "CreateCreditTopUp",
                credits_pb2.CreateCreditTopUpRequest(
                    parent=f"customers/{key}", amount=form.get("amount", "").strip()
                ),
            )
            # The one-off invoice, issued (and sent to Stripe when the sync is on).
            return f"/invoices/{quote(invoice.id)}?done=top-up"

        return await self._change(request, run)

    async def set_rule(self, request: Request) -> Response:
        key = request.path_params["key"]

        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            mode = form.get("mode", "").strip()
            if mode not in MODES:
                raise InvalidArgument(
                    f"recharge rule mode must be threshold or target, got {mode!r}"
                )
            rule = credits_pb2.CreditRechargeRule(
                name=f"customers/{key}/creditRechargeRule",
                mode=MODES[mode],
                threshold=form.get("threshold", "").strip(),
                amount=form.get("amount", "").strip(),
                target=form.get("target", "").strip(),
                minimum=form.get("minimum", "").strip(),
                maximum=form.get("maximum", "").strip(),
                max_count_per_period=_int(
                    form.get("max_count_per_period", "").strip(), "max_count_per_period"
                ),
                max_amount_per_period=form.get("max_amount_per_period", "").strip(),
            )
            await api.call(
                "credits",
                "UpdateCreditRechargeRule",
                credits_pb2.UpdateCreditRechargeRuleRequest(
                    credit_recharge_rule=rule, allow_missing=True
                ),
            )
            return self._back(key, "recharge-rule-set")

        return await self._change(request, run)

    async def delete_rule(self, request: Request) -> Response:
        key = request.path_params["key"]

        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            await api.call(
                "credits",
                "DeleteCreditRechargeRule",
                credits_pb2.DeleteCreditRechargeRuleRequest(
                    name=f"customers/{key}/creditRechargeRule"
                ),
            )
            return self._back(key, "recharge-rule-deleted")

        return await self._change(request, run)

    async def create_alert(self, request: Request) -> Response:
        """Credit-balance thresholds on a notification channel (``CreateCreditAlert``)."""
        key = request.path_params["key"]

        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            alert = credits_pb2.CreditAlert(
                key=form.get("alert_key", "").strip(),
                channel=form.get("channel", "").strip(),
                percents=_listed(form.get("percents", "")),
                amounts=_listed(form.get("amounts", "")),
            )
            await api.call(
                "credits",
                "CreateCreditAlert",
                credits_pb2.CreateCreditAlertRequest(parent=f"customers/{key}", credit_alert=alert),
            )
            return self._back(key, "credit-alert-created")

        return await self._change(request, run)

    async def delete_alert(self, request: Request) -> Response:
        key = request.path_params["key"]
        alert = request.path_params["alert"]

        async def run(api: ConsoleApi, form: dict[str, str], session: Session | None) -> str:
            await api.call(
                "credits",
                "DeleteCreditAlert",
                credits_pb2.DeleteCreditAlertRequest(name=f"customers/{key}/creditAlerts/{alert}"),
            )
            return self._back(key, "credit-alert-deleted")

        return await self._change(request, run)


def _listed(text: str) -> list[str]:
    """``50, 20, 10`` (commas or spaces) as its items; the servicer checks the numbers."""
    return [x for x in text.replace(",", " ").split() if x]
