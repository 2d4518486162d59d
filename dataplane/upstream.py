"""Pooled HTTP clients to providers: one keep-alive client per origin, shared across snapshots."""

from __future__ import annotations

import httpx

DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=30.0)
DEFAULT_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=200)


class UpstreamClients:
    """Hands out one ``httpx.AsyncClient`` per ``scheme://host:port``.

    Clients outlive config swaps, so a new snapshot keeps the warm connections of the old one.
    """

    def __init__(
        self,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        self._timeout = timeout
        self._limits = limits
        self._clients: dict[str, httpx.AsyncClient] = {}

    def get(self, origin: str) -> httpx.AsyncClient:
        """Return the client for ``origin``, creating it on first use."""
        client = self._clients.get(origin)
        if client is None:
            # trust_env=False: a proxy or netrc from the environment must not silently
            # reroute (or add credentials to) provider traffic.
            client = httpx.AsyncClient(timeout=self._timeout, limits=self._limits, trust_env=False)
            self._clients[origin] = client
        return client

    async def aclose(self) -> None:
        """Close every client and its connections."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
