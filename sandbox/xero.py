"""A fake Xero (identity, connections and Accounting API 2.0) for tests and the sandbox.

Paths as on the real hosts, on one server: `/connect/token` and `/connect/authorize`
(identity.xero.com / login.xero.com), `/connections` (api.xero.com), `/api.xro/2.0/...`.

What it does, and where the docs are silent the stricter choice it makes (docs/XERO.md):
- Token endpoint with `client_credentials`, `authorization_code` (PKCE S256 checked) and
  `refresh_token`; a refresh rotates the refresh token and the old one dies at once.
- Every API call needs a live bearer token, `xero-tenant-id` of a connected organisation and
  `Accept: application/json`.
- Invoices and credit notes: PUT creates, POST creates or updates (by id); `summarizeErrors=false`
  answers 200 with per-element `HasErrors`/`ValidationErrors`; without it one bad element gives a
  400 while the good ones ARE created (as the real API does). Tax per line, half-up at 2 dp,
  unless the line's `TaxAmount` overrides it. Status rules: DRAFT -> SUBMITTED/AUTHORISED/DELETED,
  SUBMITTED -> DRAFT/AUTHORISED/DELETED, AUTHORISED -> VOIDED; a paid or part-paid document
  cannot be edited or voided; line edits of AUTHORISED documents are refused unless
  `allow_authorised_edits`.
- `Idempotency-Key`: a repeated key gets the stored answer, whatever the body.
- Lists: `where` (`Field=="v"`, `Field.StartsWith("v")`, AND/OR), `createdByMyApp`, `Statuses`,
  `IDs` (more than 52 is a 404, as reported of the real API), `If-Modified-Since`, `page`
  with `pageSize` (default 100, at most 1000; more is a 400); without `page` everything comes
  back without line items; every list answer carries Xero's clock as `DateTimeUTC`.
- Limits: 60 a minute (fixed window), 5 in flight, a day limit; 429 with `Retry-After` and
  `X-Rate-Limit-Problem`; `X-MinLimit-Remaining`/`X-DayLimit-Remaining` on every answer.
- Contacts: an invoice's `Contact` without `ContactID` is taken by `Name` or made (then with
  the `ContactNumber` sent; `invoice_contact_numbers`/`invoice_makes_contacts` give the other
  readings); POST `/Contacts` with a `ContactID` updates its Name or ContactNumber.
- Faults: `drop_answers(n)` commits the next n writes and drops their answers.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

from sandbox._core import (
    ApiFailure,
    Request,
    Response,
    Route,
    Service,
    loads,
    parse_bool,
    parse_timestamp,
)

API = "/api.xro/2.0"
CENT = Decimal("0.01")
EDITABLE = {"DRAFT", "SUBMITTED"}
TRANSITIONS = {
    "DRAFT": {"DRAFT", "SUBMITTED", "AUTHORISED", "DELETED"},
    "SUBMITTED": {"DRAFT", "SUBMITTED", "AUTHORISED", "DELETED"},
    "AUTHORISED": {"AUTHORISED", "VOIDED"},
}
_CLAUSE = re.compile(
    r'^\s*(?P<field>[A-Za-z.]+)\s*(?:(?P<op>==|!=)\s*"(?P<value>[^"]*)"'
    r'|\.StartsWith\("(?P<prefix>[^"]*)"\))\s*$'
)
_KINDS = {
    "Invoices": ("InvoiceID", "InvoiceNumber", "INV-", {"ACCREC", "ACCPAY"}),
    "CreditNotes": ("CreditNoteID", "CreditNoteNumber", "CN-", {"ACCRECCREDIT", "ACCPAYCREDIT"}),
}


def ms_date(when: datetime) -> str:
    """Xero's JSON date: `/Date(1518685950940+0000)/`."""
    return f"/Date({int(when.timestamp() * 1000)}+0000)/"


def _money(value: Any, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise ValueError(f"{field} must be a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{field} must be a number") from None
    if not number.is_finite():
        raise ValueError(f"{field} must be a number")
    return number


@dataclass
class Tenant:
    tenant_id: str
    name: str
    short_code: str


class FakeXero(Service):
    """See the module docstring. Drive it in-process or over HTTP (`sandbox.server`)."""

    name = "xero"
    base_path = ""

    def __init__(
        self,
        *,
        client_id: str = "sandbox-xero-client",
        client_secret: str = "sandbox-xero-secret",  # noqa: S107 (a fake)
        tenants: int = 1,
        base_currency: str = "USD",
        currencies: tuple[str, ...] = ("USD", "EUR", "GBP", "JPY", "AUD", "NZD", "CAD"),
        output_rate: Decimal = Decimal("15"),
        per_minute: int = 60,
        in_flight: int = 5,
        per_day: int = 5000,
        token_lifetime: int = 1800,
        allow_authorised_edits: bool = False,
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.tenants = [
            Tenant(str(uuid.UUID(int=0xA000 + i)), f"Sandbox Org {i + 1}", f"!sbx{i:02d}")
            for i in range(tenants)
        ]
        self.base_currency = base_currency
        self.currencies = set(currencies)
        self.per_minute = per_minute
        self.in_flight_limit = in_flight
        self.per_day = per_day
        self.token_lifetime = token_lifetime
        self.allow_authorised_edits = allow_authorised_edits
        self.invoice_makes_contacts = True
        """False: an invoice naming a contact that does not exist is refused."""
        self.invoice_contact_numbers = True
        """False: a contact an invoice makes drops the ContactNumber it was sent with."""
        self.accounts = {
            "200": ("Sales", "REVENUE", "OUTPUT"),
            "260": ("Other Revenue", "REVENUE", "OUTPUT"),
            "860": ("Rounding", "CURRLIAB", "NONE"),
            "090": ("Business Bank Account", "BANK", "NONE"),
        }
        self.tax_rates: dict[str, Decimal] = {"OUTPUT": output_rate, "NONE": Decimal(0)}
        self.access_tokens: dict[str, datetime] = {}
        self.refresh_tokens: set[str] = set()
        self.codes: dict[str, dict[str, str]] = {}
        self.docs: dict[str, dict[str, dict[str, Any]]] = {"Invoices": {}, "CreditNotes": {}}
        self.contacts: dict[str, dict[str, Any]] = {}
        self.payments: list[dict[str, Any]] = []
        self.idempotency: dict[str, Response] = {}
        self.remember_keys = True
        """False: every Idempotency-Key is forgotten at once (the key's lifetime is not
        documented; a connector must not rely on it)."""
        self.drop_next_writes = 0
        self.minute_window: tuple[int, int] = (0, 0)
        self.day_window: tuple[str, int] = ("", 0)
        self.flying = 0
        self._flying_lock = threading.Lock()
        self._seq = 0
        self.router.add(Route("POST", "/connect/token", self._token))
        self.router.add(Route("GET", "/connect/authorize", self._authorize))
        self.router.add(Route("GET", "/connections", self._connections))
        self.router.add(Route("GET", API + "/Organisation", self._organisation))
        self.router.add(Route("GET", API + "/Accounts", self._accounts))
        self.router.add(Route("GET", API + "/TaxRates", self._tax_rates))
        self.router.add(Route("GET", API + "/Contacts", self._list_contacts))
        for method in ("PUT", "POST"):
            self.router.add(Route(method, API + "/Contacts", self._save_contacts, creating=True))
            self.router.add(Route(method, API + "/Payments", self._save_payments, creating=True))
        for kind in _KINDS:
            self.router.add(Route("GET", f"{API}/{kind}", self._lister(kind)))
            self.router.add(Route("GET", f"{API}/{kind}/{{id}}", self._getter(kind)))
            self.router.add(Route("PUT", f"{API}/{kind}", self._saver(kind, False), creating=True))
            self.router.add(Route("POST", f"{API}/{kind}", self._saver(kind, True), creating=True))

    # ----- Service hooks ---------------------------------------------------------------------
    def error(self, status: int, message: str, **extra: Any) -> Response:
        if status == 400:
            body = {"ErrorNumber": 10, "Type": "ValidationException", "Message": message}
            return Response.json(400, {**body, **extra})
        return Response.json(status, {"Title": message, "Status": status, "Detail": message})

    def rate_limited_response(self, retry_after: bool) -> Response:
        headers = [("X-Rate-Limit-Problem", "minute")]
        if retry_after:
            headers.append(("Retry-After", "1"))
        return Response.json(429, {"Title": "Too Many Requests", "Status": 429}, headers)

    def handle(self, request: Request) -> Response:
        if not request.path.startswith(API):  # identity and connections: no org limits
            return super().handle(request)
        with self._flying_lock:
            self.flying += 1
            over = self.flying > self.in_flight_limit
        try:
            limited = self._limits("concurrent" if over else None)
            if limited is not None:
                self._record(f"{request.method} {request.path}", request, limited, fault=None)
                return limited
            response = super().handle(request)
            if (
                self.drop_next_writes
                and request.method in ("PUT", "POST")
                and response.status < 300
            ):
                self.drop_next_writes -= 1
                response.drop = True
                self.stats.mark_dropped(request.method, request.path)
            response.headers.extend(self._limit_headers())
            return response
        finally:
            with self._flying_lock:
                self.flying -= 1

    def _limits(self, problem: str | None) -> Response | None:
        with self.mutex:
            now = self.clock.now()
            day = now.date().isoformat()
            minute = int(now.timestamp()) // 60
            if self.day_window[0] != day:
                self.day_window = (day, 0)
            if self.minute_window[0] != minute:
                self.minute_window = (minute, 0)
            if self.day_window[1] >= self.per_day:
                midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time())
                wait = int((midnight.replace(tzinfo=UTC) - now).total_seconds())
                return self._too_many("day", wait)
            if self.minute_window[1] >= self.per_minute:
                return self._too_many("minute", 60 - int(now.timestamp()) % 60)
            if problem is not None:
                return self._too_many(problem, None)
            self.day_window = (day, self.day_window[1] + 1)
            self.minute_window = (minute, self.minute_window[1] + 1)
        return None

    def _too_many(self, problem: str, wait: int | None) -> Response:
        headers = [("X-Rate-Limit-Problem", problem), *self._limit_headers()]
        if wait is not None:
            headers.append(("Retry-After", str(max(wait, 1))))
        return Response.json(429, {"Title": "Too Many Requests", "Status": 429}, headers)

    def _limit_headers(self) -> list[tuple[str, str]]:
        return [
            ("X-MinLimit-Remaining", str(max(self.per_minute - self.minute_window[1], 0))),
            ("X-DayLimit-Remaining", str(max(self.per_day - self.day_window[1], 0))),
            ("X-AppMinLimit-Remaining", "9999"),
        ]

    def check_request(self, request: Request) -> Response | None:
        if request.path.startswith("/connect/"):
            return None
        auth = request.header("authorization") or ""
        token = auth[7:] if auth.startswith("Bearer ") else ""
        expires = self.access_tokens.get(token)
        if expires is None:
            return self._unauthorized("AuthenticationUnsuccessful")
        if expires <= self.clock.now():
            return self._unauthorized(f"TokenExpired: token expired at {expires:%m/%d/%Y %H:%M:%S}")
        if request.path == "/connections":
            return None
        tenant = request.header("xero-tenant-id")
        if tenant not in {t.tenant_id for t in self.tenants}:
            return Response.json(
                403, {"Title": "Forbidden", "Status": 403, "Detail": "AuthenticationUnsuccessful"}
            )
        if "application/json" not in (request.header("accept") or ""):
            return Response.json(406, {"Title": "Not Acceptable", "Detail": "ask for JSON"})
        return None

    def _unauthorized(self, detail: str) -> Response:
        body = {"Title": "Unauthorized", "Status": 401, "Detail": detail}
        return Response.json(401, body, [("WWW-Authenticate", 'Bearer error="invalid_token"')])

    def state(self) -> dict[str, Any]:
        return {
            "invoices": list(self.docs["Invoices"].values()),
            "credit_notes": list(self.docs["CreditNotes"].values()),
            "contacts": list(self.contacts.values()),
        }

    # ----- identity --------------------------------------------------------------------------
    def _token(self, request: Request, params: dict[str, str]) -> Response:
        auth = request.header("authorization") or ""
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        public = form.get("client_id") == self.client_id and not auth
        if auth != f"Basic {expected}" and not public:
            return Response.json(400, {"error": "invalid_client"})
        grant = form.get("grant_type")
        refresh: str | None = None
        if grant == "client_credentials":
            pass
        elif grant == "authorization_code":
            code = self.codes.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "")
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            if (
                code is None
                or code["redirect_uri"] != form.get("redirect_uri")
                or challenge.decode().rstrip("=") != code["challenge"]
            ):
                return Response.json(400, {"error": "invalid_grant"})
            refresh = secrets.token_urlsafe(24)
        elif grant == "refresh_token":
            old = form.get("refresh_token", "")
            if old not in self.refresh_tokens:
                return Response.json(400, {"error": "invalid_grant"})
            self.refresh_tokens.discard(old)  # rotation: the old one dies at once
            refresh = secrets.token_urlsafe(24)
        else:
            return Response.json(400, {"error": "unsupported_grant_type"})
        access = secrets.token_urlsafe(32)
        self.access_tokens[access] = self.clock.now() + timedelta(seconds=self.token_lifetime)
        body: dict[str, Any] = {
            "access_token": access,
            "expires_in": self.token_lifetime,
            "token_type": "Bearer",
            "scope": form.get("scope", ""),
        }
        if refresh is not None:
            self.refresh_tokens.add(refresh)
            body["refresh_token"] = refresh
        return Response.json(200, body)

    def _authorize(self, request: Request, params: dict[str, str]) -> Response:
        q = request.query
        if (
            q.get("client_id") != self.client_id
            or q.get("response_type") != "code"
            or q.get("code_challenge_method") != "S256"
            or not q.get("code_challenge")
            or not q.get("redirect_uri", "").startswith("http://127.0.0.1:")
        ):
            return Response.json(400, {"error": "invalid_request"})
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"redirect_uri": q["redirect_uri"], "challenge": q["code_challenge"]}
        target = q["redirect_uri"] + "?" + urlencode({"code": code, "state": q.get("state", "")})
        return Response(302, b"", [("Location", target)], content_type=None)

    def revoke_tokens(self) -> None:
        """Every access and refresh token stops working (a disconnected app)."""
        with self.mutex:
            self.access_tokens.clear()
            self.refresh_tokens.clear()

    def _connections(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(
            200,
            [
                {
                    "id": str(uuid.UUID(int=0xC000 + i)),
                    "tenantId": t.tenant_id,
                    "tenantType": "ORGANISATION",
                    "tenantName": t.name,
                }
                for i, t in enumerate(self.tenants)
            ],
        )

    # ----- settings --------------------------------------------------------------------------
    def _organisation(self, request: Request, params: dict[str, str]) -> Response:
        tenant = next(t for t in self.tenants if t.tenant_id == request.header("xero-tenant-id"))
        org = {
            "OrganisationID": tenant.tenant_id,
            "Name": tenant.name,
            "ShortCode": tenant.short_code,
            "BaseCurrency": self.base_currency,
        }
        return Response.json(200, {"Organisations": [org]})

    def _accounts(self, request: Request, params: dict[str, str]) -> Response:
        rows = [
            {"Code": code, "Name": name, "Type": kind, "TaxType": tax, "Status": "ACTIVE"}
            for code, (name, kind, tax) in self.accounts.items()
        ]
        return Response.json(200, {"Accounts": rows})

    def _tax_rates(self, request: Request, params: dict[str, str]) -> Response:
        rows = [
            {
                "Name": tax_type,
                "TaxType": tax_type,
                "Status": "ACTIVE",
                "EffectiveRate": rate,
                "TaxComponents": [{"Name": tax_type, "Rate": rate, "IsCompound": False}],
            }
            for tax_type, rate in self.tax_rates.items()
        ]
        return Response.json(200, {"TaxRates": rows})

    # ----- contacts --------------------------------------------------------------------------
    def _list_contacts(self, request: Request, params: dict[str, str]) -> Response:
        rows = self._filtered(list(self.contacts.values()), request)
        return Response.json(200, {"Contacts": rows})

    def _save_contacts(self, request: Request, params: dict[str, str]) -> Response:
        return self._batch(request, "Contacts", self._save_contact, request.method == "POST")

    def _save_contact(self, element: dict[str, Any], update: bool) -> dict[str, Any]:
        if update and element.get("ContactID"):
            found = self.contacts.get(str(element["ContactID"]))
            if found is None:
                raise ValueError("The contact could not be found")
            if "Name" in element and str(element["Name"]).lower() != found["Name"].lower():
                self._name_free(str(element["Name"]), found["ContactID"])
                found["Name"] = str(element["Name"])
            if "ContactNumber" in element:
                found["ContactNumber"] = str(element["ContactNumber"] or "")
            return found
        name = element.get("Name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError("The contact name is required")
        self._name_free(name, element.get("ContactID"))
        contact = {
            "ContactID": str(uuid.uuid4()),
            "Name": name,
            "ContactNumber": str(element.get("ContactNumber") or ""),
            "ContactStatus": "ACTIVE",
        }
        self.contacts[contact["ContactID"]] = contact
        return contact

    def _name_free(self, name: str, contact_id: Any) -> None:
        for other in self.contacts.values():
            if other["Name"].lower() == name.lower() and other["ContactID"] != contact_id:
                raise ValueError(
                    f"The contact name {name} is already assigned to another contact. The "
                    "contact name must be unique across all active contacts."
                )

    def _contact_of(self, value: Any) -> dict[str, Any]:
        """The contact an invoice names: by ContactID; else by Name, taken if a contact has
        it (case-insensitive, whatever ContactNumber is sent) or made (xero.md §4); else by
        an existing ContactNumber. Where the docs are silent: a contact made this way keeps
        the ContactNumber sent unless `invoice_contact_numbers` is False, and with
        `invoice_makes_contacts` False the invoice is refused instead."""
        if not isinstance(value, dict):
            raise ValueError("A Contact must be specified")
        if value.get("ContactID"):
            found = self.contacts.get(str(value["ContactID"]))
            if found is None:
                raise ValueError("The contact could not be found")
            return found
        name = value.get("Name")
        if isinstance(name, str) and name.strip():
            for contact in self.contacts.values():
                if contact["Name"].lower() == name.lower():
                    return contact
            if not self.invoice_makes_contacts:
                raise ValueError(f"The contact {name} could not be found")
            element = dict(value)
            if not self.invoice_contact_numbers:
                element.pop("ContactNumber", None)
            return self._save_contact(element, False)
        number = value.get("ContactNumber")
        for contact in self.contacts.values():
            if number and contact["ContactNumber"] == number:
                return contact
        raise ValueError(
            "The Contact must contain at least 1 of the following elements to identify the "
            "contact: Name, ContactID, ContactNumber"
        )

    # ----- invoices and credit notes ---------------------------------------------------------
    def _lister(self, kind: str) -> Any:
        def handler(request: Request, params: dict[str, str]) -> Response:
            rows = self._filtered(list(self.docs[kind].values()), request)
            id_list = request.query.get("IDs")
            if id_list:
                ids = set(id_list.split(","))
                if len(ids) > 52:
                    return self.error(404, "The resource you're looking for cannot be found")
                rows = [r for r in rows if r[_KINDS[kind][0]] in ids]
            status_list = request.query.get("Statuses")
            if status_list:
                wanted = set(status_list.split(","))
                rows = [r for r in rows if r["Status"] in wanted]
            since = request.header("if-modified-since")
            if since:
                when = parse_timestamp(since)
                if when is None:
                    try:
                        when = parsedate_to_datetime(since)
                    except (TypeError, ValueError):
                        return self.error(400, f"If-Modified-Since {since!r} is not a date")
                rows = [r for r in rows if r["_updated"] >= when]
            if parse_bool(request.query.get("createdByMyApp")):
                rows = [r for r in rows if r["_by_app"]]
            rows.sort(key=lambda r: (r["_updated"], r["_seq"]))
            if "page" not in request.query:
                out = [{k: v for k, v in self._public(r).items() if k != "LineItems"} for r in rows]
                return Response.json(200, {"DateTimeUTC": ms_date(self.clock.now()), kind: out})
            try:
                page = int(request.query["page"])
                size = int(request.query.get("pageSize", "100"))
            except ValueError:
                return self.error(400, "page and pageSize must be integers")
            if page < 1 or not 1 <= size <= 1000:
                return self.error(400, "pageSize must be between 1 and 1000")
            chunk = rows[(page - 1) * size : page * size]
            pagination = {
                "page": page,
                "pageSize": size,
                "pageCount": (len(rows) + size - 1) // size,
                "itemCount": len(rows),
            }
            body = {
                "DateTimeUTC": ms_date(self.clock.now()),
                "pagination": pagination,
                kind: [self._public(r) for r in chunk],
            }
            return Response.json(200, body)

        return handler

    def _getter(self, kind: str) -> Any:
        def handler(request: Request, params: dict[str, str]) -> Response:
            row = self.docs[kind].get(params["id"])
            if row is None:
                return self.error(404, "The resource you're looking for cannot be found")
            return Response.json(200, {kind: [self._public(row)]})

        return handler

    def _saver(self, kind: str, update: bool) -> Any:
        def handler(request: Request, params: dict[str, str]) -> Response:
            return self._batch(request, kind, lambda e, u: self._save_doc(kind, e, u), update)

        return handler

    def _batch(self, request: Request, kind: str, save: Any, update: bool = False) -> Response:
        key = request.header("idempotency-key")
        if key is not None:
            if len(key) > 128:
                return self.error(400, "Idempotency-Key is longer than 128 characters")
            stored = self.idempotency.get(key)
            if stored is not None:
                return Response(stored.status, stored.body, list(stored.headers))
        try:
            body = loads(request.body)
        except ValueError:
            return self.error(400, "The request body is not JSON")
        elements = body.get(kind) if isinstance(body, dict) else None
        if not isinstance(elements, list):
            return self.error(400, f"The body must be an object with a {kind} list")
        summarize = request.query.get("summarizeErrors", "true").lower() != "false"
        answers: list[dict[str, Any]] = []
        failed = False
        for element in elements:
            try:
                if not isinstance(element, dict):
                    raise ValueError("each element must be an object")
                saved = save(element, update)
                answers.append(
                    {**self._public(saved), "HasErrors": False, "StatusAttributeString": "OK"}
                )
            except ValueError as exc:
                failed = True
                echo = element if isinstance(element, dict) else {}
                answers.append(
                    {
                        **echo,
                        "HasErrors": True,
                        "StatusAttributeString": "ERROR",
                        "ValidationErrors": [{"Message": str(exc)}],
                    }
                )
        if failed and summarize:
            bad = [a for a in answers if a["HasErrors"]]
            response = self.error(400, "A validation exception occurred", Elements=bad)
        else:
            response = Response.json(200, {"Id": str(uuid.uuid4()), "Status": "OK", kind: answers})
        if key is not None and self.remember_keys:
            self.idempotency[key] = Response(response.status, response.body, list(response.headers))
        return response

    def _save_doc(self, kind: str, element: dict[str, Any], update: bool) -> dict[str, Any]:
        id_field, number_field, prefix, types = _KINDS[kind]
        existing = self.docs[kind].get(str(element.get(id_field) or ""))
        if element.get(id_field) and existing is None:
            raise ValueError(f"{id_field} {element[id_field]} could not be found")
        if existing is not None and not update:
            raise ValueError(f"{id_field} already exists: use POST to update")
        now = self.clock.now()
        if existing is None:
            doc = self._new_doc(kind, element, types)
        else:
            doc = dict(existing)
            self._change(doc, element)
        status = str(element.get("Status") or doc["Status"])
        if existing is not None and status not in TRANSITIONS.get(existing["Status"], set()):
            raise ValueError("Invoice not of valid status for modification")
        if status in ("AUTHORISED", "SUBMITTED"):
            missing = [f for f in ("Date", "DueDate") if not doc.get(f)]
            if kind == "CreditNotes":
                missing = [f for f in missing if f != "DueDate"]
            if missing or any(not line.get("AccountCode") for line in doc["LineItems"]):
                raise ValueError(
                    f"Date, DueDate and an AccountCode on every line are required"
                    f" to approve ({', '.join(missing) or 'AccountCode'})"
                )
        if status == "VOIDED" and (doc["AmountPaid"] or doc["AmountCredited"]):
            raise ValueError("Payments or credits must be removed before voiding")
        doc["Status"] = status
        if not doc.get(number_field):
            self._seq += 1
            doc[number_field] = f"{prefix}{self._seq:04d}"
        doc["_updated"] = now
        doc["_seq"] = doc.get("_seq") or self._seq
        self.docs[kind][doc[id_field]] = doc
        return doc

    def _new_doc(self, kind: str, element: dict[str, Any], types: set[str]) -> dict[str, Any]:
        id_field = _KINDS[kind][0]
        if element.get("Type") not in types:
            raise ValueError(f"Type must be one of {', '.join(sorted(types))}")
        if element.get("Status", "DRAFT") not in ("DRAFT", "SUBMITTED", "AUTHORISED"):
            raise ValueError("A new document must be DRAFT, SUBMITTED or AUTHORISED")
        doc: dict[str, Any] = {
            id_field: str(uuid.uuid4()),
            "Type": element["Type"],
            "Status": "DRAFT",
            "LineAmountTypes": "Exclusive",
            "CurrencyCode": self.base_currency,
            "AmountPaid": Decimal("0.00"),
            "AmountCredited": Decimal("0.00"),
            "_by_app": True,
            "_seq": 0,
            "LineItems": [],
        }
        self._change(doc, element, new=True)
        return doc

    def _change(self, doc: dict[str, Any], element: dict[str, Any], new: bool = False) -> None:
        if not new and "LineItems" in element:
            if doc["Status"] not in EDITABLE and not (
                doc["Status"] == "AUTHORISED" and self.allow_authorised_edits
            ):
                raise ValueError("Invoice not of valid status for modification")
            if doc["AmountPaid"] or doc["AmountCredited"]:
                raise ValueError(
                    "This document cannot be edited as it has a payment or credit "
                    "note allocated to it."
                )
        if "Contact" in element or new:
            contact = self._contact_of(element.get("Contact"))
            doc["Contact"] = {
                "ContactID": contact["ContactID"],
                "ContactNumber": contact["ContactNumber"],
                "Name": contact["Name"],
            }
        for field in ("Date", "DueDate", "Reference"):
            if field in element:
                doc[field] = element[field]
        if element.get("LineAmountTypes", "Exclusive") != "Exclusive":
            raise ValueError("the sandbox supports LineAmountTypes Exclusive only")
        if "CurrencyCode" in element:
            if element["CurrencyCode"] not in self.currencies:
                raise ValueError(
                    f"Organisation is not subscribed to currency {element['CurrencyCode']}"
                )
            doc["CurrencyCode"] = element["CurrencyCode"]
        if "LineItems" in element or new:
            items = element.get("LineItems")
            if not isinstance(items, list) or not items:
                raise ValueError("At least one line item is required")
            old = {line["LineItemID"]: line for line in doc["LineItems"]}
            doc["LineItems"] = [self._line(item, old) for item in items]
        sub = sum((line["LineAmount"] for line in doc["LineItems"]), Decimal("0.00"))
        tax = sum((line["TaxAmount"] for line in doc["LineItems"]), Decimal("0.00"))
        doc["SubTotal"], doc["TotalTax"], doc["Total"] = sub, tax, sub + tax
        doc["AmountDue"] = doc["Total"] - doc["AmountPaid"] - doc["AmountCredited"]

    def _line(self, item: Any, old: dict[str, dict[str, Any]]) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise ValueError("a line item must be an object")
        line_id = item.get("LineItemID")
        if line_id is not None and line_id not in old:
            raise ValueError(f"LineItemID {line_id} is not a line of this document")
        description = item.get("Description")
        if not isinstance(description, str) or not description:
            raise ValueError("Description is required on every line")
        quantity = _money(item.get("Quantity", 1), "Quantity")
        unit = _money(item.get("UnitAmount", item.get("LineAmount", 0)), "UnitAmount")
        if unit != unit.quantize(CENT) or quantity != quantity.quantize(Decimal("0.0001")):
            raise ValueError("UnitAmount takes 2 decimals and Quantity 4 (without unitdp)")
        expected = (quantity * unit).quantize(CENT, ROUND_HALF_UP)
        amount = _money(item.get("LineAmount", expected), "LineAmount")
        if amount != expected:
            raise ValueError(
                f"The line total {amount} does not match the expected line total {expected}"
            )
        code = item.get("AccountCode")
        if code is not None and code not in self.accounts:
            raise ValueError(f"Account code '{code}' is not a valid code for this document.")
        tax_type = item.get("TaxType") or (self.accounts[code][2] if code else "NONE")
        if tax_type not in self.tax_rates:
            raise ValueError("Tax rate must be valid.")
        tax = (amount * self.tax_rates[tax_type] / 100).quantize(CENT, ROUND_HALF_UP)
        if item.get("TaxAmount") is not None:
            tax = _money(item["TaxAmount"], "TaxAmount")
            if tax != tax.quantize(CENT):
                raise ValueError("TaxAmount takes 2 decimals")
        return {
            "LineItemID": line_id or str(uuid.uuid4()),
            "Description": description,
            "Quantity": quantity,
            "UnitAmount": unit,
            "LineAmount": amount,
            "AccountCode": code,
            "TaxType": tax_type,
            "TaxAmount": tax,
        }

    def _public(self, doc: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in doc.items() if not k.startswith("_")}
        if "_updated" in doc:
            out["UpdatedDateUTC"] = ms_date(doc["_updated"])
        return out

    def _filtered(self, rows: list[dict[str, Any]], request: Request) -> list[dict[str, Any]]:
        where = request.query.get("where")
        if not where:
            return rows
        alternatives = []
        for alternative in re.split(r"\s+OR\s+", where):
            clauses = []
            for clause in re.split(r"\s+AND\s+", alternative):
                match = _CLAUSE.match(clause)
                if match is None:
                    raise ApiFailure(self.error(400, f"cannot parse where clause {clause!r}"))
                clauses.append(match)
            alternatives.append(clauses)

        def value_of(row: dict[str, Any], field: str) -> str:
            value: Any = row
            for part in field.split("."):
                value = value.get(part, "") if isinstance(value, dict) else ""
            return str(value)

        def test(row: dict[str, Any], m: re.Match[str]) -> bool:
            got = value_of(row, m.group("field"))
            if m.group("prefix") is not None:
                return got.startswith(m.group("prefix"))
            return (got == m.group("value")) == (m.group("op") == "==")

        return [r for r in rows if any(all(test(r, m) for m in cl) for cl in alternatives)]

    # ----- payments and helpers for tests ----------------------------------------------------
    def _save_payments(self, request: Request, params: dict[str, str]) -> Response:
        return self._batch(request, "Payments", self._save_payment)

    def _save_payment(self, element: dict[str, Any], update: bool) -> dict[str, Any]:
        invoice_id = str((element.get("Invoice") or {}).get("InvoiceID", ""))
        amount = _money(element.get("Amount"), "Amount")
        return self.pay(invoice_id, amount)

    def pay(self, invoice_id: str, amount: Decimal) -> dict[str, Any]:
        """Record a payment on an AUTHORISED invoice (PAID once nothing is due)."""
        with self.mutex:
            doc = self.docs["Invoices"].get(invoice_id)
            if doc is None or doc["Status"] != "AUTHORISED":
                raise ValueError("Payments can only be made against AUTHORISED invoices")
            if amount <= 0 or amount > doc["AmountDue"]:
                raise ValueError("The payment amount exceeds the amount due")
            doc["AmountPaid"] += amount
            doc["AmountDue"] -= amount
            if doc["AmountDue"] == 0:
                doc["Status"] = "PAID"
            doc["_updated"] = self.clock.now()
            payment = {
                "PaymentID": str(uuid.uuid4()),
                "Amount": amount,
                "Status": "AUTHORISED",
                "Invoice": {"InvoiceID": invoice_id},
            }
            self.payments.append(payment)
            return payment

    def add_foreign(self, kind: str, element: dict[str, Any]) -> dict[str, Any]:
        """An invoice made by hand in Xero (not by this app): never ours to adopt."""
        with self.mutex:
            doc = self._save_doc(kind, element, False)
            doc["_by_app"] = False
            return doc

    def drop_answers(self, count: int) -> None:
        """Commit the next `count` writes, then drop their answers (the connection closes)."""
        with self.mutex:
            self.drop_next_writes = count
