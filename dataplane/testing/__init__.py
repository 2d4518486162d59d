"""Fake LLM providers speaking the providers' exact wire formats, for tests, the demo and compose.

Modules: ``fake_openai`` (chat completions, responses, embeddings; SSE with the usage chunk),
``fake_anthropic`` (Messages, with its SSE event stream), ``fake_gemini`` (Gemini API and Vertex
AI generateContent with Gemini's SSE, and a Google OAuth2 token endpoint), ``fake_bedrock``
(Bedrock Runtime's Converse, ConverseStream, InvokeModel in AWS's binary event stream, checking
SigV4; and STS AssumeRole). Run one with
``python -m dataplane.testing.fake_openai --listen 127.0.0.1:PORT``.

May import: ``dataplane.http`` and below; nothing imports it but tests, the demo and tools.
"""
