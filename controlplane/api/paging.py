"""List pagination (AIP-158): page_size with a cap, an opaque page_token."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import TypeVar

from controlplane.errors import InvalidArgument

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def checked_page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_offset(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def decode_offset(token: str) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        if not text.startswith("o:"):
            raise ValueError(text)
        return int(text[2:])
    except ValueError:
        raise InvalidArgument("page_token is not one this API returned") from None


def page(items: Sequence[T], *, page_size: int, page_token: str) -> tuple[list[T], str]:
    """One page of items and the token of the next page ("" when this is the last)."""
    size = checked_page_size(page_size)
    offset = decode_offset(page_token)
    end = offset + size
    return list(items[offset:end]), encode_offset(end) if end < len(items) else ""
