"""``meterline fake-provider``: a fake model provider to try a gateway without a real key.

It wraps the fakes the tests use (dataplane/testing/): OpenAI's or Anthropic's wire format,
streaming included, with deterministic token counts (prompt: 3 + words per message; reply:
``fake reply:`` + the words of the last message). Any ``sk-...`` key (``sk-ant-...`` for
Anthropic) is accepted unless ``--api-key`` names the only one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

PROVIDERS = {"openai": 8900, "anthropic": 8901}
# Where a route's ai-proxy sends a request, below the fake's base URL.
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--provider",
        choices=sorted(PROVIDERS),
        default="openai",
        help="wire format to speak (default: %(default)s)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port",
        type=int,
        metavar="PORT",
        help="port to listen on; 0 picks a free one (default: 8900 openai, 8901 anthropic)",
    )
    parser.add_argument("--api-key", help="the only key accepted (default: any sk-... key)")


def _app(provider: str, api_key: str | None) -> Any:
    # Imported here, not at module level: the fakes are test support of the data plane and
    # only this command needs them.
    if provider == "anthropic":
        from dataplane.testing.fake_anthropic import FakeAnthropic

        return FakeAnthropic(api_key=api_key)
    from dataplane.testing.fake_openai import FakeProvider

    return FakeProvider(api_key=api_key)


async def _serve(args: argparse.Namespace, port: int) -> None:
    from dataplane.http.server import serve_http

    async with serve_http(_app(args.provider, args.api_key), host=args.host, port=port) as where:
        print(
            f"fake {args.provider} provider listening on {where.url}"
            f" (upstream_url: {where.url}{PATHS[args.provider]})",
            flush=True,
        )
        await asyncio.Event().wait()


def run(args: argparse.Namespace) -> int:
    port = PROVIDERS[args.provider] if args.port is None else args.port
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args, port))
    return 0
