"""SigV4 request signing for Amazon Bedrock, with botocore (never a hand-rolled signature).

Credentials come from the route's ``auth.aws_access_key_id/aws_secret_access_key``, or else the
standard AWS credential chain of a botocore session (environment, shared files, container or
instance role). With ``aws_assume_role_arn`` they first assume that role through STS
(``AssumeRole``; ``aws_sts_endpoint_url`` points botocore's own STS client elsewhere).

Resolving credentials may do network I/O (STS, the instance metadata service), so it runs in a
worker thread, never on the event loop: once before the first request, again in the background
when the credentials come within ``REFRESH_MARGIN_S`` of their expiry (requests keep signing
with the still-valid ones meanwhile), and on demand after the provider refused a signature
(``invalidate``). Signing itself is a few HMACs over the request, done inline.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
import weakref
from typing import TYPE_CHECKING, Any, Final

from dataplane.errors import DataPlaneError
from dataplane.http.client import split_url

if TYPE_CHECKING:
    import botocore.session
    from botocore.credentials import ReadOnlyCredentials

# botocore is imported where it is used, not here: a data plane without Bedrock routes never
# loads it (about 9 MB of resident memory and 0.1 s of start-up per process).

logger = logging.getLogger(__name__)

# Credentials this close to their expiry are replaced in the background (botocore refreshes
# its own 15 minutes ahead; 5 is plenty for one request to be signed and sent).
REFRESH_MARGIN_S: Final = 300.0
DEFAULT_ROLE_SESSION_NAME: Final = "meterline"
SIGNING_SERVICE: Final = "bedrock"
# Client headers of an SDK's own signature: dropped, the gateway signs again.
CLIENT_SIGNATURE_HEADERS: Final = frozenset(
    {b"x-amz-date", b"x-amz-security-token", b"x-amz-content-sha256"}
)


class AwsCredentialsError(DataPlaneError):
    """No usable AWS credentials (the chain found none, or STS refused the role)."""


class AwsSigner:
    """Signs upstream requests of one Bedrock target; shared by all its requests."""

    def __init__(
        self,
        *,
        region: str,
        access_key_id: str = "",
        secret_access_key: str = "",
        assume_role_arn: str = "",
        role_session_name: str = "",
        sts_endpoint_url: str = "",
    ) -> None:
        self.region = region
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._assume_role_arn = assume_role_arn
        self._role_session_name = role_session_name or DEFAULT_ROLE_SESSION_NAME
        self._sts_endpoint_url = sts_endpoint_url
        self._credentials: ReadOnlyCredentials | None = None
        # Epoch seconds after which the credentials are invalid; None: they do not expire.
        self._expires_at: float | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        # How many times credentials were resolved (tests and logs).
        self.resolutions = 0

    def __repr__(self) -> str:
        # Never the keys: reprs end up in logs and tracebacks.
        return f"AwsSigner(region={self.region!r}, role={self._assume_role_arn!r})"

    async def sign(self, method: str, url: str, body: bytes) -> list[tuple[bytes, bytes]]:
        """The headers (``authorization``, ``x-amz-date``, maybe ``x-amz-security-token``)
        that sign a request to ``url`` with ``body``; raises AwsCredentialsError."""
        credentials = await self._current()
        return sign_request(credentials, self.region, method=method, url=url, body=body)

    def invalidate(self) -> None:
        """Forget the credentials: the next request resolves them again (after a refusal)."""
        self._credentials = None
        self._expires_at = None

    async def _current(self) -> ReadOnlyCredentials:
        credentials = self._credentials
        if credentials is not None:
            left = None if self._expires_at is None else self._expires_at - time.time()
            if left is None or left > REFRESH_MARGIN_S:
                return credentials
            if left > 0:
                if self._refreshing is None or self._refreshing.done():
                    self._refreshing = asyncio.ensure_future(self._resolve())
                return credentials
        await self._resolve()
        if self._credentials is None:  # pragma: no cover - _resolve raises instead
            raise AwsCredentialsError("no AWS credentials")
        return self._credentials

    async def _resolve(self) -> None:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            # A signer outlives snapshots and may serve another event loop (a restarted
            # worker, tests): an asyncio.Lock belongs to one loop.
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            if self._credentials is not None and (
                self._expires_at is None or self._expires_at - time.time() > REFRESH_MARGIN_S
            ):
                return  # another request resolved them while this one waited
            credentials, expires_at = await asyncio.to_thread(self._resolve_blocking)
            self._credentials, self._expires_at = credentials, expires_at
            self.resolutions += 1

    def _resolve_blocking(self) -> tuple[ReadOnlyCredentials, float | None]:
        import botocore.session
        from botocore.credentials import ReadOnlyCredentials

        session = botocore.session.Session()
        if self._access_key_id:
            base = ReadOnlyCredentials(self._access_key_id, self._secret_access_key, None)
            expires_at: float | None = None
        else:
            chain = session.get_credentials()
            if chain is None:
                raise AwsCredentialsError(
                    "no AWS credentials: set auth.aws_access_key_id/aws_secret_access_key "
                    "or give the data plane an AWS identity (environment, profile, role)"
                )
            base = chain.get_frozen_credentials()
            expiry = getattr(chain, "_expiry_time", None)
            expires_at = expiry.timestamp() if isinstance(expiry, datetime.datetime) else None
        if not self._assume_role_arn:
            return base, expires_at
        return self._assume_role(session, base)

    def _assume_role(
        self, session: botocore.session.Session, base: ReadOnlyCredentials
    ) -> tuple[ReadOnlyCredentials, float | None]:
        from botocore.credentials import ReadOnlyCredentials

        options: dict[str, Any] = {
            "region_name": self.region,
            "aws_access_key_id": base.access_key,
            "aws_secret_access_key": base.secret_key,
            "aws_session_token": base.token,
        }
        if self._sts_endpoint_url:
            options["endpoint_url"] = self._sts_endpoint_url
        sts = session.create_client("sts", **options)
        try:
            answer = sts.assume_role(
                RoleArn=self._assume_role_arn, RoleSessionName=self._role_session_name
            )
        except Exception as exc:  # botocore's ClientError, EndpointConnectionError...
            raise AwsCredentialsError(
                f"STS AssumeRole of {self._assume_role_arn} failed: {type(exc).__name__}"
            ) from None
        finally:
            sts.close()
        issued = answer["Credentials"]
        credentials = ReadOnlyCredentials(
            issued["AccessKeyId"], issued["SecretAccessKey"], issued["SessionToken"]
        )
        expiration = issued["Expiration"]
        return credentials, expiration.timestamp()


def sign_request(
    credentials: ReadOnlyCredentials, region: str, *, method: str, url: str, body: bytes
) -> list[tuple[bytes, bytes]]:
    """SigV4 headers of one request (signed: host and x-amz-date, as AWS requires)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    # The Host header the upstream client will send, given to botocore rather than derived
    # from the URL again (a third of the signing time); the client writes it itself.
    host = split_url(url).host_header.decode("ascii")
    request = AWSRequest(method=method, url=url, data=body, headers={"host": host})
    SigV4Auth(credentials, SIGNING_SERVICE, region).add_auth(request)
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in request.headers.items()
        if name != "host"
    ]


_SIGNERS: weakref.WeakValueDictionary[tuple[str, ...], AwsSigner] = weakref.WeakValueDictionary()


def shared_signer(
    *,
    region: str,
    access_key_id: str = "",
    secret_access_key: str = "",
    assume_role_arn: str = "",
    role_session_name: str = "",
    sts_endpoint_url: str = "",
) -> AwsSigner:
    """The signer of these settings, shared by every snapshot that still uses them: a new
    snapshot keeps the credentials (and the STS session) already resolved, until expiry."""
    key = (
        region,
        access_key_id,
        secret_access_key,
        assume_role_arn,
        role_session_name,
        sts_endpoint_url,
    )
    signer = _SIGNERS.get(key)
    if signer is None:
        signer = AwsSigner(
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            assume_role_arn=assume_role_arn,
            role_session_name=role_session_name,
            sts_endpoint_url=sts_endpoint_url,
        )
        _SIGNERS[key] = signer
    return signer
