"""The data a compiled snapshot is made of: consumers, key-auth and ai-proxy policies, targets.

Plain frozen values, no behaviour: the translators, balancers and limits built from them live in
the layers above (``dataplane.proxy.runtime`` assembles them per route).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from dataplane.config.aws import AwsSigner
from dataplane.http.client import Timeouts

_NO_ALIASES: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Consumer:
    """An API caller as the hot path needs it."""

    id: str
    username: str


@dataclass(frozen=True, slots=True)
class KeyAuthPolicy:
    """Where the key-auth plugin looks for a key (header names are lower-case bytes)."""

    header_names: frozenset[bytes]
    query_names: frozenset[str]
    key_in_query: bool
    key_in_bearer: bool
    # Kong's hide_credentials: key-name query parameters are removed before the request goes
    # upstream even where they are not read as credentials (key_in_query false). Key-name
    # headers and Authorization never go upstream, and neither does a key that authenticated.
    hide_credentials: bool = False


class AccessTokens(Protocol):
    """Short-lived upstream credentials (``dataplane.config.gcp_tokens``): a header to send,
    fetched and refreshed off the request path where possible."""

    async def header(self) -> tuple[bytes, bytes]:
        """The auth header of a request; fetches a token first only if none is usable."""
        ...

    async def rejected(self, header: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
        """The provider refused ``header`` (401): a fresh header (one refresh for all the
        requests that saw the same token refused)."""
        ...


@dataclass(frozen=True, slots=True)
class ProviderTarget:
    """One upstream endpoint of a provider, with its secret auth already resolved."""

    provider: str
    url: str
    # scheme://host:port: requests to one origin share one pooled HTTP client.
    origin: str
    # Provider secrets: never logged, never sent to a client.
    auth_headers: tuple[tuple[bytes, bytes], ...]
    auth_body_params: tuple[tuple[str, str], ...]
    # Query parameters a translator adds to a URL it builds per request (Gemini's ``key``);
    # providers with one fixed URL have them in ``url`` already.
    auth_query: tuple[tuple[str, str], ...] = ()
    # Short-lived credentials fetched at run time (Google Cloud access tokens), or None.
    credentials: AccessTokens | None = field(default=None, compare=False)
    # Bedrock: requests are SigV4-signed per request (their body and time are signed).
    signer: AwsSigner | None = field(default=None, compare=False)
    # Bedrock: the base URL the model and operation are appended to (url is then unused).
    base_url: str = ""

    def __repr__(self) -> str:
        # The default repr would print the provider key into any log or traceback.
        return f"ProviderTarget(provider={self.provider!r}, url={self.url!r})"


@dataclass(frozen=True, slots=True)
class AiProxyPolicy:
    """The ai-proxy plugin of a route."""

    route_type: str
    target: ProviderTarget
    # Replaces the client's model when set.
    model: str
    # Default max_tokens when the client sets none; 0 means none.
    max_tokens: int
    # "openai", "anthropic", "gemini" or "bedrock": the format the route speaks to its clients.
    llm_format: str = "openai"
    # Client model names replaced first ("fast" -> "gpt-4o-mini").
    model_aliases: Mapping[str, str] = field(default_factory=lambda: _NO_ALIASES, compare=False)
    # When not empty, the client's model (after aliasing) must be one of these.
    model_allow_list: frozenset[str] = frozenset()
    # Upstream timeouts of this target; None means the pooled session's defaults.
    timeout: Timeouts | None = None
    # Claude on Bedrock: the body's anthropic_version (model.options.anthropic_version).
    anthropic_version: str = ""
    # Kong's logging.log_payloads: request and response bodies go to the JSON log (redacted,
    # capped; observability.payloads); decided here once, never per request.
    log_payloads: bool = False
