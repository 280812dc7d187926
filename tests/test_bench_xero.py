"""The benchmark's Xero section: what it counts, how it checks the books, and one small run."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from bench.run import _spawn
from bench.workload import populate
from bench.xero import (
    XERO_CURRENCIES,
    Breakdown,
    Call,
    Timeline,
    XeroLimits,
    check_xero_books,
    classify,
    xero_run,
    xero_targets,
)
from sandbox import Sandbox
from sandbox._core import Request
from sandbox.xero import API


def _request(method: str, path: str, body: object = None, **extra: object) -> Request:
    raw = json.dumps(body).encode() if body is not None else b""
    return Request(method, API + path, body=raw, **extra)  # type: ignore[arg-type]


def test_classify_names_what_each_request_is_for() -> None:
    approve = {"Invoices": [{"InvoiceID": "a", "Status": "AUTHORISED"}] * 3}
    edit = {"Invoices": [{"InvoiceID": "a", "Status": "AUTHORISED", "LineItems": []}]}
    void = {"Invoices": [{"InvoiceID": "a", "Status": "VOIDED"}]}
    assert classify(_request("GET", "/Organisation")) == ("organisation", 0)
    assert classify(_request("GET", "/Accounts")) == ("accounts", 0)
    assert classify(_request("GET", "/TaxRates")) == ("tax rates", 0)
    assert classify(_request("GET", "/Contacts")) == ("contact listings", 0)
    assert classify(_request("PUT", "/Contacts", {"Contacts": [{}, {}]})) == (
        "contact creates",
        2,
    )
    assert classify(_request("GET", "/Invoices", query={"createdByMyApp": "true"})) == (
        "look-up listings",
        0,
    )
    assert classify(
        _request("GET", "/Invoices", headers={"If-Modified-Since": "2026-01-01T00:00:00"})
    ) == ("status read-back", 0)
    assert classify(_request("GET", "/Invoices", query={"IDs": "a,b"})) == ("reads by id", 0)
    assert classify(_request("GET", "/Invoices/abc")) == ("single reads", 0)
    assert classify(_request("PUT", "/Invoices", {"Invoices": [{}] * 50})) == ("creates", 50)
    assert classify(_request("POST", "/Invoices", approve)) == ("approvals", 3)
    assert classify(_request("POST", "/Invoices", edit)) == ("updates", 1)
    assert classify(_request("POST", "/Invoices", void)) == ("cancels", 1)


def test_breakdown_counts_429s_apart_and_the_closing_listing_as_the_read_back() -> None:
    calls = [
        Call(1.0, "organisation", 0, 200),
        Call(2.0, "look-up listings", 0, 200, "Invoices?createdByMyApp=true"),
        Call(3.0, "creates", 50, 429),
        Call(4.0, "creates", 50, 200),
        Call(5.0, "approvals", 50, 200),
        Call(6.0, "look-up listings", 0, 200, "Invoices?createdByMyApp=true"),
    ]
    seen = Breakdown.of(calls)
    assert seen.requests == {
        "organisation": 1,
        "look-up listings": 1,
        "creates": 1,
        "approvals": 1,
        "status read-back": 1,
    }
    assert seen.documents["creates"] == 50
    assert seen.answered == 5
    assert seen.limited == 1
    assert "creates 1 (50 documents) +1 answered 429" in seen.describe()


def test_timeline_separates_kantata_time_xero_time_and_idle_time() -> None:
    limits = XeroLimits(per_minute=60, kantata=10.0)
    cycle = {"started_at": 0.0, "ended_at": 20.0}
    # Kantata in use from 0.7 to 2.0 (write-backs 0.1 s apart, the first taken to start 3
    # intervals before its answer); Xero answers at 1, 2, 3 (one stretch from -0.5, clipped
    # to the cycle's start) and 15 (from 13.5).
    kantata = [(1.0 + i / 10, True) for i in range(11)]
    xero = [Call(t, "creates", 1, 200) for t in (1.0, 2.0, 3.0, 15.0)]
    line = Timeline.of(cycle, kantata, xero, limits)
    assert line.writebacks == 11
    assert line.xero_calls == 4
    assert line.kantata == pytest.approx(1.3)
    assert line.xero == pytest.approx(3.0 + 1.5)
    assert line.both == pytest.approx(1.3)
    assert line.neither == pytest.approx(20 - 4.5)


def test_books_check_finds_missing_duplicate_and_wrong_documents() -> None:
    box = Sandbox()
    populate(box.kantata, None, 3, seed=1, currencies=XERO_CURRENCIES)
    eligible, problems = check_xero_books(box)
    assert eligible == 3
    assert len(problems) == 3 and all("0 live documents" in p for p in problems)
    first = next(
        i for i in box.kantata.state()["invoices"] if not i["draft"] and i["status"] != "cancelled"
    )
    total = Decimal(first["balance_in_cents"]) / Decimal(first["currency_base_unit"])
    element = {
        "Type": "ACCREC",
        "Reference": f"KS-{first['id']}",
        "CurrencyCode": first["currency"],
        "Contact": {"Name": "Client"},
        "LineItems": [
            {"Description": "all", "Quantity": 1, "UnitAmount": total + 1, "TaxType": "NONE"}
        ],
    }
    box.xero.add_foreign("Invoices", element)
    box.xero.add_foreign("Invoices", element)
    _, problems = check_xero_books(box)
    assert f"KS-{first['id']}: 2 live documents" in problems
    for doc in box.xero.docs["Invoices"].values():
        doc["Status"] = "VOIDED"
    box.xero.add_foreign("Invoices", element)
    _, problems = check_xero_books(box)
    mine = [p for p in problems if p.startswith(f"KS-{first['id']}:")]
    assert any("not made by the connector" in p for p in mine)
    assert any(f"total {total + 1}" in p for p in mine)
    assert any("no successful reference" in p for p in mine)


def test_a_small_run_checks_the_books_and_counts_every_xero_request(tmp_path: Path) -> None:
    limits = XeroLimits(per_minute=10_000, in_flight=5, kantata=1_000.0, latency_ms=0)
    run = xero_run(20, tmp_path, seed=3, spawn=_spawn, limits=limits, timeout=300)
    assert run.problems == []
    backfill = run.breakdowns[0]
    assert backfill.documents["creates"] == run.eligible == 20
    assert backfill.documents["approvals"] == 20
    # What the fake answered is what the connector counted, in every cycle.
    for cycle, seen in zip(run.cycles, run.breakdowns, strict=True):
        assert seen.answered + seen.limited == cycle["xero"]["requests"]
    lines = xero_targets(run)
    assert any(line.startswith("met    books, N=20") for line in lines)
    assert any(line.startswith("met    quiet cycle") for line in lines)
    assert any("where the time goes" in line for line in lines)
