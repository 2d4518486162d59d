"""Which translator serves a route: chosen once per snapshot from provider, route type, format."""

from __future__ import annotations

from dataplane.config.providers import (
    LLAMA2_RAW,
    LLM_FORMAT_ANTHROPIC,
    LLM_FORMAT_BEDROCK,
    LLM_FORMAT_COHERE,
    LLM_FORMAT_GEMINI,
    LLM_FORMAT_OLLAMA,
    ROUTE_TYPE_COMPLETIONS,
    ROUTE_TYPE_EMBEDDINGS,
    ROUTE_TYPE_PRESERVE,
    ROUTE_TYPE_RESPONSES,
)
from dataplane.translate.anthropic_anthropic import AnthropicNativeTranslator
from dataplane.translate.anthropic_bedrock import AnthropicToBedrockTranslator
from dataplane.translate.base import Translator
from dataplane.translate.bedrock_bedrock import BedrockNativeTranslator
from dataplane.translate.cohere_cohere import CohereNativeTranslator
from dataplane.translate.gemini_gemini import GeminiNativeTranslator
from dataplane.translate.ollama_ollama import OllamaNativeTranslator
from dataplane.translate.openai_anthropic import OpenAIToAnthropicTranslator
from dataplane.translate.openai_bedrock import OpenAIToBedrockTranslator
from dataplane.translate.openai_cohere import OpenAIToCohereTranslator
from dataplane.translate.openai_embeddings import (
    OpenAIToBedrockEmbeddingsTranslator,
    OpenAIToGeminiEmbeddingsTranslator,
)
from dataplane.translate.openai_gemini import OpenAIToGeminiTranslator
from dataplane.translate.openai_llama2 import OpenAIToLlama2RawTranslator
from dataplane.translate.openai_ollama import OpenAIToOllamaTranslator
from dataplane.translate.openai_openai import OpenAIResponsesTranslator, OpenAITranslator
from dataplane.translate.preserve import PreserveTranslator

# Stateless: one instance of each serves every route and request.
OPENAI = OpenAITranslator()
_ANTHROPIC_NATIVE = AnthropicNativeTranslator()
_OPENAI_TO_ANTHROPIC = OpenAIToAnthropicTranslator()
_OPENAI_RESPONSES = OpenAIResponsesTranslator()
_GEMINI_NATIVE = GeminiNativeTranslator()
_OPENAI_TO_GEMINI = OpenAIToGeminiTranslator()
_BEDROCK_NATIVE = BedrockNativeTranslator()
_ANTHROPIC_TO_BEDROCK = AnthropicToBedrockTranslator()
_OPENAI_TO_BEDROCK = OpenAIToBedrockTranslator()
_OLLAMA_NATIVE = OllamaNativeTranslator()
_OPENAI_TO_OLLAMA = OpenAIToOllamaTranslator()
_COHERE_NATIVE = CohereNativeTranslator()
_OPENAI_TO_COHERE = OpenAIToCohereTranslator()
_OPENAI_TO_GEMINI_EMBEDDINGS = OpenAIToGeminiEmbeddingsTranslator()
_OPENAI_TO_BEDROCK_EMBEDDINGS = OpenAIToBedrockEmbeddingsTranslator()
_OPENAI_TO_LLAMA2_RAW_CHAT = OpenAIToLlama2RawTranslator()
_OPENAI_TO_LLAMA2_RAW_COMPLETIONS = OpenAIToLlama2RawTranslator(completions=True)


def translator_for(*, provider: str, route_type: str, llm_format: str) -> Translator:
    """The translator between a route's client format and its provider's format."""
    anthropic_clients = llm_format == LLM_FORMAT_ANTHROPIC
    if route_type == ROUTE_TYPE_PRESERVE:
        return PreserveTranslator(anthropic_errors=anthropic_clients)
    if provider == "anthropic":
        return _ANTHROPIC_NATIVE if anthropic_clients else _OPENAI_TO_ANTHROPIC
    if provider == "gemini":
        if llm_format == LLM_FORMAT_GEMINI:
            return _GEMINI_NATIVE
        if route_type == ROUTE_TYPE_EMBEDDINGS:
            return _OPENAI_TO_GEMINI_EMBEDDINGS
        return _OPENAI_TO_GEMINI
    if provider == "bedrock":
        if route_type == ROUTE_TYPE_EMBEDDINGS and llm_format != LLM_FORMAT_BEDROCK:
            return _OPENAI_TO_BEDROCK_EMBEDDINGS
        if anthropic_clients:
            return _ANTHROPIC_TO_BEDROCK
        return _BEDROCK_NATIVE if llm_format == LLM_FORMAT_BEDROCK else _OPENAI_TO_BEDROCK
    if provider == "ollama":
        # Ollama's native /api/chat; OpenAI clients on an upstream_url naming its OpenAI
        # endpoint are relayed as OpenAI (OpenAIToOllamaTranslator decides per URL).
        return _OLLAMA_NATIVE if llm_format == LLM_FORMAT_OLLAMA else _OPENAI_TO_OLLAMA
    if provider == "cohere":
        return _COHERE_NATIVE if llm_format == LLM_FORMAT_COHERE else _OPENAI_TO_COHERE
    if provider == LLAMA2_RAW:
        if route_type == ROUTE_TYPE_COMPLETIONS:
            return _OPENAI_TO_LLAMA2_RAW_COMPLETIONS
        return _OPENAI_TO_LLAMA2_RAW_CHAT
    if route_type == ROUTE_TYPE_RESPONSES:
        return _OPENAI_RESPONSES
    return OPENAI
