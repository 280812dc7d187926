"""The Noko v2 client: projects, expenses, entries and invoices on the accounting side.

Amounts come back as exact `Decimal`s and go out as exact JSON numbers. Noko has no
idempotency keys, so creates are never retried once they may have reached the server
(`AmbiguousWriteError`); the caller finds the object by its natural key (an invoice's exact
`reference`) before creating it again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Self

import httpx
import msgspec

from connector.errors import AmbiguousWriteError, NotFoundError, TransientApiError
from connector.http import DEFAULT_MAX_BODY_BYTES, ApiStats, ApiTransport, RetryPolicy
from connector.http.server_time import server_time

__all__ = ["DEFAULT_BASE_URL", "NokoClient"]

SERVICE = "noko"
DEFAULT_BASE_URL = "https://api.nokotime.com/v2"
DEFAULT_USER_AGENT = "kantata-sync/0.1 (+https://github.com/kantata-sync)"


def _object(value: Any, method: str, path: str, *, written: bool = False) -> dict[str, Any]:
    """The decoded body as an object; anything else is an error (ambiguous after a create)."""
    if isinstance(value, dict):
        return value
    message = f"expected a JSON object, got {type(value).__name__}"
    if written:
        raise AmbiguousWriteError(SERVICE, message, method=method, path=path)
    raise TransientApiError(SERVICE, message, method=method, path=path)


class _Created(msgspec.Struct):
    """What the connector reads from a created expense or time entry: its id."""

    id: int


# Only `id` is read: the rest of the answer (the project, the user, ...) is skipped. Not
# strict, so an id sent as a numeric string is still taken.
_CREATED = msgspec.json.Decoder(_Created, strict=False)


class _InvoiceCreated(msgspec.Struct):
    """What the connector reads from a created invoice; a field Noko left out stays out."""

    id: Any = msgspec.UNSET
    reference: Any = msgspec.UNSET
    state: Any = msgspec.UNSET
    url: Any = msgspec.UNSET
    share_url: Any = msgspec.UNSET
    total_amount: Any = msgspec.UNSET
    tax_total_amount: Any = msgspec.UNSET


_INVOICE_FIELDS = tuple(_InvoiceCreated.__struct_fields__)
# The rest of the answer (projects, rates, customization, ...) is skipped, not built; the
# fields read keep `decode_json`'s forms (numbers with a fraction as exact Decimals).
_INVOICE_CREATED = msgspec.json.Decoder(_InvoiceCreated, float_hook=Decimal)


def _ids(values: Sequence[int]) -> list[int]:
    return [int(v) for v in values]


class NokoClient:
    """Noko API v2 over one paced, retrying transport. Safe to share between threads."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        rate: float | None = 2.0,
        burst: int = 3,
        retry: RetryPolicy,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        stop: threading.Event | None = None,
        max_body: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if not token:
            raise ValueError("Noko token is empty")
        if not user_agent.strip():
            raise ValueError("Noko rejects requests without a User-Agent")
        self._http = ApiTransport(
            SERVICE,
            base_url,
            {
                "X-NokoToken": token,
                "User-Agent": user_agent,
                "Accept": "application/json",
            },
            rate=rate,
            burst=burst,
            retry=retry,
            timeout=timeout,
            transport=transport,
            sleep=sleep,
            clock=clock,
            stop=stop,
            max_body=max_body,
        )
        self._projects_lock = threading.Lock()
        self._project_ids: dict[str, int] = {}
        self._project_increments: dict[str, int | None] = {}
        self._project_locks: dict[str, threading.Lock] = {}

    def __repr__(self) -> str:
        return f"NokoClient(base_url={str(self._http.base_url)!r})"

    @property
    def stats(self) -> ApiStats:
        return self._http.stats

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- generic ------------------------------------------------------------------------------

    def iter_pages(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        per_page: int = 1000,
        *,
        on_server_time: Callable[[datetime | None], None] | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Each page of a list endpoint, following `Link: rel="next"` until there is none.
        `on_server_time` is told Noko's clock (its `Date` header) at the first page."""
        query = {**(params or {}), "per_page": per_page}
        response, body = self._http.request_json_response("GET", path, params=query)
        if on_server_time is not None:
            on_server_time(server_time(response))
        seen: set[str] = set()
        while True:
            if not isinstance(body, list):
                raise TransientApiError(
                    SERVICE,
                    f"malformed page: expected a JSON array, got {type(body).__name__}",
                    method="GET",
                    path=path,
                )
            yield [item for item in body if isinstance(item, dict)]
            link = response.links.get("next", {}).get("url")
            if not link:
                return
            next_url = str(response.url.join(link))
            if next_url in seen:
                raise TransientApiError(
                    SERVICE, "pagination loop: next page already read", method="GET", path=path
                )
            seen.add(next_url)
            response, body = self._http.get_url_json(next_url)

    def _iter_items(self, path: str, params: Mapping[str, Any] | None) -> Iterator[dict[str, Any]]:
        for page in self.iter_pages(path, params):
            yield from page

    def current_user(self) -> dict[str, Any]:
        """The token's user (`GET /current_user`), to check credentials."""
        return _object(self._http.request_json("GET", "/current_user"), "GET", "/current_user")

    # -- projects -----------------------------------------------------------------------------

    def find_project(self, name: str) -> dict[str, Any] | None:
        """The project with exactly this name (Noko's filter matches substrings).

        An enabled project is preferred over an archived one of the same name.
        """
        matches = [
            p for p in self._iter_items("/projects", {"name": name}) if p.get("name") == name
        ]
        if not matches:
            return None
        enabled = [p for p in matches if p.get("enabled") is not False]
        return (enabled or matches)[0]

    def create_project(self, name: str, billing_increment: int | None = None) -> dict[str, Any]:
        """`POST /projects`; without `billing_increment`, Noko gives the account's default."""
        payload: dict[str, Any] = {"name": name}
        if billing_increment is not None:
            payload["billing_increment"] = int(billing_increment)
        body = self._http.request_json("POST", "/projects", body=payload)
        return _object(body, "POST", "/projects", written=True)

    def project_billing_increment(self, name: str) -> int | None:
        """The billing increment (minutes) of a project `ensure_project` found or created,
        as Noko gave it; None when unknown."""
        with self._projects_lock:
            return self._project_increments.get(name)

    def ensure_project(self, name: str, billing_increment: int | None = None) -> int:
        """The id of the project with this name, created when missing (with `billing_increment`
        when given); cached per client, with the project's billing increment.

        Concurrent callers for one name wait for a single lookup (and create). After an
        ambiguous create the project is looked up again before it is created again.
        """
        with self._projects_lock:
            cached = self._project_ids.get(name)
            if cached is not None:
                return cached
            lock = self._project_locks.setdefault(name, threading.Lock())
        with lock:
            with self._projects_lock:
                cached = self._project_ids.get(name)
            if cached is not None:
                return cached
            project = self.find_project(name)
            if project is None:
                try:
                    project = self.create_project(name, billing_increment)
                except AmbiguousWriteError:
                    project = self.find_project(name) or self.create_project(
                        name, billing_increment
                    )
            project_id = int(project["id"])
            increment = project.get("billing_increment")
            if isinstance(increment, bool) or not isinstance(increment, int) or increment < 1:
                increment = None
            with self._projects_lock:
                self._project_ids[name] = project_id
                self._project_increments[name] = increment
            return project_id

    # -- expenses and entries -----------------------------------------------------------------

    def create_expense(
        self, *, project_id: int, date: str, price: Decimal, taxable: bool, description: str
    ) -> int:
        """Create an expense; its id. An answer without an id is an `AmbiguousWriteError`."""
        if not isinstance(price, Decimal | int) or isinstance(price, bool):
            raise TypeError("expense price must be a Decimal")
        body = {
            "project_id": int(project_id),
            "date": date,
            "price": price,
            "taxable": taxable,
            "description": description,
        }
        created: _Created = self._http.request_typed("POST", "/expenses", _CREATED, body=body)
        return created.id

    def list_expenses(self, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        return self._iter_items("/expenses", params)

    def delete_expense(self, expense_id: int) -> None:
        """Delete an expense; one that is already gone (404) is not an error."""
        self._delete(f"/expenses/{int(expense_id)}")

    def create_entry(
        self,
        *,
        project_id: int,
        date: str,
        minutes: int,
        description: str,
        user_id: int | None = None,
    ) -> int:
        """Create a time entry; its id. An answer without an id is an `AmbiguousWriteError`."""
        body: dict[str, Any] = {
            "project_id": int(project_id),
            "date": date,
            "minutes": int(minutes),
            "description": description,
        }
        if user_id is not None:
            body["user_id"] = int(user_id)
        created: _Created = self._http.request_typed("POST", "/entries", _CREATED, body=body)
        return created.id

    def list_entries(self, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        return self._iter_items("/entries", params)

    def delete_entry(self, entry_id: int) -> None:
        """Delete an entry; one that is already gone (404) is not an error."""
        self._delete(f"/entries/{int(entry_id)}")

    # -- invoices -----------------------------------------------------------------------------

    def create_invoice(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /invoices`; of the created invoice, the fields the connector reads (`id`,
        `reference`, `state`, `url`, `share_url`, `total_amount`, `tax_total_amount`, those
        present), amounts as `Decimal`s. An answer that is not an object is an
        `AmbiguousWriteError`."""
        created = self._http.request_typed(
            "POST", "/invoices", _INVOICE_CREATED, body=dict(payload)
        )
        return {
            name: value
            for name in _INVOICE_FIELDS
            if (value := getattr(created, name)) is not msgspec.UNSET
        }

    def get_invoice(self, invoice_id: int) -> dict[str, Any] | None:
        """The invoice, or None when Noko has no such invoice."""
        path = f"/invoices/{int(invoice_id)}"
        try:
            body = self._http.request_json("GET", path)
        except NotFoundError:
            return None
        return _object(body, "GET", "/invoices/{id}")

    def find_invoices_by_reference(self, reference: str) -> list[dict[str, Any]]:
        """Invoices whose reference equals `reference` exactly (Noko's filter is "contains")."""
        if not reference:
            raise ValueError("an empty reference would match every invoice")
        return [
            invoice
            for invoice in self._iter_items("/invoices", {"reference": reference})
            if invoice.get("reference") == reference
        ]

    def list_invoices(
        self,
        params: Mapping[str, Any],
        *,
        on_server_time: Callable[[datetime | None], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        for page in self.iter_pages("/invoices", params, on_server_time=on_server_time):
            yield from page

    def update_invoice(self, invoice_id: int, payload: Mapping[str, Any]) -> dict[str, Any]:
        path = f"/invoices/{int(invoice_id)}"
        body = self._http.request_json("PUT", path, body=dict(payload))
        return _object(body, "PUT", "/invoices/{id}")

    def delete_invoice(self, invoice_id: int) -> None:
        """Delete an invoice; one that is already gone (404) is not an error."""
        self._delete(f"/invoices/{int(invoice_id)}")

    def add_expenses(self, invoice_id: int, expense_ids: Sequence[int]) -> None:
        self._invoice_action(invoice_id, "add_expenses", {"expense_ids": _ids(expense_ids)})

    def remove_expenses(self, invoice_id: int, expense_ids: Sequence[int]) -> None:
        self._invoice_action(invoice_id, "remove_expenses", {"expense_ids": _ids(expense_ids)})

    def add_entries(self, invoice_id: int, entry_ids: Sequence[int]) -> None:
        self._invoice_action(invoice_id, "add_entries", {"entry_ids": _ids(entry_ids)})

    def remove_entries(self, invoice_id: int, entry_ids: Sequence[int]) -> None:
        self._invoice_action(invoice_id, "remove_entries", {"entry_ids": _ids(entry_ids)})

    def add_taxes(self, invoice_id: int, taxes: Sequence[Mapping[str, Any]]) -> None:
        self._invoice_action(invoice_id, "add_taxes", {"taxes": [dict(t) for t in taxes]})

    def remove_taxes(self, invoice_id: int, tax_ids: Sequence[int]) -> None:
        self._invoice_action(invoice_id, "remove_taxes", {"tax_ids": _ids(tax_ids)})

    def mark_paid(self, invoice_id: int) -> None:
        self._http.request("PUT", f"/invoices/{int(invoice_id)}/paid")

    def mark_unpaid(self, invoice_id: int) -> None:
        self._http.request("PUT", f"/invoices/{int(invoice_id)}/unpaid")

    # -- helpers ------------------------------------------------------------------------------

    # Adding is not repeatable: a second add_taxes doubles the tax, and re-adding an expense
    # may be refused as already invoiced. Removing is (Noko ignores ids not on the invoice).
    _NOT_REPEATABLE = frozenset({"add_expenses", "add_entries", "add_taxes"})

    def _invoice_action(self, invoice_id: int, action: str, body: Mapping[str, Any]) -> None:
        (items,) = body.values()
        if not items:
            return  # nothing to change; spare a request at 2 per second
        self._http.request(
            "PUT",
            f"/invoices/{int(invoice_id)}/{action}",
            body=dict(body),
            idempotent=action not in self._NOT_REPEATABLE,
        )

    def _delete(self, path: str) -> None:
        try:
            self._http.request("DELETE", path)
        except NotFoundError:
            # Gone already, possibly by our own earlier attempt whose answer was lost.
            return
