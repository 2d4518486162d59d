"""A small, stateful Stripe stand-in for tests: the v1 endpoints Meterline calls, nothing more.

It speaks Stripe's wire format (form-encoded requests with bracket notation, JSON objects,
``{"error": {...}}`` bodies with Stripe's status codes), keeps Stripe's idempotency rules and
signs webhooks exactly as Stripe does, so the official ``stripe`` SDK drives it unpatched::

    with running_stripe_emulator() as emulator:
        client = emulator.client()
        customer = client.v1.customers.create(params={"name": "Acme"})
        emulator.fail_next("POST", "/v1/invoices", status=500)   # fault injection
        emulator.delay_next("GET", "/v1/customers/search", seconds=0.2)  # a slow answer

Implemented (everything else is a 404 ``resource_missing``, as an unknown URL is at Stripe):

    POST/GET /v1/customers, GET /v1/customers/search, GET/POST /v1/customers/{id}
    POST/GET /v1/invoices, GET /v1/invoices/search, GET/DELETE /v1/invoices/{id},
    GET /v1/invoices/{id}/lines, POST /v1/invoices/{id}/finalize|pay|void|mark_uncollectible
    POST/GET /v1/invoiceitems, DELETE /v1/invoiceitems/{id}

Invoice states follow Stripe's (docs.stripe.com/invoicing/overview#invoice-statuses): draft ->
open (finalize) -> paid (pay; ``paid_out_of_band`` moves no money) | void | uncollectible
(mark_uncollectible), and uncollectible -> paid | void. Only a draft can be deleted (then it is
gone: 404) or get items; only open or uncollectible invoices can be paid or voided; paid and
void are final. A refused transition is a 400 ``invalid_request_error``, not saved under its
idempotency key. DELETE takes no idempotency key, as at Stripe (it is idempotent by nature).

Idempotency (docs.stripe.com/api/idempotent_requests): a POST's result is saved under its
``Idempotency-Key`` once the endpoint starts executing, 5xx included; the same key with the same
method, path and parameters replays it (header ``Idempotent-Replayed: true``); different
parameters get 400 ``idempotency_error``. Validation errors are not saved, as at Stripe, so a
request fixed after a 400 can reuse its key.

Run it as a process for end-to-end tests: ``python tests/support/stripe_emulator.py --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import queue
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import stripe
import uvicorn

DEFAULT_API_KEY = "sk_test_meterline_emulator"
DEFAULT_WEBHOOK_SECRET = "whsec_meterline_emulator"
API_VERSION = "2026-10-28.endive"
# Stripe's three-decimal currencies take amounts in multiples of 10 minor units only.
THREE_DECIMAL_CURRENCIES = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})

Json = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


class StripeApiError(Exception):
    """An error answered with Stripe's error JSON; raised inside handlers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        extra: Json | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: Json = {"error": {"type": type, "message": message, **(extra or {})}}
        if param is not None:
            self.body["error"]["param"] = param
        if code is not None:
            self.body["error"]["code"] = code


def missing(kind: str, id_: str, param: str = "id") -> StripeApiError:
    return StripeApiError(404, f"No such {kind}: '{id_}'", param=param, code="resource_missing")


# --- form decoding ----------------------------------------------------------------------------


def decode_form(raw: str) -> Json:
    """Stripe's bracket notation (``metadata[k]=v``, ``expand[0]=x``) into nested dicts/lists."""
    root: Json = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        head, bracket, rest = key.partition("[")
        parts = [head, *re.findall(r"([^\]]*)\]", rest)] if bracket else [head]
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _lists(root)


def _lists(node: Any, *, keep: bool = False) -> Any:
    """``{"0": a, "1": b}`` -> ``[a, b]``, except in metadata, whose keys may be digits."""
    if isinstance(node, dict):
        if node and not keep and all(k.isdigit() for k in node):
            return [_lists(node[k]) for k in sorted(node, key=int)]
        return {k: _lists(v, keep=k == "metadata") for k, v in node.items()}
    return node


def as_int(params: Json, name: str, *, required: bool = False) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise StripeApiError(
                400, f"Missing required param: {name}.", param=name, code="parameter_missing"
            )
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StripeApiError(
            400, f"Invalid integer: {value}", param=name, code="parameter_invalid_integer"
        ) from None


def as_bool(params: Json, name: str, default: bool) -> bool:
    value = params.get(name)
    if value is None:
        return default
    if value not in ("true", "false"):
        raise StripeApiError(400, f"Invalid boolean: {value}", param=name)
    return bool(value == "true")


def as_str(params: Json, name: str, *, required: bool = False) -> str | None:
    value = params.get(name)
    if value is None and required:
        raise StripeApiError(
            400, f"Missing required param: {name}.", param=name, code="parameter_missing"
        )
    if value is not None and not isinstance(value, str):
        raise StripeApiError(400, f"Invalid string: {value}", param=name)
    return value


def only(params: Json, allowed: set[str]) -> None:
    for name in params:
        if name not in allowed | {"expand"}:
            raise StripeApiError(400, f"Received unknown parameter: {name}", param=name)


def metadata_of(params: Json, current: dict[str, str] | None = None) -> dict[str, str]:
    """Stripe merges metadata on update; an empty string deletes a key."""
    given = params.get("metadata", {})
    if given == "":
        return {}
    if not isinstance(given, dict):
        raise StripeApiError(400, "Invalid object", param="metadata")
    merged = dict(current or {})
    for key, value in given.items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = str(value)
    return merged


# --- faults, records, events ------------------------------------------------------------------


@dataclass
class Fault:
    """The next ``times`` calls matching method and path answer ``status``."""

    method: str
    pattern: re.Pattern[str]
    status: int
    times: int
    after_processing: bool
    message: str
    code: str | None


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    params: Json
    idempotency_key: str | None
    status: int
    replayed: bool


@dataclass(frozen=True)
class Delivery:
    event_id: str
    event_type: str
    url: str
    status: int | None
    error: str | None


@dataclass
class Saved:
    method: str
    path: str
    params: Json
    status: int
    body: Json


FAULT_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    402: "card_error",
    404: "invalid_request_error",
    409: "idempotency_error",
    429: "rate_limit_error",
}


@dataclass
class StripeEmulator:
    """The ASGI app and its state; tests read the state and steer faults directly."""

    api_keys: set[str] = field(default_factory=lambda: {DEFAULT_API_KEY})
    webhook_secret: str = DEFAULT_WEBHOOK_SECRET
    webhook_url: str | None = None
    clock: Callable[[], float] = time.time
    url: str = ""

    customers: dict[str, Json] = field(default_factory=dict)
    invoices: dict[str, Json] = field(default_factory=dict)
    invoice_items: dict[str, Json] = field(default_factory=dict)
    events: list[Json] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    declining_customers: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._faults: list[Fault] = []
        self._delays: list[tuple[str, re.Pattern[str], float, list[int]]] = []
        self._saved: dict[tuple[str, str], Saved] = {}
        self._ids = itertools.count(1)
        self._numbers = itertools.count(1)
        self._outbox: queue.Queue[tuple[Json, str] | None] = queue.Queue()
        self._pending_deliveries = 0
        self._delivered = threading.Condition(self._lock)
        self._sender = threading.Thread(target=self._send_loop, daemon=True, name="webhooks")
        self._sender.start()

    # --- test controls ------------------------------------------------------------------------

    def client(self, *, api_key: str | None = None) -> stripe.StripeClient:
        """An official SDK client aimed at this emulator (SDK retries off: tests count calls)."""
        return stripe.StripeClient(
            api_key or next(iter(self.api_keys)),
            base_addresses={"api": self.url},
            max_network_retries=0,
        )

    def fail_next(
        self,
        method: str,
        path: str,
        *,
        status: int,
        times: int = 1,
        after_processing: bool = False,
        message: str | None = None,
        code: str | None = None,
    ) -> None:
        """Make the next ``times`` calls to ``method path`` (``*`` = one path segment) fail.

        ``after_processing`` runs the request first and then answers the error, like a response
        lost on the way back; its result is saved under the idempotency key, as at Stripe.
        """
        pattern = re.compile("^" + re.escape(path).replace(r"\*", "[^/]+") + "$")
        with self._lock:
            self._faults.append(
                Fault(
                    method=method.upper(),
                    pattern=pattern,
                    status=status,
                    times=times,
                    after_processing=after_processing,
                    message=message or f"Injected failure ({status}).",
                    code=code,
                )
            )

    def delay_next(self, method: str, path: str, *, seconds: float, times: int = 1) -> None:
        """Answer the next ``times`` calls to ``method path`` ``seconds`` late (Stripe is slow).

        The wait happens before the request is handled and outside the emulator's lock, so
        concurrent requests overlap as they would at Stripe.
        """
        pattern = re.compile("^" + re.escape(path).replace(r"\*", "[^/]+") + "$")
        with self._lock:
            self._delays.append((method.upper(), pattern, seconds, [times]))

    def _take_delay(self, method: str, path: str) -> float:
        with self._lock:
            for delay in self._delays:
                delay_method, pattern, seconds, left = delay
                if delay_method == method and pattern.match(path):
                    left[0] -= 1
                    if left[0] <= 0:
                        self._delays.remove(delay)
                    return seconds
        return 0.0

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._delays.clear()

    def reset(self, *, webhook_url: str | None = None) -> None:
        """Forget everything, as a fresh emulator (lets tests share one server)."""
        self.wait_for_deliveries()
        with self._lock:
            for store in (self.customers, self.invoices, self.invoice_items):
                store.clear()
            for log in (self.events, self.requests, self.deliveries):
                log.clear()
            self.declining_customers.clear()
            self._faults.clear()
            self._delays.clear()
            self._saved.clear()
            self.webhook_url = webhook_url

    def forget_idempotency_keys(self) -> None:
        """What Stripe does to keys older than 24 hours."""
        with self._lock:
            self._saved.clear()

    def calls(self, method: str, path: str) -> list[RecordedRequest]:
        """Recorded calls to ``method path`` (``*`` matches one segment), replays included."""
        pattern = re.compile("^" + re.escape(path).replace(r"\*", "[^/]+") + "$")
        with self._lock:
            return [r for r in self.requests if r.method == method and pattern.match(r.path)]

    def invoices_with_metadata(self, key: str, value: str) -> list[Json]:
        with self._lock:
            return [i for i in self.invoices.values() if i["metadata"].get(key) == value]

    def items_of(self, invoice_id: str) -> list[Json]:
        with self._lock:
            return [i for i in self.invoice_items.values() if i["invoice"] == invoice_id]

    def decline_payments(self, customer_id: str) -> None:
        """Payments of this customer's invoices fail with ``card_declined``."""
        with self._lock:
            self.declining_customers.add(customer_id)

    def sign(self, payload: str, *, timestamp: int | None = None, secret: str | None = None) -> str:
        """The ``Stripe-Signature`` header Stripe would send for ``payload``."""
        t = int(self.clock()) if timestamp is None else timestamp
        mac = hmac.new(
            (secret or self.webhook_secret).encode(), f"{t}.{payload}".encode(), hashlib.sha256
        )
        return f"t={t},v1={mac.hexdigest()}"

    def signed(self, event: Json) -> tuple[bytes, str]:
        """An event as a webhook body and its signature header."""
        payload = json.dumps(event, indent=2)
        return payload.encode(), self.sign(payload)

    def last_event(self, type_: str) -> Json:
        with self._lock:
            return next(e for e in reversed(self.events) if e["type"] == type_)

    def deliver(self, event: Json, url: str | None = None) -> None:
        """(Re)send ``event`` to the webhook URL, in the background, as Stripe does."""
        target = url or self.webhook_url
        if target is None:
            return
        with self._lock:
            self._pending_deliveries += 1
        self._outbox.put((event, target))

    def wait_for_deliveries(self, timeout: float = 10.0) -> list[Delivery]:
        with self._delivered:
            if not self._delivered.wait_for(lambda: self._pending_deliveries == 0, timeout):
                raise AssertionError("webhook deliveries did not finish")
            return list(self.deliveries)

    def close(self) -> None:
        self._outbox.put(None)
        self._sender.join(timeout=10)

    def _send_loop(self) -> None:
        with httpx.Client(timeout=10) as http:
            while (item := self._outbox.get()) is not None:
                event, url = item
                payload, signature = self.signed(event)
                status: int | None = None
                error: str | None = None
                try:
                    status = http.post(
                        url,
                        content=payload,
                        headers={
                            "Content-Type": "application/json; charset=utf-8",
                            "Stripe-Signature": signature,
                            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                        },
                    ).status_code
                except httpx.HTTPError as exc:
                    error = repr(exc)
                with self._delivered:
                    self.deliveries.append(Delivery(event["id"], event["type"], url, status, error))
                    self._pending_deliveries -= 1
                    self._delivered.notify_all()

    # --- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Json, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        method = scope["method"]
        path = scope["path"]
        raw = body.decode() if method == "POST" else scope["query_string"].decode()
        delay = self._take_delay(method, path)
        if delay:
            await asyncio.sleep(delay)
        status, payload, extra = self.handle(method, path, raw, headers)
        data = json.dumps(payload).encode()
        response_headers = [
            (b"content-type", b"application/json"),
            (b"request-id", f"req_{secrets.token_hex(7)}".encode()),
            (b"stripe-version", API_VERSION.encode()),
            *((k.encode(), v.encode()) for k, v in extra.items()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": data})

    def handle(
        self, method: str, path: str, raw: str, headers: dict[str, str]
    ) -> tuple[int, Json, dict[str, str]]:
        """One request: auth, idempotency, faults, then the endpoint. Serialized by one lock."""
        with self._lock:
            key = headers.get("idempotency-key") if method == "POST" else None
            try:
                api_key = self._authenticate(headers)
                params = decode_form(raw)
            except StripeApiError as exc:
                return self._record(method, path, {}, key, exc.status, exc.body, False)
            if path.startswith("/_emulator/"):
                return self._record(method, path, params, key, *self._control(method, path), False)
            if key is not None:
                saved = self._saved.get((api_key, key))
                if saved is not None:
                    if (saved.method, saved.path, saved.params) != (method, path, params):
                        error = StripeApiError(
                            400,
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with. Try using a key other than "
                            f"'{key}' if you meant to execute a different request.",
                            type="idempotency_error",
                        )
                        return self._record(method, path, params, key, 400, error.body, False)
                    return self._record(method, path, params, key, saved.status, saved.body, True)
            fault = self._take_fault(method, path)
            if fault is not None and not fault.after_processing:
                error = self._fault_error(fault)
                return self._record(method, path, params, key, error.status, error.body, False)
            try:
                status, body = 200, self._route(method, path, params)
            except StripeApiError as exc:
                # Validation and state errors: not saved, so the request can be fixed and resent.
                return self._record(method, path, params, key, exc.status, exc.body, False)
            if fault is not None:
                error = self._fault_error(fault)
                status, body = error.status, error.body
            if key is not None:
                self._saved[(api_key, key)] = Saved(method, path, params, status, body)
            return self._record(method, path, params, key, status, body, False)

    def _record(
        self,
        method: str,
        path: str,
        params: Json,
        key: str | None,
        status: int,
        body: Json,
        replayed: bool,
    ) -> tuple[int, Json, dict[str, str]]:
        self.requests.append(RecordedRequest(method, path, params, key, status, replayed))
        extra = {"idempotency-key": key} if key else {}
        if replayed:
            extra["idempotent-replayed"] = "true"
        return status, body, extra

    def _authenticate(self, headers: dict[str, str]) -> str:
        auth = headers.get("authorization", "")
        scheme, _, credential = auth.partition(" ")
        if scheme.lower() == "basic":
            credential = base64.b64decode(credential).decode().partition(":")[0]
        elif scheme.lower() != "bearer":
            credential = ""
        if credential not in self.api_keys:
            # Stripe shows only the key's tail, never the whole key.
            shown = f"{credential[:7]}{'*' * 10}{credential[-4:]}" if credential else ""
            message = (
                f"Invalid API Key provided: {shown}"
                if credential
                else "You did not provide an API key."
            )
            raise StripeApiError(401, message)
        return credential

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.method == method and fault.pattern.match(path):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _fault_error(fault: Fault) -> StripeApiError:
        return StripeApiError(
            fault.status,
            fault.message,
            type=FAULT_TYPES.get(fault.status, "api_error"),
            code=fault.code or ("rate_limit" if fault.status == 429 else None),
        )

    def _control(self, method: str, path: str) -> tuple[int, Json]:
        """Test controls for a subprocess emulator: GET /_emulator/state."""
        if method == "GET" and path == "/_emulator/state":
            return 200, {
                "customers": list(self.customers.values()),
                "invoices": [self._invoice_view(i) for i in self.invoices.values()],
                "invoice_items": list(self.invoice_items.values()),
                "events": self.events,
            }
        raise missing("control", path)

    # --- routing ------------------------------------------------------------------------------

    def _route(self, method: str, path: str, params: Json) -> Json:
        routes: list[tuple[str, str, Callable[..., Json]]] = [
            ("POST", r"/v1/customers", self._create_customer),
            ("GET", r"/v1/customers", self._list_customers),
            ("GET", r"/v1/customers/search", self._search_customers),
            ("GET", r"/v1/customers/(?P<id>[^/]+)", self._get_customer),
            ("POST", r"/v1/customers/(?P<id>[^/]+)", self._update_customer),
            ("POST", r"/v1/invoices", self._create_invoice),
            ("GET", r"/v1/invoices", self._list_invoices),
            ("GET", r"/v1/invoices/search", self._search_invoices),
            ("GET", r"/v1/invoices/(?P<id>[^/]+)", self._get_invoice),
            ("DELETE", r"/v1/invoices/(?P<id>[^/]+)", self._delete_invoice),
            ("GET", r"/v1/invoices/(?P<id>[^/]+)/lines", self._list_lines),
            ("POST", r"/v1/invoices/(?P<id>[^/]+)/finalize", self._finalize),
            ("POST", r"/v1/invoices/(?P<id>[^/]+)/pay", self._pay),
            ("POST", r"/v1/invoices/(?P<id>[^/]+)/void", self._void),
            (
                "POST",
                r"/v1/invoices/(?P<id>[^/]+)/mark_uncollectible",
                self._mark_uncollectible,
            ),
            ("POST", r"/v1/invoiceitems", self._create_item),
            ("GET", r"/v1/invoiceitems", self._list_items),
            ("DELETE", r"/v1/invoiceitems/(?P<id>[^/]+)", self._delete_item),
        ]
        for route_method, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                return handler(params, **match.groupdict())
        raise StripeApiError(
            404,
            f"Unrecognized request URL ({method}: {path}).",
            code="resource_missing",
        )

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}{secrets.token_hex(5)}"

    def _now(self) -> int:
        return int(self.clock())

    # --- customers ----------------------------------------------------------------------------

    def _create_customer(self, params: Json) -> Json:
        only(params, {"name", "email", "description", "metadata"})
        customer: Json = {
            "id": self._new_id("cus"),
            "object": "customer",
            "balance": 0,
            "created": self._now(),
            "currency": None,
            "deleted": None,
            "description": as_str(params, "description"),
            "email": as_str(params, "email"),
            "invoice_prefix": secrets.token_hex(4).upper(),
            "livemode": False,
            "metadata": metadata_of(params),
            "name": as_str(params, "name"),
        }
        self.customers[customer["id"]] = customer
        return customer

    def _customer(self, id_: str, param: str = "id") -> Json:
        if id_ not in self.customers:
            raise missing("customer", id_, param)
        return self.customers[id_]

    def _get_customer(self, params: Json, id: str) -> Json:
        return self._customer(id)

    def _update_customer(self, params: Json, id: str) -> Json:
        only(params, {"name", "email", "description", "metadata"})
        customer = self._customer(id)
        for name in ("name", "email", "description"):
            if name in params:
                customer[name] = as_str(params, name) or None
        customer["metadata"] = metadata_of(params, customer["metadata"])
        return customer

    def _list_customers(self, params: Json) -> Json:
        only(params, {"email", "limit", "starting_after"})
        found = [
            c
            for c in self.customers.values()
            if "email" not in params or c["email"] == params["email"]
        ]
        return self._page(found, params, "/v1/customers")

    def _search_customers(self, params: Json) -> Json:
        return self._search(self.customers.values(), params, "/v1/customers/search")

    # --- invoices -----------------------------------------------------------------------------

    def _create_invoice(self, params: Json) -> Json:
        only(
            params,
            {
                "customer",
                "auto_advance",
                "collection_method",
                "days_until_due",
                "currency",
                "metadata",
                "pending_invoice_items_behavior",
                "automatic_tax",
                "description",
            },
        )
        customer = self._customer(as_str(params, "customer", required=True) or "", "customer")
        method = params.get("collection_method", "charge_automatically")
        if method not in ("charge_automatically", "send_invoice"):
            raise StripeApiError(
                400, f"Invalid collection_method: {method}", param="collection_method"
            )
        days = as_int(params, "days_until_due")
        if method == "send_invoice" and days is None:
            raise StripeApiError(
                400,
                "Missing required param: days_until_due.",
                param="days_until_due",
                code="parameter_missing",
            )
        if method == "charge_automatically" and days is not None:
            raise StripeApiError(
                400,
                "You can only set `days_until_due` when `collection_method=send_invoice`.",
                param="days_until_due",
            )
        behavior = params.get("pending_invoice_items_behavior", "exclude")
        if behavior not in ("exclude", "include"):
            raise StripeApiError(
                400,
                f"Invalid pending_invoice_items_behavior: {behavior}",
                param="pending_invoice_items_behavior",
            )
        tax = params.get("automatic_tax", {})
        invoice: Json = {
            "id": self._new_id("in"),
            "object": "invoice",
            "amount_due": 0,
            "amount_paid": 0,
            "amount_remaining": 0,
            "attempt_count": 0,
            "attempted": False,
            "auto_advance": as_bool(params, "auto_advance", True),
            "automatic_tax": {
                "enabled": as_bool(tax, "enabled", False),
                "status": None,
                "liability": None,
            },
            "collection_method": method,
            "created": self._now(),
            "currency": (as_str(params, "currency") or "usd").lower(),
            "customer": customer["id"],
            "customer_name": customer["name"],
            "days_until_due": days,
            "description": as_str(params, "description"),
            "due_date": None,
            "hosted_invoice_url": None,
            "invoice_pdf": None,
            "livemode": False,
            "metadata": metadata_of(params),
            "number": None,
            "paid_out_of_band": False,
            "status": "draft",
            "status_transitions": {
                "finalized_at": None,
                "marked_uncollectible_at": None,
                "paid_at": None,
                "voided_at": None,
            },
            "subtotal": 0,
            "total": 0,
        }
        self.invoices[invoice["id"]] = invoice
        if behavior == "include":
            for item in self.invoice_items.values():
                if item["customer"] == customer["id"] and item["invoice"] is None:
                    item["invoice"] = invoice["id"]
        self._event("invoice.created", invoice)
        return self._invoice_view(invoice)

    def _invoice(self, id_: str, param: str = "id") -> Json:
        if id_ not in self.invoices:
            raise missing("invoice", id_, param)
        return self.invoices[id_]

    def _lines(self, invoice: Json) -> list[Json]:
        return [
            {
                "id": f"il_{item['id'][3:]}",
                "object": "line_item",
                "amount": item["amount"],
                "currency": item["currency"],
                "description": item["description"],
                "discountable": True,
                "discounts": [],
                "invoice": invoice["id"],
                "livemode": False,
                # Stripe copies an invoice item's metadata onto its line.
                "metadata": dict(item["metadata"]),
                "parent": {
                    "type": "invoice_item_details",
                    "invoice_item_details": {
                        "invoice": invoice["id"],
                        "invoice_item": item["id"],
                        "proration": False,
                        "proration_details": {"credited_items": None},
                        "subscription": None,
                    },
                    "subscription_item_details": None,
                },
                "period": dict(item["period"]),
                "pricing": None,
                "quantity": 1,
                "subtotal": item["amount"],
                "taxes": [],
            }
            for item in self.invoice_items.values()
            if item["invoice"] == invoice["id"]
        ]

    def _invoice_view(self, invoice: Json) -> Json:
        """The invoice as Stripe returns it: a draft's totals follow its items."""
        lines = self._lines(invoice)
        view = {**invoice}
        if invoice["status"] == "draft":
            total = sum(line["amount"] for line in lines)
            view.update(subtotal=total, total=total, amount_due=total, amount_remaining=total)
        view["lines"] = {
            "object": "list",
            "data": lines[:10],
            "has_more": len(lines) > 10,
            "total_count": len(lines),
            "url": f"/v1/invoices/{invoice['id']}/lines",
        }
        return view

    def _get_invoice(self, params: Json, id: str) -> Json:
        return self._invoice_view(self._invoice(id))

    def _list_invoices(self, params: Json) -> Json:
        only(params, {"customer", "status", "collection_method", "limit", "starting_after"})
        found = [
            self._invoice_view(i)
            for i in self.invoices.values()
            if all(
                name not in params or i[name] == params[name]
                for name in ("customer", "status", "collection_method")
            )
        ]
        return self._page(found, params, "/v1/invoices")

    def _search_invoices(self, params: Json) -> Json:
        views = [self._invoice_view(i) for i in self.invoices.values()]
        return self._search(views, params, "/v1/invoices/search")

    def _list_lines(self, params: Json, id: str) -> Json:
        only(params, {"limit", "starting_after"})
        return self._page(self._lines(self._invoice(id)), params, f"/v1/invoices/{id}/lines")

    def _finalize(self, params: Json, id: str) -> Json:
        only(params, {"auto_advance"})
        invoice = self._invoice(id)
        if invoice["status"] != "draft":
            raise StripeApiError(
                400,
                "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
                code="invoice_not_editable" if invoice["status"] == "void" else None,
            )
        total = sum(line["amount"] for line in self._lines(invoice))
        now = self._now()
        customer = self.customers[invoice["customer"]]
        invoice.update(
            auto_advance=as_bool(params, "auto_advance", invoice["auto_advance"]),
            subtotal=total,
            total=total,
            amount_due=max(total, 0),
            amount_remaining=max(total, 0),
            status="open",
            number=f"{customer['invoice_prefix']}-{next(self._numbers):04d}",
            hosted_invoice_url=f"{self.url}/i/{invoice['id']}",
            invoice_pdf=f"{self.url}/i/{invoice['id']}/pdf",
        )
        invoice["status_transitions"]["finalized_at"] = now
        if invoice["collection_method"] == "send_invoice":
            invoice["due_date"] = now + 86400 * invoice["days_until_due"]
        self._event("invoice.finalized", invoice)
        if invoice["amount_due"] == 0:
            # Stripe marks an invoice with nothing to collect paid when it is finalized.
            self._mark_paid(invoice)
        return self._invoice_view(invoice)

    def _mark_paid(self, invoice: Json) -> None:
        invoice.update(
            status="paid",
            amount_paid=invoice["amount_due"],
            amount_remaining=0,
            auto_advance=False,
        )
        invoice["status_transitions"]["paid_at"] = self._now()
        self._event("invoice.paid", invoice)

    def _pay(self, params: Json, id: str) -> Json:
        only(params, {"paid_out_of_band", "payment_method", "source", "forgive", "off_session"})
        invoice = self._invoice(id)
        if invoice["status"] == "paid":
            raise StripeApiError(400, "Invoice is already paid.", code="invoice_already_paid")
        if invoice["status"] not in ("open", "uncollectible"):
            raise StripeApiError(
                400,
                f"You cannot pay an invoice with status {invoice['status']}.",
                code="invoice_not_editable" if invoice["status"] == "void" else None,
            )
        out_of_band = as_bool(params, "paid_out_of_band", False)
        if not out_of_band and invoice["customer"] in self.declining_customers:
            invoice.update(attempt_count=invoice["attempt_count"] + 1, attempted=True)
            self._event("invoice.payment_failed", invoice)
            raise StripeApiError(
                402,
                "Your card was declined.",
                type="card_error",
                code="card_declined",
                extra={"decline_code": "generic_decline"},
            )
        if out_of_band:
            # Marked paid outside Stripe: no attempt, no charge.
            invoice["paid_out_of_band"] = True
        else:
            invoice.update(attempt_count=invoice["attempt_count"] + 1, attempted=True)
        self._mark_paid(invoice)
        return self._invoice_view(invoice)

    def _void(self, params: Json, id: str) -> Json:
        only(params, set())
        invoice = self._invoice(id)
        if invoice["status"] not in ("open", "uncollectible"):
            raise StripeApiError(
                400,
                f"You can only pass in open or uncollectible invoices. This invoice is "
                f"{invoice['status']}.",
                code="invoice_not_editable",
            )
        invoice.update(status="void", amount_remaining=0, auto_advance=False)
        invoice["status_transitions"]["voided_at"] = self._now()
        self._event("invoice.voided", invoice)
        return self._invoice_view(invoice)

    def _mark_uncollectible(self, params: Json, id: str) -> Json:
        only(params, set())
        invoice = self._invoice(id)
        if invoice["status"] != "open":
            raise StripeApiError(
                400,
                f"You can only mark open invoices as uncollectible. This invoice is "
                f"{invoice['status']}.",
            )
        invoice.update(status="uncollectible", auto_advance=False)
        invoice["status_transitions"]["marked_uncollectible_at"] = self._now()
        self._event("invoice.marked_uncollectible", invoice)
        return self._invoice_view(invoice)

    def _delete_invoice(self, params: Json, id: str) -> Json:
        only(params, set())
        invoice = self._invoice(id)
        if invoice["status"] != "draft":
            raise StripeApiError(
                400,
                "You can only delete draft invoices. Once an invoice has been finalized, it "
                "must be voided.",
                code="invoice_not_editable",
            )
        del self.invoices[id]
        # Its invoice items go back to pending on the customer.
        for item in self.invoice_items.values():
            if item["invoice"] == id:
                item["invoice"] = None
        self._event("invoice.deleted", invoice)
        return {"id": id, "object": "invoice", "deleted": True}

    # --- invoice items ------------------------------------------------------------------------

    def _delete_item(self, params: Json, id: str) -> Json:
        only(params, set())
        if id not in self.invoice_items:
            raise missing("invoiceitem", id)
        item = self.invoice_items[id]
        invoice = self.invoices.get(item["invoice"]) if item["invoice"] else None
        if invoice is not None and invoice["status"] != "draft":
            raise StripeApiError(
                400,
                f"Invoice item {id} is on invoice {invoice['id']}, which is no longer editable: "
                f"its status is {invoice['status']}.",
                code="invoice_not_editable",
            )
        del self.invoice_items[id]
        return {"id": id, "object": "invoiceitem", "deleted": True}

    def _create_item(self, params: Json) -> Json:
        only(
            params,
            {"customer", "invoice", "amount", "currency", "description", "period", "metadata"},
        )
        customer = self._customer(as_str(params, "customer", required=True) or "", "customer")
        amount = as_int(params, "amount", required=True)
        currency = (as_str(params, "currency", required=True) or "").lower()
        if currency in THREE_DECIMAL_CURRENCIES and (amount or 0) % 10:
            raise StripeApiError(
                400,
                f"Invalid amount: {currency.upper()} amounts must be a multiple of 10 in the "
                "smallest currency unit.",
                param="amount",
                code="invalid_amount",
            )
        invoice_id = as_str(params, "invoice")
        if invoice_id is not None:
            invoice = self._invoice(invoice_id, "invoice")
            if invoice["status"] != "draft":
                raise StripeApiError(
                    400,
                    f"Invoice {invoice_id} is no longer editable: its status is "
                    f"{invoice['status']}.",
                    param="invoice",
                    code="invoice_not_editable",
                )
            if invoice["customer"] != customer["id"]:
                raise StripeApiError(
                    400, "The invoice belongs to a different customer.", param="invoice"
                )
            if invoice["currency"] != currency:
                raise StripeApiError(
                    400,
                    f"The currency {currency} does not match the invoice's currency "
                    f"{invoice['currency']}.",
                    param="currency",
                )
        period = params.get("period")
        now = self._now()
        if period is None:
            start = end = now
        else:
            start = as_int(period, "start", required=True) or 0
            end = as_int(period, "end", required=True) or 0
            if end < start:
                raise StripeApiError(
                    400, "The period end must be after the period start.", param="period[end]"
                )
        item: Json = {
            "id": self._new_id("ii"),
            "object": "invoiceitem",
            "amount": amount,
            "currency": currency,
            "customer": customer["id"],
            "date": now,
            "description": as_str(params, "description"),
            "discountable": True,
            "invoice": invoice_id,
            "livemode": False,
            "metadata": metadata_of(params),
            "period": {"start": start, "end": end},
            "quantity": 1,
        }
        self.invoice_items[item["id"]] = item
        return item

    def _list_items(self, params: Json) -> Json:
        only(params, {"customer", "invoice", "limit", "starting_after"})
        found = [
            i
            for i in self.invoice_items.values()
            if all(
                name not in params or i[name] == params[name] for name in ("customer", "invoice")
            )
        ]
        return self._page(found, params, "/v1/invoiceitems")

    # --- lists, search, events ----------------------------------------------------------------

    @staticmethod
    def _page(found: list[Json], params: Json, url: str) -> Json:
        limit = as_int(params, "limit") or 10
        if not 1 <= limit <= 100:
            raise StripeApiError(400, "Invalid limit: must be between 1 and 100.", param="limit")
        after = params.get("starting_after")
        if after is not None:
            ids = [o["id"] for o in found]
            if after not in ids:
                raise missing("object", after, "starting_after")
            found = found[ids.index(after) + 1 :]
        return {
            "object": "list",
            "data": found[:limit],
            "has_more": len(found) > limit,
            "url": url,
        }

    @staticmethod
    def _search(objects: Any, params: Json, url: str) -> Json:
        """Stripe's search language, the part Meterline uses: ``a:'x' AND metadata['k']:'v'``."""
        only(params, {"query", "limit", "page"})
        query = as_str(params, "query", required=True) or ""
        clauses = []
        for clause in re.split(r"\s+AND\s+", query.strip()):
            match = re.fullmatch(r"(\w+)(?:\['([^']+)'\])?:'((?:[^'\\]|\\.)*)'", clause)
            if match is None:
                raise StripeApiError(400, f"Invalid search query: {query}", param="query")
            name, key, value = match.groups()
            clauses.append((name, key, re.sub(r"\\(.)", r"\1", value)))

        def matches(obj: Json) -> bool:
            for name, key, value in clauses:
                actual = obj.get(name, {}).get(key) if key else obj.get(name)
                if actual != value:
                    return False
            return True

        found = [o for o in objects if matches(o)]
        limit = as_int(params, "limit") or 10
        return {
            "object": "search_result",
            "data": found[:limit],
            "has_more": len(found) > limit,
            "next_page": None,
            "url": url,
        }

    def _event(self, type_: str, invoice: Json) -> None:
        event: Json = {
            "id": self._new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": self._now(),
            "data": {"object": json.loads(json.dumps(self._invoice_view(invoice)))},
            "livemode": False,
            "pending_webhooks": 1 if self.webhook_url else 0,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
        }
        self.events.append(event)
        self.deliver(event)


# --- serving ----------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:
        # The test process owns its signals; a server thread must not take them.
        pass


@contextmanager
def running_stripe_emulator(
    *,
    api_key: str = DEFAULT_API_KEY,
    webhook_secret: str = DEFAULT_WEBHOOK_SECRET,
    webhook_url: str | None = None,
) -> Iterator[StripeEmulator]:
    """Serve a fresh emulator on 127.0.0.1 (a free port) in a thread for the ``with`` block."""
    emulator = StripeEmulator(
        api_keys={api_key}, webhook_secret=webhook_secret, webhook_url=webhook_url
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    emulator.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        emulator,
        lifespan="off",
        ws="none",
        # uvloop when installed: the asyncio loop in a thread answered 40 ms late per request.
        loop="auto",
        log_level="warning",
        access_log=False,
    )
    server = _Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="stripe"
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the Stripe emulator did not start")
        time.sleep(0.01)
    try:
        yield emulator
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        emulator.close()


def main() -> None:
    """Serve the emulator as a process (end-to-end tests, demos)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--webhook-secret", default=DEFAULT_WEBHOOK_SECRET)
    parser.add_argument("--webhook-url")
    args = parser.parse_args()
    emulator = StripeEmulator(
        api_keys={args.api_key}, webhook_secret=args.webhook_secret, webhook_url=args.webhook_url
    )
    emulator.url = f"http://127.0.0.1:{args.port}"
    uvicorn.run(emulator, host="127.0.0.1", port=args.port, lifespan="off", ws="none")


if __name__ == "__main__":
    main()
