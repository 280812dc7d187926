"""The Kantata client: invoice paging, lookups by id, reference write-back, error mapping."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

from connector.errors import (
    AmbiguousWriteError,
    AuthError,
    NotFoundError,
    PermanentApiError,
    TransientApiError,
)
from connector.http import RetryPolicy
from connector.kantata.client import (
    INVOICE_INCLUDES,
    REFERENCE_STATUSES,
    ExternalReferenceWrite,
    KantataClient,
    format_timestamp,
)
from connector.sync.writeback import _hash_reference

BASE = "https://api.mavenlink.test/api/v1"
TOKEN = "kantata-SECRET-token-42"
RETRY = RetryPolicy(max_attempts=2, initial_delay=0.1, max_delay=1.0, jitter=False)


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(sleeps: list[float]) -> Iterator[KantataClient]:
    # httpx's own pool, which respx intercepts.
    transport = httpx.HTTPTransport()
    with KantataClient(
        BASE, TOKEN, rate=None, retry=RETRY, sleep=sleeps.append, transport=transport
    ) as kantata:
        yield kantata


def page_body(
    ids: list[int], *, count: int, page_count: int | None, page: int = 1
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "count": count,
        "results": [{"key": "invoices", "id": str(i)} for i in ids],
        "invoices": {str(i): {"id": str(i), "tax_rate": 10.5} for i in ids},
    }
    if page_count is not None:
        body["meta"] = {"count": count, "page_count": page_count, "page_number": page}
    return body


# -- paging -----------------------------------------------------------------------------------


def test_pages_until_a_short_page(router: respx.MockRouter, client: KantataClient) -> None:
    """Pages are read in id order until one returns fewer results than per_page."""
    pages = {1: [1, 2], 2: [3, 4], 3: [5]}

    def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        return httpx.Response(200, json=page_body(pages[page], count=5, page_count=None))

    route = router.get("/invoices.json").mock(side_effect=answer)
    after = datetime(2024, 3, 1, 12, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    got = list(client.iter_invoice_pages(updated_after=after, per_page=2))
    assert [p.page for p in got] == [1, 2, 3]
    assert [p.count for p in got] == [5, 5, 5]
    assert [r["id"] for p in got for r in p.body["results"]] == ["1", "2", "3", "4", "5"]
    params = route.calls[0].request.url.params
    assert params["order"] == "id:asc"
    assert params["include"] == ",".join(INVOICE_INCLUDES)
    assert params["per_page"] == "2"
    assert params["updated_after"] == "2024-03-01T10:00:00Z"
    assert "updated_before" not in params
    assert [c.request.url.params["page"] for c in route.calls] == ["1", "2", "3"]


def test_pages_stop_at_page_count(router: respx.MockRouter, client: KantataClient) -> None:
    """A full last page ends the scan when meta.page_count says it is the last."""
    route = router.get("/invoices.json").mock(
        side_effect=[
            httpx.Response(200, json=page_body([1, 2], count=4, page_count=2, page=1)),
            httpx.Response(200, json=page_body([3, 4], count=4, page_count=2, page=2)),
        ]
    )
    got = list(client.iter_invoice_pages(updated_after=None, per_page=2))
    assert [p.page_count for p in got] == [2, 2]
    assert route.call_count == 2
    assert "updated_after" not in route.calls[0].request.url.params


def test_empty_first_page(router: respx.MockRouter, client: KantataClient) -> None:
    """An empty result set is one page with no results."""
    router.get("/invoices.json").respond(200, json=page_body([], count=0, page_count=0))
    got = list(client.iter_invoice_pages(updated_after=None))
    assert len(got) == 1
    assert got[0].count == 0


def test_window_and_extra_filters(router: respx.MockRouter, client: KantataClient) -> None:
    """updated_before rounds up to the second; extra filters are sent but cannot change paging."""
    route = router.get("/invoices.json").respond(200, json=page_body([], count=0, page_count=1))
    before = datetime(2024, 3, 1, 10, 0, 0, 250_000, tzinfo=UTC)
    extra = {"without_drafts": "true", "order": "updated_at:desc", "page": "9"}
    list(client.iter_invoice_pages(updated_after=None, updated_before=before, extra=extra))
    params = route.calls[0].request.url.params
    assert params["updated_before"] == "2024-03-01T10:00:01Z"
    assert params["without_drafts"] == "true"
    assert params["order"] == "id:asc"
    assert params["page"] == "1"


# -- paging signals that disagree (a page cap, a wrong page_count, a lying count) --------------


def serve(ids: list[int], *, cap: int, page_count: Any = "true", count: Any = "true") -> Any:
    """A fake page source: `ids` in pages of at most `cap` rows, whatever per_page asks for;
    `page_count`/`count` "true" give the right figures, None leaves them out, a number lies."""

    def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        chosen = ids[(page - 1) * cap : page * cap]
        total = len(ids) if count == "true" else count
        pages = -(-len(ids) // cap) if page_count == "true" else page_count
        body: dict[str, Any] = {
            "results": [{"key": "invoices", "id": str(i)} for i in chosen],
            "invoices": {str(i): {"id": str(i)} for i in chosen},
        }
        if total is not None:
            body["count"] = total
        if pages is not None:
            body["meta"] = {"count": total, "page_count": pages, "page_number": page}
        return httpx.Response(200, json=body)

    return answer


def read_all(client: KantataClient) -> tuple[list[str], list[Any]]:
    pages = list(client.iter_invoice_pages(updated_after=None, per_page=200))
    return [r["id"] for p in pages for r in p.body["results"]], pages


def test_a_server_serving_100_a_page_is_read_to_the_end(
    router: respx.MockRouter, client: KantataClient
) -> None:
    """per_page=200 is asked for, 100 come: a short page is not the end while count says more.
    No request more than the pages there are."""
    ids = list(range(1, 251))
    route = router.get("/invoices.json").mock(side_effect=serve(ids, cap=100, page_count=None))
    got, pages = read_all(client)
    assert got == [str(i) for i in ids]
    assert route.call_count == 3
    assert pages[0].note is not None and "fewer than the 200" in pages[0].note
    assert pages[-1].note is None and pages[-1].unseen == 0


def test_a_page_count_too_low_does_not_end_the_scan(
    router: respx.MockRouter, client: KantataClient
) -> None:
    """meta.page_count computed for 200 a page (2) while 100 come: page 3 is read too."""
    ids = list(range(1, 251))
    router.get("/invoices.json").mock(side_effect=serve(ids, cap=100, page_count=2))
    got, pages = read_all(client)
    assert got == [str(i) for i in ids]
    assert pages[1].note is not None and "page_count says 2" in pages[1].note
    assert pages[-1].unseen == 0


def test_a_page_count_too_high_reads_until_an_empty_page(
    router: respx.MockRouter, client: KantataClient
) -> None:
    """Every counted row received, page_count says more: read on; an empty page ends it."""
    ids = list(range(1, 401))
    route = router.get("/invoices.json").mock(side_effect=serve(ids, cap=200, page_count=5))
    got, pages = read_all(client)
    assert got == [str(i) for i in ids]
    assert route.call_count == 3
    assert pages[-1].body["results"] == [] and pages[-1].unseen == 0


def test_agreeing_signals_cost_no_extra_request(
    router: respx.MockRouter, client: KantataClient
) -> None:
    """count and page_count agree: exactly the pages there are, no empty page asked for."""
    ids = list(range(1, 401))
    route = router.get("/invoices.json").mock(side_effect=serve(ids, cap=200))
    got, pages = read_all(client)
    assert len(got) == 400
    assert route.call_count == 2
    assert all(p.note is None for p in pages)


def test_rows_counted_but_never_served_are_reported(
    router: respx.MockRouter, client: KantataClient
) -> None:
    """An empty page while count promised more: the scan ends with `unseen` set."""
    ids = list(range(1, 151))
    router.get("/invoices.json").mock(side_effect=serve(ids, cap=100, page_count=None, count=180))
    got, pages = read_all(client)
    assert len(got) == 150
    assert pages[-1].unseen == 30
    assert pages[-1].note is not None and "empty" in pages[-1].note


def test_a_server_that_ignores_page_stops_with_rows_unseen(
    router: respx.MockRouter, client: KantataClient
) -> None:
    """The same page served again and again: the scan stops on the second, incomplete."""
    route = router.get("/invoices.json").mock(
        side_effect=lambda request: httpx.Response(
            200, json=page_body(list(range(1, 101)), count=300, page_count=None)
        )
    )
    _, pages = read_all(client)
    assert route.call_count == 2
    assert pages[-1].unseen > 0


def test_without_a_count_only_an_empty_page_ends_the_scan(
    router: respx.MockRouter, client: KantataClient
) -> None:
    """No count at all: short pages say nothing, the scan reads until a page is empty."""
    ids = list(range(1, 151))
    route = router.get("/invoices.json").mock(
        side_effect=serve(ids, cap=100, page_count=None, count=None)
    )
    got, pages = read_all(client)
    assert len(got) == 150
    assert route.call_count == 3
    assert pages[-1].unseen == 0


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"count": 0},
        {"results": {"1": {}}},
        "<html>",
    ],
)
def test_malformed_page_is_transient(
    body: Any, router: respx.MockRouter, client: KantataClient
) -> None:
    """A page that is not an object with a results list raises TransientApiError."""
    router.get("/invoices.json").respond(200, json=body)
    with pytest.raises(TransientApiError, match="malformed page"):
        list(client.iter_invoice_pages(updated_after=None))


def test_naive_timestamp_refused(client: KantataClient) -> None:
    """A naive datetime is ambiguous and refused before any request."""
    with pytest.raises(ValueError, match="timezone-aware"):
        list(client.iter_invoice_pages(updated_after=datetime(2024, 3, 1)))


@pytest.mark.parametrize(
    ("moment", "round_up", "expected"),
    [
        (datetime(2024, 3, 1, 10, 0, tzinfo=UTC), False, "2024-03-01T10:00:00Z"),
        (
            datetime(2024, 3, 1, 2, 0, tzinfo=timezone(timedelta(hours=-8))),
            False,
            "2024-03-01T10:00:00Z",
        ),
        (datetime(2024, 3, 1, 10, 0, 0, 999_999, tzinfo=UTC), False, "2024-03-01T10:00:00Z"),
        (datetime(2024, 3, 1, 10, 0, 0, 1, tzinfo=UTC), True, "2024-03-01T10:00:01Z"),
        (datetime(2024, 3, 1, 10, 0, 0, tzinfo=UTC), True, "2024-03-01T10:00:00Z"),
    ],
)
def test_format_timestamp(moment: datetime, round_up: bool, expected: str) -> None:
    """Timestamps go out in UTC to the second with a Z, widening the window, never narrowing it."""
    assert format_timestamp(moment, round_up=round_up) == expected


def test_amounts_decode_as_decimal(router: respx.MockRouter, client: KantataClient) -> None:
    """Float fields in Kantata bodies (tax_rate) decode as exact Decimals."""
    router.get("/invoices.json").respond(200, json=page_body([1], count=1, page_count=1))
    (page,) = client.iter_invoice_pages(updated_after=None)
    assert page.body["invoices"]["1"]["tax_rate"] == Decimal("10.5")


# -- get_invoices -----------------------------------------------------------------------------


def test_get_invoices_chunks_and_merges(router: respx.MockRouter, client: KantataClient) -> None:
    """Ids go out 200 at a time with only=; the bodies merge into one."""

    def answer(request: httpx.Request) -> httpx.Response:
        ids = [int(i) for i in request.url.params["only"].split(",")]
        body = page_body(ids, count=len(ids), page_count=1)
        body["time_entries"] = {f"t{ids[0]}": {"id": f"t{ids[0]}"}}
        return httpx.Response(200, json=body)

    route = router.get("/invoices.json").mock(side_effect=answer)
    ids = [str(i) for i in range(1, 251)] + ["5"]
    merged = client.get_invoices(ids)
    assert route.call_count == 2
    first = route.calls[0].request.url.params
    assert len(first["only"].split(",")) == 200
    assert first["include"] == ",".join(INVOICE_INCLUDES)
    assert first["per_page"] == "200"
    assert merged["count"] == 250
    assert [r["id"] for r in merged["results"]] == [str(i) for i in range(1, 251)]
    assert len(merged["invoices"]) == 250
    assert set(merged["time_entries"]) == {"t1", "t201"}
    assert "meta" not in merged


def test_get_invoices_empty(router: respx.MockRouter, client: KantataClient) -> None:
    """No ids, no request."""
    assert client.get_invoices([]) == {"count": 0, "results": []}
    assert client.stats.requests == 0


def test_get_invoices_refuses_non_numeric_ids(client: KantataClient) -> None:
    """Ids that are not numbers never reach a URL."""
    with pytest.raises(ValueError, match="numeric"):
        client.get_invoices(["12", "12/../../users"])


# -- write_external_reference -----------------------------------------------------------------


def test_write_external_reference_uses_the_documented_upsert(
    router: respx.MockRouter, client: KantataClient
) -> None:
    """The write-back is `POST /external_references/create_or_update` with the documented
    required fields (the subject's id an integer, as the docs' schema has it) and the
    reference's fields that are set; nothing about the invoice itself. (It was a nested
    `external_reference` in `PUT /invoices/{id}`, whose second write per service the
    documents leave undefined.)"""
    route = router.post("/external_references/create_or_update").respond(
        200, json=_upsert_answer("701")
    )
    ref = ExternalReferenceWrite(
        service_name="kantata_sync",
        service_model="noko_invoice",
        service_model_ref="123",
        status="successful",
        external_link="https://example.nokotime.test/invoices/123",
    )
    assert client.write_external_reference("77", ref) is None
    assert route.call_count == 1
    assert json.loads(route.calls.last.request.content) == {
        "external_reference": {
            "subject_type": "Invoice",
            "subject_id": 77,
            "service_name": "kantata_sync",
            "service_model": "noko_invoice",
            "service_model_ref": "123",
            "status": "successful",
            "external_link": "https://example.nokotime.test/invoices/123",
        }
    }


def test_the_upsert_request_has_the_documented_shape(
    router: respx.MockRouter, client: KantataClient
) -> None:
    """Every key of the published client's request, with the same JSON types."""
    from pathlib import Path

    fixture = Path(__file__).parent / "fixtures" / "kantata" / "mavenlink_gem"
    documented = json.loads(
        (fixture / "external_reference_create_or_update_request.json").read_text()
    )["external_reference"]
    route = router.post("/external_references/create_or_update").respond(
        200, json=_upsert_answer("7")
    )
    client.write_external_reference("1", ExternalReferenceWrite("noko", "invoice", "1", "failed"))
    sent = json.loads(route.calls.last.request.content)["external_reference"]
    assert {k: type(sent[k]) for k in documented} == {k: type(v) for k, v in documented.items()}


def _upsert_answer(ref_id: str) -> dict[str, Any]:
    """The documented answer of create_or_update (tests/fixtures/kantata/
    external_reference_create_or_update_response.json has the same shape)."""
    return {
        "count": 1,
        "results": [{"key": "external_references", "id": ref_id}],
        "external_references": {ref_id: {"id": ref_id}},
    }


def test_a_known_stale_reference_is_deleted_before_the_upsert(
    router: respx.MockRouter, client: KantataClient
) -> None:
    """A reference of ours naming another object (a new Noko id): removed first, then the
    upsert; two requests, in that order."""
    deleted = router.delete("/external_references/701").respond(204)
    upsert = router.post("/external_references/create_or_update").respond(
        200, json=_upsert_answer("702")
    )
    ref = ExternalReferenceWrite("noko", "invoice", "999", "successful")
    client.write_external_reference("77", ref, replace="701")
    assert deleted.call_count == 1 and upsert.call_count == 1
    assert client.stats.by_endpoint == {
        "DELETE /external_references/{id}": 1,
        "POST /external_references/create_or_update": 1,
    }


def test_a_stale_reference_already_gone_is_no_error(
    router: respx.MockRouter, client: KantataClient
) -> None:
    router.delete("/external_references/701").respond(
        404, json={"errors": [{"type": "system", "message": "Not found"}]}
    )
    upsert = router.post("/external_references/create_or_update").respond(
        200, json=_upsert_answer("702")
    )
    client.write_external_reference(
        "77", ExternalReferenceWrite("noko", "invoice", "9", "failed"), replace="701"
    )
    assert upsert.call_count == 1


def test_an_upsert_refused_for_an_unknown_stale_reference_removes_it_and_retries(
    router: respx.MockRouter, client: KantataClient
) -> None:
    """Not knowing what is on the invoice, a refused upsert (422) reads the invoice's
    references of our service, removes those naming another object, and upserts again."""
    upsert = router.post("/external_references/create_or_update").mock(
        side_effect=[
            httpx.Response(
                422, json={"errors": [{"type": "validation", "message": "must be unique"}]}
            ),
            httpx.Response(200, json=_upsert_answer("703")),
        ]
    )
    listed = router.get("/external_references").respond(
        200,
        json={
            "count": 2,
            "results": [
                {"key": "external_references", "id": "701"},
                {"key": "external_references", "id": "704"},
            ],
            "external_references": {
                "701": {
                    "id": "701",
                    "service_name": "noko",
                    "service_model": "invoice",
                    "service_model_ref": "KS-77",
                },
                "704": {
                    "id": "704",
                    "service_name": "xero",
                    "service_model": "invoice",
                    "service_model_ref": "5",
                },
            },
        },
    )
    deleted = router.delete("/external_references/701").respond(204)
    client.write_external_reference("77", ExternalReferenceWrite("noko", "invoice", "9", "failed"))
    assert upsert.call_count == 2 and deleted.call_count == 1
    params = listed.calls.last.request.url.params
    assert (params["subject_type"], params["subject_id"], params["service_name"]) == (
        "Invoice",
        "77",
        "noko",
    )


def test_an_upsert_refused_for_another_reason_is_raised(
    router: respx.MockRouter, client: KantataClient
) -> None:
    """A 422 with nothing of ours to remove is the caller's error to report."""
    router.post("/external_references/create_or_update").respond(
        422, json={"errors": [{"type": "validation", "message": "status is invalid"}]}
    )
    router.get("/external_references").respond(200, json={"count": 0, "results": []})
    with pytest.raises(PermanentApiError, match="status is invalid"):
        client.write_external_reference(
            "77", ExternalReferenceWrite("noko", "invoice", "9", "failed")
        )


def test_write_external_reference_retried_after_timeout(
    router: respx.MockRouter, client: KantataClient, sleeps: list[float]
) -> None:
    """The upsert is idempotent, so a read timeout is retried."""
    route = router.post("/external_references/create_or_update").mock(
        side_effect=[httpx.ReadTimeout("slow"), httpx.Response(200, json={"results": []})]
    )
    ref = ExternalReferenceWrite("kantata_sync", "noko_invoice", "1", "pending")
    client.write_external_reference("77", ref)
    assert route.call_count == 2
    assert sleeps == [0.1]


def test_external_reference_status_checked() -> None:
    """Only pending, successful and failed are valid statuses."""
    with pytest.raises(ValueError, match="status"):
        ExternalReferenceWrite("kantata_sync", "noko_invoice", "1", "done")


# -- transport contract -----------------------------------------------------------------------


def test_auth_and_user_agent_headers(router: respx.MockRouter, client: KantataClient) -> None:
    """Requests carry the bearer token, a User-Agent and Accept JSON."""
    route = router.get("/users/me.json").respond(200, json={"count": 1, "results": []})
    assert client.current_user() == {"count": 1, "results": []}
    headers = route.calls.last.request.headers
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["user-agent"] == "kantata-sync/0.1"
    assert headers["accept"] == "application/json"


def test_token_absent_from_repr_and_errors(router: respx.MockRouter, client: KantataClient) -> None:
    """Neither repr(client) nor an error message shows the token."""
    router.get("/users/me.json").respond(
        401, json={"errors": [{"type": "oauth", "message": f"Invalid token {TOKEN}"}]}
    )
    assert TOKEN not in repr(client)
    with pytest.raises(AuthError) as info:
        client.current_user()
    assert TOKEN not in str(info.value)
    assert TOKEN not in repr(info.value)


@pytest.mark.parametrize(
    ("status", "body", "exc", "calls"),
    [
        (400, {"errors": [{"type": "syntax", "message": "Missing params"}]}, PermanentApiError, 1),
        (401, {"errors": [{"type": "oauth", "message": "Invalid token"}]}, AuthError, 1),
        (403, {"errors": [{"type": "system", "message": "Forbidden"}]}, AuthError, 1),
        (404, {"errors": [{"type": "system", "message": "not found"}]}, NotFoundError, 1),
        (
            422,
            {"errors": [{"type": "validation", "message": "is invalid", "field": "status"}]},
            PermanentApiError,
            1,
        ),
        (429, None, TransientApiError, 2),
        (500, {"errors": [{"type": "system", "message": "oops"}]}, TransientApiError, 2),
        (502, "<html>Bad Gateway</html>", TransientApiError, 2),
        (503, {"errors": [{"type": "system", "message": "unavailable"}]}, TransientApiError, 2),
        (200, "<html>login</html>", TransientApiError, 2),
    ],
)
def test_status_to_exception(
    status: int,
    body: Any,
    exc: type[Exception],
    calls: int,
    router: respx.MockRouter,
    client: KantataClient,
) -> None:
    """Each Kantata status maps to its error type; transient ones are retried first."""
    if isinstance(body, str):
        response = httpx.Response(status, text=body, headers={"Content-Type": "text/html"})
    elif body is None:
        response = httpx.Response(status)
    else:
        response = httpx.Response(status, json=body)
    route = router.get("/invoices.json").mock(return_value=response)
    with pytest.raises(exc) as info:
        list(client.iter_invoice_pages(updated_after=None))
    assert type(info.value) is exc
    assert route.call_count == calls
    assert info.value.status == status  # type: ignore[attr-defined]
    if isinstance(body, dict):
        assert body["errors"][0]["message"] in str(info.value)


def test_validation_error_names_field(router: respx.MockRouter, client: KantataClient) -> None:
    """A validation error message includes the field it concerns."""
    router.post("/external_references/create_or_update").respond(
        422, json={"errors": [{"type": "validation", "message": "is invalid", "field": "status"}]}
    )
    router.get("/external_references").respond(200, json={"count": 0, "results": []})
    with pytest.raises(PermanentApiError, match=r"is invalid \(field status\)"):
        client.write_external_reference(
            "1", ExternalReferenceWrite("kantata_sync", "noko_invoice", "1", "failed")
        )


def test_ambiguous_write_never_raised_for_the_idempotent_upsert(
    router: respx.MockRouter, client: KantataClient
) -> None:
    """An upsert failing with 5xx every time ends as TransientApiError, not
    AmbiguousWriteError: repeating it cannot make a second reference."""
    router.post("/external_references/create_or_update").respond(500)
    with pytest.raises(TransientApiError) as info:
        client.write_external_reference(
            "1", ExternalReferenceWrite("kantata_sync", "noko_invoice", "1", "failed")
        )
    assert not isinstance(info.value, AmbiguousWriteError)


def test_stats_by_endpoint(router: respx.MockRouter, client: KantataClient) -> None:
    """Stats key requests by method and path template."""
    router.post("/external_references/create_or_update").respond(200, json={"results": []})
    ref = ExternalReferenceWrite("kantata_sync", "noko_invoice", "1", "pending")
    client.write_external_reference("5", ref)
    client.write_external_reference("6", ref)
    assert client.stats.by_endpoint == {"POST /external_references/create_or_update": 2}


_TEXT = st.text(min_size=1, max_size=20)


@given(
    service_model_ref=_TEXT,
    status=st.sampled_from(sorted(REFERENCE_STATUSES)),
    external_link=st.none() | _TEXT,
    external_message=st.none() | _TEXT,
    external_status=st.none() | _TEXT,
)
def test_reference_fields_are_what_asdict_gives(
    service_model_ref: str,
    status: str,
    external_link: str | None,
    external_message: str | None,
    external_status: str | None,
) -> None:
    ref = ExternalReferenceWrite(
        service_name="Noko",
        service_model="invoice",
        service_model_ref=service_model_ref,
        status=status,
        external_link=external_link,
        external_message=external_message,
        external_status=external_status,
    )
    assert ref.as_dict() == dataclasses.asdict(ref)
    assert list(ref.as_dict()) == [f.name for f in dataclasses.fields(ref)]
    assert ref.to_body() == {k: v for k, v in dataclasses.asdict(ref).items() if v is not None}
    # The stored write-back hash is made from the same JSON as before.
    old = json.dumps(dataclasses.asdict(ref), sort_keys=True, default=str)
    assert _hash_reference(ref) == hashlib.sha256(old.encode()).hexdigest()[:32]


@pytest.mark.parametrize("answer", [[], "ok", 5])
def test_write_external_reference_answered_without_an_object(
    router: respx.MockRouter, client: KantataClient, answer: Any
) -> None:
    """An answer that is not a JSON object is an error (the upsert is retried: it is
    idempotent), and the message says what came back."""
    route = router.post("/external_references/create_or_update").respond(200, json=answer)
    ref = ExternalReferenceWrite("kantata_sync", "noko_invoice", "1", "pending")
    with pytest.raises(TransientApiError) as info:
        client.write_external_reference("77", ref)
    assert "Expected `object`" in str(info.value)
    assert route.call_count == RETRY.max_attempts


def test_meta_count_stands_in_for_a_missing_top_level_count(
    router: respx.MockRouter, client: KantataClient
) -> None:
    """Only `meta.count` given: it is the count, and no empty page is asked for."""

    def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        ids = list(range(1, 151))[(page - 1) * 100 : page * 100]
        return httpx.Response(
            200,
            json={
                "results": [{"key": "invoices", "id": str(i)} for i in ids],
                "invoices": {str(i): {"id": str(i)} for i in ids},
                "meta": {"count": 150, "page_number": page},
            },
        )

    route = router.get("/invoices.json").mock(side_effect=answer)
    got, pages = read_all(client)
    assert len(got) == 150
    assert route.call_count == 2
    assert pages[-1].count == 150 and pages[-1].unseen == 0


def test_a_refused_delete_of_the_stale_reference_still_tries_the_upsert(
    router: respx.MockRouter, client: KantataClient
) -> None:
    """A server that refuses the DELETE (405) may still re-point the reference by its upsert:
    it is tried, and its answer decides."""
    router.delete("/external_references/701").respond(
        405, json={"errors": [{"type": "system", "message": "Method not allowed"}]}
    )
    upsert = router.post("/external_references/create_or_update").respond(
        200, json=_upsert_answer("701")
    )
    client.write_external_reference(
        "77", ExternalReferenceWrite("noko", "invoice", "9", "successful"), replace="701"
    )
    assert upsert.call_count == 1
