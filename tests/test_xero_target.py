"""`XeroTarget` against the in-process fake Xero: batches and the request budget, lost answers,
updates in place, cancels, credit notes, the total check before approval, the day limit,
currencies; every request checked against Xero's OpenAPI spec (tests/xero_support.py)."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from connector.errors import (
    AuthError,
    LimitReachedError,
    PermanentApiError,
    TransientApiError,
)
from connector.http import decode_json
from connector.targets.base import (
    Cancel,
    Cancelled,
    DuplicateInTargetError,
    Target,
    TargetRefusedError,
    Write,
    Written,
)
from connector.targets.xero.auth import ClientCredentials, XeroCredentials
from connector.targets.xero.client import PauseGate, XeroClient, XeroDailyLimitReached
from connector.targets.xero.target import XeroTarget
from mappings.errors import MappingError
from mappings.ledger import LedgerDocument
from mappings.targets.xero_profile import XeroSettings
from sandbox.server import ServiceServer
from sandbox.xero import API, FakeXero
from tests.xero_support import (
    CONTACT,
    FakeClock,
    FakeTransport,
    ValidatingTransport,
    fake_with_contact,
    ledger,
    make_client,
)

RATE = Decimal(10)


def target_for(
    fake: FakeXero | None = None, settings: XeroSettings | None = None
) -> tuple[XeroTarget, FakeXero, FakeTransport]:
    client, fake, transport, _clock = make_client(fake or fake_with_contact(RATE))
    return XeroTarget(client, settings or XeroSettings()), fake, transport


def doc(kantata_id: str, cents: int = 10_000, **kwargs: Any) -> LedgerDocument:
    return ledger([(cents, True), (250, False)], RATE, kantata_id=kantata_id, **kwargs)


def writes(ids: range | list[str]) -> list[Write]:
    return [Write(str(i), doc(str(i), 10_000 + int(i))) for i in ids]


def api_calls(transport: FakeTransport) -> list[tuple[str, str]]:
    return [
        (r.method, r.url.path.rsplit("2.0/", 1)[-1])
        for r in transport.sent
        if "/api.xro/" in str(r.url)
    ]


def live(fake: FakeXero, kind: str = "Invoices") -> list[dict[str, Any]]:
    return [d for d in fake.docs[kind].values() if d["Status"] in ("DRAFT", "AUTHORISED", "PAID")]


def copy_of(stored: dict[str, Any]) -> dict[str, Any]:
    """A create body for another draft like a stored one (what a late create would make)."""
    keep = ("Type", "Contact", "Date", "DueDate", "Reference", "CurrencyCode", "LineAmountTypes")
    return {
        **{k: v for k, v in stored.items() if k in keep},
        "Contact": {"ContactID": stored["Contact"]["ContactID"]},
        "Status": "DRAFT",
        "LineItems": [
            {k: v for k, v in line.items() if k != "LineItemID"} for line in stored["LineItems"]
        ],
    }


def only(results: list[Any]) -> Written:
    [result] = results
    assert isinstance(result, Written), result
    return result


def test_it_is_a_target() -> None:
    target: Target = target_for()[0]
    assert target.batch_size == 50 and target.name == "Xero"


def test_a_first_sync_of_120_makes_3_creates_3_approvals_and_stays_in_budget() -> None:
    target, fake, transport = target_for()
    results: list[Any] = []
    for start in (1, 51, 101):  # as the engine's batcher hands them: at most 50 a call
        results += target.create(writes(range(start, min(start + 50, 121))))
    assert all(isinstance(r, Written) and r.created and not r.problems for r in results)
    assert [r.state for r in results] == ["AUTHORISED"] * 120
    docs = fake.docs["Invoices"]
    assert len(docs) == 120
    for result in results:
        stored = docs[result.target_id]
        kantata = doc(stored["Reference"][3:], 10_000 + int(stored["Reference"][3:]))
        assert stored["Total"] * 100 == kantata.total_minor
        assert result.invoice["id"] == result.target_id
        assert result.invoice["paid"] is False
        assert result.link and result.target_id in result.link and "shortcode=!sbx00" in result.link
    list(target.changes_since(fake.clock.now() - timedelta(minutes=5)))
    calls = api_calls(transport)
    assert calls.count(("PUT", "Invoices")) == 3
    assert calls.count(("POST", "Invoices")) == 3
    assert len(calls) <= 0.1 * 120 + 10, calls
    # organisation, accounts, tax rates, contacts, one look-up listing: one each
    for read in ("Organisation", "Accounts", "TaxRates", "Contacts"):
        assert calls.count(("GET", read)) == 1
    assert calls.count(("GET", "Invoices")) == 2  # the look-up, then the changes
    for request in transport.sent:
        if request.method in ("PUT", "POST") and "/api.xro/" in str(request.url):
            assert request.url.params["summarizeErrors"] == "false"
            assert request.headers["Idempotency-Key"]
            assert len(decode_json(request.content)["Invoices"]) <= 50


def test_120_in_one_call_are_sent_50_to_a_request() -> None:
    target, _fake, transport = target_for()
    results = target.create(writes(range(1, 121)))
    assert all(isinstance(r, Written) and r.state == "AUTHORISED" for r in results)
    calls = api_calls(transport)
    assert calls.count(("PUT", "Invoices")) == 3 and calls.count(("POST", "Invoices")) == 3


@pytest.mark.parametrize("keys_remembered", [True, False])
def test_a_dropped_answer_after_commit_is_resolved_without_a_duplicate(
    keys_remembered: bool,
) -> None:
    target, fake, transport = target_for()
    fake.remember_keys = keys_remembered
    fake.drop_answers(1)  # the drafts' PUT commits, its answer is lost
    results = target.create(writes(range(1, 31)))
    assert all(isinstance(r, Written) and r.state == "AUTHORISED" for r in results)
    assert len(fake.docs["Invoices"]) == 30
    assert len(live(fake)) == 30
    assert api_calls(transport).count(("PUT", "Invoices")) == 1
    fake.drop_answers(1)  # now the approval's answer is lost
    more = target.create(writes(range(31, 41)))
    assert all(isinstance(r, Written) and r.state == "AUTHORISED" for r in more)
    assert len(fake.docs["Invoices"]) == 40


def test_a_lost_state_file_adopts_what_is_there_instead_of_creating_again() -> None:
    target, fake, _transport = target_for()
    first = target.create(writes(range(1, 11)))
    again, _f, transport2 = target_for(fake)  # a new process: nothing in memory
    index = again.new_index(wanted=True)
    index.load(again.find("KS-"), "KS-")
    assert len(index.by_reference) == 10
    results = again.create(writes(range(1, 11)))
    assert [r.target_id for r in results if isinstance(r, Written)] == [
        r.target_id for r in first if isinstance(r, Written)
    ]
    assert all(isinstance(r, Written) and r.adopted and not r.created for r in results)
    assert len(fake.docs["Invoices"]) == 10
    assert ("PUT", "Invoices") not in api_calls(transport2)
    # find() already listed ours: the create looked nothing up again
    assert api_calls(transport2).count(("GET", "Invoices")) == 1


def test_an_adopted_draft_is_verified_then_approved() -> None:
    target, fake, _t = target_for(settings=XeroSettings(keep_as_draft=True))
    [made] = target.create(writes(["5"]))
    assert isinstance(made, Written) and made.state == "DRAFT"
    fresh, _f, _t2 = target_for(fake)
    adopted = only(fresh.create(writes(["5"])))
    assert adopted.adopted and adopted.state == "AUTHORISED"
    assert adopted.target_id == made.target_id


def test_two_of_ours_with_one_reference_are_a_duplicate_for_people() -> None:
    target, fake, _t = target_for()
    target.create(writes(["9"]))
    [stored] = fake.docs["Invoices"].values()
    fake.idempotency.clear()  # the same body again: a key Xero no longer remembers
    assert target.client.create_invoices([copy_of(stored)])[0].ok
    fresh, _f, _t3 = target_for(fake)
    [result] = fresh.create(writes(["9"]))
    assert isinstance(result, DuplicateInTargetError)
    with pytest.raises(DuplicateInTargetError):
        fresh.find_one("KS-9")


def test_update_in_place_keeps_the_invoice_id_and_line_ids() -> None:
    target, fake, transport = target_for(FakeXero(output_rate=RATE, allow_authorised_edits=True))
    made = only(target.create([Write("1", doc("1", 10_000))]))
    before = fake.docs["Invoices"][made.target_id]
    line_id = before["LineItems"][0]["LineItemID"]
    changed = ledger([(12_000, True), (250, False), (500, False)], RATE, kantata_id="1")
    updated = only(target.update([Write("1", changed, target_id=made.target_id)]))
    assert updated.target_id == made.target_id
    after = fake.docs["Invoices"][made.target_id]
    assert after["Status"] == "AUTHORISED"
    assert after["Total"] == Decimal("139.50")
    assert after["LineItems"][0]["LineItemID"] == line_id
    assert not updated.problems and "1 lines added" in updated.detail
    assert len(fake.docs["Invoices"]) == 1
    edits = [
        decode_json(r.content)
        for r in transport.sent
        if r.method == "POST"
        and "/api.xro/" in str(r.url)
        and "LineItems" in decode_json(r.content)["Invoices"][0]
    ]
    assert edits and edits[0]["Invoices"][0]["InvoiceID"] == made.target_id


def test_a_draft_is_edited_in_place_and_then_approved() -> None:
    target, fake, _t = target_for(settings=XeroSettings(keep_as_draft=True))
    made = only(target.create([Write("1", doc("1"))]))
    assert made.state == "DRAFT"
    target.settings = XeroSettings()
    updated = only(target.update([Write("1", doc("1", 20_000), target_id=made.target_id)]))
    assert updated.target_id == made.target_id and updated.state == "AUTHORISED"
    assert fake.docs["Invoices"][made.target_id]["Total"] == Decimal("222.50")


def test_an_approved_invoice_xero_will_not_edit_is_voided_and_made_again() -> None:
    target, fake, _t = target_for()  # the fake refuses line edits of approved invoices
    made = only(target.create([Write("1", doc("1"))]))
    updated = only(target.update([Write("1", doc("1", 20_000), target_id=made.target_id)]))
    assert updated.target_id != made.target_id
    assert fake.docs["Invoices"][made.target_id]["Status"] == "VOIDED"
    assert [d["Total"] for d in live(fake)] == [Decimal("222.50")]
    assert "VOIDED" in updated.detail


@pytest.mark.parametrize("paid", ["full", "part"])
def test_a_paid_or_part_paid_invoice_is_never_touched(paid: str) -> None:
    target, fake, transport = target_for()
    made = only(target.create([Write("1", doc("1"))]))
    total = fake.docs["Invoices"][made.target_id]["Total"]
    fake.pay(made.target_id, total if paid == "full" else Decimal("1.00"))
    sent = len(transport.sent)
    [update] = target.update([Write("1", doc("1", 20_000), target_id=made.target_id)])
    [cancel] = target.cancel([Cancel("1", "KS-1", made.target_id)])
    assert isinstance(update, TargetRefusedError) and isinstance(cancel, TargetRefusedError)
    assert update.code == ("PAID" if paid == "full" else "part_paid")
    assert [r.method for r in transport.sent[sent:]] == ["GET", "GET"]  # read, never written
    assert fake.docs["Invoices"][made.target_id]["Total"] == total


def test_cancel_deletes_drafts_and_voids_approved_ones() -> None:
    target, fake, transport = target_for(settings=XeroSettings(keep_as_draft=True))
    draft = only(target.create([Write("1", doc("1"))]))
    target.settings = XeroSettings()
    approved = only(target.create([Write("2", doc("2"))]))
    results = target.cancel(
        [Cancel("1", "KS-1", draft.target_id), Cancel("2", "KS-2", approved.target_id)]
    )
    assert [r.state for r in results if isinstance(r, Cancelled)] == ["DELETED", "VOIDED"]
    assert fake.docs["Invoices"][draft.target_id]["Status"] == "DELETED"
    assert fake.docs["Invoices"][approved.target_id]["Status"] == "VOIDED"
    # both in one request, and again: nothing more to do
    assert api_calls(transport).count(("POST", "Invoices")) == 2
    again = target.cancel([Cancel("2", "KS-2", approved.target_id)])
    assert isinstance(again[0], Cancelled) and again[0].state == "VOIDED"


def test_a_negative_kantata_total_becomes_a_credit_note_of_minus_that_total() -> None:
    target, fake, transport = target_for()
    credit = ledger([(-5_000, True)], RATE, kantata_id="c1")
    made = only(target.create([Write("c1", credit)]))
    [note] = fake.docs["CreditNotes"].values()
    assert note["Type"] == "ACCRECCREDIT" and note["Status"] == "AUTHORISED"
    assert note["Total"] == Decimal("55.00")  # minus Kantata's -55.00
    assert made.invoice["total_amount"] == "-55.00"
    assert made.target_id == note["CreditNoteID"]
    assert "ViewCreditNote" in (made.link or "")
    assert not fake.docs["Invoices"]
    assert target.get(made.target_id)["state"] == "AUTHORISED"  # type: ignore[index]
    cancelled = target.cancel([Cancel("c1", "KS-c1", made.target_id)])
    assert isinstance(cancelled[0], Cancelled) and cancelled[0].state == "VOIDED"
    assert ("PUT", "CreditNotes") in api_calls(transport)


class WrongTaxXero(FakeXero):
    """A Xero that ignores a line's TaxAmount and rounds each line's own tax instead."""

    def _line(self, item: Any, old: dict[str, dict[str, Any]]) -> dict[str, Any]:
        item = {k: v for k, v in item.items() if k != "TaxAmount"}
        return super()._line(item, old)


def test_a_wrong_total_is_never_approved_and_is_discarded() -> None:
    fake = WrongTaxXero(output_rate=RATE)
    fake.contacts[CONTACT] = {"ContactID": CONTACT, "Name": "Acme", "ContactNumber": ""}
    target, fake, transport = target_for(fake)
    # Kantata: 10 % of 20.10 = 2.01; Xero rounding each 10.05's tax up: 1.01 + 1.01 = 2.02
    bad = ledger([(1_005, True), (1_005, True)], RATE, kantata_id="1")
    good = doc("2")
    results = target.create([Write("1", bad), Write("2", good)])
    wrong, right = results
    assert isinstance(wrong, Written) and wrong.created and wrong.state == "DRAFT"
    assert wrong.problems and "Total" in " ".join(wrong.problems)
    assert isinstance(right, Written) and right.state == "AUTHORISED"
    approvals = [
        decode_json(r.content)["Invoices"]
        for r in transport.sent
        if r.method == "POST" and "/Invoices" in str(r.url)
    ]
    assert [[e["InvoiceID"] for e in a] for a in approvals] == [[right.target_id]]
    assert target.discard("KS-1", wrong.target_id) == 1
    assert fake.docs["Invoices"][wrong.target_id]["Status"] == "DELETED"


def test_the_day_limit_ends_the_call_with_limit_reached() -> None:
    target, fake, _t = target_for(FakeXero(output_rate=RATE, per_day=3))
    fake.contacts[CONTACT] = {"ContactID": CONTACT, "Name": "Acme", "ContactNumber": ""}
    with pytest.raises(LimitReachedError) as info:
        target.create(writes(range(1, 5)))
    assert isinstance(info.value, XeroDailyLimitReached)
    assert not isinstance(info.value, TransientApiError)
    assert str(info.value).startswith("Xero's daily limit reached; resumes after ")
    assert info.value.resume_at == datetime(2026, 12, 2, tzinfo=UTC)


def test_jpy_is_pushed_at_two_decimals_and_verified() -> None:
    target, fake, _t = target_for()
    yen = ledger([(12_345, True), (100, False)], RATE, currency="JPY", exponent=0, kantata_id="j")
    made = only(target.create([Write("j", yen)]))
    stored = fake.docs["Invoices"][made.target_id]
    assert stored["CurrencyCode"] == "JPY" and stored["Total"] == Decimal("13680.00")
    assert made.state == "AUTHORISED" and not made.problems


def test_what_xero_cannot_hold_fails_that_invoice_alone_with_a_mapping_error() -> None:
    target, fake, _t = target_for()
    dinar = ledger([(1_000, False)], currency="KWD", exponent=3, kantata_id="k")
    franc = ledger([(1_000, False)], currency="CHF", kantata_id="f")  # not enabled
    results = target.create([Write("k", dinar), Write("f", franc), Write("1", doc("1"))])
    assert isinstance(results[0], MappingError) and results[0].invoice_id == "k"
    assert isinstance(results[1], MappingError) and results[1].field == "currency"
    assert "CHF" in str(results[1]) and results[1].invoice_id == "f"
    assert isinstance(results[2], Written) and results[2].state == "AUTHORISED"
    assert [d["Reference"] for d in live(fake)] == ["KS-1"]


class PickyXero(FakeXero):
    def _save_doc(self, kind: str, element: dict[str, Any], update: bool) -> dict[str, Any]:
        if element.get("Reference") == "KS-2" and "LineItems" in element:
            raise ValueError("Invoice # must be unique.")
        return super()._save_doc(kind, element, update)


def test_a_validation_error_fails_that_invoice_alone_with_xeros_message() -> None:
    fake = PickyXero(output_rate=RATE)
    target, fake, _t = target_for(fake)
    results = target.create(writes(["1", "2", "3"]))
    assert isinstance(results[1], PermanentApiError)
    assert "KS-2" in str(results[1]) and "Invoice # must be unique." in str(results[1])
    assert [isinstance(r, Written) for r in results] == [True, False, True]


def test_contacts_are_listed_once_found_by_number_or_name_and_made_in_one_batch() -> None:
    target, fake, transport = target_for(FakeXero(output_rate=RATE))
    beta = "00000000-0000-0000-0000-0000000000b2"
    fake.contacts[beta] = {"ContactID": beta, "Name": "Beta", "ContactNumber": ""}
    docs = [
        dataclasses.replace(doc(str(i)), customer_name=name)
        for i, name in enumerate(["Acme", "beta", "Gamma", "Acme"], start=1)
    ]
    results = target.create([Write(d.kantata_id, d) for d in docs])
    assert all(isinstance(r, Written) for r in results)
    contacts = [fake.docs["Invoices"][r.target_id]["Contact"]["ContactID"] for r in results]  # type: ignore[union-attr]
    assert contacts[1] == beta and contacts[0] == contacts[3] and len(set(contacts)) == 3
    target.create([Write("9", dataclasses.replace(doc("9"), customer_name="Gamma"))])
    calls = api_calls(transport)
    assert calls.count(("GET", "Contacts")) == 1 and calls.count(("PUT", "Contacts")) == 1


def test_mapped_contact_from_the_profile_is_used() -> None:
    fake = FakeXero(output_rate=RATE)
    mapped = "11111111-2222-3333-4444-555555555555"
    fake.contacts[mapped] = {"ContactID": mapped, "Name": "Books name", "ContactNumber": ""}
    target, fake, _t = target_for(fake, XeroSettings(contacts={"Acme": mapped}))
    made = only(target.create([Write("1", doc("1"))]))
    assert fake.docs["Invoices"][made.target_id]["Contact"]["ContactID"] == mapped
    assert len(fake.contacts) == 1


def test_reads_are_neutral_and_a_quiet_cycle_is_one_request() -> None:
    target, fake, _transport = target_for()
    made = only(target.create([Write("1", doc("1"))]))
    fake.advance_clock(60)
    since = fake.clock.now()
    fresh, _f, transport2 = target_for(fake)
    seen: list[datetime | None] = []
    assert list(fresh.changes_since(since, on_server_time=seen.append)) == []
    assert len(seen) == 1 and seen[0] is not None
    assert abs(seen[0] - fake.clock.now()) < timedelta(seconds=5)
    before = len(api_calls(transport2))
    assert list(fresh.changes_since(since)) == []
    assert len(api_calls(transport2)) - before == 1  # no credit notes: one request
    fake.pay(made.target_id, Decimal("5.00"))
    [changed] = list(fresh.changes_since(since))
    assert changed["id"] == made.target_id and changed["state"] == "AUTHORISED"
    assert changed["part_paid"] is True and changed["paid"] is False
    assert changed["total_amount"] == "112.50" and changed["updated_at"].startswith("2026-12-01")
    got = fresh.get(made.target_id)
    assert got is not None and fresh.carries_marker(got, "KS-1")
    assert not fresh.carries_marker(got, "KS-2")
    assert fresh.as_asked(doc("1"), got) and not fresh.as_asked(doc("1", 9_000), got)
    assert not fresh.header_differs(doc("1"), got)
    moved = dataclasses.replace(doc("1"), due_date=doc("1").due_date + timedelta(days=1))  # type: ignore[operator]
    assert fresh.header_differs(moved, got)
    assert fresh.line_drift(got, made.lines or []) == []
    assert fresh.line_drift(got, [*(made.lines or []), "gone"]) != []
    assert fresh.get("00000000-0000-0000-0000-000000000000") is None


def test_a_hand_made_invoice_with_our_reference_is_never_adopted() -> None:
    target, fake, _t = target_for()
    hand = fake.add_foreign(
        "Invoices",
        {
            "Type": "ACCREC",
            "Contact": {"Name": "Acme"},
            "Reference": "KS-1",
            "LineItems": [{"Description": "by hand", "LineAmount": "5.00", "AccountCode": "200"}],
        },
    )
    assert target.find_one("KS-1") is None
    made = only(target.create([Write("1", doc("1"))]))
    assert made.created and made.target_id != hand["InvoiceID"]


def test_a_late_copy_of_a_create_is_swept_once_the_invoice_is_done() -> None:
    target, fake, _transport = target_for()
    made = only(target.create([Write("1", doc("1"))]))
    other = only(target.create([Write("2", doc("2"))]))
    # the same drafts landing late (after their resend made the real ones)
    late = target.client.create_invoices(
        [copy_of(fake.docs["Invoices"][w.target_id]) for w in (made, other)]
    )
    assert all(r.ok for r in late)
    assert target.sweep_late_writes(lambda ref: ref == "KS-1") == 1
    statuses = sorted(d["Status"] for d in fake.docs["Invoices"].values())
    assert statuses == ["AUTHORISED", "AUTHORISED", "DELETED", "DRAFT"]
    assert fake.docs["Invoices"][made.target_id]["Status"] == "AUTHORISED"
    assert target.sweep("KS-1") == 0


def test_an_edit_back_to_an_earlier_version_is_applied_not_answered_from_a_stored_key() -> None:
    target, fake, _t = target_for(FakeXero(output_rate=RATE, allow_authorised_edits=True))
    made = only(target.create([Write("1", doc("1", 10_000))]))
    for cents in (10_000, 20_000, 10_000, 20_000):
        updated = only(target.update([Write("1", doc("1", cents), target_id=made.target_id)]))
        stored = fake.docs["Invoices"][made.target_id]
        assert stored["Total"] * 100 == doc("1", cents).total_minor
        assert not updated.problems


def test_a_create_after_a_discard_makes_a_new_draft_even_where_xero_keeps_keys() -> None:
    fake = WrongTaxXero(output_rate=RATE)
    fake.contacts[CONTACT] = {"ContactID": CONTACT, "Name": "Acme", "ContactNumber": ""}
    target, fake, _t = target_for(fake)
    bad = ledger([(1_005, True), (1_005, True)], RATE, kantata_id="1")
    first = only(target.create([Write("1", bad)]))
    assert first.problems and target.discard("KS-1", first.target_id) == 1
    second = only(target.create([Write("1", bad)]))
    assert second.created and second.target_id != first.target_id
    assert fake.docs["Invoices"][second.target_id]["Status"] == "DRAFT"


def test_the_day_limit_between_drafts_and_approval_leaves_drafts_the_next_day_approves() -> None:
    fake = FakeXero(output_rate=RATE, per_day=6)  # settings 3, look-up 1, contacts 1, drafts 1
    fake.contacts[CONTACT] = {"ContactID": CONTACT, "Name": "Acme", "ContactNumber": ""}
    target, fake, transport = target_for(fake)
    with pytest.raises(LimitReachedError):
        target.create(writes(range(1, 6)))
    assert [d["Status"] for d in fake.docs["Invoices"].values()] == ["DRAFT"] * 5
    fake.advance_clock(24 * 3600)
    again = target.create(writes(range(1, 6)))
    assert all(isinstance(r, Written) and r.adopted and r.state == "AUTHORISED" for r in again)
    assert len(fake.docs["Invoices"]) == 5
    assert api_calls(transport).count(("PUT", "Invoices")) == 1


def test_a_batch_whose_answers_are_lost_three_times_fails_transiently_then_is_looked_up() -> None:
    target, fake, transport = target_for()
    inner = transport.handle_request

    def lose_puts(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and request.url.path.endswith("/Invoices"):
            raise httpx.ReadError("reset", request=request)
        return inner(request)

    transport.handle_request = lose_puts  # type: ignore[method-assign]
    results = target.create(writes(range(1, 4)))
    assert all(isinstance(r, TransientApiError) for r in results)
    transport.handle_request = inner  # type: ignore[method-assign]
    listed = api_calls(transport).count(("GET", "Invoices"))
    made = target.create(writes(range(1, 4)))
    assert all(isinstance(r, Written) and r.created for r in made)
    # the write left in doubt made the next create list ours again before sending
    assert api_calls(transport).count(("GET", "Invoices")) == listed + 1
    assert len(fake.docs["Invoices"]) == 3


def test_a_refused_token_ends_the_call_with_an_auth_error() -> None:
    target, fake, _t = target_for()
    fake.client_secret = "rotated-by-the-operator"
    fake.revoke_tokens()
    with pytest.raises(AuthError):
        target.create(writes(["1"]))
    assert not fake.docs["Invoices"]


def test_concurrent_batches_of_creates_and_updates_share_one_look_up() -> None:
    target, fake, transport = target_for(FakeXero(output_rate=RATE, allow_authorised_edits=True))
    first = target.create(writes(range(1, 11)))
    outcomes: list[Any] = []

    def creating(start: int) -> None:
        outcomes.extend(target.create(writes(range(start, start + 10))))

    def updating() -> None:
        outcomes.extend(
            target.update(
                [
                    Write(
                        w.invoice["Reference"][3:],
                        doc(w.invoice["Reference"][3:], 30_000),
                        target_id=w.target_id,
                    )
                    for w in first
                    if isinstance(w, Written)
                ]
            )
        )

    threads = [threading.Thread(target=creating, args=(s,)) for s in (11, 21, 31)]
    threads.append(threading.Thread(target=updating))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 40 and all(isinstance(o, Written) for o in outcomes)
    assert len(fake.docs["Invoices"]) == 40
    assert len({d["Reference"] for d in fake.docs["Invoices"].values()}) == 40
    assert api_calls(transport).count(("GET", "Invoices")) == 2  # one look-up, one read by ids


def test_over_real_http_an_answer_dropped_after_commit_makes_no_duplicate() -> None:
    fake = fake_with_contact(RATE)
    fake.set_clock(datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC))
    server = ServiceServer(("127.0.0.1", 0), fake)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.port}"
    transport = ValidatingTransport()
    try:
        with httpx.Client(transport=transport, timeout=10) as http:
            clock = FakeClock(fake)
            client = XeroClient(
                ClientCredentials(
                    XeroCredentials(
                        fake.client_id,
                        SecretStr(fake.client_secret),
                        token_url=url + "/connect/token",
                    ),
                    http=http,
                    clock=clock,
                ),
                base_url=url + API,
                connections_url=url + "/connections",
                http=http,
                gate=PauseGate(clock, clock.sleep),
                clock=clock,
                sleep=clock.sleep,
            )
            target = XeroTarget(client, XeroSettings())
            fake.drop_answers(2)  # the drafts' answer and the approval's answer are lost
            results = target.create(writes(range(1, 8)))
    finally:
        server.shutdown()
        server.close_all()
        server.server_close()
    assert all(isinstance(r, Written) and r.state == "AUTHORISED" for r in results)
    assert len(fake.docs["Invoices"]) == 7


def test_after_a_restart_a_late_draft_beside_the_approved_invoice_is_swept() -> None:
    target, fake, _t = target_for()
    made = only(target.create([Write("1", doc("1"))]))
    fake.idempotency.clear()
    assert target.client.create_invoices([copy_of(fake.docs["Invoices"][made.target_id])])[0].ok
    restarted, _f, _t2 = target_for(fake)
    list(restarted.find("KS-"))
    assert restarted.sweep_late_writes(lambda ref: False) == 0
    assert restarted.sweep_late_writes(lambda ref: True) == 1
    assert [d["Status"] for d in live(fake)] == ["AUTHORISED"]


def test_hand_made_lines_are_kept_unless_forced_and_never_approved_wrong() -> None:
    target, fake, _t = target_for(settings=XeroSettings(keep_as_draft=True))
    made = only(target.create([Write("1", doc("1"))]))
    stored = fake.docs["Invoices"][made.target_id]
    hand = {
        "Description": "by hand",
        "LineAmount": Decimal("7.00"),
        "AccountCode": "200",
        "TaxType": "NONE",
    }
    lines = [
        {k: v for k, v in line.items() if k in ("LineItemID", "Description", "LineAmount")}
        for line in stored["LineItems"]
    ]
    [edited] = target.client.update_invoices(
        [{"InvoiceID": made.target_id, "LineItems": [*lines, hand]}]
    )
    assert edited.ok, edited.errors
    got = target.get(made.target_id)
    assert got is not None and target.line_drift(got, made.lines or []) == [
        "3 lines, pushed 2",
        "1 line(s) added in Xero",
    ]
    target.settings = XeroSettings()
    kept = only(target.update([Write("1", doc("1", 20_000), target_id=made.target_id)]))
    assert kept.problems and kept.state == "DRAFT"  # the hand line keeps the total off
    assert len(fake.docs["Invoices"][made.target_id]["LineItems"]) == 3
    forced = only(
        target.update([Write("1", doc("1", 20_000), target_id=made.target_id, force=True)])
    )
    assert not forced.problems and forced.state == "AUTHORISED"
    assert [line["Description"] for line in fake.docs["Invoices"][made.target_id]["LineItems"]] == [
        "Line 0 [KS-1/ex0]",
        "Line 1 [KS-1/ex1]",
    ]


def test_a_total_turning_negative_voids_the_invoice_and_makes_a_credit_note() -> None:
    target, fake, _t = target_for()
    made = only(target.create([Write("1", doc("1"))]))
    credit = ledger([(-3_000, True)], RATE, kantata_id="1")
    updated = only(target.update([Write("1", credit, target_id=made.target_id)]))
    assert fake.docs["Invoices"][made.target_id]["Status"] == "VOIDED"
    [note] = fake.docs["CreditNotes"].values()
    assert updated.target_id == note["CreditNoteID"] and note["Total"] == Decimal("33.00")
    assert updated.invoice["total_amount"] == "-33.00" and "total changed sign" in updated.detail


def test_a_contact_made_by_hand_since_the_listing_is_found_by_listing_again() -> None:
    target, fake, transport = target_for()
    target.create([Write("1", doc("1"))])  # contacts listed now
    zeta = "00000000-0000-0000-0000-000000000e7a"
    fake.contacts[zeta] = {"ContactID": zeta, "Name": "Zeta", "ContactNumber": ""}
    made = only(target.create([Write("2", dataclasses.replace(doc("2"), customer_name="Zeta"))]))
    assert fake.docs["Invoices"][made.target_id]["Contact"]["ContactID"] == zeta
    assert len(fake.contacts) == 2
    assert api_calls(transport).count(("GET", "Contacts")) == 2


def test_a_listing_stops_at_xeros_page_count(monkeypatch: pytest.MonkeyPatch) -> None:
    import connector.targets.xero.client as client_module

    target, _fake, transport = target_for()
    target.create(writes(range(1, 11)))
    monkeypatch.setattr(client_module, "PAGE", 5)
    before = api_calls(transport).count(("GET", "Invoices"))
    assert len(target.client.list_ours("Invoices", "KS-")) == 10
    assert api_calls(transport).count(("GET", "Invoices")) - before == 2  # not a third, empty one


def test_a_payment_landing_between_the_read_and_the_edit_is_refused_not_voided() -> None:
    target, fake, _t = target_for(FakeXero(output_rate=RATE, allow_authorised_edits=True))
    made = only(target.create([Write("1", doc("1"))]))
    read = target._current

    def read_then_paid(ids: Any) -> dict[str, dict[str, Any]]:
        found = read(ids)
        fake.pay(made.target_id, Decimal("1.00"))
        return found

    target._current = read_then_paid  # type: ignore[method-assign]
    [result] = target.update([Write("1", doc("1", 20_000), target_id=made.target_id)])
    assert isinstance(result, TargetRefusedError)
    assert fake.docs["Invoices"][made.target_id]["Status"] == "AUTHORISED"
    assert len(fake.docs["Invoices"]) == 1


def client_doc(kantata_id: str, client_id: str | None, name: str = "Acme") -> LedgerDocument:
    return dataclasses.replace(doc(kantata_id), customer_name=name, customer_id=client_id)


def client_doc_write(kantata_id: str, client_id: str | None, name: str = "Acme") -> Write:
    return Write(kantata_id, client_doc(kantata_id, client_id, name))


def contact_of(fake: FakeXero, result: Any) -> dict[str, Any]:
    assert isinstance(result, Written), result
    contact_id = fake.docs["Invoices"][result.target_id]["Contact"]["ContactID"]
    contact: dict[str, Any] = fake.contacts[contact_id]
    return contact


def test_two_clients_of_one_name_get_two_contacts_by_contact_number() -> None:
    target, fake, transport = target_for(FakeXero(output_rate=RATE))
    results = target.create([client_doc_write(i, c) for i, c in (("1", "501"), ("2", "502"))])
    first, second = (contact_of(fake, r) for r in results)
    assert (first["ContactNumber"], second["ContactNumber"]) == ("501", "502")
    assert first["ContactID"] != second["ContactID"]
    assert (first["Name"], second["Name"]) == ("Acme", "Acme (502)")  # Xero: names are unique
    [again] = target.create([client_doc_write("3", "502")])
    assert contact_of(fake, again)["ContactID"] == second["ContactID"]
    assert len(fake.contacts) == 2
    calls = api_calls(transport)
    assert calls.count(("GET", "Contacts")) == 1 and calls.count(("PUT", "Contacts")) == 1


def test_an_existing_contact_with_the_client_id_as_contact_number_is_reused() -> None:
    fake = FakeXero(output_rate=RATE)
    books = "00000000-0000-0000-0000-000000000501"
    fake.contacts[books] = {"ContactID": books, "Name": "Acme Holdings", "ContactNumber": "501"}
    hand = "00000000-0000-0000-0000-0000000000a1"
    fake.contacts[hand] = {"ContactID": hand, "Name": "Acme", "ContactNumber": ""}
    target, fake, transport = target_for(fake)
    [made] = target.create([client_doc_write("1", "501")])
    assert contact_of(fake, made)["ContactID"] == books  # by number, before the name
    assert len(fake.contacts) == 2 and ("PUT", "Contacts") not in api_calls(transport)
    current = fake.docs["Invoices"][made.target_id]  # type: ignore[union-attr]
    assert not target.header_differs(client_doc("1", "501"), current)
    assert target.header_differs(client_doc("1", "777"), current)  # 777's contact: Acme


def test_the_name_is_the_fallback_but_never_another_clients_contact() -> None:
    fake = FakeXero(output_rate=RATE)
    hand = "00000000-0000-0000-0000-0000000000a1"
    fake.contacts[hand] = {"ContactID": hand, "Name": "Acme", "ContactNumber": ""}
    other = "00000000-0000-0000-0000-0000000000b1"
    fake.contacts[other] = {"ContactID": other, "Name": "Beta", "ContactNumber": "999"}
    target, fake, _t = target_for(fake)
    made = target.create([client_doc_write("1", "501"), client_doc_write("2", "502", "Beta")])
    assert contact_of(fake, made[0])["ContactID"] == hand  # made by hand, no number: by name
    beta = contact_of(fake, made[1])
    assert beta["ContactID"] != other
    assert (beta["Name"], beta["ContactNumber"]) == ("Beta (502)", "502")
