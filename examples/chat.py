"""Three chat requests through the walkthrough's gateway, as the consumer acme-corp.

Run ``python examples/chat.py`` once the walkthrough is up (README "Running it yourself").
Any OpenAI client works the same way: base URL http://127.0.0.1:8000/chat, API key
acme-secret-key. ``METERLINE_GATEWAY`` changes the data plane's address.
"""

from __future__ import annotations

import os

import httpx

gateway = os.environ.get("METERLINE_GATEWAY", "http://127.0.0.1:8000")
for prompt in ("hello there", "what is a token", "count to three"):
    response = httpx.post(
        f"{gateway}/chat/chat/completions",
        headers={"Authorization": "Bearer acme-secret-key"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]},
        timeout=30,
    )
    response.raise_for_status()
    answer = response.json()
    usage = answer["usage"]
    print(
        f"{prompt!r}: {answer['choices'][0]['message']['content']!r}"
        f" ({usage['prompt_tokens']} in, {usage['completion_tokens']} out)"
    )
