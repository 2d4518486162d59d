"""Prepaid credits at the gateway: measured overshoot of a credit_only balance vs its bound.

    python bench/credits_overshoot.py [--dataplanes 2] [--concurrency 2 4 8] [--grant 1.00]
                                      [--rounds 1]

One process: a real control plane (SQLite in a temporary directory, balance slicing on), N
real data planes and the fake OpenAI provider, all on 127.0.0.1 ephemeral ports
(tests/support/credit_gateway.py, the harness of tests/integration/test_credits_gateway.py).
For each concurrency C, C openai-SDK clients on each data plane spend one customer's
``credit_only`` grant with requests of exactly R = 0.01 USD until the control plane's live
balance is zero (a refused client waits for the re-split, then retries). Prints, per run, what
was admitted beyond the grant (the overshoot) against the bound N x C x R, and checks that the
invoice's credit line is the whole grant and its uncovered line the overshoot. Bounded: each
client sends at most 400 requests; a run of the defaults takes ~15 s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "proto"), str(ROOT / "tests")]

from meterline.admin.v1 import billing_pb2  # noqa: E402
from support.credit_gateway import credit_stack, race  # noqa: E402


async def run(dataplanes: int, concurrency: int, grant: str) -> bool:
    with tempfile.TemporaryDirectory(prefix="credits-overshoot-") as directory:
        async with credit_stack(Path(directory), dataplanes=dataplanes, race_grant=grant) as stack:
            result = await race(stack, concurrency=concurrency)
            # The invoice of the period: the grant pays in full, the overshoot is uncovered.
            stack.clock.set(stack.start + timedelta(days=31, hours=2))
            closed = await stack.billing.CloseInvoices(billing_pb2.CloseInvoicesRequest())
            lines: list[tuple[int, Decimal]] = []
            for name in closed.drafted_invoices:
                invoice = await stack.billing.GetInvoice(billing_pb2.GetInvoiceRequest(name=name))
                if invoice.customer == "customers/race-co":
                    issued = await stack.billing.IssueInvoice(
                        billing_pb2.IssueInvoiceRequest(name=name)
                    )
                    lines = [(line.type, Decimal(line.amount)) for line in issued.lines]
            credit = -sum(a for t, a in lines if t == billing_pb2.INVOICE_LINE_TYPE_CREDIT)
            uncovered = -sum(a for t, a in lines if t == billing_pb2.INVOICE_LINE_TYPE_UNCOVERED)
            exact = credit == result.grant and uncovered == result.overshoot
            print(
                f"{result.line()}; invoice: credit {credit}, uncovered {uncovered} "
                f"({'exact' if exact else 'MISMATCH'})",
                flush=True,
            )
            return result.overshoot <= result.bound and exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataplanes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--grant", default="1.00", help="the credit_only grant, USD")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if not 1 <= args.dataplanes <= 8 or not all(1 <= c <= 16 for c in args.concurrency):
        parser.error("--dataplanes 1..8 and --concurrency 1..16")
    ok = True
    for _ in range(args.rounds):
        for concurrency in args.concurrency:
            ok &= asyncio.run(run(args.dataplanes, concurrency, args.grant))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
