"""Admission in front of the gateway: a 503 while a full usage spool asks requests to wait.

Under the ``block`` policy a data plane whose spool is full (the control plane has not
acknowledged ``--spool-max-bytes`` of usage) refuses new requests rather than serve usage it
could not bill. The answer is OpenAI-shaped, with ``Retry-After``, so SDKs back off and retry.
"""

from __future__ import annotations

from collections.abc import Callable

from dataplane.http.asgi import JSON_CONTENT_TYPE, Receive, Scope, Send, send_response
from dataplane.http.server import AsgiApp
from dataplane.translate.openai_format import error_body

_BODY = error_body(
    "The gateway cannot record more usage until its control plane acknowledges what it holds; "
    "retry shortly.",
    type="api_error",
    code="usage_spool_full",
)


class SpoolGuard:
    """Wraps an ASGI app; answers 503 while ``accepting()`` is False."""

    def __init__(self, app: AsgiApp, *, accepting: Callable[[], bool]) -> None:
        self._app = app
        self._accepting = accepting
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._accepting():
            self.refused += 1
            await send_response(send, 503, _BODY, [JSON_CONTENT_TYPE, (b"retry-after", b"1")])
            return
        await self._app(scope, receive, send)
