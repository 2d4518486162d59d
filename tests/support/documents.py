"""Declarative files the end-to-end tests apply: one service in front of a fake provider."""

from __future__ import annotations

from collections.abc import Mapping


def gateway_document(
    upstream: str,
    consumers: Mapping[str, str],
    *,
    service: str = "ai",
    provider_key: str = "sk-upstream-secret",
    service_plugins: str = "",
    before_consumers: str = "",
) -> str:
    """A gateway config as `meterline apply` takes it.

    Service ``service`` at ``upstream`` (``http://127.0.0.1:PORT``, the fake OpenAI) with route
    ``chat`` on ``/chat``, an ai-proxy to its chat completions (gpt-4o-mini) authenticated with
    ``provider_key``, global key-auth, and one consumer per ``username -> key``.
    ``service_plugins`` is YAML appended to the service's plugin list (6-space indent);
    ``before_consumers`` is YAML placed before the ``consumers:`` section (more services).
    """
    consumer_lines = "".join(
        f"  - {{username: {name}, keyauth_credentials: [{{key: {key}}}]}}\n"
        for name, key in consumers.items()
    )
    return f"""\
_format_version: "3.0"
services:
  - name: {service}
    url: {upstream}
    routes: [{{name: chat, paths: [/chat]}}]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          auth: {{header_name: Authorization, header_value: Bearer {provider_key}}}
          model:
            provider: openai
            name: gpt-4o-mini
            options: {{upstream_url: "{upstream}/v1/chat/completions"}}
{service_plugins}{before_consumers}consumers:
{consumer_lines}plugins:
  - name: key-auth
"""
