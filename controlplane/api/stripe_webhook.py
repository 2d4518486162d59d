"""The Stripe webhook endpoint: a minimal ASGI app served by uvicorn beside the gRPC server.

``POST /stripe/webhook`` verifies ``Stripe-Signature`` and applies the invoice state. Answers:
200 when handled (also for events Meterline ignores), 400 for a missing or bad signature or
payload (nothing changes), 500 when Stripe could not be re-read (Stripe delivers again later).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn

from controlplane.errors import MeterlineError
from controlplane.stripe_sync.app import StripeApp

log = logging.getLogger(__name__)

PATH = "/stripe/webhook"
MAX_BODY = 1 << 20

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class WebhookApp:
    """ASGI application delegating to ``StripeApp.webhook``."""

    def __init__(self, app: StripeApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != PATH:
            await _answer(send, 404, {"error": f"not found; webhooks go to POST {PATH}"})
            return
        if scope["method"] != "POST":
            await _answer(send, 405, {"error": "use POST"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                await _answer(send, 413, {"error": "payload too large"})
                return
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            outcome = await asyncio.to_thread(
                self._app.webhook, payload=body, signature=headers.get("stripe-signature")
            )
        except MeterlineError as exc:
            await _answer(send, 400, {"error": str(exc)})
            return
        except Exception:
            log.exception("Stripe webhook failed")
            await _answer(send, 500, {"error": "internal error; Stripe will deliver again"})
            return
        await _answer(
            send,
            200,
            {
                "received": True,
                "invoice": outcome.meterline_invoice_id,
                "state": outcome.state.value if outcome.state else None,
            },
        )


async def _answer(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class WebhookServer(uvicorn.Server):
    """uvicorn inside the control plane's event loop: the control plane owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def webhook_server(app: StripeApp, listen: str) -> WebhookServer:
    host, _, port = listen.rpartition(":")
    config = uvicorn.Config(
        WebhookApp(app),
        host=host or "127.0.0.1",
        port=int(port),
        lifespan="off",
        ws="none",
        log_level="warning",
        access_log=False,
    )
    return WebhookServer(config)
