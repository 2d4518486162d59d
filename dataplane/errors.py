"""The data plane's errors, in one tree.

Everything the data plane raises on purpose derives from ``DataPlaneError``; a request is
refused by raising ``Rejection``, which the route's translator renders in its client's format
(OpenAI, Anthropic or Google error JSON), so no caller picks an error vocabulary::

    DataPlaneError
    ├── Rejection                 a request refused: status, type, code, message, headers
    ├── ConfigError               a config that cannot be served
    │   ├── CompileError          a snapshot that does not compile (the data plane NACKs it)
    │   ├── CacheError            the on-disk snapshot cache is unreadable (config.cache)
    │   └── ClusterConfigError    TLS / control-plane address settings (config.cluster)
    ├── InvalidRequest            a client body the translator cannot use (translate.openai_format)
    ├── BadTaskHeaders            malformed X-Meterline-Task headers (admission.entitlements)
    ├── NoTargetForModel          no balancer target serves the model (proxy.balancer)
    ├── StoreUnavailable          the shared rate-limit store (Redis) is down (admission.ratelimit)
    ├── SpoolLocked               another process holds the usage spool (usage.spool)
    ├── BodyTooLarge              a request body over the limit (http.asgi)
    ├── ClientDisconnected        the client left before its body was whole (http.asgi)
    ├── EventStreamCorrupt        an AWS event-stream frame of bad length or CRC (http.eventstream)
    ├── AwsCredentialsError       no AWS credentials to sign with, or STS refused (config.aws)
    └── UpstreamError             the provider could not be reached or read (http.client)
        ├── UpstreamConnectError
        ├── UpstreamDisconnected
        ├── UpstreamProtocolError
        ├── UpstreamTimeout       (also a TimeoutError)
        └── UpstreamCredentialsError  no access token for the provider (config.gcp_tokens)

This module imports nothing of the data plane: every layer may raise these.
"""

from __future__ import annotations

from collections.abc import Sequence


class DataPlaneError(Exception):
    """Base of every error the data plane raises on purpose."""


class ConfigError(DataPlaneError, ValueError):
    """A config that cannot be served; the message says which object is wrong and why."""


class CompileError(ConfigError):
    """A snapshot that cannot be applied; the message says which object is wrong and why."""


class Rejection(DataPlaneError):
    """A request the gateway refuses before or instead of answering it.

    Raised anywhere on the request path; rendered once, by the route's translator, as an error
    document in the client's format (``type`` is OpenAI's vocabulary; an Anthropic route maps
    it to its own).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str,
        code: str | None = None,
        param: str | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = tuple(headers)
