"""Credit grants, balances and ledger entries to messages and back."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal

from controlplane.api import convert
from controlplane.credits import recharge, service
from controlplane.credits.types import (
    CreditAlert,
    CreditBalance,
    CreditGrant,
    CreditOutlook,
    CreditTransaction,
    Funding,
    RechargeMode,
    RechargeRule,
    TransactionType,
)
from controlplane.errors import InvalidArgument
from meterline.admin.v1 import credits_pb2 as pb

FUNDINGS = {
    Funding.INVOICE: pb.CREDIT_FUNDING_INVOICE,
    Funding.PROMOTIONAL: pb.CREDIT_FUNDING_PROMOTIONAL,
    Funding.EXTERNAL: pb.CREDIT_FUNDING_EXTERNAL,
}
_FUNDINGS_BACK = {value: key for key, value in FUNDINGS.items()}
TRANSACTION_TYPES = {
    TransactionType.FUNDED: pb.CREDIT_TRANSACTION_TYPE_FUNDED,
    TransactionType.CONSUMED: pb.CREDIT_TRANSACTION_TYPE_CONSUMED,
    TransactionType.EXPIRED: pb.CREDIT_TRANSACTION_TYPE_EXPIRED,
    TransactionType.VOIDED: pb.CREDIT_TRANSACTION_TYPE_VOIDED,
    TransactionType.ADJUSTED: pb.CREDIT_TRANSACTION_TYPE_ADJUSTED,
}
_SEGMENT = r"[^/]{1,200}"
_GRANT_NAME = re.compile(rf"^customers/({_SEGMENT})/creditGrants/({_SEGMENT})$")


def grant_name(customer: str, id: str) -> str:
    return f"customers/{customer}/creditGrants/{id}"


def parse_grant_name(name: str) -> tuple[str, str]:
    match = _GRANT_NAME.match(name)
    if match is None:
        raise InvalidArgument(
            f"expected a credit grant name like customers/acme/creditGrants/ID, got {name[:80]!r}"
        )
    return match.group(1), match.group(2)


def grant_to_proto(grant: CreditGrant, remaining: str = "") -> pb.CreditGrant:
    return pb.CreditGrant(
        name=grant_name(grant.customer, grant.id),
        id=grant.id,
        customer=grant.customer,
        amount=str(grant.amount),
        currency=grant.currency,
        funding=FUNDINGS[grant.funding],
        priority=grant.priority,
        effective_time=convert.to_timestamp(grant.effective_time),
        expire_time=convert.to_timestamp(grant.expire_time),
        features=list(grant.features),
        key=grant.key,
        description=grant.description,
        remaining=remaining,
        void_time=convert.to_timestamp(grant.void_time),
        create_time=convert.to_timestamp(grant.create_time),
    )


def grant_from_proto(
    message: pb.CreditGrant, *, customer: str, key: str, now: datetime
) -> CreditGrant:
    if message.funding == pb.CREDIT_FUNDING_UNSPECIFIED:
        funding = Funding.PROMOTIONAL
    elif message.funding in _FUNDINGS_BACK:
        funding = _FUNDINGS_BACK[message.funding]
    else:
        raise InvalidArgument(
            f"credit_grant.funding {message.funding} is not INVOICE, PROMOTIONAL or EXTERNAL"
        )
    effective = (
        convert.from_timestamp(message.effective_time, field="credit_grant.effective_time")
        if message.HasField("effective_time")
        else now
    )
    expire = (
        convert.from_timestamp(message.expire_time, field="credit_grant.expire_time")
        if message.HasField("expire_time")
        else None
    )
    if message.expires_after:
        if expire is not None:
            raise InvalidArgument("give credit_grant.expire_time or expires_after, not both")
        expire = service.expiry_after(effective, message.expires_after)
    return CreditGrant(
        id="",
        customer=customer,
        amount=service.parse_amount(message.amount),
        currency=message.currency,
        funding=funding,
        priority=message.priority,
        effective_time=effective,
        expire_time=expire,
        features=tuple(message.features),
        key=key,
        description=message.description,
    )


def transaction_to_proto(entry: CreditTransaction) -> pb.CreditTransaction:
    return pb.CreditTransaction(
        id=entry.id,
        grant=grant_name(entry.customer, entry.grant_id),
        type=TRANSACTION_TYPES[entry.type],
        amount=str(entry.amount),
        currency=entry.currency,
        time=convert.to_timestamp(entry.time),
        invoice=f"invoices/{entry.invoice_id}" if entry.invoice_id else "",
        description=entry.description,
    )


def balance_to_proto(found: CreditBalance) -> pb.CreditBalance:
    message = pb.CreditBalance(
        customer=found.customer,
        currency=found.currency,
        settled=str(found.settled),
        live=str(found.live),
        time=convert.to_timestamp(found.at),
    )
    for entry in found.grants:
        message.grants.add(
            grant=grant_name(entry.grant.customer, entry.grant.id),
            key=entry.grant.key,
            remaining=str(entry.remaining),
            priority=entry.grant.priority,
            expire_time=convert.to_timestamp(entry.grant.expire_time),
        )
    return message


RECHARGE_MODES = {
    RechargeMode.THRESHOLD: pb.CREDIT_RECHARGE_MODE_THRESHOLD,
    RechargeMode.TARGET: pb.CREDIT_RECHARGE_MODE_TARGET,
}
_RECHARGE_MODES_BACK = {value: key for key, value in RECHARGE_MODES.items()}
_RULE_NAME = re.compile(rf"^customers/({_SEGMENT})/creditRechargeRule$")
_ALERT_NAME = re.compile(rf"^customers/({_SEGMENT})/creditAlerts/({_SEGMENT})$")


def parse_rule_name(name: str) -> str:
    """The customer of "customers/{key}/creditRechargeRule"."""
    found = _RULE_NAME.match(name)
    if found is None:
        raise InvalidArgument(
            f"recharge rule name must be customers/{{customer}}/creditRechargeRule, got {name!r}"
        )
    return found.group(1)


def parse_alert_name(name: str) -> tuple[str, str]:
    found = _ALERT_NAME.match(name)
    if found is None:
        raise InvalidArgument(
            f"credit alert name must be customers/{{customer}}/creditAlerts/{{key}}, got {name!r}"
        )
    return found.group(1), found.group(2)


def outlook_to_proto(found: CreditOutlook) -> pb.CreditBalance:
    message = balance_to_proto(found.balance)
    message.pending = str(found.balance.pending)
    message.burn_window_days = found.window_days
    if found.burn_per_day is not None:
        message.burn_per_day = str(found.burn_per_day)
    if found.spent_in_window is not None:
        message.spent_in_window = str(found.spent_in_window)
    if found.window_start is not None:
        message.burn_window_start.FromDatetime(found.window_start)
    if found.run_out_time is not None:
        message.run_out_time.FromDatetime(found.run_out_time)
    return message


def rule_to_proto(rule: RechargeRule) -> pb.CreditRechargeRule:
    return pb.CreditRechargeRule(
        name=f"customers/{rule.customer}/creditRechargeRule",
        customer=rule.customer,
        mode=RECHARGE_MODES[rule.mode],
        threshold=str(rule.threshold),
        amount=str(rule.amount),
        target=str(rule.target),
        minimum=str(rule.minimum),
        maximum=str(rule.maximum),
        max_count_per_period=rule.max_count,
        max_amount_per_period=str(rule.max_amount),
        currency=rule.currency,
        create_time=convert.to_timestamp(rule.create_time),
        update_time=convert.to_timestamp(rule.update_time),
    )


def rule_from_proto(message: pb.CreditRechargeRule) -> RechargeRule:
    customer = parse_rule_name(message.name)
    mode = _RECHARGE_MODES_BACK.get(message.mode)
    if mode is None:
        raise InvalidArgument("recharge rule mode must be THRESHOLD or TARGET")

    def money(text: str, what: str) -> Decimal:
        return recharge.parse_money(text, what=f"recharge rule {what}")

    return RechargeRule(
        customer=customer,
        mode=mode,
        threshold=money(message.threshold, "threshold"),
        amount=money(message.amount, "amount"),
        target=money(message.target, "target"),
        minimum=money(message.minimum, "minimum"),
        maximum=money(message.maximum, "maximum"),
        max_count=message.max_count_per_period,
        max_amount=money(message.max_amount_per_period, "max_amount_per_period"),
        currency=message.currency,
    )


def alert_to_proto(alert: CreditAlert) -> pb.CreditAlert:
    return pb.CreditAlert(
        name=f"customers/{alert.customer}/creditAlerts/{alert.key}",
        customer=alert.customer,
        key=alert.key,
        channel=alert.channel,
        percents=[str(p) for p in alert.percents],
        amounts=[str(a) for a in alert.amounts],
        create_time=convert.to_timestamp(alert.create_time),
    )


def alert_from_proto(message: pb.CreditAlert, *, customer: str) -> CreditAlert:
    def values(texts: list[str], what: str) -> tuple[Decimal, ...]:
        found = []
        for text in texts:
            if not text.strip():
                raise InvalidArgument(f"credit alert {what} must not be empty")
            found.append(recharge.parse_money(text, what=f"credit alert {what}"))
        return tuple(found)

    return CreditAlert(
        customer=customer,
        key=message.key,
        channel=message.channel,
        percents=values(list(message.percents), "percent"),
        amounts=values(list(message.amounts), "amount"),
    )
