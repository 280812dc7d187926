"""The benchmark's workload: N invoices of about 8 line items each, built deterministically.

`sandbox.generate` draws 1 to 12 lines per invoice (6.5 on average), so invoices are built
here with `FakeKantata.add_invoice` instead: 4 to 12 lines (8 on average) of every kind, in
four currencies, with rates that leave fractions of a minor unit, tax rates Noko can and
cannot hold, a few invoices over two projects, and per 20 eligible invoices one draft or
cancelled invoice that must be skipped. Every workspace title also exists as a Noko project,
as in an account that already books time there, so each project costs one lookup per run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sandbox import FakeKantata, FakeNoko

__all__ = ["LINES_MAX", "LINES_MIN", "Workload", "populate"]

LINES_MIN = 4
LINES_MAX = 12  # uniform: 8 lines per invoice on average
SKIPPED_EVERY = 20  # one draft or cancelled invoice per 20 eligible ones

_CURRENCIES = (("USD", 100, 80), ("EUR", 100, 10), ("JPY", 1, 5), ("KWD", 1000, 5))
_TAX_RATES = (Decimal("0"), Decimal("10"), Decimal("20"), Decimal("8.875"))
_KINDS = (
    ("time_entry", 50),
    ("expense", 20),
    ("additional_item", 10),
    ("fixed_fee_item", 12),
    ("billing_milestone", 8),
)
_TASKS = ("Backend development", "Workshop", "QA and testing", "Project management", "")
_MINUTES = (15, 30, 37, 45, 60, 75, 90, 120, 150, 240, 480)
_PROJECT_KINDS = ("Website Redesign", "Data Migration", "ERP Rollout", "Support Retainer")


@dataclass(frozen=True)
class Workload:
    """What was built: eligible invoices (to push), skipped ones, line items, projects."""

    eligible: int
    skipped: int
    lines: int
    workspaces: int

    @property
    def total(self) -> int:
        return self.eligible + self.skipped


def _pick(rng: random.Random, options: tuple[tuple[Any, int], ...]) -> Any:
    return rng.choices([o[0] for o in options], weights=[o[1] for o in options])[0]


def _line(rng: random.Random, kind: str, unit: int, workspace: int, day: str) -> dict[str, Any]:
    """One line item; amounts in minor units of a currency with `unit` minor units."""
    if kind == "time_entry":
        # Rates such as 132.67/h: minutes * rate / 60 leaves a fraction of a minor unit.
        rate = rng.randint(85, 260) * unit + (rng.choice((0, 25, 33, 67)) * unit // 100)
        return {
            "kind": kind,
            "workspace_id": workspace,
            "date_performed": day,
            "time_in_minutes": rng.choice(_MINUTES),
            "rate_in_cents": rate,
            "taxable": rng.random() < 0.5,
            "notes": rng.choice(_TASKS),
        }
    amount = rng.randint(20 * unit, 4_000 * unit)
    if kind == "expense":
        return {
            "kind": kind,
            "workspace_id": workspace,
            "date": day,
            "amount_in_cents": amount,
            "category": rng.choice(("Travel", "Lodging", "Software")),
            "notes": "Client visit",
            "taxable": rng.random() < 0.4,
        }
    if kind == "billing_milestone":
        return {
            "kind": kind,
            "workspace_id": workspace,
            "title": f"Milestone {rng.randint(1, 5)}",
            "amount_in_cents": amount,
            "date_to_invoice": day,
            "taxable": rng.random() < 0.5,
        }
    credit = kind == "additional_item" and rng.random() < 0.1
    return {
        "kind": kind,
        "workspace_id": workspace,
        "amount_in_cents": -amount // 10 if credit else amount,
        "notes": "Goodwill credit" if credit else "Hosting pass-through",
        "taxable": rng.random() < 0.5,
    }


def populate(
    kantata: FakeKantata,
    noko: FakeNoko | None,
    invoices: int,
    *,
    seed: int = 6,
    currencies: tuple[str, ...] | None = None,
) -> Workload:
    """Add `invoices` eligible invoices (plus one skipped per 20) to `kantata`, and the Noko
    projects they book on to `noko` (none without one). `currencies` keeps only those of the
    four (an accounting system that has not enabled the others: Xero's organisation). The same
    arguments give the same data."""
    rng = random.Random(seed)
    enabled = tuple(c for c in _CURRENCIES if currencies is None or c[0] in currencies)
    if not enabled or enabled[0][0] != "USD":
        raise ValueError("the workload needs USD among its currencies")
    now = kantata.now()
    n_clients = max(3, min(200, invoices // 15 + 3))
    n_workspaces = max(4, min(400, invoices // 6 + 4))
    clients = [
        kantata.add_user(f"Client {i}", f"finance{i}@client{i}.example", headline="Finance")
        for i in range(n_clients)
    ]
    staff = [kantata.add_user(f"Consultant {i}", f"c{i}@consultancy.example") for i in range(4)]
    by_currency: dict[str, list[tuple[int, int]]] = {}
    for index in range(n_workspaces):
        code, unit = ("USD", 100) if index == 0 else _pick_currency(rng, enabled)
        title = f"Client {index % n_clients} — {_PROJECT_KINDS[index % 4]} {index}"
        workspace = kantata.add_workspace(
            title, currency=code, client_id=clients[index % n_clients]
        )
        by_currency.setdefault(code, []).append((workspace, unit))
        if noko is not None:
            noko.add_project(title)

    skipped = 0
    lines = 0
    total = invoices + invoices // SKIPPED_EVERY
    for index in range(total):
        code, _unit = _pick_currency(rng, enabled)
        pool = by_currency.get(code) or by_currency["USD"]
        workspace, unit = rng.choice(pool)
        spaces = [workspace]
        if rng.random() < 0.04 and len(pool) > 1:
            spaces.append(rng.choice([w for w, _ in pool if w != workspace]))
        created = now - timedelta(days=30) + timedelta(seconds=rng.randint(0, 29 * 86400))
        day = created.date().isoformat()
        count = rng.randint(LINES_MIN, LINES_MAX)
        specs = [
            _line(rng, _pick(rng, _KINDS), unit, rng.choice(spaces), day) for _ in range(count)
        ]
        is_skipped = index % (SKIPPED_EVERY + 1) == SKIPPED_EVERY
        kantata.add_invoice(
            lines=specs,
            workspace_ids=spaces,
            currency=code,
            tax_rate=rng.choice(_TAX_RATES),
            draft=is_skipped and index % 2 == 0,
            status="cancelled" if is_skipped and index % 2 else _status(rng),
            invoice_date=day,
            purchase_order=f"PO-{rng.randint(10_000, 99_999)}" if rng.random() < 0.3 else "",
            message="Thank you for your business." if rng.random() < 0.5 else "",
            user_id=rng.choice(staff),
            created_at=created,
            updated_at=created + timedelta(seconds=rng.randint(0, 3600)),
        )
        if is_skipped:
            skipped += 1
        else:
            lines += count
    return Workload(total - skipped, skipped, lines, n_workspaces)


def _pick_currency(
    rng: random.Random, pool: tuple[tuple[str, int, int], ...] = _CURRENCIES
) -> tuple[str, int]:
    code, unit, _ = rng.choices(pool, weights=[c[2] for c in pool])[0]
    return code, unit


def _status(rng: random.Random) -> str:
    return "accepted payment" if rng.random() < 0.15 else "new"
