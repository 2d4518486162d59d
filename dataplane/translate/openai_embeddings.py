"""OpenAI embeddings clients (``client.embeddings.create``) on ``llm/v1/embeddings`` routes of
Gemini and Bedrock, translated both ways and billed by input tokens.

- **Gemini** (the Gemini API): one ``:batchEmbedContents`` call, one request per input
  (``outputDimensionality`` from ``dimensions``); ``embeddings[].values`` come back as OpenAI's
  ``data[].embedding``. The Gemini API reports no usage for embeddings (a ``usageMetadata``,
  when present, is read): the inputs are estimated, marked ``estimated``.
- **Vertex AI** (a target with ``project_id``/``location_id``): one ``:predict`` call with one
  instance per input (``{"instances": [{"content"}], "parameters": {"outputDimensionality"}}``),
  ``predictions[].embeddings.values`` back as ``data[].embedding``, billed exactly by the sum of
  ``predictions[].embeddings.statistics.token_count``. (Vertex AI's gemini-embedding models
  take one instance per call: a longer list is refused by Vertex AI, its error passed on.)
- **Bedrock** (InvokeModel): Titan Text Embeddings (``amazon.titan-embed-*``: ``{"inputText",
  "dimensions"}``, one input per call) billed exactly from ``inputTextTokenCount``; Cohere
  Embed (``cohere.embed-*``: ``{"texts", "input_type": "search_document"}``), whose body
  carries no count (``meta.billed_units.input_tokens`` is read if present), billed exactly from
  InvokeModel's ``X-Amzn-Bedrock-Input-Token-Count`` header (estimated only without it).

Only text inputs: token-id arrays (OpenAI's pre-tokenized input) are refused with 400, as
neither provider takes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from dataplane.config.providers import BEDROCK_INVOKE
from dataplane.errors import Rejection
from dataplane.translate.base import Prepared, StreamRelay
from dataplane.translate.bedrock_bedrock import upstream_url as bedrock_url
from dataplane.translate.bedrock_format import (
    bedrock_error_to_openai,
    read_embedding_usage,
    usage_from_headers,
)
from dataplane.translate.gemini_format import (
    BATCH_EMBED,
    PREDICT,
    is_vertex,
    operation_url,
    predict_vectors,
    usage_from_gemini,
    usage_from_predict,
)
from dataplane.translate.openai_format import (
    InvalidRequest,
    prepare_chat_request,
    rejection_body,
)
from dataplane.translate.openai_gemini import google_error_to_openai
from dataplane.translate.openai_openai import OpenAITranslator
from dataplane.usage.tokens import TokenUsage

if TYPE_CHECKING:
    from dataplane.config.model import AiProxyPolicy

_OPENAI = OpenAITranslator()


def _texts(body: dict[str, Any]) -> list[str]:
    value = body.get("input")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidRequest(
            "'input' must be a string or a non-empty array of strings on this route "
            "(token arrays are not accepted by its provider).",
            code="invalid_value",
            param="input",
        )
    return texts


def _dimensions(body: dict[str, Any]) -> int | None:
    value = body.get("dimensions")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(
            "'dimensions' must be a positive integer.", code="invalid_value", param="dimensions"
        )
    return value


def _openai_list(vectors: list[Any], model: str, usage: TokenUsage | None) -> bytes:
    prompt = usage.input_tokens or 0 if usage is not None else 0
    document: dict[str, Any] = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": vector}
            for index, vector in enumerate(vectors)
        ],
        "model": model,
    }
    if usage is not None:
        document["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt}
    return orjson.dumps(document)


def _prepared(
    body: bytes, model: str, url: str, texts: list[str], requested: str | None
) -> Prepared:
    return Prepared(
        body=body,
        model=model,
        stream=False,
        url=url,
        # What an estimate counts: the texts embedded.
        document={"input": texts},
        requested_model=requested,
    )


class OpenAIToGeminiEmbeddingsTranslator:
    """OpenAI embeddings clients to the Gemini API's batchEmbedContents, or Vertex AI's
    predict."""

    def reject(self, rejection: Rejection) -> bytes:
        return rejection_body(rejection)

    def prepare(
        self, raw: bytes, policy: AiProxyPolicy, *, subpath: str, query: bytes, method: str
    ) -> Prepared:
        request = prepare_chat_request(raw, policy)
        texts = _texts(request.document)
        dimensions = _dimensions(request.document)
        if is_vertex(policy.target.url):
            predict: dict[str, Any] = {"instances": [{"content": text} for text in texts]}
            if dimensions is not None:
                predict["parameters"] = {"outputDimensionality": dimensions}
            url = operation_url(policy.target, model=request.model, operation=PREDICT, stream=False)
            body = orjson.dumps(predict)
            return _prepared(body, request.model, url, texts, request.requested_model)
        requests: list[dict[str, Any]] = []
        for text in texts:
            one: dict[str, Any] = {
                "model": f"models/{request.model}",
                "content": {"parts": [{"text": text}]},
            }
            if dimensions is not None:
                one["outputDimensionality"] = dimensions
            requests.append(one)
        url = operation_url(policy.target, model=request.model, operation=BATCH_EMBED, stream=False)
        body = orjson.dumps({"requests": requests})
        return _prepared(body, request.model, url, texts, request.requested_model)

    def whole(
        self, body: bytes, status: int, prepared: Prepared
    ) -> tuple[bytes, TokenUsage | None, str | None]:
        if not 200 <= status < 300:
            return google_error_to_openai(body), None, None
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body, None, None
        predicted = predict_vectors(document)
        if predicted is not None:
            usage = usage_from_predict(document)
            return _openai_list(predicted, prepared.model, usage), usage, None
        embeddings = document.get("embeddings") if isinstance(document, dict) else None
        if not isinstance(embeddings, list):
            return body, None, None
        vectors = [e.get("values", []) if isinstance(e, dict) else [] for e in embeddings]
        usage = usage_from_gemini(document.get("usageMetadata"))
        return _openai_list(vectors, prepared.model, usage), usage, None

    def stream(self, prepared: Prepared) -> StreamRelay:
        return _OPENAI.stream(prepared)


def is_cohere_embed(model: str) -> bool:
    """Whether a Bedrock model id (maybe with a cross-region prefix) is Cohere Embed."""
    return model.startswith("cohere.") or ".cohere." in model


class OpenAIToBedrockEmbeddingsTranslator:
    """OpenAI embeddings clients to Bedrock's InvokeModel (Titan or Cohere Embed)."""

    def reject(self, rejection: Rejection) -> bytes:
        return rejection_body(rejection)

    def prepare(
        self, raw: bytes, policy: AiProxyPolicy, *, subpath: str, query: bytes, method: str
    ) -> Prepared:
        request = prepare_chat_request(raw, policy)
        texts = _texts(request.document)
        dimensions = _dimensions(request.document)
        invoke: dict[str, Any]
        if is_cohere_embed(request.model):
            invoke = {"texts": texts, "input_type": "search_document"}
        else:
            if len(texts) != 1:
                raise InvalidRequest(
                    "Titan Text Embeddings embed one text per request: send 'input' as one string.",
                    code="invalid_value",
                    param="input",
                )
            invoke = {"inputText": texts[0]}
            if dimensions is not None:
                invoke["dimensions"] = dimensions
        url = bedrock_url(policy, request.model, BEDROCK_INVOKE)
        return _prepared(orjson.dumps(invoke), request.model, url, texts, request.requested_model)

    def whole(
        self, body: bytes, status: int, prepared: Prepared
    ) -> tuple[bytes, TokenUsage | None, str | None]:
        return self.whole_with_headers(body, status, prepared, [])

    def whole_with_headers(
        self,
        body: bytes,
        status: int,
        prepared: Prepared,
        headers: list[tuple[bytes, bytes]],
    ) -> tuple[bytes, TokenUsage | None, str | None]:
        """The OpenAI list, billed from the body's count, else InvokeModel's count header."""
        if not 200 <= status < 300:
            return bedrock_error_to_openai(body, status), None, None
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body, None, None
        if not isinstance(document, dict):
            return body, None, None
        usage = read_embedding_usage(document) or usage_from_headers(headers)
        if "embedding" in document:
            vectors = [document["embedding"]]
        else:
            found = document.get("embeddings")
            if isinstance(found, dict):  # embedding_types asked for: {"float": [...]}
                found = found.get("float")
            if not isinstance(found, list):
                return body, None, None
            vectors = found
        return _openai_list(vectors, prepared.model, usage), usage, None

    def stream(self, prepared: Prepared) -> StreamRelay:
        return _OPENAI.stream(prepared)
