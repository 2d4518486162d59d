"""What the data plane knows about each provider it can call: endpoints and route types."""

from __future__ import annotations

from typing import Final

ROUTE_TYPE_CHAT: Final = "llm/v1/chat"
ROUTE_TYPE_COMPLETIONS: Final = "llm/v1/completions"
ROUTE_TYPE_EMBEDDINGS: Final = "llm/v1/embeddings"
# OpenAI's Responses API (POST /v1/responses).
ROUTE_TYPE_RESPONSES: Final = "llm/v1/responses"
ROUTE_TYPE_PRESERVE: Final = "preserve"

LLM_FORMAT_OPENAI: Final = "openai"
LLM_FORMAT_ANTHROPIC: Final = "anthropic"
LLM_FORMAT_GEMINI: Final = "gemini"
LLM_FORMAT_BEDROCK: Final = "bedrock"
LLM_FORMAT_OLLAMA: Final = "ollama"
LLM_FORMAT_COHERE: Final = "cohere"

# Default endpoints per provider and route type. For "preserve" the value is a base URL the
# client's path (after the route prefix) is appended to. openai_compatible has no default: its
# upstream_url is required; azure's URL is built from its deployment options.
DEFAULT_URLS: Final[dict[str, dict[str, str]]] = {
    "openai": {
        ROUTE_TYPE_CHAT: "https://api.openai.com/v1/chat/completions",
        ROUTE_TYPE_COMPLETIONS: "https://api.openai.com/v1/completions",
        ROUTE_TYPE_EMBEDDINGS: "https://api.openai.com/v1/embeddings",
        ROUTE_TYPE_RESPONSES: "https://api.openai.com/v1/responses",
        ROUTE_TYPE_PRESERVE: "https://api.openai.com",
    },
    "anthropic": {
        ROUTE_TYPE_CHAT: "https://api.anthropic.com/v1/messages",
        ROUTE_TYPE_PRESERVE: "https://api.anthropic.com",
    },
    "azure": {},
    "openai_compatible": {},
    # The model and the operation are in the path: see GEMINI_PATH / VERTEX_PATH.
    "gemini": {
        ROUTE_TYPE_CHAT: "https://generativelanguage.googleapis.com",
        ROUTE_TYPE_EMBEDDINGS: "https://generativelanguage.googleapis.com",
    },
    # Bedrock's URL carries the region, the model and the operation: see bedrock_base_url and
    # BEDROCK_OPERATIONS; the value here marks the route types it serves.
    "bedrock": {
        ROUTE_TYPE_CHAT: "https://bedrock-runtime.{region}.amazonaws.com",
        ROUTE_TYPE_EMBEDDINGS: "https://bedrock-runtime.{region}.amazonaws.com",
    },
    # OpenAI-compatible providers with one public endpoint (Kong's defaults), spoken to by the
    # OpenAI translator. dashscope's and databricks' URLs depend on their options (below).
    "mistral": {
        ROUTE_TYPE_CHAT: "https://api.mistral.ai/v1/chat/completions",
        ROUTE_TYPE_EMBEDDINGS: "https://api.mistral.ai/v1/embeddings",
    },
    "deepseek": {ROUTE_TYPE_CHAT: "https://api.deepseek.com/chat/completions"},
    "xai": {ROUTE_TYPE_CHAT: "https://api.x.ai/v1/chat/completions"},
    "cerebras": {ROUTE_TYPE_CHAT: "https://api.cerebras.ai/v1/chat/completions"},
    "huggingface": {ROUTE_TYPE_CHAT: "https://router.huggingface.co/v1/chat/completions"},
    "dashscope": {},
    "databricks": {},
    # Self-hosted: upstream_url is required.
    "vllm": {},
    "llama2": {},
    # Self-hosted; an upstream_url without a path gets OLLAMA_CHAT_PATH (its native API).
    "ollama": {},
    # Cohere's v2 chat (Kong's default host); an upstream_url without a path gets /v2/chat.
    "cohere": {ROUTE_TYPE_CHAT: "https://api.cohere.com/v2/chat"},
}
# Providers that speak OpenAI's chat completions format (with their own usage quirks, read by
# translate/openai_format.usage_from_openai): served by the OpenAI translator.
OPENAI_COMPATIBLE_PROVIDERS: Final = frozenset(
    {
        "mistral",
        "deepseek",
        "xai",
        "cerebras",
        "huggingface",
        "dashscope",
        "databricks",
        "vllm",
        "llama2",
    }
)
# Alibaba Cloud Model Studio's OpenAI-compatible mode: international (Singapore) by default,
# as in Kong (model.options.dashscope.international defaults to true), else mainland China.
DASHSCOPE_INTERNATIONAL_URL: Final = "https://dashscope-intl.aliyuncs.com"
DASHSCOPE_CHINA_URL: Final = "https://dashscope.aliyuncs.com"
DASHSCOPE_PATHS: Final = {
    ROUTE_TYPE_CHAT: "/compatible-mode/v1/chat/completions",
    ROUTE_TYPE_EMBEDDINGS: "/compatible-mode/v1/embeddings",
}
# Databricks Model Serving's OpenAI-compatible endpoint of a workspace
# (model.options.databricks.workspace_instance_id); the model names the serving endpoint.
DATABRICKS_URL: Final = "https://{instance}.cloud.databricks.com/serving-endpoints/chat/completions"
# The wire formats mistral_format / llama2_format may name, and those this version speaks.
MISTRAL_FORMATS: Final = frozenset({"openai", "ollama"})
LLAMA2_FORMATS: Final = frozenset({"openai", "raw", "ollama"})
SPOKEN_MODEL_FORMATS: Final = frozenset({"openai", "ollama", "raw"})
# The wire provider of llama2_format raw (Kong's text-generation ``inputs`` / ``generated_text``).
LLAMA2_RAW: Final = "llama2_raw"
# Kept for callers of the first version: the providers that speak OpenAI's wire format.
OPENAI_FORMAT_PROVIDERS: Final = frozenset({"openai", "azure", "openai_compatible"})
OPENAI_FORMAT_DEFAULT_URLS: Final = {
    name: urls for name, urls in DEFAULT_URLS.items() if name in OPENAI_FORMAT_PROVIDERS
}

# Route types each provider can serve.
PROVIDER_ROUTE_TYPES: Final[dict[str, frozenset[str]]] = {
    "openai": frozenset(
        {
            ROUTE_TYPE_CHAT,
            ROUTE_TYPE_COMPLETIONS,
            ROUTE_TYPE_EMBEDDINGS,
            ROUTE_TYPE_RESPONSES,
            ROUTE_TYPE_PRESERVE,
        }
    ),
    "azure": frozenset(
        {ROUTE_TYPE_CHAT, ROUTE_TYPE_COMPLETIONS, ROUTE_TYPE_EMBEDDINGS, ROUTE_TYPE_PRESERVE}
    ),
    "openai_compatible": frozenset(
        {
            ROUTE_TYPE_CHAT,
            ROUTE_TYPE_COMPLETIONS,
            ROUTE_TYPE_EMBEDDINGS,
            ROUTE_TYPE_RESPONSES,
            ROUTE_TYPE_PRESERVE,
        }
    ),
    "anthropic": frozenset({ROUTE_TYPE_CHAT, ROUTE_TYPE_PRESERVE}),
    "gemini": frozenset({ROUTE_TYPE_CHAT, ROUTE_TYPE_EMBEDDINGS}),
    "bedrock": frozenset({ROUTE_TYPE_CHAT, ROUTE_TYPE_EMBEDDINGS}),
    "mistral": frozenset({ROUTE_TYPE_CHAT, ROUTE_TYPE_EMBEDDINGS}),
    "deepseek": frozenset({ROUTE_TYPE_CHAT}),
    "xai": frozenset({ROUTE_TYPE_CHAT}),
    "cerebras": frozenset({ROUTE_TYPE_CHAT}),
    "huggingface": frozenset({ROUTE_TYPE_CHAT}),
    "dashscope": frozenset({ROUTE_TYPE_CHAT, ROUTE_TYPE_EMBEDDINGS}),
    "databricks": frozenset({ROUTE_TYPE_CHAT}),
    "vllm": frozenset({ROUTE_TYPE_CHAT, ROUTE_TYPE_COMPLETIONS, ROUTE_TYPE_EMBEDDINGS}),
    "llama2": frozenset({ROUTE_TYPE_CHAT, ROUTE_TYPE_COMPLETIONS}),
    "ollama": frozenset({ROUTE_TYPE_CHAT}),
    "cohere": frozenset({ROUTE_TYPE_CHAT}),
}
# Ollama's native chat endpoint, appended to an upstream_url that has no path.
OLLAMA_CHAT_PATH: Final = "/api/chat"

# Gemini: the path after a base URL (the default, or an upstream_url without a path), with the
# model and operation filled in per request ({operation}: generateContent,
# streamGenerateContent, countTokens).
GEMINI_PATH: Final = "/v1beta/models/{model}:{operation}"
# Vertex AI (model.options.gemini.project_id and location_id set).
VERTEX_PATH: Final = "/v1/projects/{project}/locations/{location}/publishers/google/models/"
VERTEX_ENDPOINT_PATH: Final = "/v1/projects/{project}/locations/{location}/endpoints/{endpoint}"


def vertex_host(location: str) -> str:
    """The default Vertex AI API host of a location."""
    if location == "global":
        return "aiplatform.googleapis.com"
    return f"{location}-aiplatform.googleapis.com"


# Amazon Bedrock Runtime: {base}/model/{modelId}/{operation}, base
# https://bedrock-runtime.{region}.amazonaws.com unless upstream_url names another.
BEDROCK_CONVERSE: Final = "converse"
BEDROCK_CONVERSE_STREAM: Final = "converse-stream"
BEDROCK_INVOKE: Final = "invoke"
BEDROCK_INVOKE_STREAM: Final = "invoke-with-response-stream"
# CountTokens: free, carries no usage (never metered).
BEDROCK_COUNT_TOKENS: Final = "count-tokens"
BEDROCK_OPERATIONS: Final = frozenset(
    {
        BEDROCK_CONVERSE,
        BEDROCK_CONVERSE_STREAM,
        BEDROCK_INVOKE,
        BEDROCK_INVOKE_STREAM,
        BEDROCK_COUNT_TOKENS,
    }
)
BEDROCK_STREAM_OPERATIONS: Final = frozenset({BEDROCK_CONVERSE_STREAM, BEDROCK_INVOKE_STREAM})


def bedrock_base_url(region: str) -> str:
    """The public Bedrock Runtime endpoint of ``region``."""
    return f"https://bedrock-runtime.{region}.amazonaws.com"


# Azure OpenAI: https://{instance}.openai.azure.com/openai/deployments/{deployment}/{path}.
AZURE_PATHS: Final = {
    ROUTE_TYPE_CHAT: "chat/completions",
    ROUTE_TYPE_COMPLETIONS: "completions",
    ROUTE_TYPE_EMBEDDINGS: "embeddings",
}
DEFAULT_AZURE_API_VERSION: Final = "2024-10-21"

# Known providers this version cannot call yet: rejected with a clear "unsupported" message.
NOT_YET_SUPPORTED_PROVIDERS: Final[frozenset[str]] = frozenset()

SUPPORTED_ROUTE_TYPES: Final = frozenset(
    {
        ROUTE_TYPE_CHAT,
        ROUTE_TYPE_COMPLETIONS,
        ROUTE_TYPE_EMBEDDINGS,
        ROUTE_TYPE_RESPONSES,
        ROUTE_TYPE_PRESERVE,
    }
)
NOT_YET_SUPPORTED_ROUTE_TYPES: Final = frozenset({"llm/v1/assistants"})
