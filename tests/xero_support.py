"""Test helpers for Xero: the fake Xero behind an httpx transport (no sockets), every request
the connector sends validated against Xero's OpenAPI spec (tests/fixtures/xero/)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from pydantic import SecretStr
from werkzeug.datastructures import Headers, ImmutableMultiDict

from connector.targets.xero.auth import ClientCredentials, XeroCredentials
from connector.targets.xero.client import PauseGate, XeroClient
from mappings.ledger import LedgerDocument, LedgerLine, LedgerTax
from mappings.money import tax_amount
from sandbox._core import Request
from sandbox.xero import API, FakeXero

SPEC = Path(__file__).parent / "fixtures" / "xero" / "xero_accounting.yaml"
BASE = "http://xero.test"


_VALIDATING = threading.RLock()


@functools.cache
def spec() -> OpenAPI:
    # The spec itself has a few schema slips (string defaults on booleans): its own check is
    # skipped, requests are still validated against every schema it states.
    with SPEC.open(encoding="utf-8") as handle:
        data = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 (a safe loader)
    return OpenAPI.from_dict(data, config=Config(spec_validator_cls=None))


class _SpecRequest:
    """An httpx request to the fake, seen as the same request to api.xero.com."""

    def __init__(self, request: httpx.Request) -> None:
        self._request = request
        path = request.url.path
        self.path = path
        self.host_url = "https://api.xero.com"
        self.method = request.method.lower()
        self.body: bytes | None = request.content or None
        self.content_type = request.headers.get("content-type", "application/json")
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(
                [(k, v) for k, vs in parse_qs(request.url.query.decode()).items() for v in vs]
            ),
            header=Headers(dict(request.headers)),
            cookie=ImmutableMultiDict(),
        )


def validate(request: httpx.Request) -> None:
    """Raise if an Accounting API request does not fit Xero's spec (others are not in it)."""
    if not request.url.path.startswith(API):
        return
    # openapi-core cannot check an OAuth2 scheme (it warns and passes): the bearer token is
    # checked here, everything else by the spec.
    assert request.headers.get("authorization", "").startswith("Bearer ")
    # One request at a time: openapi-core's lazily built validators are not known to be safe
    # across threads, and the targets send batches from several at once.
    with _VALIDATING:
        spec().validate_request(_SpecRequest(request))


class FakeTransport(httpx.BaseTransport):
    """Hands each request to the fake; a dropped answer becomes a read error (committed)."""

    def __init__(self, fake: FakeXero, check: Callable[[httpx.Request], None] = validate) -> None:
        self.fake = fake
        self.check = check
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.check(request)
        self.sent.append(request)
        url = urlsplit(str(request.url))
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        response = self.fake.handle(
            Request(
                method=request.method,
                path=url.path,
                query=query,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=request.content,
                raw_query=url.query,
            )
        )
        if response.drop:
            raise httpx.ReadError("connection closed", request=request)
        headers = list(response.headers)
        if response.content_type:
            headers.append(("Content-Type", response.content_type))
        return httpx.Response(response.status, headers=headers, content=response.body)


class ValidatingTransport(httpx.HTTPTransport):
    """Real HTTP, each Accounting API request first checked against Xero's spec."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        validate(request)
        self.sent.append(request)
        return super().handle_request(request)


class FakeClock:
    """The client's monotonic clock and sleep; sleeping also moves the fake Xero's clock."""

    def __init__(self, fake: FakeXero | None = None) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        self.fake = fake

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.fake is not None:
            self.fake.advance_clock(seconds)


def credentials_for(fake: FakeXero, *, secret: bool = True) -> XeroCredentials:
    return XeroCredentials(
        fake.client_id,
        SecretStr(fake.client_secret) if secret else None,
        token_url=BASE + "/connect/token",
        authorize_url=BASE + "/connect/authorize",
    )


def make_client(
    fake: FakeXero | None = None, **kwargs: Any
) -> tuple[XeroClient, FakeXero, FakeTransport, FakeClock]:
    """A client with a custom connection to a fake Xero, a fake clock, a private pause gate."""
    fake = fake or FakeXero()
    if not fake.clock.frozen:
        fake.set_clock(datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC))
    transport = FakeTransport(fake)
    http = httpx.Client(transport=transport)
    clock = FakeClock(fake)
    tokens = ClientCredentials(credentials_for(fake), http=http, clock=clock)
    client = XeroClient(
        tokens,
        base_url=BASE + API,
        connections_url=BASE + "/connections",
        http=http,
        gate=PauseGate(clock, clock.sleep),
        clock=clock,
        sleep=clock.sleep,
        wall=fake.clock.now,
        **kwargs,
    )
    return client, fake, transport, clock


CONTACT = "00000000-0000-0000-0000-00000000c0de"


def ledger(
    amounts: list[tuple[int, bool]],
    rate: Decimal = Decimal(0),
    *,
    currency: str = "USD",
    exponent: int = 2,
    kantata_id: str = "77",
) -> LedgerDocument:
    lines = tuple(
        LedgerLine(f"ex{i}", "expense", f"Line {i}", None, amount, taxable, "P")
        for i, (amount, taxable) in enumerate(amounts)
    )
    subtotal = sum(a for a, _ in amounts)
    taxable = sum(a for a, t in amounts if t)
    tax = tax_amount(taxable, rate) if rate else 0
    return LedgerDocument(
        kantata_id=kantata_id,
        reference=f"KS-{kantata_id}",
        number="N1",
        title="T",
        invoice_date=date(2026, 11, 2),
        due_date=date(2026, 12, 2),
        payment_schedule=30,
        currency=currency,
        exponent=exponent,
        currency_symbol="",
        customer_name="Acme",
        customer_details="",
        purchase_order="",
        project_code="",
        message="",
        projects=("P",),
        lines=lines,
        tax=LedgerTax("Tax", rate, tax) if rate and taxable else None,
        subtotal_minor=subtotal,
        taxable_subtotal_minor=taxable,
        tax_minor=tax if rate and taxable else 0,
        total_minor=subtotal + (tax if rate and taxable else 0),
        balance_in_cents=None,
    )


def fake_with_contact(rate: Decimal) -> FakeXero:
    fake = FakeXero(output_rate=rate, per_minute=10_000, per_day=100_000)
    fake.contacts[CONTACT] = {"ContactID": CONTACT, "Name": "Acme", "ContactNumber": ""}
    return fake
