"""The benchmark's Xero section: a backfill into the fake Xero at Xero's real limits.

    python -m bench.run --only xero

Xero allows 60 calls a minute and 5 in flight per organisation (the fake enforces both; the
connector is configured with the same, `XERO_MAX_REQUESTS_PER_MINUTE=60`,
`XERO_MAX_CONCURRENT=5`); Kantata runs at the benchmark's real 10 requests a second, 20 ms added
to every request on every side. The workload is the benchmark's, kept to what the fake
organisation can hold: the currencies it has enabled (USD, EUR, JPY; not KWD) and the tax rates
mapped to tax types in the mapping profile, as `kantata-sync demo --target xero` does.

Every Accounting API request the fake answers is recorded here, by what it is for
(organisation, accounts, tax rates, contacts, look-up listings, creates, approvals, ...), with
the number of documents in its body, and assigned to the cycle it was sent in.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from bench.workload import populate
from connector.faces.demo import (
    SANDBOX_XERO_CLIENT_ID,
    SANDBOX_XERO_CLIENT_SECRET,
    sandbox_xero_profile,
)
from connector.kantata.client import REFERENCE_UPSERT
from sandbox import FaultConfig, Sandbox
from sandbox._core import Request, Response, loads
from sandbox.xero import API
from tests.e2e import KANTATA_TOKEN, NOKO_TOKEN

__all__ = ["XERO_LIMITS", "XeroRun", "xero_run", "xero_targets"]

XERO_CURRENCIES = ("USD", "EUR", "JPY")
"""The workload's currencies the fake organisation has enabled (it has no KWD)."""
LIVE = ("DRAFT", "SUBMITTED", "AUTHORISED", "PAID")
PER_INVOICE_TARGET = 0.05


@dataclass(frozen=True)
class XeroLimits:
    per_minute: int = 60
    in_flight: int = 5
    kantata: float = 10.0
    latency_ms: float = 20

    def label(self) -> str:
        return (
            f"Xero {self.per_minute}/min {self.in_flight} in flight, Kantata "
            f"{self.kantata:g}/s, {self.latency_ms:g} ms"
        )


XERO_LIMITS = XeroLimits()

CATEGORIES = (
    "organisation",
    "accounts",
    "tax rates",
    "contact listings",
    "contact creates",
    "look-up listings",
    "creates",
    "approvals",
    "updates",
    "cancels",
    "reads by id",
    "single reads",
    "status read-back",
)


def classify(request: Request) -> tuple[str, int]:
    """What an Accounting API request is for, and how many documents its body carries."""
    rel = request.path[len(API) :] or "/"
    method = request.method
    parts = [p for p in rel.split("/") if p]
    head = parts[0] if parts else ""
    if method == "GET":
        if head == "Organisation":
            return "organisation", 0
        if head == "Accounts":
            return "accounts", 0
        if head == "TaxRates":
            return "tax rates", 0
        if head == "Contacts":
            return "contact listings", 0
        if head in ("Invoices", "CreditNotes"):
            if len(parts) > 1:
                return "single reads", 0
            if request.header("if-modified-since"):
                return "status read-back", 0
            if request.query.get("IDs"):
                return "reads by id", 0
            return "look-up listings", 0
    if method in ("PUT", "POST") and head in ("Contacts", "Invoices", "CreditNotes"):
        elements: list[Any] = []
        try:
            body = loads(request.body)
            elements = list(body.get(head) or []) if isinstance(body, dict) else []
        except (ValueError, UnicodeDecodeError):
            pass
        if head == "Contacts":
            return "contact creates", len(elements)
        if method == "PUT":
            return "creates", len(elements)
        statuses = {str(e.get("Status")) for e in elements if isinstance(e, dict)}
        lines = any(isinstance(e, dict) and "LineItems" in e for e in elements)
        if statuses == {"AUTHORISED"} and not lines:
            return "approvals", len(elements)
        if statuses and statuses <= {"DELETED", "VOIDED"}:
            return "cancels", len(elements)
        return "updates", len(elements)
    return f"{method} {rel}", 0


@dataclass
class Call:
    at: float
    category: str
    documents: int
    status: int
    query: str = ""


class Recorder:
    """Wraps the fake Xero's `handle`: every Accounting API request, classified and timed."""

    def __init__(self, fake: Any) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        inner: Callable[[Request], Response] = fake.handle

        def handle(request: Request) -> Response:
            response = inner(request)
            if request.path.startswith(API):
                category, documents = classify(request)
                with self._lock:
                    self.calls.append(
                        Call(
                            time.time(),
                            category,
                            documents,
                            response.status,
                            request.path[len(API) :] + "?" + unquote_plus(request.raw_query),
                        )
                    )
            return response

        fake.handle = handle

    def between(self, start: float, end: float) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if start <= c.at <= end]


class KantataRecorder:
    """Wraps the fake Kantata's `handle`: when each request was answered, and whether it was
    a write-back, to set the Kantata side's activity against Xero's."""

    def __init__(self, fake: Any) -> None:
        self.calls: list[tuple[float, bool]] = []
        self._lock = threading.Lock()
        inner: Callable[[Request], Response] = fake.handle

        def handle(request: Request) -> Response:
            response = inner(request)
            if not request.path.startswith("/_sandbox"):
                write = request.method == "POST" and request.path.endswith(
                    REFERENCE_UPSERT.split(" ", 1)[1]
                )
                with self._lock:
                    self.calls.append((time.time(), write))
            return response

        fake.handle = handle

    def between(self, start: float, end: float) -> list[tuple[float, bool]]:
        with self._lock:
            return [c for c in self.calls if start <= c[0] <= end]


def _active(times: list[float], gap: float) -> list[tuple[float, float]]:
    """Stretches in which requests followed each other at most `gap` seconds apart, each
    taken to start `gap` before its first answer (the request's own time at the pace)."""
    out: list[tuple[float, float]] = []
    for at in sorted(times):
        if out and at - out[-1][1] <= gap:
            out[-1] = (out[-1][0], at)
        else:
            out.append((at - gap, at))
    return out


def _length(spans: list[tuple[float, float]]) -> float:
    return sum(end - start for start, end in spans)


def _overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(x1, y1) - max(x0, y0)) for x0, x1 in a for y0, y1 in b)


@dataclass
class Timeline:
    """Where a backfill's wall time went: when Kantata was in use (requests at most three
    of its intervals apart), when Xero was (at most 1.5 of its intervals apart), both,
    neither."""

    wall: float
    kantata: float
    xero: float
    both: float
    writebacks: int
    xero_calls: int

    @property
    def neither(self) -> float:
        return max(0.0, self.wall - (self.kantata + self.xero - self.both))

    @classmethod
    def of(
        cls,
        cycle: dict[str, Any],
        kantata: list[tuple[float, bool]],
        xero: list[Call],
        limits: XeroLimits,
    ) -> Timeline:
        start, end = cycle["started_at"], cycle["ended_at"]

        def clip(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
            return [(max(a, start), min(b, end)) for a, b in spans if min(b, end) > max(a, start)]

        k = clip(_active([at for at, _ in kantata], 3 / limits.kantata))
        x = clip(_active([c.at for c in xero], 1.5 * 60 / limits.per_minute))
        return cls(
            wall=end - start,
            kantata=_length(k),
            xero=_length(x),
            both=_overlap(k, x),
            writebacks=sum(1 for _, write in kantata if write),
            xero_calls=len(xero),
        )


@dataclass
class Breakdown:
    """One cycle's Xero requests as the fake saw them."""

    requests: Counter[str] = field(default_factory=Counter)
    documents: Counter[str] = field(default_factory=Counter)
    status_429: Counter[str] = field(default_factory=Counter)
    lookups: list[str] = field(default_factory=list)
    """The query of each look-up listing, to show what each one looked for."""

    @classmethod
    def of(cls, calls: list[Call]) -> Breakdown:
        """Listings after the cycle's last write are its closing read of statuses (a full
        listing while there is no cursor yet): counted apart from the look-ups."""
        out = cls()
        writes = [i for i, c in enumerate(calls) if c.documents and c.status != 429]
        last_write = writes[-1] if writes else -1
        for index, call in enumerate(calls):
            if call.category == "look-up listings" and index > last_write >= 0:
                call = Call(call.at, "status read-back", 0, call.status, call.query)
            if call.status == 429:
                out.status_429[call.category] += 1
                continue
            out.requests[call.category] += 1
            out.documents[call.category] += call.documents
            if call.category in ("look-up listings", "status read-back"):
                out.lookups.append(f"{call.category}: {call.query}")
        return out

    @property
    def answered(self) -> int:
        return sum(self.requests.values())

    @property
    def limited(self) -> int:
        return sum(self.status_429.values())

    def describe(self) -> str:
        parts = []
        names = [c for c in CATEGORIES if c in self.requests or c in self.status_429]
        names += sorted((set(self.requests) | set(self.status_429)) - set(names))
        for name in names:
            count = self.requests.get(name, 0)
            text = f"{name} {count}"
            if self.documents.get(name):
                text += f" ({self.documents[name]:,} documents)"
            if self.status_429.get(name):
                text += f" +{self.status_429[name]} answered 429"
            parts.append(text)
        return ", ".join(parts) or "none"


def check_xero_books(box: Sandbox, service_name: str = "xero") -> tuple[int, list[str]]:
    """(eligible Kantata invoices, problems): every eligible invoice has exactly one live Xero
    document with `Reference` KS-<id>, made by this app, an `ACCREC` invoice (an
    `ACCRECCREDIT` credit note of minus the total for a negative one) whose `Total` is the
    Kantata total to the minor unit, in the same currency, and a successful reference whose
    `service_model_ref` is its id and `external_status` its `Status`; no other live document
    carries one of our references; nothing for drafts and cancelled invoices."""
    xero = box.xero.state()
    live: dict[str, list[dict[str, Any]]] = {}
    for doc in [*xero["invoices"], *xero["credit_notes"]]:
        if doc.get("Status") in LIVE:
            live.setdefault(str(doc.get("Reference")), []).append(doc)
    problems: list[str] = []
    eligible = 0
    seen: set[str] = set()
    for invoice in box.kantata.state()["invoices"]:
        reference = f"KS-{invoice['id']}"
        seen.add(reference)
        docs = live.get(reference, [])
        if invoice["draft"] or invoice["status"] == "cancelled":
            if docs:
                problems.append(f"{reference}: {len(docs)} live documents for a skipped invoice")
            continue
        eligible += 1
        if len(docs) != 1:
            problems.append(f"{reference}: {len(docs)} live documents")
            continue
        doc = docs[0]
        if not doc.get("_by_app", True):
            problems.append(f"{reference}: its live document was not made by the connector")
        base = int(invoice["currency_base_unit"])
        expected = Decimal(int(invoice["balance_in_cents"])) / Decimal(base)
        credit = doc.get("Type") == "ACCRECCREDIT"
        total = Decimal(str(doc["Total"]))
        if credit:
            total = -total
        if total != expected or credit != (expected < 0):
            problems.append(f"{reference}: total {total} ({doc.get('Type')}), Kantata {expected}")
        if doc.get("CurrencyCode") != invoice["currency"]:
            problems.append(f"{reference}: {doc.get('CurrencyCode')} for {invoice['currency']}")
        doc_id = str(doc.get("CreditNoteID") if credit else doc.get("InvoiceID"))
        ref = next(
            (
                r
                for r in invoice.get("external_references", [])
                if r["service_name"] == service_name
            ),
            None,
        )
        if ref is None or ref.get("status") != "successful":
            problems.append(f"{reference}: no successful reference in Kantata")
        elif ref.get("service_model_ref") != doc_id:
            problems.append(f"{reference}: reference names {ref.get('service_model_ref')}")
        elif ref.get("external_status") != doc.get("Status"):
            problems.append(
                f"{reference}: external_status {ref.get('external_status')}, "
                f"Xero {doc.get('Status')}"
            )
    for reference, docs in live.items():
        if reference.startswith("KS-") and reference not in seen:
            problems.append(f"{reference}: {len(docs)} live documents for no Kantata invoice")
    return eligible, problems


@dataclass
class XeroRun:
    label: str
    n: int
    eligible: int
    skipped: int
    total: int
    cycles: list[dict[str, Any]]
    breakdowns: list[Breakdown]
    problems: list[str]
    limits: XeroLimits
    settings: dict[str, Any]
    workers: int | None
    timeline: Timeline | None = None

    @property
    def kantata_needed(self) -> int:
        """Pages of 200 with lines, and one write-back per pushed invoice."""
        return math.ceil(self.total / 200) + self.eligible

    def bounds(self) -> tuple[float, float]:
        """(Kantata bound s, Xero bound s) of the backfill: requests needed / rate."""
        xero = self.breakdowns[0].answered / (self.limits.per_minute / 60)
        return self.kantata_needed / self.limits.kantata, xero


def xero_run(
    n: int,
    tmp: Path,
    *,
    seed: int,
    spawn: Callable[[dict[str, Any], Path, float], dict[str, Any]],
    limits: XeroLimits = XERO_LIMITS,
    cycles: tuple[str, ...] = ("backfill", "later:361", "sync", "sync"),
    timeout: float = 1800,
) -> XeroRun:
    """A backfill into the fake Xero over HTTP at `limits`, then the quiet cycles."""
    box = Sandbox(
        kantata_faults=FaultConfig(latency_ms=limits.latency_ms),
        noko_faults=FaultConfig(latency_ms=limits.latency_ms),
        kantata_rate_limit=limits.kantata,
        xero_per_minute=limits.per_minute,
    )
    box.xero.in_flight_limit = limits.in_flight
    box.xero.set_faults(FaultConfig(latency_ms=limits.latency_ms))
    workload = populate(box.kantata, None, n, seed=seed, currencies=XERO_CURRENCIES)
    profile = sandbox_xero_profile(box, tmp / f"xero-{n}")
    recorder = Recorder(box.xero)
    kantata_calls = KantataRecorder(box.kantata)
    name = f"xero-{n}"
    with box:
        job = {
            "mode": "connector",
            "kantata_url": box.kantata_url,
            "noko_url": box.noko_url,
            "kantata_token": KANTATA_TOKEN,
            "noko_token": NOKO_TOKEN,
            "xero": {
                "client_id": SANDBOX_XERO_CLIENT_ID,
                "client_secret": SANDBOX_XERO_CLIENT_SECRET,
                "api_url": box.xero_api_url,
                "token_url": box.xero_token_url,
                "connections_url": box.xero_connections_url,
                "profile": str(profile),
            },
            "database": str(tmp / f"{name}.db"),
            "settings": {
                "kantata_max_requests_per_second": limits.kantata,
                "xero_max_requests_per_minute": limits.per_minute,
                "xero_max_concurrent": limits.in_flight,
            },
            "cycles": list(cycles),
        }
        out = spawn(job, tmp / f"{name}.log", timeout)
        eligible, problems = check_xero_books(box)
    if eligible != workload.eligible:
        problems.append(f"{eligible} eligible in Kantata, {workload.eligible} built")
    spans = [(c["started_at"], c["ended_at"]) for c in out["cycles"]]
    breakdowns = [Breakdown.of(recorder.between(*span)) for span in spans]
    timeline = Timeline.of(
        out["cycles"][0], kantata_calls.between(*spans[0]), recorder.between(*spans[0]), limits
    )
    return XeroRun(
        label=f"Xero backfill, {limits.label()}",
        n=n,
        eligible=workload.eligible,
        skipped=workload.skipped,
        total=workload.total,
        cycles=out["cycles"],
        breakdowns=breakdowns,
        problems=problems,
        limits=limits,
        settings=out.get("settings", {}),
        workers=out.get("workers"),
        timeline=timeline,
    )


def xero_targets(run: XeroRun) -> list[str]:
    """The Xero targets with the figures that show them met or missed."""

    def verdict(ok: bool) -> str:
        return "met   " if ok else "MISSED"

    lines: list[str] = []
    backfill = run.cycles[0]
    pushed = int(backfill["counts"].get("pushed", 0))
    failed = int(backfill.get("failed", 0))
    xero = run.breakdowns[0]
    sent = backfill["xero"]["requests"]
    per = xero.answered / pushed if pushed else float("inf")
    lines.append(
        f"{verdict(per <= PER_INVOICE_TARGET)} Xero requests per invoice, backfill N={pushed:,}: "
        f"{xero.answered} answered / {pushed:,} = {per:.3f} (target <= {PER_INVOICE_TARGET}); "
        f"the connector counted {sent}, the fake answered {xero.limited} with 429"
    )
    lines.append(f"         by endpoint: {xero.describe()}")
    if xero.lookups:
        shown = Counter(xero.lookups)
        lines.append(
            "         listings: "
            + "; ".join(f"{count} x {query}" for query, count in shown.items())
        )
    writes = int(backfill["kantata"]["by_endpoint"].get(REFERENCE_UPSERT, 0))
    lines.append(
        f"{verdict(not run.problems and pushed == run.eligible and not failed)} books, "
        f"N={pushed:,}: {run.eligible:,} eligible Kantata invoices, each exactly one live Xero "
        f"document with its total to the minor unit, its currency and a successful reference "
        f"({len(run.problems)} problems"
        + (f": {'; '.join(run.problems[:5])}" if run.problems else "")
        + f"); {failed} failed; {writes:,} write-backs for {pushed:,} pushed, "
        f"{run.skipped} skipped"
    )
    for index, cycle in enumerate(run.cycles[1:], start=1):
        k = cycle["kantata"]["requests"]
        x = cycle["xero"]["requests"]
        seen = run.breakdowns[index]
        text = (
            f"{k} Kantata and {x} Xero requests ({seen.describe()}), "
            f"{sum(cycle['counts'].values()):,} invoices re-read, {cycle['wall']:.2f} s"
        )
        if index == 1:
            lines.append(
                f"note   first cycle after the backfill, {cycle.get('later', 0):.0f} s later "
                f"(the write-backs are changes in Kantata): {text}"
            )
        else:
            lines.append(f"{verdict(k == 1 and x == 1)} quiet cycle, nothing new: {text}")
    kantata_bound, xero_bound = run.bounds()
    wall = backfill["wall"]
    bound = max(kantata_bound, xero_bound)
    which = "Kantata" if kantata_bound >= xero_bound else "Xero"
    lines.append(
        f"note   where the time goes, N={pushed:,}: wall {wall:.1f} s; Kantata bound "
        f"{kantata_bound:.1f} s ({run.kantata_needed:,} requests needed: "
        f"{math.ceil(run.total / 200)} pages + {run.eligible:,} write-backs, at "
        f"{run.limits.kantata:g}/s); Xero bound {xero_bound:.1f} s ({xero.answered} requests "
        f"at {run.limits.per_minute}/min); the bound is {which}'s, {bound:.1f} s: "
        f"{100 * bound / wall:.0f}% of the wall time"
    )
    creates = xero.requests.get("creates", 0)
    lines.append(
        f"       Kantata: {backfill['kantata']['requests']:,} requests ({writes:,} write-backs), "
        f"{pushed / wall:.1f} invoices/s; Xero: {xero.answered} requests, "
        f"{xero.answered / wall * 60:.0f}/min of the {run.limits.per_minute} allowed; "
        f"{creates} create batches of {pushed / max(creates, 1):.1f} invoices on average"
    )
    t = run.timeline
    if t is not None:
        lines.append(
            f"       timeline of the backfill: Kantata in use {t.kantata:.0f} s, Xero in use "
            f"{t.xero:.0f} s, both at once {t.both:.0f} s, neither {t.neither:.0f} s, of "
            f"{t.wall:.0f} s (in use: requests at most 3 of its intervals apart)"
        )
    return lines
