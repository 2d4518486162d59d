"""List pagination (AIP-158): page_size with a cap, an opaque page_token.

A page token is the offset of the next page, encoded. Tokens are checked strictly: only the
exact text ``encode_offset`` writes for an offset in ``[0, MAX_PAGE_OFFSET]`` is accepted, so a
forged one (a negative offset, which would page backwards forever, another encoding of the
same offset, a huge number) is refused with INVALID_ARGUMENT. A forged offset in range can
only ask for a page the caller could have reached anyway.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Protocol, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from controlplane.errors import InvalidArgument

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_PAGE_OFFSET = 10**9
# The longest token encode_offset writes (offset 10^9): anything longer is not one.
_MAX_TOKEN_LENGTH = 16


def checked_page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_offset(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def decode_offset(token: str) -> int:
    if not token:
        return 0
    refused = InvalidArgument("page_token is not one this API returned")
    if len(token) > _MAX_TOKEN_LENGTH:
        raise refused
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
    except (ValueError, UnicodeError):
        raise refused from None
    digits = text[2:]
    if not text.startswith("o:") or not digits.isascii() or not digits.isdigit():
        raise refused
    offset = int(digits)
    if offset > MAX_PAGE_OFFSET or encode_offset(offset) != token:
        raise refused
    return offset


def page(items: Sequence[T], *, page_size: int, page_token: str) -> tuple[list[T], str]:
    """One page of items and the token of the next page ("" when this is the last)."""
    size = checked_page_size(page_size)
    offset = decode_offset(page_token)
    end = offset + size
    return list(items[offset:end]), encode_offset(end) if end < len(items) else ""


class _Timed(Protocol):
    @property
    def create_time(self) -> Timestamp: ...


M = TypeVar("M", bound=_Timed)

ORDERS = ("create_time", "create_time desc")


def newest_first(order_by: str) -> bool | None:
    """An AIP-132 ``order_by`` as a storage order: None (by name), True or False (by time)."""
    text = " ".join(order_by.split()).lower()
    if not text:
        return None
    if text not in ORDERS:
        raise InvalidArgument(f"order_by must be one of {', '.join(ORDERS)}, got {order_by!r}")
    return text.endswith(" desc")


def ordered(messages: Sequence[M], order_by: str) -> list[M]:
    """Messages in the AIP-132 ``order_by`` order: "" keeps the stored order (by name)."""
    text = " ".join(order_by.split()).lower()
    if not text:
        return list(messages)
    if text not in ORDERS:
        raise InvalidArgument(f"order_by must be one of {', '.join(ORDERS)}, got {order_by!r}")
    # sorted() is stable: messages created in the same instant keep their name order.
    return sorted(
        messages,
        key=lambda m: (m.create_time.seconds, m.create_time.nanos),
        reverse=text.endswith(" desc"),
    )
