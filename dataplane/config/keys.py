"""Key auth: where a request's key is found, who it authenticates, how keys are hashed.

Snapshots carry keys only as "sha256:" + hex digest; the key-auth policy of a route (header
names, query names, bearer) is compiled once per snapshot (dataplane.proxy.compiler).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, unquote_plus, urlencode

import orjson

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


def _content_type(scope: Scope) -> bytes:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower()
    return b""


_FORM = b"application/x-www-form-urlencoded"


def key_in_body(policy: KeyAuthPolicy, scope: Scope, body: bytes) -> tuple[str | None, bytes]:
    """Kong's key_in_body: the key a JSON or form body carries in a key_names field, and the
    body to forward without it.

    The key field is removed when it authenticated the request (a provider never sees a
    consumer key) and, under ``hide_credentials``, whenever it is there. A body that has no key
    field is returned as it came (the same bytes).
    """
    if not body:
        return None, body
    kind = _content_type(scope)
    names = policy.query_names
    if kind == _FORM:
        pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True)
        key = next((value for name, value in pairs if name in names and value), None)
        if key is None and not policy.hide_credentials:
            return None, body
        if not any(name in names for name, _ in pairs):
            return key, body
        kept = [(name, value) for name, value in pairs if name not in names]
        return key, urlencode(kept).encode("latin-1")
    if kind and not kind.endswith(b"json"):
        return None, body  # multipart and other bodies are not read for keys
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, body  # the translator answers an unusable body
    if not isinstance(document, dict) or not names.intersection(document):
        return None, body
    key = next(
        (v for name in names if isinstance(v := document.get(name), str) and v),
        None,
    )
    if key is None and not policy.hide_credentials:
        return None, body
    for name in names:
        document.pop(name, None)
    return key, orjson.dumps(document)


def _is_preflight(scope: Scope) -> bool:
    """Kong's test for run_on_preflight: any OPTIONS request."""
    return bool(scope["method"] == "OPTIONS")


def authenticate(
    policy: KeyAuthPolicy | None,
    consumers: Mapping[str, Consumer],
    scope: Scope,
    *,
    body_key: str | None = None,
) -> Consumer | None:
    """The consumer a request authenticates as (None on a route without key-auth, and for an
    OPTIONS request under ``run_on_preflight: false``).

    ``body_key``: the key found in the body (key_in_body; see :func:`key_in_body`), used when
    no header or query parameter carries one, as Kong searches them in that order. Without a
    valid key the request proceeds as the anonymous consumer when the route names one (Kong's
    anonymous: "if authentication fails"); otherwise raises Rejection 401 (with the realm's
    WWW-Authenticate header when one is set).
    """
    if policy is None:
        return None
    if not policy.run_on_preflight and _is_preflight(scope):
        return None
    key = find_key(policy, scope) or body_key
    if key is None:
        if policy.anonymous is not None:
            return policy.anonymous
        raise Rejection(
            401,
            "No API key found in request",
            type="invalid_request_error",
            code="missing_api_key",
            headers=policy.www_authenticate,
        )
    consumer = consumers.get(hash_key(key))
    if consumer is None:
        if policy.anonymous is not None:
            return policy.anonymous
        raise Rejection(
            401,
            "Invalid authentication credentials",
            type="invalid_request_error",
            code="invalid_api_key",
            headers=policy.www_authenticate,
        )
    return consumer
