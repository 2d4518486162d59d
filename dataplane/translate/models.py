"""The model list a route answers to ``GET .../models``, in its client's format.

OpenAI clients get ``{"object": "list", "data": [{"id", "object": "model", "created",
"owned_by"}]}`` (the openai SDK's ``client.models.list()``); Anthropic clients get the Models
API page ``{"data": [{"type": "model", "id", "display_name", "created_at"}], "has_more",
"first_id", "last_id"}``. One model: the object alone (``client.models.retrieve(id)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from dataplane.config.providers import LLM_FORMAT_ANTHROPIC

# Meterline knows no model's creation time: the epoch, as OpenAI-compatible servers commonly do.
_EPOCH_ISO = "1970-01-01T00:00:00Z"


def _openai_model(model: str, owner: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": owner}


def _anthropic_model(model: str) -> dict[str, Any]:
    return {"type": "model", "id": model, "display_name": model, "created_at": _EPOCH_ISO}


def model_list(llm_format: str, models: Sequence[tuple[str, str]]) -> bytes:
    """The list of ``models`` ((id, owner) pairs) in the client's format."""
    if llm_format == LLM_FORMAT_ANTHROPIC:
        data = [_anthropic_model(model) for model, _ in models]
        return orjson.dumps(
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )
    return orjson.dumps(
        {"object": "list", "data": [_openai_model(model, owner) for model, owner in models]}
    )


def model_object(llm_format: str, model: str, owner: str) -> bytes:
    """One model in the client's format."""
    if llm_format == LLM_FORMAT_ANTHROPIC:
        return orjson.dumps(_anthropic_model(model))
    return orjson.dumps(_openai_model(model, owner))
