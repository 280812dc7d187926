"""The Xero client against the fake Xero: batches, idempotency keys, lost answers, limits,
tenant choice, contacts, status changes, reads; every request checked against Xero's spec."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from pydantic import SecretStr

from connector.errors import ConfigError
from connector.http import decode_json
from connector.targets.xero.auth import ClientCredentials, XeroCredentials
from connector.targets.xero.client import (
    PauseGate,
    XeroClient,
    XeroDailyLimitReached,
    deep_link,
    idempotency_key,
)
from mappings.targets.xero import plan_invoice
from mappings.targets.xero_profile import XeroSettings
from sandbox.server import ServiceServer
from sandbox.xero import API, FakeXero
from tests.xero_support import (
    BASE,
    CONTACT,
    FakeClock,
    FakeTransport,
    ValidatingTransport,
    credentials_for,
    fake_with_contact,
    ledger,
    make_client,
    validate,
)


def payloads(count: int, start: int = 1) -> list[dict[str, object]]:
    return [
        plan_invoice(
            ledger([(1_000 + i, True), (250, False)], Decimal(10), kantata_id=str(i)),
            XeroSettings(),
        ).payload(CONTACT)
        for i in range(start, start + count)
    ]


def writes(transport: FakeTransport) -> list[httpx.Request]:
    return [r for r in transport.sent if r.method in ("PUT", "POST") and "/api.xro/" in str(r.url)]


def test_batches_hold_at_most_50_with_summarize_errors_false_and_a_key() -> None:
    client, fake, transport, _ = make_client(fake_with_contact(Decimal(10)))
    results = client.create_invoices(payloads(120))
    assert [r.ok for r in results] == [True] * 120
    assert [r.document["Reference"] for r in results if r.document] == [
        f"KS-{i}" for i in range(1, 121)
    ]
    sent = writes(transport)
    sizes = [len(httpx.Response(200, content=r.content).json()["Invoices"]) for r in sent]
    assert sizes == [50, 50, 20]
    for request in sent:
        assert request.url.params["summarizeErrors"] == "false"
        key = request.headers["Idempotency-Key"]
        assert len(key) <= 128
        body = decode_json(request.content)
        assert key == idempotency_key("PUT", "/Invoices", body)
    assert len(fake.docs["Invoices"]) == 120


def test_one_bad_invoice_fails_alone_with_its_message() -> None:
    client, fake, _t, _c = make_client(fake_with_contact(Decimal(10)))
    batch = payloads(3)
    batch[1]["LineItems"][0]["AccountCode"] = "999"  # type: ignore[index]
    results = client.create_invoices(batch)
    assert [r.ok for r in results] == [True, False, True]
    assert "Account code '999'" in results[1].errors[0]
    assert len(fake.docs["Invoices"]) == 2


def test_idempotency_key_names_one_body() -> None:
    body = {"Invoices": payloads(2)}
    same = {"Invoices": payloads(2)}
    other = {"Invoices": payloads(2, start=3)}
    assert idempotency_key("PUT", "/Invoices", body) == idempotency_key("PUT", "/Invoices", same)
    assert idempotency_key("PUT", "/Invoices", body) != idempotency_key("PUT", "/Invoices", other)
    assert idempotency_key("PUT", "/Invoices", body) != idempotency_key("POST", "/Invoices", body)
    # The same body twice: the fake replays the stored answer and makes nothing new.
    client, fake, _t, _c = make_client(fake_with_contact(Decimal(10)))
    first = client.create_invoices(body["Invoices"])
    second = client.create_invoices(same["Invoices"])
    assert [r.document["InvoiceID"] for r in first if r.document] == [
        r.document["InvoiceID"] for r in second if r.document
    ]
    assert len(fake.docs["Invoices"]) == 2


@pytest.mark.parametrize("keys_remembered", [True, False])
def test_a_lost_answer_is_resolved_by_looking_up_references_not_by_resending(
    keys_remembered: bool,
) -> None:
    client, fake, transport, _ = make_client(fake_with_contact(Decimal(10)))
    fake.remember_keys = keys_remembered
    fake.drop_answers(1)
    results = client.create_invoices(payloads(60))
    assert all(r.ok for r in results)
    assert [r.looked_up for r in results] == [True] * 50 + [False] * 10
    assert len(fake.docs["Invoices"]) == 60  # no duplicate
    methods = [(r.method, r.url.path.rsplit("/", 1)[-1]) for r in transport.sent]
    assert methods == [
        ("POST", "token"),
        ("GET", "connections"),
        ("PUT", "Invoices"),
        ("GET", "Invoices"),
        ("PUT", "Invoices"),
    ]
    lookup = transport.sent[3]
    assert lookup.url.params["createdByMyApp"] == "true"
    assert lookup.url.params["pageSize"] == "1000"
    assert lookup.url.params["where"] == " OR ".join(f'Reference=="KS-{i}"' for i in range(1, 51))


def test_a_lost_answer_of_a_batch_that_never_arrived_resends_only_then() -> None:
    client, fake, transport, _ = make_client(fake_with_contact(Decimal(10)))
    calls = {"n": 0}
    original = transport.handle_request

    def lose_first_write(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and calls["n"] == 0:
            calls["n"] += 1
            raise httpx.ReadError("reset before Xero read it", request=request)
        return original(request)

    transport.handle_request = lose_first_write  # type: ignore[method-assign]
    results = client.create_invoices(payloads(3))
    assert all(r.ok and not r.looked_up for r in results)
    assert len(fake.docs["Invoices"]) == 3
    lookup = next(
        r for r in transport.sent if r.url.path.endswith("/Invoices") and r.method == "GET"
    )
    assert lookup.url.params["where"] == " OR ".join(f'Reference=="KS-{i}"' for i in (1, 2, 3))


def test_a_429_pauses_every_client_sharing_the_gate_until_retry_after() -> None:
    client, fake, _t, clock = make_client(FakeXero(per_minute=2))
    gate = client._gate
    other = XeroClient(
        client.tokens,
        base_url=client.base_url,
        http=client._http,
        tenant_id=fake.tenants[0].tenant_id,
        gate=gate,
        clock=clock,
        sleep=clock.sleep,
    )
    fake.set_clock(datetime(2026, 12, 1, 9, 0, 50, tzinfo=UTC))
    client.accounts()
    client.accounts()
    assert client.limits.minute_remaining == 0
    client.tax_rates()  # 429 with Retry-After: waits till the next minute, then succeeds
    assert fake.stats.statuses.get("429") == 1
    assert fake.clock.now() >= datetime(2026, 12, 1, 9, 1, 0, tzinfo=UTC)
    gate.pause(30)
    start = clock.now
    other.accounts()
    assert clock.now - start >= 30


def test_the_day_limit_raises_a_dedicated_error_with_the_resume_time() -> None:
    client, fake, transport, _ = make_client(FakeXero(per_day=1))
    fake.set_clock(datetime(2026, 12, 1, 23, 0, 0, tzinfo=UTC))
    client.accounts()
    with pytest.raises(XeroDailyLimitReached) as info:
        client.tax_rates()
    assert info.value.resume_at == datetime(2026, 12, 2, 0, 0, 0, tzinfo=UTC)
    assert "daily limit reached; resumes after 2026-12-02 00:00:00" in str(info.value)
    assert len([r for r in transport.sent if r.url.path.endswith("TaxRates")]) == 1


def test_tenant_comes_from_connections_and_must_be_one() -> None:
    client, fake, _t, _c = make_client()
    client.organisation()
    assert client.tenant_id == fake.tenants[0].tenant_id
    two, _f, _t2, _c2 = make_client(FakeXero(tenants=2))
    with pytest.raises(ConfigError, match="reach 2 organisations"):
        two.organisation()


def test_organisation_deep_link_accounts_and_tax_rates() -> None:
    client, _f, _t, _c = make_client()
    code = client.organisation()["ShortCode"]
    assert deep_link(code, "abc") == (
        "https://go.xero.com/organisationlogin/default.aspx?shortcode=!sbx00"
        "&redirecturl=/AccountsReceivable/View.aspx?InvoiceID=abc"
    )
    assert {a["Code"] for a in client.accounts()} >= {"200", "860"}
    assert {t["TaxType"] for t in client.tax_rates()} >= {"OUTPUT", "NONE"}


def test_contacts_found_by_number_then_name_else_created_in_one_batch() -> None:
    client, fake, transport, _ = make_client()
    fake.contacts["a"] = {"ContactID": "a", "Name": "Acme", "ContactNumber": "c1"}
    fake.contacts["b"] = {"ContactID": "b", "Name": "Beta Ltd", "ContactNumber": ""}
    found = client.contacts_for(
        [("c1", "Acme renamed"), ("c2", "beta ltd"), ("c3", "Gamma"), ("c4", "Delta")]
    )
    assert found["c1"] == "a" and found["c2"] == "b"
    assert {fake.contacts[found["c3"]]["ContactNumber"], fake.contacts[found["c4"]]["Name"]} == {
        "c3",
        "Delta",
    }
    assert len(writes(transport)) == 1


def test_status_changes_void_delete_and_a_paid_invoice_is_refused() -> None:
    client, fake, _t, _c = make_client(fake_with_contact(Decimal(10)))
    made = client.create_invoices(payloads(3))
    ids = [(r.document["InvoiceID"], r.document["Reference"]) for r in made if r.document]
    approved = client.set_status("Invoices", [(i, ref, "AUTHORISED") for i, ref in ids])
    assert all(r.ok for r in approved)
    fake.pay(ids[2][0], fake.docs["Invoices"][ids[2][0]]["Total"])
    results = client.set_status(
        "Invoices", [(ids[0][0], ids[0][1], "VOIDED"), (ids[2][0], ids[2][1], "VOIDED")]
    )
    assert results[0].ok and results[0].document and results[0].document["Status"] == "VOIDED"
    assert not results[1].ok and "not of valid status" in results[1].errors[0]
    assert fake.docs["Invoices"][ids[2][0]]["Status"] == "PAID"


def test_edit_in_place_keeps_line_item_ids() -> None:
    client, _fake, _t, _c = make_client(fake_with_contact(Decimal(10)))
    [made] = client.create_invoices(payloads(1))
    assert made.document is not None
    doc = made.document
    plan = plan_invoice(
        ledger([(2_000, True), (250, False)], Decimal(10), kantata_id="1"), XeroSettings()
    )
    keep = {"ex0": doc["LineItems"][0]["LineItemID"]}
    [edited] = client.update_invoices(
        [plan.payload(CONTACT, xero_id=doc["InvoiceID"], line_item_ids=keep)]
    )
    assert edited.document is not None
    assert edited.document["LineItems"][0]["LineItemID"] == keep["ex0"]
    assert edited.document["Total"] == Decimal("24.50")


def test_changed_since_and_many_references_use_pages_of_1000() -> None:
    client, fake, transport, _ = make_client(fake_with_contact(Decimal(10)))
    client.create_invoices(payloads(5))
    fake.add_foreign("Invoices", {**payloads(1, start=9)[0]})  # made by hand: not ours
    since = fake.clock.now() - timedelta(minutes=1)
    changed = client.changed_since(since)
    assert sorted(d["Reference"] for d in changed) == [f"KS-{i}" for i in range(1, 6)]
    read = transport.sent[-1]
    assert read.headers["If-Modified-Since"] == since.strftime("%Y-%m-%dT%H:%M:%SZ")
    found = client.find_by_references([f"KS-{i}" for i in range(1, 80)])
    assert sum(len(v) for v in found.values()) == 5 and not found["KS-9"]


def test_the_spec_check_catches_a_bad_request() -> None:
    bad = httpx.Request(
        "PUT",
        "http://xero.test/api.xro/2.0/Invoices",
        params={"summarizeErrors": "false"},
        headers={
            "Authorization": "Bearer t",
            "xero-tenant-id": "x",
            "Content-Type": "application/json",
        },
        content=b'{"Invoices":[{"Type":"ACCREC","Total":3}]}',  # Total is read-only
    )
    with pytest.raises(Exception, match=r"Total|read"):
        validate(bad)


def test_gate_is_process_wide_by_default() -> None:
    client, *_ = make_client()
    plain = XeroClient(client.tokens)
    from connector.targets.xero.client import PROCESS_GATE

    assert plain._gate is PROCESS_GATE and isinstance(PROCESS_GATE, PauseGate)


def test_credit_notes_cancel_by_status_draft_deleted_authorised_voided() -> None:
    client, _f, transport, _ = make_client(fake_with_contact(Decimal(10)))
    plans = [
        plan_invoice(ledger([(-1_000 * k, True)], Decimal(10), kantata_id=f"c{k}"), XeroSettings())
        for k in (1, 2)
    ]
    made = client.create_credit_notes([p.payload(CONTACT) for p in plans])
    assert [r.document["Total"] for r in made if r.document] == [Decimal("11.00"), Decimal("22.00")]
    docs = [(r.document["CreditNoteID"], r.document["Reference"]) for r in made if r.document]
    client.approve("CreditNotes", docs[1:])
    results = client.cancel(
        "CreditNotes", [(docs[0][0], docs[0][1], "DRAFT"), (docs[1][0], docs[1][1], "AUTHORISED")]
    )
    assert [r.document["Status"] for r in results if r.document] == ["DELETED", "VOIDED"]
    assert all(len(decode_json(r.content)["CreditNotes"]) <= 50 for r in writes(transport))


def test_over_real_http_a_connection_closed_after_commit_makes_no_duplicate() -> None:
    fake = fake_with_contact(Decimal(10))
    server = ServiceServer(("127.0.0.1", 0), fake)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.port}"
    transport = ValidatingTransport()
    try:
        with httpx.Client(transport=transport, timeout=10) as http:
            clock = FakeClock(fake)
            credentials = XeroCredentials(
                fake.client_id, SecretStr(fake.client_secret), token_url=url + "/connect/token"
            )
            client = XeroClient(
                ClientCredentials(credentials, http=http, clock=clock),
                base_url=url + API,
                connections_url=url + "/connections",
                http=http,
                gate=PauseGate(clock, clock.sleep),
                clock=clock,
                sleep=clock.sleep,
            )
            fake.drop_answers(1)
            results = client.create_invoices(payloads(7))
    finally:
        server.shutdown()
        server.close_all()
        server.server_close()
    assert all(r.ok and r.looked_up for r in results)
    assert len(fake.docs["Invoices"]) == 7
    assert [r.method for r in transport.sent if "/api.xro/" in str(r.url)] == ["PUT", "GET"]


def test_paced_to_60_a_minute_and_at_most_5_in_flight() -> None:
    client, fake, transport, clock = make_client(FakeXero(per_minute=10_000))
    client.accounts()
    start = clock.now
    for _ in range(6):
        client.accounts()
    assert clock.now - start == pytest.approx(6.0)  # one a second: 60 a minute

    inner = transport.handle_request
    flying = {"now": 0, "most": 0}
    lock = threading.Lock()
    gate = threading.Event()

    def slow(request: httpx.Request) -> httpx.Response:
        with lock:
            flying["now"] += 1
            flying["most"] = max(flying["most"], flying["now"])
        gate.wait(5)
        try:
            return inner(request)
        finally:
            with lock:
                flying["now"] -= 1

    transport.handle_request = slow  # type: ignore[method-assign]
    unpaced = XeroClient(
        client.tokens,
        base_url=client.base_url,
        http=client._http,
        tenant_id=fake.tenants[0].tenant_id,
        per_minute=0,
        concurrent=5,
        gate=PauseGate(clock, clock.sleep),
    )
    threads = [threading.Thread(target=unpaced.accounts) for _ in range(8)]
    for thread in threads:
        thread.start()
    for _ in range(200):
        with lock:
            if flying["now"] == 5:
                break
        threading.Event().wait(0.01)
    gate.set()
    for thread in threads:
        thread.join()
    assert flying["most"] == 5


class _BusyTokenEndpoint(FakeTransport):
    """The token endpoint answers its first request 429 with `Retry-After: 7`."""

    def __init__(self, fake: FakeXero) -> None:
        super().__init__(fake)
        self.token_requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/connect/token"):
            self.token_requests += 1
            if self.token_requests == 1:
                return httpx.Response(429, headers={"Retry-After": "7"})
        return super().handle_request(request)


def test_a_429_from_the_token_endpoint_pauses_every_xero_call_until_its_retry_after() -> None:
    fake = fake_with_contact(Decimal(10))
    fake.set_clock(datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC))
    transport = _BusyTokenEndpoint(fake)
    http = httpx.Client(transport=transport)
    clock = FakeClock(fake)
    gate = PauseGate(clock, clock.sleep)
    client = XeroClient(
        ClientCredentials(credentials_for(fake), http=http, clock=clock),
        base_url=BASE + API,
        connections_url=BASE + "/connections",
        http=http,
        gate=gate,
        clock=clock,
        sleep=clock.sleep,
        wall=fake.clock.now,
    )
    start = clock.now
    client.accounts()
    assert transport.token_requests == 2
    assert clock.now - start >= 7  # waited out the Retry-After, not a shorter backoff
    assert gate.wait() == 0.0  # and the pause is over for every client sharing the gate
