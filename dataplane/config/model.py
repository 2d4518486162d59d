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
    # Kong's key_in_body: a field of a JSON or form body named by key_names carries the key
    # (the gateway reads the body before authenticating). The field never goes upstream.
    key_in_body: bool = False
    # Kong's anonymous: the consumer a request proceeds as when it presents no valid key.
    anonymous: Consumer | None = None
    # Kong's run_on_preflight: False lets OPTIONS requests through without a key.
    run_on_preflight: bool = True
    # Kong's realm, rendered once: the WWW-Authenticate header of a 401 (empty: none).
    www_authenticate: tuple[tuple[bytes, bytes], ...] = ()


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
    # Kong's auth.allow_override: a client's own header (or body or query parameter) of the
    # same name as the configured one is kept instead of it.
    allow_override: bool = False
    # The query parameter carrying the provider key (auth.param_location "query"), if any.
    query_auth_name: str = ""

    def __repr__(self) -> str:
        # The default repr would print the provider key into any log or traceback.
        return f"ProviderTarget(provider={self.provider!r}, url={self.url!r})"


@dataclass(frozen=True, slots=True)
class RequestDefaults:
    """What a route puts into the client's body before it is translated (Kong's sampling
    defaults and response_streaming "always"), compiled once per route for its client format.

    Only routes with something to put have one: the others never parse a body for it.
    """

    # (path inside the body, value): set where the client set nothing. A path of one key is a
    # top-level field; of two, a field of a nested object ("generationConfig", "topP").
    fill: tuple[tuple[tuple[str, ...], object], ...] = ()
    # response_streaming "always": the body's "stream" is set to true.
    force_stream: bool = False


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
    # Kong's response_streaming "deny": a request asking for a stream is refused (400).
    deny_streaming: bool = False
    # Kong's max_request_body_size in bytes; 0: the data plane's own limit only.
    max_body_bytes: int = 0
    # Kong's model_name_header: responses carry X-Kong-LLM-Model: <provider>/<model>.
    model_name_header: bool = False
    # Fields put into the client's body before translation; None: the body is not touched.
    defaults: RequestDefaults | None = None
    # Kong's model_alias of an ai-proxy-advanced target (the balancer routes by it).
    model_alias: str = ""
    # Kong's logging.log_payloads: request and response bodies go to the JSON log (redacted,
    # capped; observability.payloads); decided here once, never per request.
    log_payloads: bool = False
