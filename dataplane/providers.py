"""What the data plane knows about each provider it can call."""

from __future__ import annotations

from typing import Final

ROUTE_TYPE_CHAT: Final = "llm/v1/chat"

# Providers that speak OpenAI's chat-completions wire format, with their default endpoints.
# openai_compatible has no default: its upstream_url is required.
OPENAI_FORMAT_DEFAULT_URLS: Final[dict[str, dict[str, str]]] = {
    "openai": {ROUTE_TYPE_CHAT: "https://api.openai.com/v1/chat/completions"},
    "openai_compatible": {},
}

# Known providers this version cannot call yet: rejected with a clear "unsupported" message.
NOT_YET_SUPPORTED_PROVIDERS: Final = frozenset({"anthropic", "azure", "bedrock", "gemini"})

SUPPORTED_ROUTE_TYPES: Final = frozenset({ROUTE_TYPE_CHAT})
NOT_YET_SUPPORTED_ROUTE_TYPES: Final = frozenset({"llm/v1/completions", "preserve"})
