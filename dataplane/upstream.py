"""Pooled HTTP clients to providers: one keep-alive session per origin, shared across snapshots.

aiohttp's client, not httpx: on the data plane's job (a keep-alive POST to one upstream, 32 in
flight) httpx costs ~2.8 ms of CPU per request against aiohttp's ~0.12 ms (bench/README.md,
``python bench/upstream_clients.py``); httpcore's pool inspects every idle connection on every
request.

Errors a caller must handle: ``UPSTREAM_ERRORS`` (``aiohttp.ClientError`` and the timeouts);
a timeout is any ``TimeoutError`` among them (aiohttp's ``ServerTimeoutError`` is one).
"""

from __future__ import annotations

import functools
from typing import Final

import aiohttp
import yarl

# Per-phase limits, as httpx had them: connect 10 s, wait for a pooled connection 30 s, and
# 600 s between two reads of the response (long generations stream slowly but steadily).
# No total: a stream may legitimately last longer than any fixed bound.
DEFAULT_TIMEOUT: Final = aiohttp.ClientTimeout(
    total=None, connect=40.0, sock_connect=10.0, sock_read=600.0
)
# Connections per origin; beyond it requests wait for one (up to the connect timeout).
DEFAULT_LIMIT: Final = 1000
# Idle keep-alive connections are closed after this long.
DEFAULT_KEEPALIVE_S: Final = 30.0
# Longest response header line accepted (aiohttp's default of 8190 is stricter than httpx's).
MAX_FIELD_SIZE: Final = 65536

UPSTREAM_ERRORS: Final = (aiohttp.ClientError, TimeoutError)


@functools.lru_cache(maxsize=4096)
def upstream_url(url: str) -> yarl.URL:
    """``url`` as the upstream request will carry it.

    A URL that is already printable ASCII goes out byte for byte, as httpx sent it: yarl would
    otherwise re-quote it (``%2F`` -> ``/``, ``%7E`` -> ``~`` in a query), which changes what a
    provider may have signed. Anything else (a space or non-ASCII in a path) is quoted by yarl.
    Cached: most routes call one URL per snapshot.
    """
    if url.isascii() and url.isprintable() and " " not in url:
        return yarl.URL(url, encoded=True)
    return yarl.URL(url)


class UpstreamClients:
    """Hands out one ``aiohttp.ClientSession`` per ``scheme://host:port``.

    Sessions outlive config swaps, so a new snapshot keeps the warm connections of the old one.
    Sessions are created lazily, inside the running event loop that will use them.
    """

    def __init__(
        self,
        *,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        limit: int = DEFAULT_LIMIT,
        keepalive_s: float = DEFAULT_KEEPALIVE_S,
    ) -> None:
        self._timeout = timeout
        self._limit = limit
        self._keepalive_s = keepalive_s
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def get(self, origin: str) -> aiohttp.ClientSession:
        """Return the session for ``origin``, creating it on first use."""
        session = self._sessions.get(origin)
        if session is None:
            session = self._sessions[origin] = self._new_session()
        return session

    def _new_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limit, limit_per_host=0, keepalive_timeout=self._keepalive_s
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            # Shared by every consumer: a Set-Cookie from a provider must never ride along on
            # another consumer's request.
            cookie_jar=aiohttp.DummyCookieJar(),
            # A proxy or netrc from the environment must not reroute (or add credentials to)
            # provider traffic.
            trust_env=False,
            auto_decompress=True,
            max_field_size=MAX_FIELD_SIZE,
        )

    async def aclose(self) -> None:
        """Close every session and its connections."""
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
