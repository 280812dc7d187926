"""The fake Xero's own rules: tax per line at 2 dp, statuses, summarizeErrors, idempotency
replay, filters and pages, limits, and service over real HTTP."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from sandbox._core import Request, dumps, loads
from sandbox.server import ServiceServer
from sandbox.xero import API, FakeXero

CONTACT = "00000000-0000-0000-0000-00000000c0de"


@pytest.fixture
def fake() -> FakeXero:
    xero = FakeXero(per_minute=10_000)
    xero.set_clock(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    xero.contacts[CONTACT] = {"ContactID": CONTACT, "Name": "Acme", "ContactNumber": "c1"}
    xero.access_tokens["tok"] = datetime(2027, 1, 1, tzinfo=UTC)
    return xero


def call(
    fake: FakeXero,
    method: str,
    path: str,
    body: Any = None,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    sent = {
        "authorization": "Bearer tok",
        "xero-tenant-id": fake.tenants[0].tenant_id,
        "accept": "application/json",
        **(headers or {}),
    }
    response = fake.handle(
        Request(method, API + path, query or {}, sent, dumps(body) if body is not None else b"")
    )
    return response.status, loads(response.body) if response.body else None


def invoice(ref: str = "KS-1", **extra: Any) -> dict[str, Any]:
    return {
        "Type": "ACCREC",
        "Contact": {"ContactID": CONTACT},
        "Date": "2026-11-02",
        "DueDate": "2026-12-02",
        "Reference": ref,
        "CurrencyCode": "USD",
        "LineItems": [
            {
                "Description": "a",
                "Quantity": 1,
                "UnitAmount": Decimal("14.43"),
                "AccountCode": "200",
                "TaxType": "OUTPUT",
            },
        ],
        **extra,
    }


def put(
    fake: FakeXero,
    *docs: dict[str, Any],
    summarize: bool = False,
    key: str | None = None,
    method: str = "PUT",
) -> tuple[int, Any]:
    query = {} if summarize else {"summarizeErrors": "false"}
    headers = {"idempotency-key": key} if key else {}
    return call(fake, method, "/Invoices", {"Invoices": list(docs)}, query, headers)


def test_tax_per_line_half_up_at_two_decimals_and_overrides(fake: FakeXero) -> None:
    # 14.43 * 15 % = 2.1645 -> 2.16; 14.44 * 15 % = 2.166 -> 2.17: per line, then summed.
    second = {"Description": "b", "UnitAmount": Decimal("14.44"), "AccountCode": "200"}
    status, body = put(fake, invoice(LineItems=[invoice()["LineItems"][0], second]))
    doc = body["Invoices"][0]
    assert status == 200 and doc["TotalTax"] == Decimal("4.33")
    assert doc["Total"] == Decimal("33.20")
    line = {**invoice()["LineItems"][0], "TaxAmount": Decimal("2.17")}
    _s, body = put(fake, invoice("KS-2", LineItems=[line]))
    assert body["Invoices"][0]["TotalTax"] == Decimal("2.17")


def test_without_summarize_errors_a_bad_element_is_a_400_yet_the_good_are_created(
    fake: FakeXero,
) -> None:
    bad = invoice("KS-2", CurrencyCode="KWD")
    status, body = put(fake, invoice(), bad, summarize=True)
    assert status == 400 and "not subscribed to currency KWD" in str(body["Elements"])
    assert [d["Reference"] for d in fake.docs["Invoices"].values()] == ["KS-1"]
    status, body = put(fake, invoice("KS-3"), bad)
    assert status == 200
    assert [d["HasErrors"] for d in body["Invoices"]] == [False, True]


def test_a_repeated_idempotency_key_replays_the_stored_answer(fake: FakeXero) -> None:
    first = put(fake, invoice(), key="k1")
    again = put(fake, invoice("KS-other"), key="k1")
    assert first == again and len(fake.docs["Invoices"]) == 1


def test_status_rules_and_paid_invoices(fake: FakeXero) -> None:
    _s, body = put(fake, invoice(), invoice("KS-2"))
    one, two = (d["InvoiceID"] for d in body["Invoices"])

    def change(doc_id: str, **fields: Any) -> dict[str, Any]:
        _st, answer = put(fake, {"InvoiceID": doc_id, **fields}, method="POST")
        return dict(answer["Invoices"][0])

    assert change(one, Status="DELETED")["Status"] == "DELETED"
    assert change(one, Status="DRAFT")["HasErrors"]  # deleted is final
    assert change(two, Status="AUTHORISED")["Status"] == "AUTHORISED"
    edit = change(two, LineItems=invoice()["LineItems"])
    assert "not of valid status" in edit["ValidationErrors"][0]["Message"]
    fake.pay(two, Decimal("5.00"))
    voided = change(two, Status="VOIDED")
    assert "removed before voiding" in voided["ValidationErrors"][0]["Message"]
    no_due = invoice("KS-3", Status="AUTHORISED")
    del no_due["DueDate"]
    _st, answer = put(fake, no_due)
    assert "DueDate" in answer["Invoices"][0]["ValidationErrors"][0]["Message"]


def test_where_paging_and_if_modified_since(fake: FakeXero) -> None:
    put(fake, *(invoice(f"KS-{i}") for i in range(5)))
    fake.advance_clock(60)
    put(fake, invoice("KS-late"))
    fake.add_foreign("Invoices", invoice("KS-0"))
    _s, body = call(
        fake,
        "GET",
        "/Invoices",
        query={"where": 'Reference=="KS-0" OR Reference=="KS-3"', "page": "1"},
    )
    assert sorted(d["Reference"] for d in body["Invoices"]) == ["KS-0", "KS-0", "KS-3"]
    _s, body = call(
        fake,
        "GET",
        "/Invoices",
        query={"where": 'Reference=="KS-0"', "createdByMyApp": "true", "page": "1"},
    )
    assert len(body["Invoices"]) == 1 and body["Invoices"][0]["LineItems"]
    _s, body = call(fake, "GET", "/Invoices", query={"page": "2", "pageSize": "2"})
    assert body["pagination"] == {"page": 2, "pageSize": 2, "pageCount": 4, "itemCount": 7}
    status, _b = call(fake, "GET", "/Invoices", query={"page": "1", "pageSize": "1001"})
    assert status == 400
    _s, body = call(fake, "GET", "/Invoices")
    assert "LineItems" not in body["Invoices"][0]  # unpaged lists drop line items
    _s, body = call(
        fake,
        "GET",
        "/Invoices",
        query={"page": "1"},
        headers={"if-modified-since": "2026-12-01T09:00:30Z"},
    )
    assert sorted(d["Reference"] for d in body["Invoices"]) == ["KS-0", "KS-late"]


def test_headers_tenant_and_accept_are_required(fake: FakeXero) -> None:
    status, body = call(fake, "GET", "/Accounts", headers={"xero-tenant-id": "nope"})
    assert status == 403 and body["Detail"] == "AuthenticationUnsuccessful"
    status, _b = call(fake, "GET", "/Accounts", headers={"accept": "text/xml"})
    assert status == 406


def test_limits_headers_minute_and_day(fake: FakeXero) -> None:
    fake.per_minute, fake.per_day = 2, 3
    response = fake.handle(
        Request(
            "GET",
            API + "/Accounts",
            {},
            {
                "authorization": "Bearer tok",
                "xero-tenant-id": fake.tenants[0].tenant_id,
                "accept": "application/json",
            },
        )
    )
    assert dict(response.headers)["X-MinLimit-Remaining"] == "1"
    call(fake, "GET", "/Accounts")
    status, _b = call(fake, "GET", "/Accounts")
    assert status == 429
    fake.advance_clock(60)
    call(fake, "GET", "/Accounts")
    raw = fake.handle(
        Request(
            "GET",
            API + "/Accounts",
            {},
            {
                "authorization": "Bearer tok",
                "xero-tenant-id": fake.tenants[0].tenant_id,
                "accept": "application/json",
            },
        )
    )
    headers = dict(raw.headers)
    assert raw.status == 429 and headers["X-Rate-Limit-Problem"] == "day"
    assert int(headers["Retry-After"]) == 15 * 3600 - 60


@pytest.fixture
def served(fake: FakeXero) -> Iterator[str]:
    server = ServiceServer(("127.0.0.1", 0), fake)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        server.close_all()
        server.server_close()


def test_served_over_http_with_client_credentials(fake: FakeXero, served: str) -> None:
    basic = base64.b64encode(f"{fake.client_id}:{fake.client_secret}".encode()).decode()
    token = httpx.post(
        served + "/connect/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic " + basic},
    ).json()
    assert "refresh_token" not in token
    auth = {"Authorization": "Bearer " + token["access_token"]}
    [connection] = httpx.get(served + "/connections", headers=auth).json()
    org = httpx.get(
        served + API + "/Organisation",
        headers={**auth, "xero-tenant-id": connection["tenantId"], "Accept": "application/json"},
    ).json()
    assert org["Organisations"][0]["ShortCode"] == "!sbx00"
