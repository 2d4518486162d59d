"""Key auth: where a request's key is found, who it authenticates, how keys are hashed.

Snapshots carry keys only as "sha256:" + hex digest; the key-auth policy of a route (header
names, query names, bearer) is compiled once per snapshot (dataplane.proxy.compiler).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, unquote_plus

from dataplane.config.model import Consumer, KeyAuthPolicy
from dataplane.errors import Rejection
from dataplane.http.asgi import Scope

KEY_HASH_PREFIX = "sha256:"
_KEY_HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")


def hash_key(key: str) -> str:
    """Return the snapshot form of ``key``: ``sha256:<hex digest of its UTF-8 bytes>``."""
    return KEY_HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def is_key_hash(value: str) -> bool:
    """Tell whether ``value`` is a well-formed key hash (lower-case hex)."""
    return _KEY_HASH_RE.fullmatch(value) is not None


def find_key(policy: KeyAuthPolicy, scope: Scope) -> str | None:
    """Return the API key a request presents, per the route's key-auth policy."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name in policy.header_names and value:
            return value.decode(errors="replace")
    if policy.key_in_bearer:
        for name, value in headers:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                key = value[7:].strip()
                if key:
                    return key.decode(errors="replace")
    query: bytes = scope["query_string"]
    if policy.key_in_query and query:
        for param, param_value in parse_qsl(query.decode("latin-1")):
            if param in policy.query_names and param_value:
                return param_value
    return None


def upstream_query(policy: KeyAuthPolicy | None, query: bytes) -> bytes:
    """``query`` without the consumer's credentials, as it may go to a provider.

    A key-name parameter is removed when keys are read from the query (the provider must never
    see a Meterline consumer key), and under ``hide_credentials`` even when they are not. The
    other parameters go on byte for byte, in order.
    """
    if policy is None or not query or not (policy.key_in_query or policy.hide_credentials):
        return query
    names = policy.query_names
    kept = [
        part
        for part in query.split(b"&")
        if unquote_plus(part.partition(b"=")[0].decode("latin-1")) not in names
    ]
    return b"&".join(kept)


def authenticate(
    policy: KeyAuthPolicy | None, consumers: Mapping[str, Consumer], scope: Scope
) -> Consumer | None:
    """The consumer a request authenticates as (None on a route without key-auth).

    Raises Rejection 401 when the route asks for a key and none, or an unknown one, is given.
    """
    if policy is None:
        return None
    key = find_key(policy, scope)
    if key is None:
        raise Rejection(
            401, "No API key found in request", type="invalid_request_error", code="missing_api_key"
        )
    consumer = consumers.get(hash_key(key))
    if consumer is None:
        raise Rejection(
            401,
            "Invalid authentication credentials",
            type="invalid_request_error",
            code="invalid_api_key",
        )
    return consumer
