"""Entitlements, budgets and task budgets enforced at the data plane; cost of each request.

Per snapshot, ``compile_enforcement`` turns ``Snapshot.consumer_entitlements`` into an
immutable ``EnforcementTable`` (consumer id -> policy: access, token balances, budgets, token
prices; route id -> the route's ai-proxy input_cost/output_cost). The ``Enforcer`` (one per
gateway, mutable) keeps ONE local counter per balance_id and per budget_id: what this data
plane metered (tokens) or priced (money) that the control plane cannot have counted yet.

Which local usage a snapshot already reflects: the gateway numbers the usage events it hands
to the usage reporter; ``acked()`` (``acked_events``) says how many of them the snapshot being
applied holds: those of the batches the control plane had stored when the snapshot's build
began (each ACK and each config response carries the control plane's count of stores,
ConfigResponse.usage_sequence). When a snapshot is applied, every request whose events it
holds is dropped from the local counters; a batch stored while the snapshot was being built
stays counted locally until a later snapshot holds it (never counted nowhere). Without those
sequences (an older control plane, another control-plane process, a cached snapshot) every
event ACKed before the snapshot is applied is taken as held, as before.

Balance slicing: when ``Snapshot.balance_slices`` is N > 1 (N data planes share the
snapshot), each hard balance and budget admits against this data plane's slice of what is left
(``token_slice``: ceil(balance / N); ``money_slice``: (amount - spent) / N rounded down), computed
once per snapshot into ``BalanceRule.allowance`` / ``BudgetRule.allowance``; the local counters
then spend the slice instead of the whole. The X-Meterline-Remaining figures stay the whole
balance minus local usage (what the customer has left, as far as this data plane knows).

Prepaid credits (``ConsumerEntitlements.credits``, docs/credits.md "At the gateway") burn
down like budgets: one local money counter per credit_id, fed with the cost of every priced
token of the customer, forgotten with the ACKed usage as above. A request that can produce
tokens of a ``credit_only`` feature is refused while that feature's credit balance (sliced as
a hard budget: ``money_slice``) minus the counter is <= 0 (``Enforcer.admit_credits``); the
X-Meterline-Credits-Remaining figure is the whole live balance minus the counter. A customer
without credits costs the credits stage one dict lookup.

Refusals are 429 with an OpenAI-shaped (or Anthropic-shaped) error of type
``insufficient_quota`` and a code: ``access_denied``, ``entitlement_exhausted``,
``budget_exceeded``, ``task_budget_exceeded``; credits refuse with 402 and
``insufficient_credits`` (admission.cost). Nothing here does I/O; the hot path is dict
lookups and a few comparisons.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Context, Decimal, InvalidOperation
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from dataplane.errors import CompileError, DataPlaneError

if TYPE_CHECKING:
    from dataplane.usage.reporter import UsageReporter
    from meterline.dataplane.v1 import snapshot_pb2

# Token kinds, as named by the llm_tokens meter's "type" dimension.
_TYPE_ALIASES: Final = {"request": "input", "response": "output"}
INPUT_KINDS: Final = ("input", "cached_input", "cache_write")
_OUTPUT_KINDS: Final = ("output", "reasoning")
_PER_MILLION: Final = Decimal(1_000_000)
_ZERO: Final = Decimal(0)

# Task budgets: how many (consumer, task) pairs are remembered, and for how long unused.
DEFAULT_MAX_TASKS: Final = 10_000
DEFAULT_TASK_TTL_S: Final = 24 * 3600.0
# Local counters remember at most this many requests not yet reflected in a snapshot.
MAX_PENDING_REQUESTS: Final = 100_000
TASK_HEADER: Final = b"x-meterline-task"
TASK_BUDGET_HEADER: Final = b"x-meterline-task-budget"
_MAX_TASK_ID: Final = 200
# Slices of money round down, so that N slices never add up to more than what is left.
_SLICE_CONTEXT: Final = Context(prec=28, rounding=ROUND_FLOOR)
# Bound of each per-snapshot memo (distinct models x token kinds x statuses seen).
_MEMO_ENTRIES: Final = 4096


class BadTaskHeaders(DataPlaneError, ValueError):
    """X-Meterline-Task / X-Meterline-Task-Budget are malformed (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class Filters:
    """Dimension filters of a feature on llm_tokens (None: any value)."""

    provider: str | None = None
    model: str | None = None
    type: str | None = None
    status_code: int | None = None

    def admits(self, provider: str, model: str) -> bool:
        """Whether a request to ``provider``/``model`` can produce matching usage."""
        return (self.provider is None or self.provider == provider) and (
            self.model is None or self.model == model
        )

    def matches(self, provider: str, model: str, kind: str, status: int) -> bool:
        if self.status_code is None:
            if not 200 <= status < 300:
                return False
        elif self.status_code != status:
            return False
        return self.admits(provider, model) and (self.type is None or self.type == kind)


@dataclass(frozen=True, slots=True)
class BalanceRule:
    balance_id: str
    feature: str
    filters: Filters
    balance: int
    soft: bool
    # What this data plane may spend of ``balance`` before the next snapshot (its slice).
    allowance: int


@dataclass(frozen=True, slots=True)
class PriceRule:
    filters: Filters
    unit_price: Decimal
    feature: str = ""
    credit_only: bool = False


SETTLEMENT_MODES: Final = frozenset({"", "credit_then_invoice", "credit_only"})


@dataclass(frozen=True, slots=True)
class CreditOnlyRule:
    """A credit_only price: requests it admits need credits that may pay its feature."""

    feature: str
    filters: Filters
    # The live balance of the grants that may pay the feature (whole, as shipped).
    balance: Decimal
    # What this data plane may spend of it before the next snapshot (its slice).
    allowance: Decimal


@dataclass(frozen=True, slots=True)
class CreditRule:
    """A customer's prepaid credits in one snapshot."""

    credit_id: str
    # The live balance of every grant active now (X-Meterline-Credits-Remaining).
    balance: Decimal
    only: tuple[CreditOnlyRule, ...] = ()


@dataclass(frozen=True, slots=True)
class BudgetRule:
    budget_id: str
    amount: Decimal
    spent: Decimal
    hard: bool
    # What this data plane may spend of amount - spent before the next snapshot (its slice).
    allowance: Decimal


def token_slice(balance: int, slices: int) -> int:
    """This data plane's share of a token balance split ``slices`` ways: ceil(balance / slices).

    A positive balance always gives a positive slice (so every token can still be spent by
    some data plane); the slices add up to at most ``balance + slices - 1``.
    """
    if slices <= 1 or balance <= 0:
        return balance
    return -(-balance // slices)


def money_slice(left: Decimal, slices: int) -> Decimal:
    """This data plane's share of money left split ``slices`` ways, rounded down (exact
    Decimal: the slices never add up to more than ``left``); nothing left stays as is."""
    if slices <= 1 or left <= 0:
        return left
    # 28 significant digits, not places: a positive amount never gives a zero share.
    return _SLICE_CONTEXT.divide(left, Decimal(slices))


@dataclass(frozen=True, slots=True)
class ConsumerPolicy:
    """What the control plane said about one consumer in one snapshot."""

    customer: str
    has_access: bool
    currency: str
    balances: tuple[BalanceRule, ...]
    prices: tuple[PriceRule, ...]
    budgets: tuple[BudgetRule, ...]
    credits: CreditRule | None = None
    # Memos filled on first use and dropped with the snapshot (the hot path then does one
    # dict lookup per usage event): (provider, model, kind, status) -> (unit price, matching
    # balance ids); (provider, model) -> the balance rules such a request can spend.
    _items: dict[tuple[str, str, str, int], tuple[Decimal, tuple[str, ...]]] = field(
        default_factory=dict, compare=False, repr=False
    )
    _admitting: dict[tuple[str, str], tuple[BalanceRule, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )
    _credit_only: dict[tuple[str, str], tuple[CreditOnlyRule, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def money_ids(self) -> tuple[str, ...]:
        """The money counters a priced request feeds: every budget, and the credits."""
        ids = tuple(budget.budget_id for budget in self.budgets)
        return (*ids, self.credits.credit_id) if self.credits is not None else ids

    def item(
        self, provider: str, model: str, kind: str, status: int
    ) -> tuple[Decimal, tuple[str, ...]]:
        """The unit price of such a token and the balances it spends (memoised)."""
        key = (provider, model, kind, status)
        found = self._items.get(key)
        if found is None:
            price = sum((r.unit_price for r in self.prices if r.filters.matches(*key)), _ZERO)
            ids = tuple(b.balance_id for b in self.balances if b.filters.matches(*key))
            if len(self._items) >= _MEMO_ENTRIES:
                self._items.clear()
            found = self._items[key] = (price, ids)
        return found

    def admitting(self, provider: str, model: str) -> tuple[BalanceRule, ...]:
        """The balance rules a request to ``provider``/``model`` can spend (memoised)."""
        key = (provider, model)
        found = self._admitting.get(key)
        if found is None:
            if len(self._admitting) >= _MEMO_ENTRIES:
                self._admitting.clear()
            found = self._admitting[key] = tuple(
                rule for rule in self.balances if rule.filters.admits(provider, model)
            )
        return found

    def credit_only(self, provider: str, model: str) -> tuple[CreditOnlyRule, ...]:
        """The credit_only rules a request to ``provider``/``model`` needs credits for."""
        key = (provider, model)
        found = self._credit_only.get(key)
        if found is None:
            if len(self._credit_only) >= _MEMO_ENTRIES:
                self._credit_only.clear()
            only = self.credits.only if self.credits is not None else ()
            found = self._credit_only[key] = tuple(
                rule for rule in only if rule.filters.admits(provider, model)
            )
        return found


@dataclass(frozen=True, slots=True)
class RouteCost:
    """Kong's ai-proxy model.options input_cost/output_cost, per token (decimal)."""

    input: Decimal
    output: Decimal


@dataclass(frozen=True, slots=True)
class EnforcementTable:
    """The compiled enforcement state of one snapshot."""

    consumers: Mapping[str, ConsumerPolicy] = field(default_factory=lambda: MappingProxyType({}))
    route_costs: Mapping[str, RouteCost] = field(default_factory=lambda: MappingProxyType({}))


EMPTY_TABLE: Final = EnforcementTable()


def _decimal(text: str, what: str) -> Decimal:

    try:
        value = Decimal(text)
    except InvalidOperation:
        raise CompileError(f"{what}: {text!r} is not a decimal string") from None
    if not value.is_finite() or value < 0:
        raise CompileError(f"{what}: {text!r} is not a finite non-negative decimal")
    return value


def _filters(filters: Mapping[str, str], what: str) -> Filters:

    status: int | None = None
    if "status_code" in filters:
        try:
            status = int(filters["status_code"])
        except ValueError:
            raise CompileError(f"{what}: status_code filter is not an integer") from None
    unknown = set(filters) - {"provider", "model", "type", "status_code"}
    if unknown:
        raise CompileError(f"{what}: unknown filter dimension(s) {sorted(unknown)}")
    kind = filters.get("type")
    return Filters(
        provider=filters.get("provider"),
        model=filters.get("model"),
        type=_TYPE_ALIASES.get(kind, kind) if kind is not None else None,
        status_code=status,
    )


def _route_costs(snapshot: snapshot_pb2.Snapshot) -> dict[str, RouteCost]:
    """Each route's ai-proxy input_cost/output_cost (route > service > global plugin)."""
    best: dict[str, tuple[int, snapshot_pb2.AiProxyConfig]] = {}
    for route in snapshot.routes:
        for plugin in snapshot.plugins:
            if not plugin.enabled or plugin.WhichOneof("config") != "ai_proxy":
                continue
            if plugin.consumer_id:
                continue
            if plugin.route_id:
                if plugin.route_id != route.id:
                    continue
                rank = 2
            elif plugin.service_id:
                if plugin.service_id != route.service_id:
                    continue
                rank = 1
            else:
                rank = 0
            if route.id not in best or rank > best[route.id][0]:
                best[route.id] = (rank, plugin.ai_proxy)
    costs: dict[str, RouteCost] = {}
    for route_id, (_, config) in best.items():
        options = config.model.options
        if not options.input_cost and not options.output_cost:
            continue
        what = f'ai-proxy of route "{route_id}"'
        costs[route_id] = RouteCost(
            input=_decimal(options.input_cost or "0", f"{what} input_cost") / _PER_MILLION,
            output=_decimal(options.output_cost or "0", f"{what} output_cost") / _PER_MILLION,
        )
    return costs


def _budget(
    *, budget_id: str, amount: Decimal, spent: Decimal, hard: bool, slices: int
) -> BudgetRule:
    left = amount - spent
    return BudgetRule(
        budget_id=budget_id,
        amount=amount,
        spent=spent,
        hard=hard,
        allowance=money_slice(left, slices) if hard else left,
    )


def _settlement_mode(text: str, what: str) -> bool:
    """Whether a price's settlement_mode is credit_only (CompileError if unknown)."""
    if text not in SETTLEMENT_MODES:
        raise CompileError(
            f'{what}: settlement_mode must be "credit_only" or "credit_then_invoice", got {text!r}'
        )
    return text == "credit_only"


def _credits(
    entry: snapshot_pb2.ConsumerEntitlements,
    prices: tuple[PriceRule, ...],
    *,
    what: str,
    slices: int,
) -> CreditRule | None:
    """The customer's credits; None when the snapshot has none and no price is credit_only.

    A credit_only price without credit state has nothing to pay it: balance 0 (refused).
    """
    has_state = entry.HasField("credits")
    if not has_state and not any(price.credit_only for price in prices):
        return None
    state = entry.credits
    balance = _decimal(state.balance or "0", f"{what}, credit balance")
    features = {
        feature: _decimal(text, f"{what}, credit balance of {feature}")
        for feature, text in state.feature_balances.items()
    }
    only = []
    for price in prices:
        if not price.credit_only:
            continue
        left = features.get(price.feature, balance)
        only.append(
            CreditOnlyRule(
                feature=price.feature,
                filters=price.filters,
                balance=left,
                allowance=money_slice(left, slices),
            )
        )
    return CreditRule(
        credit_id=state.credit_id or f"credits:{entry.customer}",
        balance=balance,
        only=tuple(only),
    )


def compile_enforcement(snapshot: snapshot_pb2.Snapshot) -> EnforcementTable:
    """The enforcement table of ``snapshot``; CompileError if a value is malformed."""
    consumers: dict[str, ConsumerPolicy] = {}
    slices = snapshot.balance_slices
    for entry in snapshot.consumer_entitlements:
        what = f'consumer_entitlements of "{entry.username or entry.consumer_id}"'
        balances = tuple(
            BalanceRule(
                balance_id=item.balance_id,
                feature=item.feature,
                filters=_filters(item.filters, f"{what}, feature {item.feature}"),
                balance=item.balance,
                soft=item.soft_limit,
                allowance=token_slice(item.balance, slices)
                if not item.soft_limit
                else item.balance,
            )
            for item in entry.metered
        )
        prices = tuple(
            PriceRule(
                filters=_filters(price.filters, f"{what}, price of {price.feature}"),
                unit_price=_decimal(price.unit_price, f"{what}, price of {price.feature}"),
                feature=price.feature,
                credit_only=_settlement_mode(
                    price.settlement_mode, f"{what}, price of {price.feature}"
                ),
            )
            for price in entry.prices
        )
        budgets = tuple(
            _budget(
                budget_id=budget.budget_id,
                amount=_decimal(budget.amount, f"{what}, budget amount"),
                spent=_decimal(budget.spent, f"{what}, budget spent"),
                hard=budget.hard,
                slices=slices,
            )
            for budget in entry.budgets
        )
        consumers[entry.consumer_id] = ConsumerPolicy(
            customer=entry.customer,
            has_access=entry.has_access,
            currency=entry.currency,
            balances=balances,
            prices=prices,
            budgets=budgets,
            credits=_credits(entry, prices, what=what, slices=slices),
        )
    return EnforcementTable(
        consumers=MappingProxyType(consumers),
        route_costs=MappingProxyType(_route_costs(snapshot)),
    )


def unit_price(
    policy: ConsumerPolicy | None,
    route_cost: RouteCost | None,
    *,
    provider: str,
    model: str,
    kind: str,
    status: int = 200,
) -> Decimal | None:
    """The price of one token of ``kind`` (None when nothing prices it)."""
    if policy is not None and policy.prices:
        return policy.item(provider, model, kind, status)[0]
    if route_cost is not None:
        if not 200 <= status < 300:
            return _ZERO
        return route_cost.input if kind in INPUT_KINDS else route_cost.output
    return None


# A request counted locally: (events appended when it was recorded, (balance_id, tokens)...,
# money counter ids (budgets, credits), its cost).
_Pending = tuple[int, tuple[tuple[str, int], ...], tuple[str, ...], Decimal]


@dataclass(frozen=True, slots=True)
class UsageItem:
    """One usage event of a request, as enforcement needs it."""

    provider: str
    model: str
    kind: str
    status: int
    tokens: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused (HTTP 429, type insufficient_quota)."""

    code: str
    message: str


@dataclass(slots=True)
class _Task:
    spent: Decimal
    seen: float


@dataclass(frozen=True, slots=True)
class TaskBudget:
    """A request's task tag: ``X-Meterline-Task`` and its ``X-Meterline-Task-Budget``."""

    task: str
    budget: Decimal


def task_budget(headers: list[tuple[bytes, bytes]]) -> TaskBudget | None:
    """The task tag of a request, None without one; BadTaskHeaders if malformed."""
    task: bytes | None = None
    budget: bytes | None = None
    for name, value in headers:
        if name == TASK_HEADER:
            task = value
        elif name == TASK_BUDGET_HEADER:
            budget = value
    if task is None and budget is None:
        return None
    if task is None or not task.strip():
        raise BadTaskHeaders("X-Meterline-Task-Budget needs an X-Meterline-Task header")
    task_id = task.decode("utf-8", errors="replace").strip()
    if len(task_id) > _MAX_TASK_ID or not task_id.isprintable():
        raise BadTaskHeaders(
            f"X-Meterline-Task must be at most {_MAX_TASK_ID} printable characters"
        )
    if budget is None:
        raise BadTaskHeaders("X-Meterline-Task needs an X-Meterline-Task-Budget header")
    text = budget.decode("latin-1").strip()
    try:
        amount = Decimal(text)
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite() or amount < 0 or "e" in text.lower() or len(text) > 32:
        raise BadTaskHeaders(
            f'X-Meterline-Task-Budget must be a non-negative decimal amount like "0.50", '
            f"got {text!r}"
        )
    return TaskBudget(task=task_id, budget=amount)


@dataclass(slots=True)
class Figures:
    """What one request used and cost, and what is left (the X-Meterline-* headers)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal | None = None
    currency: str = ""
    remaining_tokens: int | None = None
    remaining_money: Decimal | None = None
    remaining_credits: Decimal | None = None

    def headers(self, *, usage: bool = True) -> list[tuple[bytes, bytes]]:
        """The X-Meterline-* headers; without ``usage`` only the remaining figures."""
        out: list[tuple[bytes, bytes]] = []
        if usage:
            out += [
                (b"x-meterline-input-tokens", str(self.input_tokens).encode()),
                (b"x-meterline-output-tokens", str(self.output_tokens).encode()),
            ]
            if self.cost is not None:
                out.append((b"x-meterline-cost", _money_text(self.cost).encode()))
        if self.currency:
            out.append((b"x-meterline-currency", self.currency.encode()))
        if self.remaining_tokens is not None:
            out.append((b"x-meterline-remaining", str(self.remaining_tokens).encode()))
        if self.remaining_money is not None:
            out.append(
                (b"x-meterline-budget-remaining", _money_text(self.remaining_money).encode())
            )
        if self.remaining_credits is not None:
            out.append(
                (b"x-meterline-credits-remaining", _money_text(self.remaining_credits).encode())
            )
        return out

    def as_json(self) -> dict[str, object]:
        figures: dict[str, object] = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost": None if self.cost is None else _money_text(self.cost),
            "currency": self.currency or None,
            "remaining_tokens": self.remaining_tokens,
            "remaining_budget": None
            if self.remaining_money is None
            else _money_text(self.remaining_money),
        }
        # Only for a customer with credits: the figures of everyone else keep their shape.
        if self.remaining_credits is not None:
            figures["remaining_credits"] = _money_text(self.remaining_credits)
        return figures


def _money_text(value: Decimal) -> str:
    """Plain decimal notation (never exponent), trailing zeros dropped."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


class Enforcer:
    """The data plane's local counters and its admission decisions."""

    def __init__(
        self,
        *,
        acked: Callable[[], int] | None = None,
        max_tasks: int = DEFAULT_MAX_TASKS,
        task_ttl_s: float = DEFAULT_TASK_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table: EnforcementTable = EMPTY_TABLE
        # Usage events handed to the usage sink so far (the gateway's metering wrapper counts
        # them) and, from the usage reporter, how many of them the control plane ACKed.
        self.appended = 0
        self.acked = acked
        self._tokens: dict[str, int] = {}
        self._money: dict[str, Decimal] = {}
        # (events appended when the request was recorded, balance/budget ids and amounts).
        self._pending: deque[_Pending]
        self._pending = deque()
        self._tasks: OrderedDict[tuple[str, str], _Task] = OrderedDict()
        self._max_tasks = max_tasks
        self._task_ttl_s = task_ttl_s
        self._clock = clock

    def apply(self, table: EnforcementTable) -> None:
        """A new snapshot: forget local usage it reflects (ACKed before now); swap the table."""
        acked = self.acked() if self.acked is not None else 0
        pending = self._pending
        while pending and pending[0][0] <= acked:
            self._forget(pending.popleft())
        self.table = table

    def _forget(self, entry: _Pending) -> None:
        _, balances, budgets, cost = entry
        for balance_id, tokens in balances:
            left = self._tokens.get(balance_id, 0) - tokens
            if left > 0:
                self._tokens[balance_id] = left
            else:
                self._tokens.pop(balance_id, None)
        for budget_id in budgets:
            money = self._money.get(budget_id, _ZERO) - cost
            if money > 0:
                self._money[budget_id] = money
            else:
                self._money.pop(budget_id, None)

    # -- the hot path ---------------------------------------------------------------------

    def admit(
        self,
        consumer_id: str | None,
        *,
        provider: str,
        model: str,
        task: TaskBudget | None,
    ) -> Refusal | None:
        """None when the request may go to the provider; else why not."""
        policy = self.table.consumers.get(consumer_id) if consumer_id else None
        if policy is not None:
            if not policy.has_access:
                return Refusal(
                    "access_denied",
                    f'Customer "{policy.customer}" has no running subscription; requests are '
                    "refused.",
                )
            for rule in policy.admitting(provider, model):
                if not rule.soft and rule.allowance - self._tokens.get(rule.balance_id, 0) <= 0:
                    return Refusal(
                        "entitlement_exhausted",
                        f'You exceeded your quota of feature "{rule.feature}" for this usage '
                        "period; add a grant or wait for the next period.",
                    )
            for budget in policy.budgets:
                if budget.hard and (
                    budget.allowance - self._money.get(budget.budget_id, _ZERO) <= 0
                ):
                    return Refusal(
                        "budget_exceeded",
                        f"The budget of {budget.amount} {policy.currency} for this billing "
                        "period is spent.",
                    )
        if task is not None and consumer_id is not None:
            found = self._tasks.get((consumer_id, task.task))
            spent = found.spent if found is not None else _ZERO
            if spent >= task.budget:
                return Refusal(
                    "task_budget_exceeded",
                    f'Task "{task.task}" has spent {_money_text(spent)} of its budget of '
                    f"{_money_text(task.budget)}.",
                )
        return None

    def admit_credits(
        self, consumer_id: str | None, *, provider: str, model: str
    ) -> Refusal | None:
        """None unless the request needs credit_only credits that this data plane's slice no
        longer has (one dict lookup for a consumer whose customer has no credits)."""
        policy = self.table.consumers.get(consumer_id) if consumer_id else None
        if policy is None or policy.credits is None or not policy.credits.only:
            return None
        spent = self._money.get(policy.credits.credit_id, _ZERO)
        for rule in policy.credit_only(provider, model):
            if rule.allowance - spent <= 0:
                return Refusal(
                    "insufficient_credits",
                    f'Customer "{policy.customer}" has no credits left for feature '
                    f'"{rule.feature}", which is paid by credits only; buy credits (a top-up) '
                    "to continue.",
                )
        return None

    def credits_left(self, consumer_id: str | None) -> Decimal | None:
        """The customer's live credit balance minus this data plane's local usage (never
        below 0); None when the customer has no credits."""
        policy = self.table.consumers.get(consumer_id) if consumer_id else None
        if policy is None or policy.credits is None:
            return None
        credits = policy.credits
        return max(credits.balance - self._money.get(credits.credit_id, _ZERO), _ZERO)

    def record(
        self,
        *,
        consumer_id: str | None,
        route_id: str,
        items: list[UsageItem],
        task: TaskBudget | None,
    ) -> Figures:
        """Count a finished request locally (after its events went to the usage sink)."""
        table = self.table
        policy = table.consumers.get(consumer_id) if consumer_id else None
        route_cost = table.route_costs.get(route_id)
        figures = Figures(currency=policy.currency if policy is not None else "")
        priced = (policy is not None and bool(policy.prices)) or route_cost is not None
        cost = _ZERO
        spent: dict[str, int] = {}
        for item in items:
            tokens = item.tokens
            if item.kind in INPUT_KINDS:
                figures.input_tokens += tokens
            else:
                figures.output_tokens += tokens
            if not tokens:
                continue
            if policy is not None:
                price, balance_ids = policy.item(item.provider, item.model, item.kind, item.status)
                for balance_id in balance_ids:
                    spent[balance_id] = spent.get(balance_id, 0) + tokens
                if policy.prices:
                    cost += price * tokens
                    continue
            if route_cost is not None and 200 <= item.status < 300:
                cost += tokens * (
                    route_cost.input if item.kind in INPUT_KINDS else route_cost.output
                )
        figures.cost = cost if priced else None
        if policy is not None:
            for balance_id, tokens in spent.items():
                self._tokens[balance_id] = self._tokens.get(balance_id, 0) + tokens
            # Budgets and credits: money counters, each fed with the request's whole cost.
            money_ids: tuple[str, ...] = ()
            if cost:
                money_ids = policy.money_ids
                for money_id in money_ids:
                    self._money[money_id] = self._money.get(money_id, _ZERO) + cost
            if spent or money_ids:
                self._pending.append((self.appended, tuple(spent.items()), money_ids, cost))
                if len(self._pending) > MAX_PENDING_REQUESTS:
                    self._forget(self._pending.popleft())
        if task is not None and consumer_id is not None:
            self._spend_task(consumer_id, task, cost)
        return figures

    def _spend_task(self, consumer_id: str, task: TaskBudget, cost: Decimal) -> Decimal:
        key = (consumer_id, task.task)
        now = self._clock()
        tasks = self._tasks
        found = tasks.get(key)
        if found is None:
            found = tasks[key] = _Task(spent=_ZERO, seen=now)
        found.spent += cost
        found.seen = now
        tasks.move_to_end(key)
        # Bounded memory: the least recently used tasks go first, and any unused for the TTL.
        while tasks and (
            len(tasks) > self._max_tasks or now - next(iter(tasks.values())).seen > self._task_ttl_s
        ):
            tasks.popitem(last=False)
        return task.budget - found.spent

    def task_spent(self, consumer_id: str, task: str) -> Decimal | None:
        """What a task has spent on this data plane (None if unknown or forgotten)."""
        found = self._tasks.get((consumer_id, task))
        return None if found is None else found.spent

    @property
    def tasks_tracked(self) -> int:
        return len(self._tasks)

    def remaining(
        self, consumer_id: str | None, *, provider: str, model: str, task: TaskBudget | None
    ) -> tuple[int | None, Decimal | None]:
        """The tightest token balance and money budget left for such a request, now."""
        policy = self.table.consumers.get(consumer_id) if consumer_id else None
        tokens: int | None = None
        money: Decimal | None = None
        if policy is not None:
            for rule in policy.admitting(provider, model):
                left = max(rule.balance - self._tokens.get(rule.balance_id, 0), 0)
                tokens = left if tokens is None else min(tokens, left)
            for budget in policy.budgets:
                left_money = budget.amount - budget.spent - self._money.get(budget.budget_id, _ZERO)
                money = left_money if money is None else min(money, left_money)
        if task is not None and consumer_id is not None:
            spent = self.task_spent(consumer_id, task.task) or _ZERO
            left_task = task.budget - spent
            money = left_task if money is None else min(money, left_task)
        return tokens, money


def acked_events(
    reporter: UsageReporter, marker: Callable[[], tuple[str, int] | None] | None = None
) -> Callable[[], int]:
    """How many events appended since start the snapshot being applied reflects (for
    ``Enforcer``): with ``marker`` (the config client's usage_marker, ConfigResponse
    .usage_sequence), those of the batches the control plane had stored when the snapshot's
    build began; without one (or from another control-plane process), every event ACKed so
    far, which a snapshot built before a store but applied after its ACK does not hold.

    ACKs arrive in append order (one stream, batches cut in order, resent in order); events
    recovered from the spool at start go first and were not appended by this process, and
    dropped events (memory buffer full) will never be ACKed: both are accounted for.
    """

    def acked() -> int:
        stats = reporter.stats
        done = stats.acked_events
        found = marker() if marker is not None else None
        if found is not None and found[0]:
            through = reporter.acked_through(*found)
            if through is not None:
                done = through
        return done + stats.dropped_events - stats.recovered_events

    return acked
