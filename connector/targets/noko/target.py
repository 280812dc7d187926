"""Noko as a `Target`: its v2 invoice API behind the interface the engine knows.

Reads go to the client; writes to `NokoPusher` (one invoice a call: `batch_size` 1), planned
by `mappings.targets.noko` and verified against its `check_totals`. Noko's own errors become the
interface's: `NokoRefusedError` -> `TargetRefusedError`, `NokoGoneError` -> `TargetGoneError`,
`DuplicateInNokoError` -> `DuplicateInTargetError`. Answers carry the neutral fields (`id` as
text, `paid`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, overload

from connector.errors import ApiError, PermanentApiError, TransientApiError
from connector.targets.base import (
    Cancel,
    Cancelled,
    DuplicateInTargetError,
    TargetGoneError,
    TargetIndex,
    TargetInvoice,
    TargetRefusedError,
    Write,
    Written,
)
from connector.targets.noko.client import NokoClient
from connector.targets.noko.index import NokoIndex
from connector.targets.noko.push import (
    ENTRY_KEY,
    DuplicateInNokoError,
    NokoGoneError,
    NokoPusher,
    NokoRefusedError,
    header_differs,
)
from mappings.errors import MappingError
from mappings.ledger import LedgerDocument
from mappings.targets.noko import check_totals, is_ours, plan_invoice
from mappings.targets.noko_profile import NokoSettings


class NokoTarget:
    """Noko's v2 invoice API behind the `Target` interface."""

    name = "Noko"
    batch_size = 1

    def __init__(
        self,
        client: NokoClient,
        settings: NokoSettings | None = None,
        *,
        reference: str = "KS-{id}",
    ) -> None:
        self.client = client
        self.settings = settings or NokoSettings()
        self.reference = reference
        """The ledger's reference template (the profile's `[ledger] reference`): what the
        markers of the connector's lines begin with."""
        self.pusher = NokoPusher(client)

    def find(self, prefix: str) -> Iterator[dict[str, Any]]:
        # Noko's `reference` filter is "contains": the caller keeps exact matches only.
        listing = self.client.list_invoices({"reference": prefix} if prefix else {})
        return (_neutral(invoice) for invoice in listing)

    def get(self, target_id: str) -> dict[str, Any] | None:
        noko_id = _int(target_id)
        if noko_id is None:
            return None  # not an id Noko can have
        return _neutral(self.client.get_invoice(noko_id))

    def changes_since(
        self,
        since: datetime | None,
        *,
        on_server_time: Callable[[datetime | None], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {}
        if since is not None:
            if since.tzinfo is None or since.utcoffset() is None:
                raise ValueError("timestamps sent to Noko must be timezone-aware")
            # Whole seconds, the fraction dropped: the window widens, never narrows.
            params["updated_from"] = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        listing = self.client.list_invoices(params, on_server_time=on_server_time)
        return (_neutral(invoice) for invoice in listing)

    def new_index(self, *, wanted: bool) -> TargetIndex:
        # The index proves an invoice ours as the pusher does: the owner marker, else (one or
        # two requests, only for an invoice without it) its lines' markers.
        return NokoIndex(wanted=wanted, owns=self.pusher.owns)

    def link(self, invoice: TargetInvoice) -> str | None:
        """The invoice's `share_url`. Never its API `url`, which answers only with a token."""
        url = invoice.get("share_url")
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            return url
        return None

    def carries_marker(self, invoice: TargetInvoice, reference: str) -> bool:
        return is_ours(invoice, reference)

    def as_asked(self, doc: LedgerDocument, invoice: TargetInvoice) -> bool:
        plan = plan_invoice(doc)
        if check_totals(plan, invoice):
            return False
        for key, wanted in (("expenses", len(plan.expenses)), ("entries", len(plan.entries))):
            got = _int(invoice.get(key))
            if got is not None and got != wanted:
                return False
        return True

    def line_drift(self, invoice: TargetInvoice, pushed: Sequence[str]) -> list[str]:
        problems = []
        for label, wanted, count in (
            ("expenses", sum(1 for k in pushed if not k.startswith(ENTRY_KEY)), "expenses"),
            ("time entries", sum(1 for k in pushed if k.startswith(ENTRY_KEY)), "entries"),
        ):
            got = _int(invoice.get(count))
            if got is not None and got != wanted:
                problems.append(f"{got} {label}, pushed {wanted}")
        return problems

    # ------------------------------------------------------------------ writes

    def create(self, items: Sequence[Write]) -> list[Written | Exception]:
        return [_each(self._create, item) for item in items]

    def update(self, items: Sequence[Write]) -> list[Written | Exception]:
        return [_each(self._update, item) for item in items]

    def cancel(self, items: Sequence[Cancel]) -> list[Cancelled | Exception]:
        return [_each(self._cancel, item) for item in items]

    def _create(self, item: Write) -> Written:
        plan = plan_invoice(item.doc)
        known = tuple(i for i in (_int(k) for k in item.known_ids) if i is not None)
        try:
            pushed = self.pusher.push(plan, recovering=item.recovering, known_ids=known)
        except DuplicateInNokoError as exc:
            raise DuplicateInTargetError(self.name, exc.reference, exc.ids) from None
        invoice = _neutral(pushed.invoice)
        target_id = invoice.get("id")
        if target_id is None:
            raise PermanentApiError("noko", "Noko's answer has no invoice id")
        problems = check_totals(plan, pushed.invoice)
        if problems and not pushed.adopted and "total_amount" not in pushed.invoice:
            # An answer without the total proves nothing wrong: read the invoice once (only
            # then) before anything just created is deleted for it.
            try:
                fresh = self.client.get_invoice(int(target_id))
            except ApiError:
                fresh = None
            if fresh is not None:
                problems = check_totals(plan, fresh)
        return Written(
            invoice=invoice,
            target_id=str(target_id),
            link=self.link(invoice),
            state=str(invoice.get("state") or "") or None,
            # The lines as pushed, for the hand-edit check; unknown for an adopted invoice.
            lines=None if pushed.adopted else sorted(pushed.expense_ids),
            adopted=pushed.adopted,
            created=not pushed.adopted,
            problems=problems,
            detail=(" (found from an earlier attempt)" if pushed.adopted else "")
            + (f", {pushed.reused} expenses reused" if pushed.reused else "")
            + (f", {pushed.deleted} orphans removed" if pushed.deleted else ""),
        )

    def _update(self, item: Write) -> Written:
        assert item.target_id is not None
        plan = plan_invoice(item.doc)
        try:
            updated = self.pusher.update(plan, _noko_id(item.target_id), remove_foreign=item.force)
        except NokoRefusedError as exc:
            raise TargetRefusedError(
                item.target_id,
                exc.code,
                str(exc),
                None if exc.invoice is None else _neutral(exc.invoice),
            ) from None
        except NokoGoneError as exc:
            raise TargetGoneError(item.target_id, str(exc)) from None
        invoice = _neutral(updated.invoice)
        return Written(
            invoice=invoice,
            target_id=item.target_id,
            link=self.link(invoice),
            state=str(invoice.get("state") or "") or None,
            lines=sorted(updated.line_ids),
            problems=check_totals(plan, updated.invoice),
            detail=f"{updated.added} lines added, {updated.removed} removed"
            + (", taxes changed" if updated.taxes_changed else "")
            + (", details changed" if updated.header_changed else ""),
        )

    def _cancel(self, item: Cancel) -> Cancelled:
        try:
            state = self.pusher.cancel(item.reference, _noko_id(item.target_id))
        except NokoRefusedError as exc:
            raise TargetRefusedError(item.target_id, exc.code, str(exc)) from None
        return Cancelled(item.target_id, state)

    def discard(self, reference: str, target_id: str) -> int:
        try:
            return self.pusher.discard(reference, _noko_id(target_id))
        except NokoRefusedError as exc:
            raise TargetRefusedError(target_id, exc.code, str(exc)) from None

    def find_one(self, reference: str) -> TargetInvoice | None:
        try:
            found = self.pusher.find_invoice(reference)
        except DuplicateInNokoError as exc:
            raise DuplicateInTargetError(self.name, exc.reference, exc.ids) from None
        return None if found is None else _neutral(found)

    def sweep(self, reference: str) -> int:
        return self.pusher.sweep_reference(reference)

    def sweep_late_writes(self, done: Callable[[str], bool]) -> int:
        """Delete uninvoiced expenses and time entries whose marker names an invoice that is
        done: a create that got no answer can be applied by Noko after the retry made its
        own. Two listings (expenses, entries) of the connector's uninvoiced items."""
        prefix = "[" + self.reference.split("{", 1)[0]
        deleted = 0
        for item in self.pusher.leftovers(prefix):
            if done(item.reference):
                self.pusher.delete_leftover(item)
                deleted += 1
        return deleted

    def header_differs(self, doc: LedgerDocument, invoice: TargetInvoice) -> bool:
        return header_differs(invoice, plan_invoice(doc).fields)


def _each(work: Callable[[Any], Any], item: Any) -> Any:
    """One item's result: what `work` returns, or the exception it met. What concerns the
    whole call (a refused token, a spent limit) and what no handler expects are raised."""
    try:
        return work(item)
    except (
        TargetRefusedError,
        TargetGoneError,
        DuplicateInTargetError,
        TransientApiError,
        PermanentApiError,
        MappingError,
    ) as exc:
        return exc


@overload
def _neutral(invoice: dict[str, Any]) -> dict[str, Any]: ...
@overload
def _neutral(invoice: None) -> None: ...
def _neutral(invoice: dict[str, Any] | None) -> dict[str, Any] | None:
    """Noko's invoice with the neutral fields the engine reads: `id` as text, `paid`."""
    if invoice is None:
        return None
    out = dict(invoice)
    if out.get("id") is not None:
        out["id"] = str(out["id"])
    out["paid"] = str(out.get("state") or "") == "paid"
    return out


def _noko_id(target_id: str) -> int:
    noko_id = _int(target_id)
    if noko_id is None:
        raise TargetGoneError(target_id, f"Noko invoice {target_id!r} cannot exist (not a Noko id)")
    return noko_id


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
