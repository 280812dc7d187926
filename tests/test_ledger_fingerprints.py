"""Pinned ledger fingerprints: the fingerprint of an invoice is what the state file compares to
decide whether Noko must be written to again, so a change of how the profile is laid out must
never change one. The values below were computed by the release before the neutral `[ledger]`
section (the reference, project name and issuer read from `[noko]`); the old keys still give
them, and the same settings under `[ledger]` give them too.

Invoices: the two recorded in tests/fixtures/kantata/mavenlink_ruby/ (provenance in
tests/fixtures/README.md) and one hand-made invoice on two projects with a line that names
neither (booked on the project named after both), taxed, with time at one rate.

Regenerate (only ever on the old code): `python -m tests.test_ledger_fingerprints`.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from mappings.kantata import (
    KantataInvoice,
    KantataLine,
    KantataUser,
    KantataWorkspace,
    decode_invoices,
)
from mappings.profile import Profile, default_profile, parse_profile
from mappings.to_ledger import to_ledger

FIXTURES = Path(__file__).parent / "fixtures"

OLD_NOKO_KEYS = (
    '[lines]\ndetail = "per_kind"\n'
    '[noko]\nproject_name = "{workspace} ({workspace_id})"\nreference = "INV/{number}/{id}"\n'
    'company_name = "Northwind Consulting Ltd"\n'
)
OLD_NOKO_ENTRIES = (
    '[time]\nmode = "entries"\nbilling_increment = 15\n'
    '[noko]\nreference = "KS-{id}"\ncompany_name = "Northwind Consulting Ltd"\n'
)


def _load(relative: str) -> Any:
    return json.loads((FIXTURES / relative).read_text("utf-8"), parse_float=Decimal)


def _two_projects() -> KantataInvoice:
    def line(kind: Any, id_: str, amount: int, ws: str | None, **extra: Any) -> KantataLine:
        return KantataLine(
            kind=kind,
            id=id_,
            amount_minor=amount,
            taxable=extra.pop("taxable", True),
            date=date(2026, 3, 2),
            description=f"Work {id_}",
            workspace_id=ws,
            story_id=extra.pop("story_id", None),
            user_id="5",
            **extra,
        )

    return KantataInvoice(
        id="9001",
        created_at=None,
        updated_at=datetime(2026, 3, 3, tzinfo=UTC),
        invoice_date=date(2026, 3, 3),
        due_date=None,
        payment_schedule=30,
        draft=False,
        status="new",
        title="Invoice #41",
        user_invoice_number="41",
        user_invoice_title="March",
        purchase_order="PO-7",
        project_code="HB",
        message="Thank you",
        tax_rate=Decimal("8.875"),
        balance_in_cents=None,
        currency="USD",
        exponent=2,
        currency_symbol="$",
        recipient=KantataUser("9", "Jane Lead", "jane@client.example"),
        workspaces=(KantataWorkspace("53", "Harbour"), KantataWorkspace("54", "Pier")),
        lines=(
            line("time_entry", "1", 15_000, "53", minutes=120, rate_minor=7_500),
            line("time_entry", "2", 3_750, "54", minutes=30, rate_minor=7_500, story_id="77"),
            line("expense", "3", 1_234, None, taxable=False, category="Travel"),
            line("additional_item", "4", 5_000, "54"),
        ),
        external_references=(),
        source_fingerprint="x",
    )


def invoices() -> list[KantataInvoice]:
    bodies = [i["response_body"] for i in _load("kantata/mavenlink_ruby/extracted/invoices.json")]
    found: dict[str, KantataInvoice] = {}
    for body in bodies:
        for invoice in decode_invoices(body):
            assert isinstance(invoice, KantataInvoice), invoice
            found.setdefault(invoice.id, invoice)
    found["9001"] = _two_projects()
    return [found[k] for k in sorted(found)]


def profiles() -> dict[str, Profile]:
    return {
        "default": default_profile(),
        "old_noko_keys": parse_profile(OLD_NOKO_KEYS, "<old>"),
        "old_noko_entries": parse_profile(OLD_NOKO_ENTRIES, "<old>"),
    }


def fingerprints() -> dict[str, dict[str, str]]:
    return {
        name: {inv.id: to_ledger(inv, profile).fingerprint() for inv in invoices()}
        for name, profile in profiles().items()
    }


PINNED: dict[str, dict[str, str]] = {
    "default": {
        "280315": "bdf19f7c76f8859da59e56940478cbafd02f8bb667358281dfcd637f58e4acfe",
        "280335": "ca85b1ba6f175cbe5793a5a9bca6054966b550aae0233ad73fed50662f81b4ec",
        "9001": "9bf34bebbb10b50c37eabef5b69f1a914b0f4c20ad3647fa5660b1a2960119d8",
    },
    "old_noko_entries": {
        "280315": "fe5d52d9f340c9e37110fcc124b03796b358f57a18c85600644c2c6013b22fb9",
        "280335": "30af2bdc1bbb8e08cd530eb39e8ab20b4ec4bff2bd63babe61f01518fcd8966f",
        "9001": "502814951a2b80894318fc062b379ff0da22354762bb2565bd31f59df2161080",
    },
    "old_noko_keys": {
        "280315": "47a3d046c77f860ba4a79c7a21d7d1f0c6abc279efa369eeb302f930534552ff",
        "280335": "583f0ff9da1ced13b11332599302a13f218674a23f1df724554d07bfc24d6749",
        "9001": "094ddc1237c2d2f6f56b5d72b512aaa8d99727652d632658014d7cd33e4fd14e",
    },
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_fingerprints_are_those_of_the_previous_release(name: str) -> None:
    """Today's code gives the pinned fingerprints, old `[noko]` keys included."""
    assert fingerprints()[name] == PINNED[name]


@pytest.mark.parametrize("name", ["old_noko_keys", "old_noko_entries"])
def test_the_same_settings_under_ledger_give_the_same_fingerprints(name: str) -> None:
    """Moving the keys from `[noko]` to `[ledger]` (company_name as issuer_name) changes no
    fingerprint: nothing is pushed again after an operator edits the profile so."""
    old = OLD_NOKO_KEYS if name == "old_noko_keys" else OLD_NOKO_ENTRIES
    new = old.replace("[noko]", "[ledger]").replace("company_name", "issuer_name")
    assert "[noko]" not in new
    profile = parse_profile(new, "<new>")
    assert {inv.id: to_ledger(inv, profile).fingerprint() for inv in invoices()} == PINNED[name]


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(fingerprints(), indent=4, sort_keys=True))
