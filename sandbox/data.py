"""Seeded generator of realistic Kantata data: clients, projects, invoices and their lines.

Deterministic for a seed (given the same starting clock): the same seed yields the same
workspaces, users, invoices, amounts and timestamps. Amounts respect each currency's base unit
(USD/EUR cents, JPY whole yen, KWD fils); time entries use rates that leave fractions of a minor
unit before rounding, so the money rules are exercised on every run.
"""

from __future__ import annotations

import bisect
import itertools
import random
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sandbox._money import base_unit_for
from sandbox.kantata import ACCOUNT_TZ, FakeKantata

__all__ = ["CURRENCY_WEIGHTS", "TAX_RATES", "generate"]

CURRENCY_WEIGHTS: tuple[tuple[str, int], ...] = (("USD", 80), ("EUR", 10), ("JPY", 5), ("KWD", 5))
TAX_RATES: tuple[tuple[Decimal, int], ...] = (
    (Decimal("0"), 40),
    (Decimal("10"), 25),
    (Decimal("20"), 20),
    (Decimal("8.875"), 15),
)
# Hourly rates in major units, per currency.
_RATE_RANGES = {"USD": (85, 260), "EUR": (80, 240), "JPY": (9_000, 32_000), "KWD": (25, 85)}
_MINUTES = (
    5,
    7,
    10,
    15,
    20,
    25,
    30,
    37,
    40,
    45,
    50,
    55,
    60,
    75,
    90,
    100,
    105,
    120,
    135,
    150,
    180,
    195,
    210,
    240,
    270,
    300,
    360,
    420,
    480,
)
_FIRST = (
    "Ada",
    "Grace",
    "Linus",
    "Margaret",
    "Alan",
    "Barbara",
    "Dennis",
    "Frances",
    "Ken",
    "Radia",
    "Edsger",
    "Hedy",
    "Donald",
    "Shafi",
    "Tim",
    "Katherine",
    "Leslie",
    "Annie",
    "Guido",
    "Sophie",
    "Mateo",
    "Yuki",
    "Fatima",
    "Omar",
    "Ingrid",
    "Pierre",
    "Chen",
    "Aiko",
)
_LAST = (
    "Lovelace",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Turing",
    "Liskov",
    "Ritchie",
    "Allen",
    "Thompson",
    "Perlman",
    "Dijkstra",
    "Lamarr",
    "Knuth",
    "Goldwasser",
    "Berners-Lee",
    "Johnson",
    "Lamport",
    "Easley",
    "van Rossum",
    "Wilson",
    "García",
    "Tanaka",
    "Al-Sabah",
    "Haddad",
    "Larsen",
    "Dubois",
    "Wei",
    "Suzuki",
)
_COMPANIES = (
    "Acme Robotics",
    "Globex",
    "Initech",
    "Umbrella Health",
    "Stark Industries",
    "Wayne Logistics",
    "Tyrell Systems",
    "Cyberdyne",
    "Soylent Foods",
    "Hooli",
    "Pied Piper",
    "Vandelay Imports",
    "Gekko & Co",
    "Oscorp",
    "Wonka Confectionery",
    "Nakatomi Trading",
    "Kuwait Fintech Hub",
    "Blue Sun Energy",
    "Monarch Solutions",
    "Massive Dynamic",
    "Aperture Labs",
    "Black Mesa",
    "Dunder Mifflin",
    "Sterling Cooper",
)
_PROJECT_KINDS = (
    "Website Redesign",
    "Mobile App",
    "Data Migration",
    "ERP Rollout",
    "Brand Refresh",
    "Security Audit",
    "Cloud Migration",
    "Analytics Platform",
    "Support Retainer",
    "Integration Phase 2",
    "Discovery Sprint",
    "Compliance Review",
)
_TASKS = (
    "Workshop facilitation",
    "Backend development",
    "Frontend development",
    "QA and testing",
    "Project management",
    "Solution design",
    "Data modelling",
    "Code review",
    "Stakeholder interviews",
    "Deployment",
    "Training session",
    "Bug fixing",
    None,
    "",
)
_EXPENSE_CATEGORIES = (
    ("Travel", "Flight to client site"),
    ("Lodging", "Hotel, 2 nights"),
    ("Meals", "Team lunch with client"),
    ("Software", "License renewal"),
    ("Hardware", "Test devices"),
    ("Mileage", "Mileage to on-site workshop"),
    ("Printing", "Workshop materials"),
)
_ADDITIONAL = (
    "Rush delivery surcharge",
    "Hosting pass-through",
    "Third-party API fees",
    "Out-of-hours support",
    "Domain renewal",
)
_CREDITS = (
    "Credit for downtime",
    "Loyalty discount",
    "Goodwill credit",
    "Refund: duplicate charge",
)
_FIXED = (
    "Phase 1 — Discovery",
    "Phase 2 — Build",
    "Monthly retainer",
    "Fixed-price design package",
    "Launch support bundle",
)
_MILESTONES = (
    "Milestone 1: Kickoff",
    "Milestone 2: Design sign-off",
    "Milestone 3: Beta release",
    "Milestone 4: Go-live",
    "Final acceptance",
)
_KIND_WEIGHTS = (
    ("time_entry", 50),
    ("expense", 20),
    ("additional_item", 10),
    ("fixed_fee_item", 12),
    ("billing_milestone", 8),
)


_CUMULATIVE: dict[tuple[tuple[Any, int], ...], tuple[list[Any], list[int], int]] = {}


def _weighted(rng: random.Random, options: tuple[tuple[Any, int], ...]) -> Any:
    table = _CUMULATIVE.get(options)
    if table is None:
        values = [o[0] for o in options]
        cumulative = list(itertools.accumulate(o[1] for o in options))
        table = (values, cumulative, cumulative[-1])
        _CUMULATIVE[options] = table
    values, cumulative, total = table
    return values[bisect.bisect_right(cumulative, rng.random() * total)]


def _amount(
    rng: random.Random, low: float, high: float, base_unit: int, *, round_to: int = 1
) -> int:
    """A random amount between low and high major units, in minor units (no floats kept)."""
    major_minor = rng.randint(int(low * base_unit), int(high * base_unit))
    step = max(1, base_unit // 100 * round_to) if base_unit >= 100 else round_to
    return max(step, major_minor // step * step)


def _line(
    rng: random.Random,
    kind: str,
    currency: str,
    base_unit: int,
    workspace_id: int,
    staff: list[int],
    invoice_date: datetime,
) -> dict[str, Any]:
    day = (invoice_date - timedelta(days=rng.randint(1, 40))).date().isoformat()
    credit = rng.random() < 0.05
    if kind == "time_entry":
        low, high = _RATE_RANGES.get(currency, (90, 200))
        major_rate = rng.randint(low, high)
        # Cents that make minutes * rate / 60 leave a fraction: 12,345.67/h style rates.
        extra = rng.choice((0, 0, 25, 33, 50, 67, 75, 99)) if base_unit >= 100 else 0
        rate = major_rate * base_unit + (extra * base_unit // 100 if base_unit >= 100 else 0)
        if base_unit == 1000:
            rate += rng.choice((0, 125, 250, 333, 500))
        billable = rng.random() > 0.04
        return {
            "kind": kind,
            "workspace_id": workspace_id,
            "date_performed": day,
            "time_in_minutes": rng.choice(_MINUTES),
            # Non-billable work keeps its rate, as in Kantata: only `billable` keeps it off the
            # bill (money.md), so a connector that bills it gets the total wrong.
            "rate_in_cents": rate,
            "billable": billable,
            "taxable": rng.random() < 0.5,
            "notes": rng.choice(_TASKS),
            "story_id": rng.choice((None, rng.randint(26_000_000, 26_999_999))),
            "user_id": rng.choice(staff),
        }
    if kind == "expense":
        category, note = rng.choice(_EXPENSE_CATEGORIES)
        amount = _amount(rng, 8, 1800, base_unit)
        if currency == "JPY":
            amount = _amount(rng, 800, 180_000, 1, round_to=10)
        return {
            "kind": kind,
            "workspace_id": workspace_id,
            "date": day,
            "amount_in_cents": -amount // 4 if credit else amount,
            "category": category,
            "notes": f"Refund: {note}" if credit else note,
            "is_billable": True,
            "taxable": rng.random() < 0.4,
            "user_id": rng.choice(staff),
        }
    if kind == "additional_item":
        amount = _amount(rng, 20, 900, base_unit)
        if currency == "JPY":
            amount = _amount(rng, 2_000, 90_000, 1, round_to=100)
        spec: dict[str, Any] = {
            "kind": kind,
            "workspace_id": workspace_id,
            "amount_in_cents": -amount if credit else amount,
            "notes": rng.choice(_CREDITS) if credit else rng.choice(_ADDITIONAL),
        }
        roll = rng.random()
        if roll < 0.3:
            spec["taxable"] = True
        elif roll < 0.7:
            spec["taxable"] = False
        # else: no `taxable` at all, as in Kantata's older records.
        return spec
    if kind == "fixed_fee_item":
        amount = _amount(rng, 500, 12_000, base_unit, round_to=100)
        if currency == "JPY":
            amount = _amount(rng, 50_000, 1_200_000, 1, round_to=1000)
        spec = {
            "kind": kind,
            "workspace_id": workspace_id,
            "amount_in_cents": amount,
            "notes": rng.choice(_FIXED),
        }
        if rng.random() < 0.85:
            spec["taxable"] = rng.random() < 0.5
        return spec
    amount = _amount(rng, 1_000, 25_000, base_unit, round_to=100)
    if currency == "JPY":
        amount = _amount(rng, 100_000, 2_500_000, 1, round_to=1000)
    return {
        "kind": "billing_milestone",
        "workspace_id": workspace_id,
        "title": rng.choice(_MILESTONES),
        "amount_in_cents": amount,
        "date_to_invoice": day,
        "taxable": rng.random() < 0.5,
    }


def generate(
    kantata: FakeKantata,
    *,
    seed: int,
    invoices: int,
    same_updated_at: int = 0,
    clients: int | None = None,
    workspaces: int | None = None,
    days: int = 365,
    draft_rate: float = 0.10,
    cancelled_rate: float = 0.05,
    paid_rate: float = 0.15,
    multi_project_rate: float = 0.04,
    existing_reference_rate: float = 0.02,
    balance_off: int = 0,
) -> None:
    """Fill `kantata` with `invoices` realistic invoices, deterministically for `seed`.

    Invoices are created over the last `days` days up to the fake's clock (ids in creation
    order, `updated_at` at or after `created_at`). `same_updated_at=N` gives N of them one
    identical `updated_at` (a bulk edit an hour ago), more than a page of 200 when N > 200.
    `balance_off=N` gives N eligible invoices (active, not drafts) a `balance_in_cents` one
    minor unit above the total of their lines, as a Kantata whose own figure disagrees.
    """
    if invoices < 0 or same_updated_at < 0 or balance_off < 0:
        raise ValueError("invoices, same_updated_at and balance_off must not be negative")
    rng = random.Random(seed)
    now = kantata.now()
    start = now - timedelta(days=days)
    n_clients = clients or max(3, min(200, invoices // 15 + 3))
    n_workspaces = workspaces or max(4, min(400, invoices // 6 + 4))

    staff = [
        kantata.add_user(
            f"{f} {last}", f"{f.lower()}.{last.lower().replace(' ', '')}@consultancy.example"
        )
        for f, last in zip(rng.sample(_FIRST, 8), rng.sample(_LAST, 8), strict=True)
    ]
    client_ids: list[int] = []
    client_company: dict[int, str] = {}
    for index in range(n_clients):
        first = rng.choice(_FIRST)
        last = rng.choice(_LAST)
        company = _COMPANIES[index % len(_COMPANIES)]
        suffix = "" if index < len(_COMPANIES) else f" {index // len(_COMPANIES) + 1}"
        domain = company.lower().replace(" & ", "-").replace(" ", "-") + suffix.strip()
        user_id = kantata.add_user(
            f"{first} {last}",
            f"{first.lower()}.{last.lower().replace(' ', '')}@{domain}.example",
            headline=f"Finance, {company}{suffix}",
        )
        client_ids.append(user_id)
        client_company[user_id] = company + suffix

    ws_by_currency: dict[str, list[int]] = {}
    ws_client: dict[int, int] = {}
    for index in range(n_workspaces):
        currency = "USD" if index == 0 else _weighted(rng, CURRENCY_WEIGHTS)
        client = client_ids[index % len(client_ids)]
        title = f"{client_company[client]} — {rng.choice(_PROJECT_KINDS)}"
        workspace_id = kantata.add_workspace(
            title,
            currency=currency,
            client_id=client,
            created_at=start - timedelta(days=rng.randint(1, 200)),
        )
        ws_by_currency.setdefault(currency, []).append(workspace_id)
        ws_client[workspace_id] = client

    span = max(1, int((now - start).total_seconds()))
    created_offsets = sorted(rng.randint(0, span - 3600) for _ in range(invoices))
    created_ids: list[int] = []
    active: dict[int, datetime] = {}  # eligible invoice id -> its updated_at
    for offset in created_offsets:
        created = start + timedelta(seconds=offset)
        currency = _weighted(rng, CURRENCY_WEIGHTS)
        if currency not in ws_by_currency:
            currency = "USD"
        base_unit = base_unit_for(currency)
        pool = ws_by_currency[currency]
        primary = rng.choice(pool)
        ws_ids = [primary]
        if rng.random() < multi_project_rate and len(pool) > 1:
            others = [w for w in pool if w != primary]
            ws_ids += rng.sample(others, k=min(len(others), rng.randint(1, 2)))
        roll = rng.random()
        draft = roll < draft_rate
        status = "new"
        if not draft:
            if roll < draft_rate + cancelled_rate:
                status = "cancelled"
            elif roll < draft_rate + cancelled_rate + paid_rate:
                status = "accepted payment"
        invoice_day = created.astimezone(ACCOUNT_TZ)
        lines = [
            _line(
                rng,
                _weighted(rng, _KIND_WEIGHTS),
                currency,
                base_unit,
                rng.choice(ws_ids),
                staff,
                invoice_day,
            )
            for _ in range(rng.randint(1, 12))
        ]
        age = int((now - created).total_seconds())
        if status == "new" and not draft:
            touched = rng.randint(0, min(age, 3 * 86400))
        else:
            touched = rng.randint(0, age)
        updated = created + timedelta(seconds=touched)
        po = rng.random() < 0.3
        invoice_id = kantata.add_invoice(
            lines=lines,
            workspace_ids=ws_ids,
            currency=currency,
            tax_rate=_weighted(rng, TAX_RATES),
            draft=draft,
            status=status,
            invoice_date=invoice_day.date().isoformat(),
            due_date="" if draft and rng.random() < 0.3 else None,
            payment_schedule=rng.choice((30, 30, 45, 60)),
            user_invoice_title=rng.choice(("", "", "Services rendered", "Monthly invoice")),
            purchase_order=f"PO-{rng.randint(10_000, 99_999)}" if po else "",
            project_code=rng.choice(("", "", f"PRJ-{rng.randint(100, 999)}")),
            message=rng.choice(("", "", "Thank you for your business.", "Net terms as agreed.")),
            recipient_id=ws_client[primary] if rng.random() > 0.05 else None,
            user_id=rng.choice(staff[:3]),
            created_at=created,
            updated_at=updated,
        )
        created_ids.append(invoice_id)
        if not draft and status != "cancelled":
            active[invoice_id] = updated
        if rng.random() < existing_reference_rate:
            kantata.upsert_external_reference(
                {
                    "subject_type": "Invoice",
                    "subject_id": invoice_id,
                    "service_name": "QuickBooks Online",
                    "service_model": "Invoice",
                    "service_model_ref": str(rng.randint(1000, 9999)),
                    "status": "successful",
                }
            )
            kantata.touch([invoice_id], updated_at=updated)

    if balance_off:
        # Drawn from a generator of its own, so the rest of the data stays as without it.
        pick = random.Random(f"balance-off-{seed}")
        eligible_ids = sorted(active)
        for invoice_id in sorted(pick.sample(eligible_ids, k=min(balance_off, len(eligible_ids)))):
            total = kantata.invoice_totals(invoice_id)["total"]
            kantata.update_invoice(
                invoice_id, balance_in_cents=total + 1, updated_at=active[invoice_id]
            )

    if same_updated_at:
        bulk_at = now - timedelta(hours=1)
        eligible = [
            i
            for i, offset in zip(created_ids, created_offsets, strict=True)
            if start + timedelta(seconds=offset) <= bulk_at
        ]
        chosen = sorted(rng.sample(eligible, k=min(same_updated_at, len(eligible))))
        kantata.touch(chosen, updated_at=bulk_at)
