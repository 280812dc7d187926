"""The Noko client: Link paging, exact lookups, Decimal money, projects, errors and retries."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx

from connector.errors import (
    AmbiguousWriteError,
    AuthError,
    NotFoundError,
    PermanentApiError,
    TransientApiError,
)
from connector.http import RetryPolicy, decode_json
from connector.targets.noko.client import NokoClient

BASE = "https://api.nokotime.test/v2"
TOKEN = "noko-SECRET-token-9876"
RETRY = RetryPolicy(max_attempts=2, initial_delay=0.1, max_delay=1.0, jitter=False)


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(sleeps: list[float]) -> Iterator[NokoClient]:
    # httpx's own pool, which respx intercepts.
    transport = httpx.HTTPTransport()
    with NokoClient(
        BASE, TOKEN, rate=None, retry=RETRY, sleep=sleeps.append, transport=transport
    ) as noko:
        yield noko


def next_link(url: str) -> dict[str, str]:
    return {"Link": f'<{url}>; rel="next", <{BASE}/invoices?page=1>; rel="first"'}


def invoice(invoice_id: int, reference: str, total: str = "10.00") -> dict[str, Any]:
    return {"id": invoice_id, "reference": reference, "total_amount": total}


def raw_json(text: str, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    """A response whose JSON text is written by hand, so numbers keep their exact spelling."""
    return httpx.Response(
        status,
        content=text.encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


# -- paging -----------------------------------------------------------------------------------


def test_iter_pages_follows_link_next(router: respx.MockRouter, client: NokoClient) -> None:
    """Pages follow Link rel="next" (3 pages) and stop when there is no next link."""

    def answer(request: httpx.Request) -> httpx.Response:
        page = request.url.params.get("page", "1")
        if page == "1":
            return httpx.Response(
                200,
                json=[{"id": 1}, {"id": 2}],
                headers=next_link(f"{BASE}/entries?page=2&per_page=2"),
            )
        if page == "2":
            return httpx.Response(
                200,
                json=[{"id": 3}, {"id": 4}],
                headers=next_link(f"{BASE}/entries?page=3&per_page=2"),
            )
        return httpx.Response(200, json=[{"id": 5}])

    route = router.get("/entries").mock(side_effect=answer)
    pages = list(client.iter_pages("/entries", {"from": "2024-01-01"}, per_page=2))
    assert [[e["id"] for e in page] for page in pages] == [[1, 2], [3, 4], [5]]
    assert route.call_count == 3
    first = route.calls[0].request.url.params
    assert first["per_page"] == "2"
    assert first["from"] == "2024-01-01"
    assert route.calls[2].request.url.params["page"] == "3"


def test_iter_pages_ignores_other_rels(router: respx.MockRouter, client: NokoClient) -> None:
    """A Link header with only prev/first/last ends the listing."""
    router.get("/invoices").respond(
        200, json=[{"id": 1}], headers={"Link": f'<{BASE}/invoices?page=1>; rel="first"'}
    )
    assert list(client.list_invoices({})) == [{"id": 1}]


def test_iter_pages_refuses_foreign_next(router: respx.MockRouter, client: NokoClient) -> None:
    """A next link to another host is refused, so the token is never sent there."""
    router.get("/invoices").respond(
        200, json=[], headers=next_link("https://evil.test/v2/invoices")
    )
    with pytest.raises(PermanentApiError, match="another host"):
        list(client.iter_pages("/invoices"))


def test_iter_pages_detects_loops(router: respx.MockRouter, client: NokoClient) -> None:
    """A next link pointing back to a page already read ends in an error, not forever."""
    router.get("/invoices").respond(200, json=[], headers=next_link(f"{BASE}/invoices?page=2"))
    with pytest.raises(TransientApiError, match="pagination loop"):
        list(client.iter_pages("/invoices"))


def test_iter_pages_needs_an_array(router: respx.MockRouter, client: NokoClient) -> None:
    """A list endpoint answering with an object is a malformed page."""
    router.get("/invoices").respond(200, json={"message": "?"})
    with pytest.raises(TransientApiError, match="malformed page"):
        list(client.list_invoices({}))


# -- invoices ---------------------------------------------------------------------------------


def test_find_by_reference_is_exact(router: respx.MockRouter, client: NokoClient) -> None:
    """Noko's reference filter matches "contains"; only the exact reference is returned."""
    route = router.get("/invoices").respond(
        200,
        json=[invoice(1, "KS-120"), invoice(2, "KS-12"), invoice(3, "XKS-12"), invoice(4, "ks-12")],
    )
    found = client.find_invoices_by_reference("KS-12")
    assert [i["id"] for i in found] == [2]
    assert route.calls.last.request.url.params["reference"] == "KS-12"


def test_find_by_reference_refuses_empty(client: NokoClient) -> None:
    """An empty reference would match every invoice, so it is refused."""
    with pytest.raises(ValueError, match="empty"):
        client.find_invoices_by_reference("")


def test_total_amount_is_decimal(router: respx.MockRouter, client: NokoClient) -> None:
    """Noko's JSON-number amounts decode as exact Decimals."""
    router.get("/invoices/26642").mock(
        return_value=raw_json(
            '{"id": 26642, "total_amount": 189.33, "taxes": [{"percentage": 8.875}]}'
        )
    )
    got = client.get_invoice(26642)
    assert got is not None
    assert got["total_amount"] == Decimal("189.33")
    assert isinstance(got["total_amount"], Decimal)
    assert got["taxes"][0]["percentage"] == Decimal("8.875")


def test_get_invoice_404_is_none(router: respx.MockRouter, client: NokoClient) -> None:
    """A missing invoice is None, not an error."""
    router.get("/invoices/5").respond(404, json={"message": "Not found"})
    assert client.get_invoice(5) is None


def test_create_invoice_sends_exact_json(router: respx.MockRouter, client: NokoClient) -> None:
    """create_invoice posts Decimal amounts as exact JSON numbers and returns Decimal totals."""
    route = router.post("/invoices").mock(
        return_value=raw_json('{"id": 7, "reference": "KS-1", "total_amount": 1234.50}', status=201)
    )
    payload = {
        "invoice_date": "2024-03-01",
        "reference": "KS-1",
        "taxes": [{"name": "VAT", "percentage": Decimal("20.00")}],
        "rate_calculation": {"calculation_method": "flat_rate", "flat_rate": Decimal("1028.75")},
    }
    created = client.create_invoice(payload)
    assert created["total_amount"] == Decimal("1234.50")
    sent = route.calls.last.request
    assert b'"percentage":20.00' in sent.content
    assert b'"flat_rate":1028.75' in sent.content
    assert decode_json(sent.content) == payload
    assert sent.headers["content-type"] == "application/json"


def test_create_invoice_read_timeout_is_ambiguous(
    router: respx.MockRouter, client: NokoClient, sleeps: list[float]
) -> None:
    """A create whose answer was lost is not retried: AmbiguousWriteError, one request."""
    route = router.post("/invoices").mock(side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(AmbiguousWriteError):
        client.create_invoice({"invoice_date": "2024-03-01", "reference": "KS-1"})
    assert route.call_count == 1
    assert sleeps == []


def test_create_invoice_retried_after_429(
    router: respx.MockRouter, client: NokoClient, sleeps: list[float]
) -> None:
    """Noko's empty 429 means not applied: the create is retried after Retry-After."""
    route = router.post("/invoices").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "2"}),
            httpx.Response(201, json={"id": 7, "reference": "KS-1"}),
        ]
    )
    assert client.create_invoice({"invoice_date": "2024-03-01"})["id"] == 7
    assert route.call_count == 2
    assert sleeps == [2.0]


def test_create_invoice_non_object_body_is_ambiguous(
    router: respx.MockRouter, client: NokoClient
) -> None:
    """A create answered with something other than an object may still have created it."""
    router.post("/invoices").respond(201, json=[])
    with pytest.raises(AmbiguousWriteError):
        client.create_invoice({"invoice_date": "2024-03-01"})


def test_update_invoice(router: respx.MockRouter, client: NokoClient) -> None:
    """update_invoice PUTs the payload and returns the invoice."""
    route = router.put("/invoices/7").respond(200, json={"id": 7, "description": "x"})
    assert client.update_invoice(7, {"description": "x"}) == {"id": 7, "description": "x"}
    assert json.loads(route.calls.last.request.content) == {"description": "x"}


@pytest.mark.parametrize(
    ("call", "path", "body"),
    [
        (lambda c: c.add_expenses(7, [1, 2]), "/invoices/7/add_expenses", {"expense_ids": [1, 2]}),
        (lambda c: c.remove_expenses(7, [3]), "/invoices/7/remove_expenses", {"expense_ids": [3]}),
        (lambda c: c.add_entries(7, [4]), "/invoices/7/add_entries", {"entry_ids": [4]}),
        (lambda c: c.remove_entries(7, [5]), "/invoices/7/remove_entries", {"entry_ids": [5]}),
        (lambda c: c.remove_taxes(7, [9]), "/invoices/7/remove_taxes", {"tax_ids": [9]}),
        (lambda c: c.mark_paid(7), "/invoices/7/paid", None),
        (lambda c: c.mark_unpaid(7), "/invoices/7/unpaid", None),
    ],
)
def test_invoice_actions(
    call: Any, path: str, body: Any, router: respx.MockRouter, client: NokoClient
) -> None:
    """Each invoice action is one PUT to its path with its id list."""
    route = router.put(path).respond(204)
    call(client)
    request = route.calls.last.request
    assert (json.loads(request.content) if request.content else None) == body


def test_add_taxes_exact_percentage(router: respx.MockRouter, client: NokoClient) -> None:
    """add_taxes sends Decimal percentages as exact numbers."""
    route = router.put("/invoices/7/add_taxes").respond(204)
    client.add_taxes(7, [{"name": "Sales", "percentage": Decimal("8.88")}])
    assert route.calls.last.request.content == b'{"taxes":[{"name":"Sales","percentage":8.88}]}'


def test_add_taxes_not_retried_after_timeout(router: respx.MockRouter, client: NokoClient) -> None:
    """Adding taxes twice would double them, so a lost answer is ambiguous, not retried."""
    route = router.put("/invoices/7/add_taxes").mock(side_effect=httpx.ReadTimeout("lost"))
    with pytest.raises(AmbiguousWriteError):
        client.add_taxes(7, [{"percentage": Decimal("10.00")}])
    assert route.call_count == 1


def test_empty_id_lists_send_nothing(router: respx.MockRouter, client: NokoClient) -> None:
    """Adding or removing nothing makes no request."""
    client.add_expenses(7, [])
    client.remove_entries(7, [])
    client.add_taxes(7, [])
    assert client.stats.requests == 0


@pytest.mark.parametrize(
    ("call", "path"),
    [
        (lambda c: c.delete_expense(3), "/expenses/3"),
        (lambda c: c.delete_entry(4), "/entries/4"),
        (lambda c: c.delete_invoice(5), "/invoices/5"),
    ],
)
def test_delete_of_missing_object_is_quiet(
    call: Any, path: str, router: respx.MockRouter, client: NokoClient
) -> None:
    """Deleting something already gone (404) is not an error."""
    route = router.delete(path).respond(404, json={"message": "Not found"})
    call(client)
    assert route.call_count == 1


def test_delete_invoice_refused_when_paid(router: respx.MockRouter, client: NokoClient) -> None:
    """A refused delete carries Noko's code (paid) on the error."""
    router.delete("/invoices/5").respond(
        400,
        json={
            "message": "Invoice cannot be deleted",
            "errors": [{"resource": "Invoice", "field": "state", "code": "paid"}],
        },
    )
    with pytest.raises(PermanentApiError) as info:
        client.delete_invoice(5)
    assert info.value.code == "paid"
    assert "Invoice cannot be deleted" in str(info.value)


# -- expenses and entries ---------------------------------------------------------------------


def test_create_expense_price_exact(router: respx.MockRouter, client: NokoClient) -> None:
    """An expense price goes out as an exact JSON number; the new expense's id comes back."""
    route = router.post("/expenses").mock(
        return_value=raw_json(
            '{"id": 11, "price": 14.55, "project": {"id": 37396, "name": "P"}}', status=201
        )
    )
    created = client.create_expense(
        project_id=37396, date="2024-03-01", price=Decimal("14.55"), taxable=False, description="d"
    )
    assert created == 11
    assert route.calls.last.request.content == (
        b'{"project_id":37396,"date":"2024-03-01","price":14.55,"taxable":false,"description":"d"}'
    )


def test_create_expense_refuses_float(client: NokoClient) -> None:
    """A float price is refused before anything is sent."""
    with pytest.raises(TypeError):
        client.create_expense(
            project_id=1,
            date="2024-03-01",
            price=14.55,  # type: ignore[arg-type]
            taxable=True,
            description="d",
        )


def test_create_entry_body(router: respx.MockRouter, client: NokoClient) -> None:
    """An entry is posted with date, minutes, description, project and optional user."""
    route = router.post("/entries").respond(201, json={"id": 3})
    client.create_entry(project_id=2, date="2024-03-01", minutes=90, description="work", user_id=5)
    assert json.loads(route.calls.last.request.content) == {
        "project_id": 2,
        "date": "2024-03-01",
        "minutes": 90,
        "description": "work",
        "user_id": 5,
    }


def test_list_expenses_flattens_pages(router: respx.MockRouter, client: NokoClient) -> None:
    """list_expenses yields items across pages."""
    router.get("/expenses").mock(
        side_effect=[
            httpx.Response(200, json=[{"id": 1}], headers=next_link(f"{BASE}/expenses?page=2")),
            httpx.Response(200, json=[{"id": 2}]),
        ]
    )
    assert [e["id"] for e in client.list_expenses({"project_ids": "1"})] == [1, 2]


# -- projects ---------------------------------------------------------------------------------


def test_find_project_exact_name(router: respx.MockRouter, client: NokoClient) -> None:
    """Project lookup keeps only the exact name, preferring an enabled project."""
    router.get("/projects").respond(
        200,
        json=[
            {"id": 1, "name": "Acme Ltd (old)", "enabled": True},
            {"id": 2, "name": "Acme Ltd", "enabled": False},
            {"id": 3, "name": "Acme Ltd", "enabled": True},
        ],
    )
    project = client.find_project("Acme Ltd")
    assert project is not None
    assert project["id"] == 3


def test_ensure_project_one_lookup(router: respx.MockRouter, client: NokoClient) -> None:
    """Many calls, from many threads, for one name make one lookup and one create."""
    lookup = router.get("/projects").respond(200, json=[{"id": 1, "name": "Acme (old)"}])
    create = router.post("/projects").respond(201, json={"id": 42, "name": "Acme"})
    results: list[int] = []

    def worker() -> None:
        for _ in range(5):
            results.append(client.ensure_project("Acme"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [42] * 40
    assert lookup.call_count == 1
    assert create.call_count == 1
    assert json.loads(create.calls.last.request.content) == {"name": "Acme"}


def test_ensure_project_existing(router: respx.MockRouter, client: NokoClient) -> None:
    """An existing project is found and never created."""
    router.get("/projects").respond(200, json=[{"id": 9, "name": "Acme"}])
    create = router.post("/projects").respond(201, json={"id": 10, "name": "Acme"})
    assert client.ensure_project("Acme") == 9
    assert not create.called


def test_ensure_project_creates_with_a_billing_increment_and_remembers_it(
    router: respx.MockRouter, client: NokoClient
) -> None:
    """A project created for time entries gets the given billing increment; the increment of
    a project found or created is remembered (none for an unknown one)."""
    router.get("/projects", params={"name": "Atlas"}).respond(200, json=[])
    router.get("/projects", params={"name": "Hourly"}).respond(
        200, json=[{"id": 3, "name": "Hourly", "billing_increment": 60}]
    )
    create = router.post("/projects").respond(
        201, json={"id": 42, "name": "Atlas", "billing_increment": 30}
    )
    assert client.ensure_project("Atlas", billing_increment=30) == 42
    assert json.loads(create.calls.last.request.content) == {
        "name": "Atlas",
        "billing_increment": 30,
    }
    assert client.ensure_project("Hourly", billing_increment=30) == 3
    assert create.call_count == 1
    assert client.project_billing_increment("Atlas") == 30
    assert client.project_billing_increment("Hourly") == 60
    assert client.project_billing_increment("Unknown") is None


def test_ensure_project_refinds_after_ambiguous_create(
    router: respx.MockRouter, client: NokoClient
) -> None:
    """After a create whose answer was lost, the project is looked up before creating again."""
    lookup = router.get("/projects").mock(
        side_effect=[
            httpx.Response(200, json=[]),
            httpx.Response(200, json=[{"id": 5, "name": "Acme"}]),
        ]
    )
    create = router.post("/projects").mock(side_effect=httpx.ReadTimeout("lost"))
    assert client.ensure_project("Acme") == 5
    assert lookup.call_count == 2
    assert create.call_count == 1


# -- transport contract -----------------------------------------------------------------------


def test_headers_sent(router: respx.MockRouter, client: NokoClient) -> None:
    """Every request carries the token, a real User-Agent and JSON Accept/Content-Type."""
    get = router.get("/current_user").respond(200, json={"id": 5538})
    post = router.post("/projects").respond(201, json={"id": 1, "name": "P"})
    assert client.current_user() == {"id": 5538}
    client.create_project("P")
    for route in (get, post):
        headers = route.calls.last.request.headers
        assert headers["x-nokotoken"] == TOKEN
        assert headers["user-agent"].startswith("kantata-sync/")
        assert headers["accept"] == "application/json"
    assert post.calls.last.request.headers["content-type"] == "application/json"


def test_empty_user_agent_refused() -> None:
    """Noko rejects requests without a User-Agent, so the client refuses to be built without one."""
    with pytest.raises(ValueError, match="User-Agent"):
        NokoClient(BASE, TOKEN, retry=RETRY, user_agent=" ")


def test_token_absent_from_repr_and_errors(router: respx.MockRouter, client: NokoClient) -> None:
    """Neither repr(client) nor an error shows the token, even if Noko echoes it."""
    router.get("/current_user").respond(403, json={"message": f"token {TOKEN} lacks access"})
    assert TOKEN not in repr(client)
    with pytest.raises(AuthError) as info:
        client.current_user()
    assert TOKEN not in str(info.value)
    assert TOKEN not in repr(info.value)


@pytest.mark.parametrize(
    ("status", "body", "exc", "code", "calls"),
    [
        (400, {"message": "JSON Parsing Error"}, PermanentApiError, None, 1),
        (401, {"message": "Unauthorized"}, AuthError, None, 1),
        (403, {"message": "Account does not include this feature"}, AuthError, None, 1),
        (404, {"message": "Not found"}, NotFoundError, None, 1),
        (
            422,
            {
                "message": "Invoice is locked",
                "errors": [{"resource": "Invoice", "field": "state", "code": "locked"}],
            },
            PermanentApiError,
            "locked",
            1,
        ),
        (429, "", TransientApiError, None, 2),
        (500, {"message": "Internal error"}, TransientApiError, None, 2),
        (502, "<html>Bad Gateway</html>", TransientApiError, None, 2),
        (503, {"message": "Noko is changing the internal data"}, TransientApiError, None, 2),
        (200, "<html>captive portal</html>", TransientApiError, None, 2),
    ],
)
def test_status_to_exception(
    status: int,
    body: Any,
    exc: type[Exception],
    code: str | None,
    calls: int,
    router: respx.MockRouter,
    client: NokoClient,
) -> None:
    """Each Noko status maps to its error type and code; transient ones are retried first."""
    if isinstance(body, str):
        response = httpx.Response(status, text=body, headers={"Content-Type": "text/html"})
    else:
        response = httpx.Response(status, json=body)
    route = router.put("/invoices/3").mock(return_value=response)
    with pytest.raises(exc) as info:
        client.update_invoice(3, {"description": "x"})
    error = info.value
    assert type(error) is exc
    assert route.call_count == calls
    assert error.status == status  # type: ignore[attr-defined]
    assert error.code == code  # type: ignore[attr-defined]
    if isinstance(body, dict):
        assert body["message"] in str(error)


@pytest.mark.parametrize(
    ("status", "exc", "calls"),
    [
        (400, PermanentApiError, 1),
        (401, AuthError, 1),
        (403, AuthError, 1),
        (404, NotFoundError, 1),
        (422, PermanentApiError, 1),
        (429, TransientApiError, 2),
        (500, AmbiguousWriteError, 1),
        (502, AmbiguousWriteError, 1),
        (503, AmbiguousWriteError, 1),
        (200, AmbiguousWriteError, 1),
    ],
)
def test_status_on_create(
    status: int, exc: type[Exception], calls: int, router: respx.MockRouter, client: NokoClient
) -> None:
    """On a create, 429 is retried, 5xx and non-JSON 2xx are ambiguous, other 4xx permanent."""
    if status == 200:
        response = httpx.Response(200, text="<html/>", headers={"Content-Type": "text/html"})
    elif status == 429:
        response = httpx.Response(429)
    else:
        response = httpx.Response(status, json={"message": "m"})
    route = router.post("/invoices").mock(return_value=response)
    with pytest.raises(exc) as info:
        client.create_invoice({"invoice_date": "2024-03-01"})
    assert type(info.value) is exc
    assert route.call_count == calls


@pytest.mark.parametrize(
    ("answer", "named"),
    [
        ('{"price": 14.55}', "missing required field `id`"),
        ('{"id": "eleven"}', "`$.id`"),
        ('{"id": null}', "`$.id`"),
        ("[11]", "Expected `object`"),
    ],
)
def test_created_expense_without_a_usable_id_is_in_doubt(
    router: respx.MockRouter, client: NokoClient, answer: str, named: str
) -> None:
    """A create answered 201 without an id may have been applied: the caller must look for
    the expense before creating it again, and the error names what was wrong."""
    route = router.post("/expenses").mock(return_value=raw_json(answer, status=201))
    with pytest.raises(AmbiguousWriteError) as info:
        client.create_expense(
            project_id=1, date="2024-03-01", price=Decimal("1.00"), taxable=False, description="d"
        )
    assert named in str(info.value)
    assert route.call_count == 1  # never sent twice


def test_created_entry_id_as_a_numeric_string_is_taken(
    router: respx.MockRouter, client: NokoClient
) -> None:
    router.post("/entries").mock(return_value=raw_json('{"id": "42", "minutes": 5}', status=201))
    assert client.create_entry(project_id=2, date="2024-03-01", minutes=5, description="w") == 42


def test_created_expense_in_utf16_is_still_read(
    router: respx.MockRouter, client: NokoClient
) -> None:
    """msgspec reads UTF-8 only; another JSON encoding goes through the standard library."""
    router.post("/expenses").mock(
        return_value=httpx.Response(
            201,
            content='{"id": 7, "description": "caf\u00e9"}'.encode("utf-16"),
            headers={"Content-Type": "application/json"},
        )
    )
    created = client.create_expense(
        project_id=1, date="2024-03-01", price=Decimal("1.00"), taxable=False, description="d"
    )
    assert created == 7


def test_created_invoice_keeps_the_fields_read_and_their_presence(
    router: respx.MockRouter, client: NokoClient
) -> None:
    """Of a created invoice, the fields the connector reads, as `decode_json` gives them; one
    Noko left out is absent (not None), and the rest of the answer is not kept."""
    router.post("/invoices").mock(
        return_value=raw_json(
            '{"id": 7, "reference": "KS-1", "state": "unpaid", "total_amount": 1234.50,'
            ' "url": "https://x.test/invoices/7", "projects": [{"id": 1, "rate": 1.5}],'
            ' "share_url": "https://app.x.test/i/abc", "customization": {"title": "T"}}',
            status=201,
        )
    )
    created = client.create_invoice({"invoice_date": "2024-03-01"})
    assert created == {
        "id": 7,
        "reference": "KS-1",
        "state": "unpaid",
        "url": "https://x.test/invoices/7",
        "share_url": "https://app.x.test/i/abc",
        "total_amount": Decimal("1234.50"),
    }
    assert "tax_total_amount" not in created
