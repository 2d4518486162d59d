"""Google Cloud access tokens for Vertex AI targets (``auth.gcp_use_service_account``).

A service account's JSON key is exchanged for an OAuth2 access token by google-auth (the JWT
bearer grant against the key's ``token_uri``, or ``auth.gcp_oauth_token_url``). The token is
cached until shortly before it expires:

- a request finds a usable token and uses it; when less than ``refresh_margin_s`` of its life
  is left, one refresh starts in the background, so requests do not wait for it;
- only without a usable token (first use, or expired) does a request wait, behind one lock,
  for the one fetch every waiting request then shares;
- a provider's 401 means the token is no good: ``rejected`` fetches a new one (once, however
  many requests saw the same token refused).

google-auth is synchronous: every fetch runs in a worker thread, never on the event loop.
Without a JSON key in the config, the data plane's own ``GCP_SERVICE_ACCOUNT`` variable (Kong's)
or Application Default Credentials are used, resolved at the first fetch.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Any, Final

import orjson

from dataplane.errors import ConfigError
from dataplane.http.client import UpstreamError

logger = logging.getLogger(__name__)

CLOUD_PLATFORM_SCOPE: Final = "https://www.googleapis.com/auth/cloud-platform"
# Kong reads a service account from this variable when the config carries none.
SERVICE_ACCOUNT_ENV: Final = "GCP_SERVICE_ACCOUNT"
# A token is refreshed in the background once less than this is left of its life...
DEFAULT_REFRESH_MARGIN_S: Final = 300.0
# ...and is not used at all with less than this left (a request may take a while to arrive).
DEFAULT_MIN_VALID_S: Final = 10.0
# Token endpoint calls: google-auth's default (120 s) is far longer than a request waits.
_FETCH_TIMEOUT_S: Final = 10.0


class UpstreamCredentialsError(UpstreamError):
    """No access token could be obtained for the provider (the message says why)."""


def parse_service_account(text: str, *, label: str) -> dict[str, Any]:
    """The JSON key of a service account, checked; ConfigError (secret-free) if unusable."""
    try:
        info = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ConfigError(f"{label}: auth.gcp_service_account_json is not JSON") from None
    if not isinstance(info, dict):
        raise ConfigError(f"{label}: auth.gcp_service_account_json is not a JSON object")
    if info.get("type", "service_account") != "service_account":
        raise ConfigError(
            f'{label}: auth.gcp_service_account_json has type "{info.get("type")}", '
            'expected "service_account"'
        )
    for key in ("client_email", "private_key"):
        if not isinstance(info.get(key), str) or not info[key]:
            raise ConfigError(f'{label}: auth.gcp_service_account_json has no "{key}"')
    return info


class ServiceAccountTokens:
    """Access tokens of one service account (or of the ambient credentials), cached."""

    __slots__ = (
        "_background",
        "_clock",
        "_credentials",
        "_expires_at",
        "_info",
        "_lock",
        "_min_valid_s",
        "_refresh_margin_s",
        "_token",
        "_token_url",
        "fetches",
        "fingerprint",
    )

    def __init__(
        self,
        *,
        info: Mapping[str, Any] | None,
        token_url: str = "",
        clock: Callable[[], float] = time.time,
        refresh_margin_s: float = DEFAULT_REFRESH_MARGIN_S,
        min_valid_s: float = DEFAULT_MIN_VALID_S,
    ) -> None:
        self._info = dict(info) if info is not None else None
        self._token_url = token_url
        self._clock = clock
        self._refresh_margin_s = refresh_margin_s
        self._min_valid_s = min_valid_s
        self._credentials: Any = None
        if self._info is not None:
            # Built now, so a key google-auth cannot load fails the snapshot, not a request.
            self._credentials = _service_account_credentials(self._info, token_url)
        self._token: bytes | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        # Same key, same endpoint: a newer snapshot's source takes the cached token over.
        self.fingerprint = hashlib.sha256(
            orjson.dumps(self._info, option=orjson.OPT_SORT_KEYS) + b"\0" + token_url.encode()
        ).digest()
        # Token endpoint calls made (observability and tests).
        self.fetches = 0

    def __repr__(self) -> str:
        email = (self._info or {}).get("client_email", "ambient credentials")
        return f"ServiceAccountTokens({email!r})"

    def adopt(self, previous: ServiceAccountTokens) -> bool:
        """Take over ``previous``'s cached token if it is for the same account and endpoint."""
        if previous.fingerprint != self.fingerprint or previous._token is None:
            return False
        self._token, self._expires_at = previous._token, previous._expires_at
        return True

    async def header(self) -> tuple[bytes, bytes]:
        """``Authorization: Bearer <token>``; waits for a fetch only without a usable token."""
        token = self._token
        if token is not None:
            left = self._expires_at - self._clock()
            if left > self._min_valid_s:
                if left < self._refresh_margin_s:
                    self._refresh_in_background(token)
                return _bearer(token)
        return _bearer(await self._refresh(stale=token))

    async def rejected(self, header: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
        """The provider refused ``header``: a new token (fetched once for all who saw it)."""
        stale = header[1].removeprefix(b"Bearer ")
        return _bearer(await self._refresh(stale=stale))

    def _refresh_in_background(self, stale: bytes) -> None:
        if self._background is not None and not self._background.done():
            return
        self._background = asyncio.get_running_loop().create_task(self._refresh_quietly(stale))

    async def _refresh_quietly(self, stale: bytes) -> None:
        try:
            await self._refresh(stale=stale)
        except Exception as exc:  # a background task: nobody else would see it
            # The current token still works for a while; the next request tries again.
            logger.warning("early refresh of a Google Cloud access token failed: %s", exc)

    async def _refresh(self, *, stale: bytes | None) -> bytes:
        async with self._lock:
            current = self._token
            if current is not None and current != stale:
                return current  # another request refreshed it while this one waited
            token, expires_at = await asyncio.to_thread(self._fetch)
            self._token, self._expires_at = token, expires_at
            return token

    def _fetch(self) -> tuple[bytes, float]:
        """Run in a worker thread: one call to the token endpoint."""
        from google.auth import exceptions
        from google.auth.transport.requests import Request

        self.fetches += 1
        started = time.time()  # google-auth dates the expiry by the real clock
        try:
            if self._credentials is None:
                self._credentials = _ambient_credentials(self._token_url)
            with _session() as session:
                request = Request(session)

                def call(*args: Any, **kwargs: Any) -> Any:
                    return request(*args, **{"timeout": _FETCH_TIMEOUT_S, **kwargs})

                self._credentials.refresh(call)
        except exceptions.GoogleAuthError as exc:
            raise UpstreamCredentialsError(
                f"could not get a Google Cloud access token: {_reason(exc)}"
            ) from None
        token = self._credentials.token
        expiry = self._credentials.expiry
        if not isinstance(token, str) or not token:
            raise UpstreamCredentialsError("the token endpoint returned no access token")
        # google-auth's expiry is a naive UTC datetime; no expiry means a one-hour token. The
        # lifetime is counted from before the call, so the cache never outlives the token.
        lifetime = expiry.replace(tzinfo=UTC).timestamp() - started if expiry is not None else 3600
        return token.encode(), self._clock() + lifetime


def _bearer(token: bytes) -> tuple[bytes, bytes]:
    return (b"authorization", b"Bearer " + token)


def _session() -> Any:
    import requests

    return requests.Session()


def _reason(exc: Exception) -> str:
    # RefreshError carries (message, response body); the first part is the readable one.
    first = exc.args[0] if exc.args else type(exc).__name__
    return str(first)[:300]


def _service_account_credentials(info: Mapping[str, Any], token_url: str) -> Any:
    from google.oauth2 import service_account

    info = {**info, "token_uri": token_url or info.get("token_uri") or _DEFAULT_TOKEN_URI}
    try:
        return service_account.Credentials.from_service_account_info(
            info, scopes=[CLOUD_PLATFORM_SCOPE]
        )
    except (ValueError, KeyError, TypeError) as exc:
        # The message of a bad key never quotes it (google-auth's do not either).
        raise ConfigError(
            f"auth.gcp_service_account_json cannot be loaded: {type(exc).__name__}"
        ) from None


def _ambient_credentials(token_url: str) -> Any:
    """Kong's ``GCP_SERVICE_ACCOUNT`` variable, else Application Default Credentials."""
    import google.auth
    from google.auth import exceptions

    text = os.environ.get(SERVICE_ACCOUNT_ENV)
    if text:
        try:
            info = parse_service_account(text, label=SERVICE_ACCOUNT_ENV)
            return _service_account_credentials(info, token_url)
        except ConfigError as exc:
            raise exceptions.DefaultCredentialsError(str(exc)) from None
    credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    return credentials


_DEFAULT_TOKEN_URI: Final = "https://oauth2.googleapis.com/token"
