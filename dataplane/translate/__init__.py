"""One translator per (client format, provider format) pair.

Each pair module owns how a client's request becomes the provider's, how usage is read from a
whole response and from a stream, and how a refusal is rendered in its client's format:
``openai_openai`` (OpenAI clients to OpenAI-format providers; the Responses API),
``anthropic_anthropic`` (Anthropic Messages clients to Anthropic), ``openai_anthropic`` (OpenAI
chat clients to Anthropic, translated both ways), ``gemini_gemini`` (Gemini clients to Gemini
or Vertex AI), ``openai_gemini`` (OpenAI chat clients to Gemini, translated both ways),
``bedrock_bedrock`` (boto3 bedrock-runtime clients to Bedrock, frames relayed),
``openai_bedrock`` (OpenAI chat clients to Converse), ``anthropic_bedrock`` (Anthropic Messages
clients to Claude on Bedrock), ``cohere_cohere`` / ``openai_cohere`` (Cohere v2 chat),
``ollama_ollama`` / ``openai_ollama`` (Ollama's /api/chat), ``preserve`` (any path passed
through). ``base`` is the protocol, ``select`` picks the pair of a route, ``models`` renders
the model lists, and the ``*_format`` modules hold each wire format's parsing.

May import: ``dataplane.config`` and below.
"""
