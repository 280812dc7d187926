"""CPU per invoice of the pure mapping, on the benchmark's own workload.

`python -m bench.mapping [--invoices N] [--repeats R]` builds N invoices of `bench.workload` in
a fake Kantata, reads them back as Kantata's pages (200 invoices with their lines, as the
connector asks for them), and times each step of `mappings/` over those page bodies: decoding
a page into invoices, the ledger document, its fingerprint, and the Noko plan. It prints the
median over the repeats of process CPU time per invoice, in microseconds. No HTTP, no state
file, no threads: the local cost of the mapping alone, beside the connector's whole in-process
figure of `make bench`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.workload import populate
from connector.http import RetryPolicy
from connector.kantata.client import KantataClient
from mappings.kantata import KantataInvoice, decode_invoices
from mappings.ledger import LedgerDocument
from mappings.profile import default_profile
from mappings.targets.noko import plan_invoice
from mappings.to_ledger import to_ledger
from sandbox import Sandbox
from tests.e2e import KANTATA_TOKEN

__all__ = ["main"]


def _pages(invoices: int) -> list[Any]:
    box = Sandbox()
    with box:
        populate(box.kantata, box.noko, invoices, seed=6)
        with KantataClient(
            box.kantata_url, KANTATA_TOKEN, rate=None, retry=RetryPolicy()
        ) as kantata:
            return [page.body for page in kantata.iter_invoice_pages(updated_after=None)]


def _cpu(step: Callable[[], Any], count: int, repeats: int) -> float:
    """Median process CPU microseconds per item of one call of `step` over `count` items."""
    samples = []
    for _ in range(repeats):
        started = time.process_time()
        step()
        samples.append((time.process_time() - started) / count * 1e6)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    pages = _pages(args.invoices)
    profile = default_profile()
    decoded = [inv for body in pages for inv in decode_invoices(body)]
    mappable = [
        inv
        for inv in decoded
        if isinstance(inv, KantataInvoice) and not inv.draft and not inv.is_cancelled
    ]
    documents: list[LedgerDocument] = [to_ledger(inv, profile) for inv in mappable]
    n = len(mappable)

    def decode() -> None:
        for body in pages:
            decode_invoices(body)

    def ledger() -> None:
        for inv in mappable:
            to_ledger(inv, profile)

    def fingerprint() -> None:
        for document in documents:
            document.fingerprint()

    def plan() -> None:
        for document in documents:
            plan_invoice(document)

    rows = [
        ("decode (Kantata page -> invoices)", _cpu(decode, len(decoded), args.repeats)),
        ("to_ledger", _cpu(ledger, n, args.repeats)),
        ("ledger fingerprint", _cpu(fingerprint, n, args.repeats)),
        ("plan_invoice (Noko plan)", _cpu(plan, n, args.repeats)),
    ]
    lines = sum(len(document.lines) for document in documents)
    print(
        f"CPU us per invoice, median of {args.repeats} passes over {len(decoded):,} invoices "
        f"({n:,} mappable, {lines / n:.1f} lines each)"
    )
    for name, value in rows:
        print(f"  {name:36}{value:8.1f}")
    print(f"  {'all four':36}{sum(value for _, value in rows):8.1f}")


if __name__ == "__main__":
    main()
