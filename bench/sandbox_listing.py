"""How fast the fake Kantata lists invoices: the time of one `GET /invoices` page over 10,000
invoices, per query shape, straight into the fake's handler (no HTTP).

`python -m bench.sandbox_listing [--invoices N] [--repeats R]` prints, for each query, the
median and the best of R runs in milliseconds. The figures say whether the sandbox stays out
of the way of the connector's own benchmark; no test asserts them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

from sandbox import FakeKantata, generate
from sandbox._core import Request
from tests.e2e import KANTATA_TOKEN

SUMMER = datetime(2024, 7, 1, 12, 0, 0, tzinfo=UTC)

QUERIES: dict[str, dict[str, str]] = {
    "id order, updated_after 2000, 200 a page": {
        "order": "id:asc",
        "per_page": "200",
        "updated_after": "2000-01-01T00:00:00Z",
    },
    "updated_at order, page 30 of 200": {
        "order": "updated_at:asc",
        "per_page": "200",
        "page": "30",
    },
    "created_at desc, without drafts, 50 a page": {
        "order": "created_at:desc",
        "without_drafts": "true",
        "per_page": "50",
    },
    "updated in the last 2 days, id order": {
        "updated_after": (SUMMER - timedelta(days=2)).isoformat(),
        "order": "id:asc",
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invoices", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    kantata = FakeKantata()
    kantata.set_clock(SUMMER)
    generate(kantata, seed=5, invoices=args.invoices)
    headers = {"authorization": f"Bearer {KANTATA_TOKEN}"}
    print(f"fake Kantata, {args.invoices} invoices, {args.repeats} runs per query (ms)")
    print(f"{'query':<46} {'median':>8} {'best':>8}")
    for name, query in QUERIES.items():
        times: list[float] = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            response = kantata.handle(Request("GET", "/api/v1/invoices", query, headers))
            times.append((time.perf_counter() - started) * 1000)
            if response.status != 200:
                raise SystemExit(f"{name}: status {response.status}")
        print(f"{name:<46} {statistics.median(times):>8.2f} {min(times):>8.2f}")


if __name__ == "__main__":
    main()
