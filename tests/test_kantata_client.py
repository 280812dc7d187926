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

from connector.engine import _hash_reference
from connector.errors import (
    AmbiguousWriteError,
    AuthError,
    NotFoundError,
    PermanentApiError,
    TransientApiError,
)
from connector.http import RetryPolicy
from connector.kantata import (
    INVOICE_INCLUDES,
    REFERENCE_STATUSES,
    ExternalReferenceWrite,
    KantataClient,
    format_timestamp,
)

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
    # httpx's own pool, which respx intercepts (the default, connector.wire, it does not).
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


def test_write_external_reference_sends_only_the_reference(
    router: respx.MockRouter, client: KantataClient
) -> None:
    """The PUT body is exactly the external reference: no id lists, no other invoice fields."""
    route = router.put("/invoices/77.json").respond(
        200, json=page_body([77], count=1, page_count=1)
    )
    ref = ExternalReferenceWrite(
        service_name="kantata_sync",
        service_model="noko_invoice",
        service_model_ref="123",
        status="successful",
        external_link="https://example.nokotime.test/invoices/123",
    )
    assert client.write_external_reference("77", ref) is None
    assert json.loads(route.calls.last.request.content) == {
        "invoice": {
            "external_reference": {
                "service_name": "kantata_sync",
                "service_model": "noko_invoice",
                "service_model_ref": "123",
                "status": "successful",
                "external_link": "https://example.nokotime.test/invoices/123",
            }
        }
    }


def test_write_external_reference_retried_after_timeout(
    router: respx.MockRouter, client: KantataClient, sleeps: list[float]
) -> None:
    """The reference PUT is idempotent, so a read timeout is retried."""
    route = router.put("/invoices/77.json").mock(
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
    with pytest.raises(PermanentApiError) as info:
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
    router.put("/invoices/1.json").respond(
        422, json={"errors": [{"type": "validation", "message": "is invalid", "field": "status"}]}
    )
    with pytest.raises(PermanentApiError, match=r"is invalid \(field status\)"):
        client.write_external_reference(
            "1", ExternalReferenceWrite("kantata_sync", "noko_invoice", "1", "failed")
        )


def test_ambiguous_put_never_raised_for_idempotent_write(
    router: respx.MockRouter, client: KantataClient
) -> None:
    """A PUT failing with 5xx every time ends as TransientApiError, not AmbiguousWriteError."""
    router.put("/invoices/1.json").respond(500)
    with pytest.raises(TransientApiError) as info:
        client.write_external_reference(
            "1", ExternalReferenceWrite("kantata_sync", "noko_invoice", "1", "failed")
        )
    assert not isinstance(info.value, AmbiguousWriteError)


def test_stats_by_endpoint(router: respx.MockRouter, client: KantataClient) -> None:
    """Stats key requests by method and path template."""
    router.put("/invoices/5.json").respond(200, json={"results": []})
    router.put("/invoices/6.json").respond(200, json={"results": []})
    ref = ExternalReferenceWrite("kantata_sync", "noko_invoice", "1", "pending")
    client.write_external_reference("5", ref)
    client.write_external_reference("6", ref)
    assert client.stats.by_endpoint == {"PUT /invoices/{id}.json": 2}


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
    """An answer that is not a JSON object is an error (the PUT is retried: it is
    idempotent), and the message says what came back."""
    route = router.put("/invoices/77.json").respond(200, json=answer)
    ref = ExternalReferenceWrite("kantata_sync", "noko_invoice", "1", "pending")
    with pytest.raises(TransientApiError) as info:
        client.write_external_reference("77", ref)
    assert "Expected `object`" in str(info.value)
    assert route.call_count == RETRY.max_attempts
