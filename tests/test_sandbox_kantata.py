"""The fake Kantata OX API over real HTTP on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from sandbox import FakeKantata, Sandbox, generate

TOKEN = "sandbox-kantata-token"
SUMMER = datetime(2024, 7, 1, 12, 0, 0, tzinfo=UTC)
WINTER = datetime(2024, 1, 15, 12, 0, 0, tzinfo=UTC)
ALL_INCLUDES = (
    "time_entries,expenses,additional_items,fixed_fee_items,billing_milestones,"
    "workspaces,user,recipient,external_references"
)


@pytest.fixture
def api(box: Sandbox) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=box.kantata_url, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture
def admin(box: Sandbox) -> Iterator[httpx.Client]:
    base = box.kantata_url.rsplit("/api/v1", 1)[0] + "/_sandbox"
    with httpx.Client(base_url=base, timeout=10) as client:
        yield client


def _simple_invoice(kantata: FakeKantata, **kwargs: Any) -> int:
    lines = kwargs.pop("lines", [{"kind": "additional_item", "amount_in_cents": 1000}])
    return kantata.add_invoice(lines=lines, **kwargs)


def _ids(payload: dict[str, Any]) -> list[int]:
    return [int(r["id"]) for r in payload["results"]]


def test_requests_without_the_bearer_token_get_401_oauth(api: httpx.Client) -> None:
    """A missing or wrong bearer token gets 401 with Kantata's oauth error body."""
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer nope"}):
        response = api.get("/invoices", headers=headers)
        assert response.status_code == 401
        assert response.json()["errors"][0]["type"] == "oauth"


def test_token_without_financial_permission_gets_403(box: Sandbox, api: httpx.Client) -> None:
    """A known token without financial permission reads /users/me but gets 403 on invoices."""
    box.kantata.add_token("viewer-token", financial=False)
    headers = {"Authorization": "Bearer viewer-token"}
    assert api.get("/users/me", headers=headers).status_code == 200
    refused = api.get("/invoices", headers=headers)
    assert refused.status_code == 403
    assert refused.json()["errors"][0]["type"] == "authorization"


def test_list_uses_kantata_response_format(box: Sandbox, api: httpx.Client) -> None:
    """A list has count, ordered results, a string-keyed map, no *_ids without include, meta."""
    ids = [_simple_invoice(box.kantata) for _ in range(3)]
    body = api.get("/invoices", params={"order": "id:desc"}).json()
    assert body["count"] == 3
    assert body["results"] == [{"key": "invoices", "id": str(i)} for i in reversed(ids)]
    assert set(body["invoices"]) == {str(i) for i in ids}
    invoice = body["invoices"][str(ids[0])]
    assert invoice["id"] == str(ids[0])
    assert "time_entry_ids" not in invoice
    assert "expense_ids" not in invoice
    assert invoice["workspace_ids"]
    assert all(isinstance(w, str) for w in invoice["workspace_ids"])
    assert invoice["title"] == f"Invoice #{invoice['user_invoice_number']:05d}"
    assert isinstance(invoice["user_invoice_number"], int)
    assert body["meta"] == {"count": 3, "page_count": 1, "page_number": 1, "page_size": 20}


def test_default_order_is_created_at_desc_and_json_suffix_works(
    box: Sandbox, api: httpx.Client
) -> None:
    """Without `order` the newest invoice comes first; `/invoices.json` is the same endpoint."""
    box.kantata.set_clock(SUMMER)
    first = _simple_invoice(box.kantata)
    box.kantata.advance_clock(60)
    second = _simple_invoice(box.kantata)
    assert _ids(api.get("/invoices").json()) == [second, first]
    assert _ids(api.get("/invoices.json").json()) == [second, first]
    assert api.get(f"/invoices/{first}.json").json()["results"][0]["id"] == str(first)


def test_include_side_loads_every_association(box: Sandbox, api: httpx.Client) -> None:
    """`include` adds the *_ids arrays and id-keyed maps; an empty association is `{}`."""
    client = box.kantata.add_user("Casey Client", "casey@client.example")
    workspace = box.kantata.add_workspace("Client — Website", client_id=client)
    invoice_id = box.kantata.add_invoice(
        workspace_ids=[workspace],
        lines=[
            {"kind": "time_entry", "time_in_minutes": 60, "rate_in_cents": 10000},
            {"kind": "expense", "amount_in_cents": 2500, "category": "Travel"},
            {"kind": "additional_item", "amount_in_cents": 400},
            {"kind": "fixed_fee_item", "amount_in_cents": 50000, "taxable": True},
        ],
    )
    body = api.get("/invoices", params={"include": ALL_INCLUDES}).json()
    invoice = body["invoices"][str(invoice_id)]
    assert len(invoice["time_entry_ids"]) == 1
    assert invoice["billing_milestone_ids"] == []
    assert invoice["external_reference_ids"] == []
    entry = body["time_entries"][invoice["time_entry_ids"][0]]
    assert entry["time_in_minutes"] == 60
    assert entry["rate_in_cents"] == 10000
    # The schema gives a time entry's and an expense's workspace_id only with a `workspace`
    # include, which the invoice list cannot ask for (it used to be sent anyway).
    assert "workspace_id" not in entry
    expense = body["expenses"][invoice["expense_ids"][0]]
    assert "workspace_id" not in expense
    assert expense["category"] == "Travel"
    item = body["fixed_fee_items"][invoice["fixed_fee_item_ids"][0]]
    assert item["workspace_id"] == str(workspace)
    assert api.get("/invoices", params={"include": "time_entries.workspace"}).status_code == 400
    assert "taxable" not in body["additional_items"][invoice["additional_item_ids"][0]]
    assert body["fixed_fee_items"][invoice["fixed_fee_item_ids"][0]]["taxable"] is True
    assert body["billing_milestones"] == {}
    assert body["external_references"] == {}
    assert body["workspaces"][str(workspace)]["title"] == "Client — Website"
    assert body["users"][str(client)]["email_address"] == "casey@client.example"
    assert invoice["recipient_id"] == str(client)
    assert str(box.kantata.account_user_id) in body["users"]
    assert api.get("/invoices", params={"include": "bogus"}).status_code == 400


def test_timestamps_carry_the_account_offset_with_daylight_saving(
    box: Sandbox, api: httpx.Client
) -> None:
    """Timestamps are Los Angeles local time: -07:00 in summer, -08:00 in winter, no `Z`."""
    box.kantata.set_clock(SUMMER)
    summer = _simple_invoice(box.kantata)
    box.kantata.set_clock(WINTER)
    winter = _simple_invoice(box.kantata)
    invoices = api.get("/invoices").json()["invoices"]
    assert invoices[str(summer)]["created_at"] == "2024-07-01T05:00:00-07:00"
    assert invoices[str(winter)]["created_at"] == "2024-01-15T04:00:00-08:00"


def test_updated_after_and_before_are_strict_in_any_offset(box: Sandbox, api: httpx.Client) -> None:
    """`updated_after`/`updated_before` exclude the exact instant, whatever offset it is sent in."""
    box.kantata.set_clock(SUMMER)
    invoice_id = _simple_invoice(box.kantata)

    def found(**params: str) -> bool:
        return invoice_id in _ids(api.get("/invoices", params=params).json())

    assert not found(updated_after="2024-07-01T12:00:00Z")
    assert not found(updated_after="2024-07-01T05:00:00-07:00")
    assert not found(updated_after="2024-07-01T14:00:00+02:00")
    assert found(updated_after="2024-07-01T11:59:59Z")
    assert found(updated_after="2024-07-01T11:59:59.500000Z")
    assert not found(updated_before="2024-07-01T12:00:00Z")
    assert found(updated_before="2024-07-01T12:00:01Z")
    assert not found(created_after="2024-07-01T12:00:00Z")
    assert found(created_before="2024-07-01T12:00:00.001Z")


def test_invalid_timestamps_and_orders_are_400(api: httpx.Client) -> None:
    """A malformed ISO 8601 filter or an unknown `order` is a 400 validation error."""
    for params in (
        {"updated_after": "yesterday"},
        {"created_before": "2024-13-01T00:00:00Z"},
        {"order": "title:asc"},
        {"order": "id"},
        {"page": "two"},
    ):
        response = api.get("/invoices", params=params)
        assert response.status_code == 400, params
        assert response.json()["errors"][0]["type"] == "validation"


def test_paging_defaults_to_20_and_caps_per_page_at_200(box: Sandbox, api: httpx.Client) -> None:
    """`per_page` defaults to 20 and is capped at 200; `count` is the whole query's total."""
    box.kantata.set_clock(SUMMER)
    for _ in range(230):
        _simple_invoice(box.kantata)
    body = api.get("/invoices").json()
    assert len(body["results"]) == 20
    assert body["meta"] == {"count": 230, "page_count": 12, "page_number": 1, "page_size": 20}
    body = api.get("/invoices", params={"per_page": 500, "page": 2}).json()
    assert len(body["results"]) == 30
    assert body["count"] == 230
    assert body["meta"]["page_size"] == 200
    body = api.get("/invoices", params={"per_page": 200, "page": 3}).json()
    assert body["results"] == []
    assert body["invoices"] == {}
    assert body["count"] == 230


def test_id_asc_paging_is_stable_while_invoices_are_updated(
    box: Sandbox, api: httpx.Client
) -> None:
    """Paging by id:asc over a fixed lower bound sees every invoice once despite updates."""
    box.kantata.set_clock(SUMMER)
    ids = [_simple_invoice(box.kantata) for _ in range(60)]
    box.kantata.advance_clock(10)
    lower = "2024-07-01T11:00:00Z"

    def scan(order: str) -> list[int]:
        seen: list[int] = []
        page = 1
        while True:
            params: dict[str, str | int] = {
                "order": order,
                "updated_after": lower,
                "per_page": 10,
                "page": page,
            }
            body = api.get("/invoices", params=params).json()
            seen += _ids(body)
            if page == 1:
                # Someone edits invoices behind and ahead of the cursor mid-scan.
                box.kantata.advance_clock(1)
                ahead = [i for i in ids if i not in seen][20:23]
                box.kantata.touch(seen[:3] + ahead)
            if page >= body["meta"]["page_count"]:
                return seen
            page += 1

    stable = scan("id:asc")
    assert sorted(stable) == ids
    assert len(stable) == len(set(stable))
    moving = scan("updated_at:asc")
    assert set(ids) - set(moving), "page numbers over a moving updated_at order skip rows"


def test_hundreds_of_invoices_can_share_one_updated_at(box: Sandbox, api: httpx.Client) -> None:
    """`generate(same_updated_at=N)` gives N invoices one identical `updated_at`."""
    box.kantata.set_clock(SUMMER)
    generate(box.kantata, seed=3, invoices=400, same_updated_at=250)
    state = box.kantata.state()["invoices"]
    counts: dict[str, int] = {}
    for invoice in state:
        counts[invoice["updated_at"]] = counts.get(invoice["updated_at"], 0) + 1
    stamp, count = max(counts.items(), key=lambda kv: kv[1])
    assert count >= 250
    body = api.get("/invoices", params={"updated_before": stamp, "per_page": 1}).json()
    after = api.get("/invoices", params={"updated_after": stamp, "per_page": 1}).json()
    assert body["count"] + after["count"] + count == 400


def test_balance_is_the_total_with_half_up_tax_in_each_currency(box: Sandbox) -> None:
    """`balance_in_cents` = lines + round_half_up(taxable x rate), per currency base unit."""
    usd = box.kantata.add_invoice(
        currency="USD",
        tax_rate="8.875",
        lines=[
            {"kind": "time_entry", "time_in_minutes": 30, "rate_in_cents": 101, "taxable": True},
            {"kind": "time_entry", "time_in_minutes": 7, "rate_in_cents": 12345},
            {"kind": "expense", "amount_in_cents": -2500, "taxable": True},
            {"kind": "additional_item", "amount_in_cents": 3449, "taxable": True},
            {"kind": "fixed_fee_item", "amount_in_cents": 100},
        ],
    )
    # 51 (50.5 half-up) + 1440 (1440.25) - 2500 + 3449 + 100; tax 8.875% of 1000 = 88.75 -> 89
    assert box.kantata.invoice_totals(usd) == {
        "subtotal": 2540,
        "taxable_subtotal": 1000,
        "tax": 89,
        "total": 2629,
    }
    jpy = box.kantata.add_invoice(
        currency="JPY",
        tax_rate=10,
        lines=[
            {"kind": "time_entry", "time_in_minutes": 50, "rate_in_cents": 10001, "taxable": True}
        ],
    )
    kwd = box.kantata.add_invoice(
        currency="KWD",
        tax_rate=20,
        lines=[
            {"kind": "time_entry", "time_in_minutes": 20, "rate_in_cents": 37125, "taxable": True},
            {"kind": "billing_milestone", "amount_in_cents": 1500, "taxable": True},
        ],
    )
    state = {i["id"]: i for i in box.kantata.state()["invoices"]}
    assert state[str(usd)]["balance_in_cents"] == 2629
    assert state[str(usd)]["tax_rate"] == Decimal("8.875")
    assert (state[str(jpy)]["currency_base_unit"], state[str(jpy)]["balance_in_cents"]) == (
        1,
        8334 + 833,
    )
    assert (state[str(kwd)]["currency_base_unit"], state[str(kwd)]["balance_in_cents"]) == (
        1000,
        13875 + 2775,
    )


def test_put_nested_external_reference_adds_one_and_refuses_a_second_of_a_service(
    box: Sandbox, api: httpx.Client
) -> None:
    """A nested `external_reference` adds a reference and bumps updated_at; a second nested
    write of the same service is refused (422), since the documents describe the nested form
    for adding one only ("the service_name must be unique"). (It used to update the first.)"""
    box.kantata.set_clock(SUMMER)
    invoice_id = _simple_invoice(box.kantata)
    box.kantata.advance_clock(30)
    ref = {
        "service_name": "noko",
        "service_model": "Invoice",
        "service_model_ref": 26601,
        "status": "pending",
    }
    response = api.put(
        f"/invoices/{invoice_id}",
        json={"invoice": {"external_reference": ref}},
        params={"include": "external_references"},
    )
    assert response.status_code == 200
    body = response.json()
    invoice = body["invoices"][str(invoice_id)]
    assert invoice["updated_at"] == "2024-07-01T05:00:30-07:00"
    stored = body["external_references"][invoice["external_reference_ids"][0]]
    assert stored["service_model_ref"] == "26601"
    assert stored["subject_id"] == str(invoice_id)
    update = {**ref, "status": "successful", "external_link": "https://noko.example/i/1"}
    again = api.put(f"/invoices/{invoice_id}", json={"invoice": {"external_reference": update}})
    assert again.status_code == 422
    assert again.json()["errors"][0]["field"] == "service_name"
    refs = box.kantata.external_references(invoice_id)
    assert len(refs) == 1
    assert refs[0]["status"] == "pending"
    other = {**ref, "service_name": "xero"}
    assert (
        api.put(
            f"/invoices/{invoice_id}", json={"invoice": {"external_reference": other}}
        ).status_code
        == 200
    )
    assert len(box.kantata.external_references(invoice_id)) == 2
    bad = api.put(
        f"/invoices/{invoice_id}",
        json={"invoice": {"external_reference": {**ref, "status": "done"}}},
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["type"] == "validation"


def test_put_id_lists_overwrite_the_invoice_lines(box: Sandbox, api: httpx.Client) -> None:
    """`time_entry_ids` in a PUT replaces the list: left-out entries leave the invoice."""
    invoice_id = box.kantata.add_invoice(
        lines=[
            {"kind": "time_entry", "time_in_minutes": 60, "rate_in_cents": 10000},
            {"kind": "time_entry", "time_in_minutes": 30, "rate_in_cents": 10000},
        ]
    )
    state = box.kantata.invoice_state(invoice_id)
    keep, drop = state["time_entry_ids"]
    response = api.put(
        f"/invoices/{invoice_id}",
        json={"invoice": {"time_entry_ids": [int(keep)]}},
        params={"include": "time_entries"},
    )
    assert response.json()["invoices"][str(invoice_id)]["time_entry_ids"] == [keep]
    assert box.kantata.invoice_state(invoice_id)["balance_in_cents"] == 10000
    empty = api.put(f"/invoices/{invoice_id}", json={"invoice": {"time_entry_ids": []}})
    assert empty.status_code == 422
    unknown = api.put(f"/invoices/{invoice_id}", json={"invoice": {"expense_ids": [1]}})
    assert unknown.status_code == 422
    assert api.put(f"/invoices/{invoice_id}", json={"nothing": 1}).status_code == 400
    assert drop not in box.kantata.invoice_state(invoice_id)["time_entry_ids"]


def test_cancel_and_delete_follow_the_lifecycle(box: Sandbox, api: httpx.Client) -> None:
    """Drafts can be deleted, not cancelled; active invoices can be cancelled, not deleted."""
    draft = _simple_invoice(box.kantata, draft=True)
    active = _simple_invoice(box.kantata)
    assert api.put(f"/invoices/{draft}/cancel").status_code == 422
    assert api.delete(f"/invoices/{active}").status_code == 422
    cancelled = api.put(f"/invoices/{active}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["invoices"][str(active)]["status"] == "cancelled"
    assert api.put(f"/invoices/{active}/cancel").status_code == 422
    deleted = api.delete(f"/invoices/{draft}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    missing = api.get(f"/invoices/{draft}")
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["type"] == "system"
    title = api.get(f"/invoices/{active}").json()["invoices"][str(active)]["title"]
    assert title.startswith("Invoice #")


def test_list_filters_select_the_right_invoices(box: Sandbox, api: httpx.Client) -> None:
    """without_drafts, paid, pending, workspace_id, only and reference filters all apply."""
    other_ws = box.kantata.add_workspace("Other")
    draft = _simple_invoice(box.kantata, draft=True)
    paid = _simple_invoice(box.kantata, status="accepted payment")
    new = _simple_invoice(box.kantata)
    elsewhere = _simple_invoice(box.kantata, workspace_ids=[other_ws])
    box.kantata.upsert_external_reference(
        {
            "subject_type": "Invoice",
            "subject_id": new,
            "service_name": "noko",
            "service_model": "Invoice",
            "service_model_ref": "1",
        }
    )

    def ids(**params: Any) -> set[int]:
        return set(_ids(api.get("/invoices", params=params).json()))

    everything = {draft, paid, new, elsewhere}
    assert ids() == everything
    assert ids(without_drafts="true") == everything - {draft}
    assert ids(paid="true") == {paid}
    assert ids(pending="true") == {new, elsewhere}
    assert ids(workspace_id=str(other_ws)) == {elsewhere}
    assert ids(only=f"{paid},{new},999999") == {paid, new}
    assert ids(has_external_references="true") == {new}
    assert ids(has_external_references="false") == everything - {new}
    assert ids(without_external_reference_service_name="noko") == everything - {new}
    assert ids(without_external_reference_service_name="xero") == everything


def test_external_reference_endpoints_upsert_delete_and_filter(
    box: Sandbox, api: httpx.Client
) -> None:
    """create_or_update creates a reference, then updates it while it names the same object;
    one naming another object is refused (422) until the first is deleted
    (`DELETE /external_references/{id}`, 204); the list filters by subject."""
    first = _simple_invoice(box.kantata)
    second = _simple_invoice(box.kantata)
    body = {
        "external_reference": {
            "subject_type": "Invoice",
            "subject_id": first,
            "service_name": "noko",
            "service_model": "Invoice",
            "service_model_ref": "7",
        }
    }
    created = api.post("/external_references/create_or_update", json=body).json()
    ref_id = created["results"][0]["id"]
    assert created["external_references"][ref_id]["service_model_ref"] == "7"
    body["external_reference"]["status"] = "successful"
    again = api.post("/external_references/create_or_update", json=body).json()
    assert again["results"][0]["id"] == ref_id
    assert again["external_references"][ref_id]["status"] == "successful"
    body["external_reference"]["service_model_ref"] = "8"
    refused = api.post("/external_references/create_or_update", json=body)
    assert refused.status_code == 422
    assert box.kantata.external_references(first)[0]["service_model_ref"] == "7"
    assert api.delete(f"/external_references/{ref_id}").status_code == 204
    assert api.delete(f"/external_references/{ref_id}").status_code == 404
    assert box.kantata.external_references(first) == []
    replaced = api.post("/external_references/create_or_update", json=body).json()
    ref_id = replaced["results"][0]["id"]
    missing = api.post("/external_references/create_or_update", json={"external_reference": {}})
    assert missing.status_code == 400
    listed = api.get(
        "/external_references",
        params={"subject_type": "Invoice", "subject_id": first, "service_name": "noko"},
    ).json()
    assert listed["count"] == 1
    assert listed["external_references"][ref_id]["service_model_ref"] == "8"
    none = api.get("/external_references", params={"subject_id": second}).json()
    assert none["count"] == 0


def test_users_me_returns_the_token_user(box: Sandbox, api: httpx.Client) -> None:
    """`GET /users/me` returns the account user in Kantata's envelope."""
    body = api.get("/users/me").json()
    user_id = body["results"][0]["id"]
    assert body["users"][user_id]["full_name"] == "Avery Admin"
    assert user_id == str(box.kantata.account_user_id)


def test_admin_http_drives_state_and_records_writes(
    box: Sandbox, api: httpx.Client, admin: httpx.Client
) -> None:
    """`/_sandbox/` adds, edits and reads invoices and lists every write body received."""
    created = admin.post(
        "/invoices",
        json={
            "currency": "EUR",
            "tax_rate": 20,
            "lines": [{"kind": "time_entry", "time_in_minutes": 90, "rate_in_cents": 12000}],
        },
    )
    assert created.status_code == 201
    invoice_id = created.json()["id"]
    line_id = int(created.json()["invoice"]["lines"][0]["id"])
    edited = admin.patch(
        f"/invoices/{invoice_id}",
        json={
            "message": "edited",
            "add_lines": [{"kind": "expense", "amount_in_cents": 500, "taxable": True}],
            "remove_line_ids": [line_id],
        },
    )
    assert edited.status_code == 200
    assert edited.json()["balance_in_cents"] == 600
    api.put(
        f"/invoices/{invoice_id}",
        json={
            "invoice": {
                "external_reference": {
                    "service_name": "noko",
                    "service_model": "I",
                    "service_model_ref": "1",
                }
            }
        },
    )
    state = admin.get("/state").json()
    invoice = next(i for i in state["invoices"] if i["id"] == str(invoice_id))
    assert invoice["message"] == "edited"
    assert [line["kind"] for line in invoice["lines"]] == ["expense"]
    assert invoice["external_references"][0]["service_name"] == "noko"
    writes = state["stats"]["writes"]
    assert [w["template"] for w in writes] == ["/invoices/{id}"]
    assert writes[0]["body"] == {
        "invoice": {
            "external_reference": {
                "service_name": "noko",
                "service_model": "I",
                "service_model_ref": "1",
            }
        }
    }
    assert state["stats"]["requests"]["PUT /invoices/{id}"] == 1
    assert admin.post("/reset_stats").status_code == 204
    assert admin.get("/state", params={"invoices": "false"}).json()["stats"]["total"] == 0
    assert admin.delete(f"/invoices/{invoice_id}").status_code == 422
    assert admin.post(f"/invoices/{invoice_id}/cancel").json()["status"] == "cancelled"
    clock = admin.post("/clock", json={"set": "2024-07-01T12:00:00Z"}).json()
    assert clock["frozen"] is True
    assert box.kantata.now() == SUMMER


def test_corrupt_line_shows_a_malformed_amount(box: Sandbox, api: httpx.Client) -> None:
    """`corrupt_line` makes the API return a raw bad value while the balance stays put."""
    invoice_id = _simple_invoice(box.kantata)
    line_id = box.kantata.corrupt_line(invoice_id, "amount_in_cents", "12.5")
    body = api.get(f"/invoices/{invoice_id}", params={"include": "additional_items"}).json()
    assert body["additional_items"][str(line_id)]["amount_in_cents"] == "12.5"
    assert body["invoices"][str(invoice_id)]["balance_in_cents"] == 1000


def test_corruption_is_undone_over_the_admin_api(
    box: Sandbox, api: httpx.Client, admin: httpx.Client
) -> None:
    """`DELETE /_sandbox/invoices/{id}/corrupt` puts back what every corruption of the invoice
    changed (a field, a line's value, a line it added, the total), bumps `updated_at`, and is
    refused for an invoice that was not corrupted."""
    generate(box.kantata, seed=5, invoices=3, draft_rate=0, cancelled_rate=0)
    invoice_id = box.kantata.invoice_ids()[0]
    include = {"include": "additional_items,expenses,fixed_fee_items,time_entries"}
    before = api.get(f"/invoices/{invoice_id}", params=include).json()
    assert admin.delete(f"/invoices/{invoice_id}/corrupt").status_code == 422

    added = admin.post(
        f"/invoices/{invoice_id}/corrupt", json={"field": "no_such_field", "value": "x"}
    )
    assert added.status_code == 200
    admin.post(f"/invoices/{invoice_id}/corrupt", json={"field": "amount_in_cents", "value": "1.5"})
    admin.post(
        f"/invoices/{invoice_id}/corrupt",
        json={"target": "invoice", "field": "tax_rate", "value": "lots"},
    )
    broken = api.get(f"/invoices/{invoice_id}", params=include).json()
    assert broken["invoices"][str(invoice_id)]["tax_rate"] == "lots", broken
    assert broken != before

    undone = admin.delete(f"/invoices/{invoice_id}/corrupt")
    assert undone.status_code == 200, undone.text
    after = api.get(f"/invoices/{invoice_id}", params=include).json()
    restored = after["invoices"][str(invoice_id)]
    original = before["invoices"][str(invoice_id)]
    assert restored["updated_at"] > original["updated_at"]
    assert {k: v for k, v in restored.items() if k != "updated_at"} == {
        k: v for k, v in original.items() if k != "updated_at"
    }
    for kind in ("additional_items", "expenses", "fixed_fee_items", "time_entries"):
        assert after.get(kind) == before.get(kind), kind
    assert admin.delete(f"/invoices/{invoice_id}/corrupt").status_code == 422


def test_generate_is_deterministic_and_realistic() -> None:
    """The same seed gives the same data; it mixes currencies, statuses, kinds and credits."""
    first, second = FakeKantata(), FakeKantata()
    for kantata in (first, second):
        kantata.set_clock(SUMMER)
        generate(kantata, seed=42, invoices=300)
    one, two = first.state(), second.state()
    assert one["invoices"] == two["invoices"]
    invoices = one["invoices"]
    assert len(invoices) == 300
    assert {i["currency"] for i in invoices} == {"USD", "EUR", "JPY", "KWD"}
    assert {i["currency_base_unit"] for i in invoices if i["currency"] == "JPY"} == {1}
    assert {i["currency_base_unit"] for i in invoices if i["currency"] == "KWD"} == {1000}
    drafts = sum(i["draft"] for i in invoices)
    cancelled = sum(i["status"] == "cancelled" for i in invoices)
    paid = sum(i["status"] == "accepted payment" for i in invoices)
    assert 15 <= drafts <= 50
    assert 5 <= cancelled <= 30
    assert 25 <= paid <= 70
    assert any(len(i["workspace_ids"]) > 1 for i in invoices)
    assert {i["tax_rate"] for i in invoices} == {
        Decimal("0.0"),
        Decimal("10.0"),
        Decimal("20.0"),
        Decimal("8.875"),
    }
    assert {i["payment_schedule"] for i in invoices} == {30, 45, 60}
    lines = [line for i in invoices for line in i["lines"]]
    assert {line["kind"] for line in lines} == {
        "time_entry",
        "expense",
        "additional_item",
        "fixed_fee_item",
        "billing_milestone",
    }
    assert all(1 <= len(i["lines"]) <= 12 for i in invoices)
    assert any(line["amount_in_minor"] < 0 for line in lines)
    assert any(line["kind"] == "additional_item" and "taxable" not in line for line in lines)
    fractional = [
        line
        for line in lines
        if line["kind"] == "time_entry"
        and (line["time_in_minutes"] * line["rate_in_cents"]) % 60 != 0
    ]
    assert fractional
    for invoice in invoices:
        assert datetime.fromisoformat(invoice["updated_at"]) >= datetime.fromisoformat(
            invoice["created_at"]
        )
        assert datetime.fromisoformat(invoice["updated_at"]) <= SUMMER


def test_ten_thousand_invoices_filter_order_and_page_exactly() -> None:
    """With 10,000 invoices each list query returns exactly the matching invoices, in the
    requested order (ties by id), and its pages hold each of them once. (Listing speed is
    measured by `python -m bench.sandbox_listing`, not asserted here.)"""
    import json

    from sandbox._core import Request

    kantata = FakeKantata()
    kantata.set_clock(SUMMER)
    generate(kantata, seed=5, invoices=10_000)
    everything = kantata.state()["invoices"]
    assert len(everything) == 10_000

    def moment(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    def listed(query: dict[str, str]) -> tuple[list[int], int, int]:
        """(ids of every page, in order; the stated count; the stated page count)."""
        ids: list[int] = []
        page_count = page = 1
        count = -1
        while page <= page_count:
            request = Request(
                "GET",
                "/api/v1/invoices",
                {**query, "page": str(page)},
                {"authorization": f"Bearer {TOKEN}"},
            )
            response = kantata.handle(request)
            assert response.status == 200, response.body[:200]
            body = json.loads(response.body)
            ids += [int(r["id"]) for r in body["results"] if r["key"] == "invoices"]
            count, page_count = body["count"], body["meta"]["page_count"]
            page += 1
        return ids, count, page_count

    by_id = {int(inv["id"]): inv for inv in everything}

    ids, count, pages = listed({"order": "id:asc", "per_page": "200"})
    assert (count, pages) == (10_000, 50)
    assert ids == sorted(by_id)

    ids, count, pages = listed({"order": "updated_at:asc", "per_page": "200"})
    assert (count, pages) == (10_000, 50)
    assert ids == sorted(by_id, key=lambda i: (moment(by_id[i]["updated_at"]), i))

    published = [i for i, inv in by_id.items() if not inv["draft"]]
    assert 0 < len(published) < 10_000, "the generated data has drafts and others"
    ids, count, pages = listed(
        {"order": "created_at:desc", "without_drafts": "true", "per_page": "50"}
    )
    assert (count, pages) == (len(published), -(-len(published) // 50))
    assert ids == sorted(published, key=lambda i: (moment(by_id[i]["created_at"]), i))[::-1]

    # updated_after is strict: an invoice updated at the very second is not listed.
    window = SUMMER - timedelta(days=2)
    recent = [i for i, inv in by_id.items() if moment(inv["updated_at"]) > window]
    assert 0 < len(recent) < 10_000, "the window holds some invoices, not all"
    ids, count, _ = listed({"updated_after": window.isoformat(), "order": "id:asc"})
    assert count == len(recent)
    assert ids == sorted(recent)


def test_create_or_update_takes_the_documented_request_and_answers_its_shape(
    box: Sandbox, api: httpx.Client
) -> None:
    """The request of the published client's spec is taken as it is, and the answer has the
    keys and types of that spec's stubbed answer."""
    import json
    from pathlib import Path

    fixtures = Path(__file__).parent / "fixtures" / "kantata" / "mavenlink_gem"
    request = json.loads(
        (fixtures / "external_reference_create_or_update_request.json").read_text()
    )
    documented = json.loads(
        (fixtures / "external_reference_create_or_update_response.json").read_text()
    )
    invoice_id = _simple_invoice(box.kantata)
    request["external_reference"].update(subject_type="Invoice", subject_id=invoice_id)
    answer = api.post("/external_references/create_or_update", json=request)
    assert answer.status_code == 200
    body = answer.json()
    assert set(documented) <= set(body)
    ref_id = body["results"][0]["id"]
    assert body["results"][0]["key"] == "external_references"
    record = body["external_references"][ref_id]
    sample = next(iter(documented["external_references"].values()))
    assert set(sample) <= set(record)
    assert {k: type(record[k]) for k in sample} == {k: type(v) for k, v in sample.items()}


def test_an_external_payment_naming_an_invoice_settles_its_whole_balance(
    box: Sandbox, api: httpx.Client
) -> None:
    """`amount_in_cents` is ignored on a payment that names an invoice: Kantata records the
    invoice's balance, and the invoice is paid."""
    invoice_id = _simple_invoice(box.kantata)
    state = box.kantata.invoice_state(invoice_id)
    answer = api.post(
        "/external_payments",
        json={
            "external_payment": {
                "invoice_id": invoice_id,
                "workspace_id": int(state["workspace_ids"][0]),
                "amount_in_cents": 1,
            }
        },
    )
    assert answer.status_code == 200
    payment = next(iter(answer.json()["external_payments"].values()))
    assert payment["amount_in_cents"] == state["balance_in_cents"] != 1
    assert box.kantata.invoice_state(invoice_id)["status"] == "accepted payment"


def test_paging_can_be_capped_and_page_count_made_wrong(
    box: Sandbox, api: httpx.Client, admin: httpx.Client
) -> None:
    """`POST /_sandbox/paging`: at most `max_per_page` rows a page whatever per_page asks,
    and `meta.page_count` off by `page_count_offset`; `{}` puts both back."""
    generate(box.kantata, seed=5, invoices=250)
    assert admin.post("/paging", json={"max_per_page": 100, "page_count_offset": -1}).is_success
    first = api.get("/invoices", params={"per_page": 200, "order": "id:asc"}).json()
    assert len(first["results"]) == 100
    assert first["count"] == 250
    assert first["meta"]["page_count"] == 2
    third = api.get("/invoices", params={"per_page": 200, "page": 3, "order": "id:asc"}).json()
    assert len(third["results"]) == 50
    assert admin.post("/paging", json={"max_per_page": "many"}).status_code >= 400
    assert admin.post("/paging", json={}).is_success
    whole = api.get("/invoices", params={"per_page": 200}).json()
    assert len(whole["results"]) == 200 and whole["meta"]["page_count"] == 2
