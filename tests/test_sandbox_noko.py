"""The fake Noko v2 API over real HTTP on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from sandbox import Sandbox

TOKEN = "sandbox-noko-token"
FIXTURE_EXPENSE_KEYS = {
    "id",
    "price",
    "description",
    "taxable",
    "date",
    "project",
    "invoice",
    "user",
    "url",
    "created_at",
    "updated_at",
}
FIXTURE_INVOICE_KEYS = {
    "id",
    "state",
    "reference",
    "invoice_date",
    "project_name",
    "company_name",
    "company_details",
    "recipient_details",
    "description",
    "footer",
    "show_hours_worked",
    "show_full_report",
    "show_user_summaries",
    "show_project_summaries",
    "show_project_name_for_expenses",
    "customization",
    "rate_calculation",
    "taxes",
    "taxable_amount",
    "taxfree_amount",
    "tax_total_amount",
    "total_amount",
    "taxable_amount_with_currency",
    "taxfree_amount_with_currency",
    "tax_total_amount_with_currency",
    "total_amount_with_currency",
    "payment",
    "payment_transactions",
    "projects",
    "entries",
    "entries_url",
    "expenses",
    "expenses_url",
    "share_url",
    "created_at",
    "updated_at",
    "url",
}


@pytest.fixture
def api(box: Sandbox) -> Iterator[httpx.Client]:
    headers = {"X-NokoToken": TOKEN, "User-Agent": "kantata-sync-tests/1.0"}
    with httpx.Client(base_url=box.noko_url, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture
def admin(box: Sandbox) -> Iterator[httpx.Client]:
    base = box.noko_url.rsplit("/v2", 1)[0] + "/_sandbox"
    with httpx.Client(base_url=base, timeout=10) as client:
        yield client


def decimal_json(response: httpx.Response) -> Any:
    """Parse a body keeping numbers exact."""
    return json.loads(response.text, parse_float=Decimal)


def project(api: httpx.Client, name: str = "Acme", increment: int | None = None) -> int:
    body: dict[str, Any] = {"name": name}
    if increment is not None:
        body["billing_increment"] = increment
    response = api.post("/projects", json=body)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def expense(api: httpx.Client, project_id: int, price: Any, *, taxable: bool = True) -> int:
    response = api.post(
        "/expenses",
        json={"date": "2024-03-01", "project_id": project_id, "price": price, "taxable": taxable},
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def entry(api: httpx.Client, project_id: int, minutes: int, user_id: int | None = None) -> int:
    body: dict[str, Any] = {"date": "2024-03-01", "project_id": project_id, "minutes": minutes}
    if user_id is not None:
        body["user_id"] = user_id
    response = api.post("/entries", json=body)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def invoice(api: httpx.Client, **body: Any) -> httpx.Response:
    body.setdefault("invoice_date", "2024-03-31")
    return api.post("/invoices", json=body)


def test_user_agent_is_required_before_the_token(box: Sandbox) -> None:
    """No User-Agent is a 400 with Noko's message; a missing or wrong token is a 401."""
    with httpx.Client(base_url=box.noko_url) as client:
        bare = client.get("/projects", headers={"User-Agent": "", "X-NokoToken": TOKEN})
        assert bare.status_code == 400
        assert bare.json() == {"message": "User-Agent header is required"}
        wrong = client.get("/projects", headers={"User-Agent": "t/1", "X-NokoToken": "x"})
        assert wrong.status_code == 401
        assert "message" in wrong.json()


def test_expense_create_returns_201_location_and_the_fixture_shape(api: httpx.Client) -> None:
    """POST /expenses answers 201 with Location and the documented expense object."""
    project_id = project(api)
    response = api.post(
        "/expenses",
        json={
            "date": "2024-03-01",
            "project_id": project_id,
            "price": "-14.55",
            "description": "refund",
        },
    )
    assert response.status_code == 201
    body = decimal_json(response)
    assert response.headers["location"].endswith(f"/v2/expenses/{body['id']}")
    assert set(body) == FIXTURE_EXPENSE_KEYS
    assert body["price"] == Decimal("-14.55")
    assert body["taxable"] is True
    assert body["invoice"] is None
    assert body["project"]["id"] == project_id
    assert body["created_at"].endswith("Z")
    missing = api.post("/expenses", json={"date": "2024-03-01", "project_id": project_id})
    assert missing.status_code == 400
    assert missing.json()["errors"] == [
        {"resource": "Expense", "field": "price", "code": "missing_field"}
    ]
    found = api.get("/expenses", params={"description": "REFU", "invoiced": "false"}).json()
    assert [e["id"] for e in found] == [body["id"]]


def test_invoiced_expense_refuses_edit_and_delete(api: httpx.Client) -> None:
    """PUT or DELETE on an invoiced expense is a 400 with code `invoiced`."""
    project_id = project(api)
    expense_id = expense(api, project_id, 10)
    assert invoice(api, expense_ids=[expense_id]).status_code == 201
    for response in (
        api.put(f"/expenses/{expense_id}", json={"price": 11}),
        api.delete(f"/expenses/{expense_id}"),
    ):
        assert response.status_code == 400
        assert response.json()["errors"] == [
            {"resource": "Expense", "field": "invoice", "code": "invoiced"}
        ]
    free = expense(api, project_id, 5)
    edited = api.put(f"/expenses/{free}", json={"price": "7.25", "taxable": False})
    assert edited.status_code == 200
    assert decimal_json(edited)["price"] == Decimal("7.25")
    assert api.delete(f"/expenses/{free}").status_code == 204
    assert api.get(f"/expenses/{free}").status_code == 404


def test_entry_minutes_round_up_to_the_billing_increment(api: httpx.Client) -> None:
    """Entry minutes round up to the project's increment (15 by default, also by project_name)."""
    default = project(api, "Default")
    exact = project(api, "Exact", increment=1)
    assert api.get(f"/entries/{entry(api, default, 50)}").json()["minutes"] == 60
    assert api.get(f"/entries/{entry(api, exact, 50)}").json()["minutes"] == 50
    by_name = api.post(
        "/entries", json={"date": "2024-03-01", "minutes": 1, "project_name": "Brand New"}
    ).json()
    assert by_name["minutes"] == 15
    assert by_name["project"]["billing_increment"] == 15
    assert api.get("/projects", params={"name": "brand"}).json()[0]["name"] == "Brand New"


def test_entry_hashtags_are_parsed_out_of_the_description(api: httpx.Client) -> None:
    """As the docs' example entry ("noko" with the tag "#noko"): each hashtag becomes a tag and
    the description comes back without its "#"; other text is kept as sent."""
    acme = project(api, "Tags")
    created = api.post(
        "/entries",
        json={
            "date": "2024-03-01",
            "project_id": acme,
            "minutes": 15,
            "description": "Fix #123 for #design-review, a#b [KS-1/te5]",
        },
    ).json()
    assert created["description"] == "Fix 123 for design-review, a#b [KS-1/te5]"
    assert [t["formatted_name"] for t in created["tags"]] == ["#123", "#design-review"]
    plain = api.post(
        "/entries",
        json={"date": "2024-03-01", "project_id": acme, "minutes": 15, "description": "No tags"},
    ).json()
    assert (plain["description"], plain["tags"]) == ("No tags", [])


def test_skewed_totals_differ_by_the_minor_units_asked(api: httpx.Client, box: Sandbox) -> None:
    """`skew_totals`: a Noko whose arithmetic is not money.md's, for chosen references."""
    acme = project(api, "Skew")
    body = invoice(api, reference="R-1", expense_ids=[expense(api, acme, "10.00")]).json()
    box.noko.skew_totals(1, ["R-1"])
    assert str(api.get(f"/invoices/{body['id']}").json()["total_amount"]) == "10.01"
    box.noko.skew_totals(0)
    assert str(api.get(f"/invoices/{body['id']}").json()["total_amount"]) == "10.0"


def test_usd_invoice_totals_follow_money_rules_exactly(api: httpx.Client) -> None:
    """USD totals: per-entry half-up, taxable/taxfree split, each tax half-up, 2 decimals."""
    project_id = project(api, increment=1)
    response = invoice(
        api,
        reference="KS-1",
        entry_ids=[entry(api, project_id, 50)],
        expense_ids=[
            expense(api, project_id, "12.50"),
            expense(api, project_id, "-2.25", taxable=False),
        ],
        rate_calculation={
            "calculation_method": "standard_hourly_rate",
            "standard_hourly_rate": "99.99",
        },
        taxes=[{"name": "VAT", "percentage": 20}, {"name": "City", "percentage": "8.25"}],
    )
    assert response.status_code == 201, response.text
    assert response.headers["location"].endswith(f"/v2/invoices/{response.json()['id']}")
    # 50/60 x 99.99 = 83.325 -> 83.33; taxable 95.83; 19.166 -> 19.17; 7.905975 -> 7.91
    text = response.text
    assert '"taxable_amount":95.83' in text
    assert '"taxfree_amount":-2.25' in text
    assert '"tax_total_amount":27.08' in text
    assert '"total_amount":120.66' in text
    body = response.json()
    assert set(body) == FIXTURE_INVOICE_KEYS
    assert body["state"] == "unpaid"
    assert body["payment"] is None
    assert (body["entries"], body["expenses"]) == (1, 2)
    assert body["url"].endswith(f"/v2/invoices/{body['id']}")
    assert [t["name"] for t in body["taxes"]] == ["VAT", "City"]
    assert body["total_amount_with_currency"] == "$120.66"


def test_jpy_and_kwd_totals_use_the_currency_decimals(api: httpx.Client) -> None:
    """JPY amounts are whole numbers in JSON, KWD amounts carry three decimals."""
    project_id = project(api, increment=1)
    jpy = invoice(
        api,
        entry_ids=[entry(api, project_id, 50)],
        expense_ids=[expense(api, project_id, 1500)],
        rate_calculation={
            "calculation_method": "standard_hourly_rate",
            "standard_hourly_rate": 10001,
        },
        customization={"currency_code": "JPY"},
        taxes=[{"percentage": 10}],
    )
    assert jpy.status_code == 201, jpy.text
    # 8334.17 -> 8334 yen; tax 10% of 9834 = 983.4 -> 983
    assert '"total_amount":10817,' in jpy.text
    assert '"taxfree_amount":0,' in jpy.text
    assert jpy.json()["customization"]["currency_symbol"] == "¥"
    kwd = invoice(
        api,
        entry_ids=[entry(api, project_id, 20)],
        expense_ids=[expense(api, project_id, "1.500")],
        rate_calculation={
            "calculation_method": "standard_hourly_rate",
            "standard_hourly_rate": "37.125",
        },
        customization={"currency_code": "KWD"},
        taxes=[{"percentage": 20}],
    )
    assert kwd.status_code == 201, kwd.text
    assert '"taxable_amount":13.875,' in kwd.text
    assert '"tax_total_amount":2.775,' in kwd.text
    assert '"total_amount":16.650,' in kwd.text
    listed = api.get("/invoices", params={"currency_code": "KWD"})
    assert [i["id"] for i in listed.json()] == [kwd.json()["id"]]


def test_custom_and_flat_rate_calculations(api: httpx.Client, box: Sandbox) -> None:
    """custom_hourly_rates prices each user's entries; flat_rate is charged once."""
    other = box.noko.add_user("Pat", "Partner", "pat@example.com")
    project_id = project(api, increment=1)
    custom = invoice(
        api,
        entry_ids=[entry(api, project_id, 60), entry(api, project_id, 30, user_id=other)],
        rate_calculation={
            "calculation_method": "custom_hourly_rates",
            "standard_hourly_rate": 100,
            "custom_hourly_rates": [{"user": other, "hourly_rate": "40.01"}],
        },
    )
    assert custom.status_code == 201, custom.text
    assert '"total_amount":120.01,' in custom.text  # 100 + 20.005 -> 20.01
    flat = invoice(
        api,
        entry_ids=[entry(api, project_id, 60), entry(api, project_id, 45)],
        rate_calculation={"calculation_method": "flat_rate", "flat_rate": "999.99"},
    )
    assert '"total_amount":999.99,' in flat.text
    bad = invoice(api, rate_calculation={"calculation_method": "hourly"})
    assert bad.status_code == 400


def test_create_refuses_missing_or_invoiced_items_and_creates_nothing(
    api: httpx.Client, box: Sandbox
) -> None:
    """Any missing or already-invoiced entry or expense: 400 with itemized errors, no invoice."""
    project_id = project(api)
    taken = expense(api, project_id, 5)
    assert invoice(api, expense_ids=[taken]).status_code == 201
    free_entry = entry(api, project_id, 30)
    response = invoice(api, entry_ids=[free_entry, 424242], expense_ids=[taken, 99])
    assert response.status_code == 400
    body = response.json()
    assert body["message"] == "Entries or Expenses could not be added"
    assert body["errors"] == [
        {"resource": "Entry", "field": "entry_ids[424242]", "code": "missing"},
        {"resource": "Expense", "field": f"expense_ids[{taken}]", "code": "invoiced"},
        {"resource": "Expense", "field": "expense_ids[99]", "code": "missing"},
    ]
    assert len(api.get("/invoices").json()) == 1
    assert api.get(f"/entries/{free_entry}").json()["invoice"] is None
    assert invoice(api, reference="x").status_code == 201
    no_date = api.post("/invoices", json={"reference": "y"})
    assert no_date.status_code == 400
    assert no_date.json()["errors"][0]["code"] == "missing_field"


def test_tax_percentage_beyond_two_decimals_is_refused(api: httpx.Client) -> None:
    """Noko keeps two decimals: 8.875 % is a 400, 8.88 % is accepted."""
    refused = invoice(api, taxes=[{"name": "NYC", "percentage": "8.875"}])
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["field"] == "taxes[0].percentage"
    assert len(api.get("/invoices").json()) == 0
    accepted = invoice(api, taxes=[{"name": "NYC", "percentage": "8.88"}])
    assert accepted.status_code == 201
    assert decimal_json(accepted)["taxes"][0]["percentage"] == Decimal("8.88")


def test_paid_and_locked_invoices_refuse_changes(api: httpx.Client, box: Sandbox) -> None:
    """Edits, item changes and deletes get code `paid` on a paid invoice, `locked` when locked."""
    project_id = project(api)
    paid_id = invoice(api, expense_ids=[expense(api, project_id, 5)]).json()["id"]
    assert api.put(f"/invoices/{paid_id}/paid").status_code == 204
    paid = api.get(f"/invoices/{paid_id}").json()
    assert paid["state"] == "paid"
    assert paid["payment"]["paid_at"].endswith("Z")
    extra = expense(api, project_id, 1)
    for response in (
        api.put(f"/invoices/{paid_id}", json={"description": "x"}),
        api.put(f"/invoices/{paid_id}/add_expenses", json={"expense_ids": [extra]}),
        api.put(f"/invoices/{paid_id}/remove_all_taxes"),
        api.delete(f"/invoices/{paid_id}"),
    ):
        assert response.status_code == 400
        assert response.json()["errors"][0]["code"] == "paid"
    assert api.put(f"/invoices/{paid_id}/unpaid").status_code == 204
    assert api.put(f"/invoices/{paid_id}", json={"description": "ok"}).status_code == 200
    box.noko.lock(paid_id)
    locked = api.put(f"/invoices/{paid_id}/remove_all_expenses")
    assert locked.status_code == 400
    assert locked.json()["errors"][0]["code"] == "locked"
    assert api.delete(f"/invoices/{paid_id}").json()["errors"][0]["code"] == "locked"


def test_delete_uninvoices_entries_and_expenses(api: httpx.Client) -> None:
    """Deleting an invoice returns 204 and marks its entries and expenses uninvoiced."""
    project_id = project(api)
    entry_id = entry(api, project_id, 15)
    expense_id = expense(api, project_id, 3)
    invoice_id = invoice(api, entry_ids=[entry_id], expense_ids=[expense_id]).json()["id"]
    assert api.get(f"/expenses/{expense_id}").json()["invoice"]["id"] == invoice_id
    assert api.delete(f"/invoices/{invoice_id}").status_code == 204
    assert api.get(f"/invoices/{invoice_id}").status_code == 404
    assert api.get(f"/expenses/{expense_id}").json()["invoice"] is None
    assert api.get(f"/entries/{entry_id}").json()["invoice"] is None
    assert [e["id"] for e in api.get("/expenses", params={"invoiced": "false"}).json()] == [
        expense_id
    ]


def test_item_and_tax_actions_change_totals(api: httpx.Client) -> None:
    """add/remove expenses, entries and taxes answer 204 and change the totals."""
    project_id = project(api, increment=1)
    invoice_id = invoice(
        api,
        rate_calculation={"calculation_method": "standard_hourly_rate", "standard_hourly_rate": 60},
    ).json()["id"]
    first, second = expense(api, project_id, 10), expense(api, project_id, 20)
    entry_id = entry(api, project_id, 30)
    assert (
        api.put(
            f"/invoices/{invoice_id}/add_expenses", json={"expense_ids": [first, second]}
        ).status_code
        == 204
    )
    assert (
        api.put(f"/invoices/{invoice_id}/add_entries", json={"entry_ids": [entry_id]}).status_code
        == 204
    )
    assert (
        api.put(
            f"/invoices/{invoice_id}/add_taxes", json={"taxes": [{"name": "GST", "percentage": 10}]}
        ).status_code
        == 204
    )
    body = api.get(f"/invoices/{invoice_id}")
    assert '"total_amount":66.00' in body.text
    tax_id = body.json()["taxes"][0]["id"]
    assert (
        api.put(
            f"/invoices/{invoice_id}/remove_expenses", json={"expense_ids": [second, 12345]}
        ).status_code
        == 204
    )
    assert (
        api.put(f"/invoices/{invoice_id}/remove_taxes", json={"tax_ids": [tax_id]}).status_code
        == 204
    )
    assert '"total_amount":40.00' in api.get(f"/invoices/{invoice_id}").text
    assert api.put(f"/invoices/{invoice_id}/remove_all_entries").status_code == 204
    assert [e["id"] for e in api.get(f"/invoices/{invoice_id}/expenses").json()] == [first]
    assert api.get(f"/invoices/{invoice_id}/entries").json() == []
    bad = api.put(f"/invoices/{invoice_id}/add_entries", json={"entry_ids": [777]})
    assert bad.status_code == 400
    assert bad.json()["errors"] == [
        {"resource": "Entry", "field": "entry_ids[777]", "code": "missing"}
    ]


def test_reference_filter_matches_containing_text(api: httpx.Client) -> None:
    """`reference=KS-12` also returns KS-120, as Noko's contains-filter does."""
    for reference in ("KS-12", "KS-120", "KS-3"):
        assert invoice(api, reference=reference).status_code == 201
    found = sorted(
        i["reference"] for i in api.get("/invoices", params={"reference": "KS-12"}).json()
    )
    assert found == ["KS-12", "KS-120"]
    generated = invoice(api).json()["reference"]
    assert generated


def test_link_header_pages_through_a_bare_array(api: httpx.Client) -> None:
    """Lists are bare arrays paged by per_page with absolute next/prev/first/last links."""
    for n in range(5):
        invoice(api, reference=f"R-{n}")
    seen: list[str] = []
    url: str | None = f"{api.base_url}invoices?per_page=2&state=unpaid"
    pages = 0
    while url:
        response = api.get(url)
        assert isinstance(response.json(), list)
        seen += [i["reference"] for i in response.json()]
        links = response.links
        assert links["first"]["url"].startswith("http://127.0.0.1:")
        assert "state=unpaid" in links["last"]["url"]
        if pages:
            assert "prev" in links
        url = links.get("next", {}).get("url")
        pages += 1
    assert pages == 3
    assert sorted(seen) == [f"R-{n}" for n in range(5)]
    assert len(api.get("/invoices", params={"per_page": 5000}).json()) == 5


def test_updated_at_changes_on_every_change_and_filters_are_inclusive(
    api: httpx.Client, box: Sandbox
) -> None:
    """Each change moves `updated_at` forward; updated_from/updated_to include their bounds."""
    box.noko.set_clock(datetime(2024, 3, 31, 9, 0, tzinfo=UTC))
    invoice_id = invoice(api).json()["id"]
    stamps = [api.get(f"/invoices/{invoice_id}").json()["updated_at"]]
    api.put(f"/invoices/{invoice_id}", json={"description": "one"})
    stamps.append(api.get(f"/invoices/{invoice_id}").json()["updated_at"])
    api.put(f"/invoices/{invoice_id}/add_taxes", json={"taxes": [{"percentage": 1}]})
    stamps.append(api.get(f"/invoices/{invoice_id}").json()["updated_at"])
    assert stamps == sorted(set(stamps))
    assert stamps[0] == "2024-03-31T09:00:00Z"
    last = stamps[-1]
    assert len(api.get("/invoices", params={"updated_from": last}).json()) == 1
    assert len(api.get("/invoices", params={"updated_to": last}).json()) == 1
    assert api.get("/invoices", params={"updated_from": "2024-04-01T00:00:00Z"}).json() == []
    assert api.get("/invoices", params={"updated_from": "soon"}).status_code == 400


def test_admin_human_edits_state_and_deletes(
    api: httpx.Client, admin: httpx.Client, box: Sandbox
) -> None:
    """`/_sandbox/` edits an invoice as a person would, pays it, and deletes things."""
    project_id = project(api)
    expense_id = expense(api, project_id, 10)
    created = invoice(api, reference="KS-9", expense_ids=[expense_id]).json()
    edited = admin.patch(
        f"/invoices/{created['id']}",
        json={
            "add_expenses": [{"price": "2.50", "description": "added by hand"}],
            "taxes": [{"name": "VAT", "percentage": 10}],
        },
    )
    assert edited.status_code == 200
    assert Decimal(str(edited.json()["total_amount"])) == Decimal("13.75")
    assert edited.json()["updated_at"] > created["updated_at"]
    paid = admin.post(f"/invoices/{created['id']}/state", json={"state": "paid"})
    assert paid.json()["state"] == "paid"
    assert paid.json()["payment"]["payment_method"] == "manual"
    state = admin.get("/state").json()
    stored = state["invoices"][0]
    assert stored["reference"] == "KS-9"
    assert len(stored["expense_ids"]) == 2
    assert {p["name"] for p in state["projects"]} == {"Acme"}
    assert state["stats"]["requests"]["POST /invoices"] == 1
    assert [w["template"] for w in state["stats"]["writes"]] == [
        "/projects",
        "/expenses",
        "/invoices",
    ]
    assert admin.delete(f"/invoices/{created['id']}").status_code == 204
    assert admin.delete(f"/expenses/{expense_id}").status_code == 204
    assert api.get(f"/expenses/{expense_id}").status_code == 404
    assert admin.delete(f"/projects/{project_id}").status_code == 204
    assert api.get("/projects").json() == []
    assert admin.post("/invoices/1/state", json={"state": "paid"}).status_code == 404


def test_state_totals_are_json_numbers_with_exact_decimals(box: Sandbox, api: httpx.Client) -> None:
    """`GET /_sandbox/state` renders amounts as exact JSON numbers, never via float."""
    project_id = project(api)
    invoice(
        api,
        expense_ids=[expense(api, project_id, "0.10"), expense(api, project_id, "0.20")],
        customization={"currency_code": "EUR"},
    )
    raw = httpx.get(box.noko_url.rsplit("/v2", 1)[0] + "/_sandbox/state").text
    assert '"total_amount":0.30' in raw
    assert json.loads(raw)["invoices"][0]["customization"]["currency_code"] == "EUR"
