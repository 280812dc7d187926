"""The benchmark's Xero requests as the fake answered them: what each was for (`classify`), one
cycle's counts by that (`Breakdown`), and where a backfill's wall time went (`Timeline`).

The recorders wrap the fakes' `handle`, so every request is seen once, classified and timed.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from connector.kantata.client import REFERENCE_UPSERT
from sandbox._core import Request, Response, loads
from sandbox.xero import API


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
