"""A state file older than the target (a restored backup, or a new file): before anything is
created for an invoice the state file does not know in the target, the connector's own
invoices there are listed once (the target's index) and matched, so that nothing is created
twice."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from connector.state.store import InvoiceRecord, Store
from connector.sync.decide import IN_FLIGHT_STAGES
from connector.sync.outcome import EngineSettings, Outcome
from connector.sync.records import Records, remember_kantata
from connector.sync.values import TAKEN_OUT
from connector.sync.values import minor as _minor
from connector.sync.values import text_id as _id
from connector.sync.writeback import SERVICE_MODEL, Writeback
from connector.targets.base import DuplicateInTargetError, Target, TargetIndex
from mappings.kantata import DecodedInvoice, KantataInvoice, UndecodableInvoice
from mappings.ledger import LedgerDocument
from mappings.money import format_money
from mappings.profile import Profile
from mappings.to_ledger import reference_for, reference_for_id

if TYPE_CHECKING:
    from connector.sync.apply import Apply


class Recover:
    """Matching against the target when the state file may not know all it holds."""

    def __init__(
        self,
        *,
        target: Target,
        store: Store,
        settings: EngineSettings,
        profile: Profile,
        records: Records,
        writeback: Writeback,
        log: Any,
    ) -> None:
        self.target = target
        self.store = store
        self.settings = settings
        self.profile = profile
        self.records = records
        self.writeback = writeback
        self.log = log
        self.apply: Apply | None = None
        """Set by the engine (the two know each other: a hand edit found here is a conflict)."""
        self.index: TargetIndex = target.new_index(wanted=False)

    def new_cycle(self, *, wanted: bool) -> None:
        """A new, empty index for the cycle; `wanted`: look in the target before any create."""
        self.index = self.target.new_index(wanted=wanted)

    def target_id_in_kantata(self, inv: DecodedInvoice) -> str | None:
        """The target's invoice id our Kantata reference names, unless it says we deleted it
        (or it names the invoice's natural key: a failure before any push writes that)."""
        if isinstance(inv, UndecodableInvoice):
            return None
        ref = inv.reference_for(self.settings.service_name)
        if ref is None or (ref.external_status or "") == "deleted":
            return None
        if (inv.draft or inv.is_cancelled) and (ref.external_status or "") in TAKEN_OUT:
            return None  # taken out of the target's books when it was cancelled in Kantata
        if ref.service_model and ref.service_model != SERVICE_MODEL:
            return None
        named = _id(ref.service_model_ref)
        if named in (reference_for(inv, self.profile), reference_for_id(inv.id, self.profile)):
            return None
        return named

    def stale_signal(self, inv: DecodedInvoice, record: InvoiceRecord | None) -> bool:
        """Kantata carries our reference to a target invoice the state file does not have: the
        state file is older than the target (a restored backup, or a new file)."""
        named = self.target_id_in_kantata(inv)
        if named is None:
            return False
        if record is None or record.target_id is None:
            return True
        return record.stage == "" and record.target_id != named

    def note_stale_state(
        self, batch: Iterable[DecodedInvoice], records: dict[str, InvoiceRecord]
    ) -> None:
        """Before a page's invoices are handed out: if any of them shows that the state file is
        older than the target, every create of this cycle looks there first (one listing)."""
        if self.index.wanted:
            return
        for inv in batch:
            if self.stale_signal(inv, records.get(inv.id)):
                self.log.warning(
                    f"the state file does not know a {self.target.name} invoice that Kantata's "
                    f"reference names (a new or restored state file); matching against "
                    f"{self.target.name} before creating",
                    kantata_invoice_id=inv.id,
                )
                self.index.wanted = True
                return

    def state_may_be_stale(self, inv: KantataInvoice, record: InvoiceRecord | None) -> bool:
        """Whether to look in the index before deciding: about to create (no target id known,
        not resuming an earlier attempt, which looks by reference itself) in a cycle where the
        state file may not know everything, or the record names another id than Kantata."""
        if record is not None and record.stage in IN_FLIGHT_STAGES:
            return False
        if self.stale_signal(inv, record):
            self.index.wanted = True
            return True
        if not self.index.wanted:
            return False
        return record is None or record.target_id is None or record.target_state == "deleted"

    def own_in_target(self, reference: str, kantata_says: str | None) -> list[dict[str, Any]]:
        index = self.index
        with index.lock:
            if not index.loaded:
                prefix = self.profile.ledger.reference.split("{", 1)[0]
                count = index.load(self.target.find(prefix), prefix)
                self.log.info(
                    f"listed the connector's {self.target.name} invoices to match a new or old "
                    "state file",
                    invoices=count,
                )
        return index.own(reference, kantata_says, self.target.carries_marker)

    def recover(
        self,
        inv: KantataInvoice,
        doc: LedgerDocument,
        fingerprint: str,
        record: InvoiceRecord | None,
        run_id: str,
        log: Any,
        dry_run: bool,
        force: bool,
    ) -> InvoiceRecord | tuple[Outcome, str | None] | None:
        """Match an invoice the state file does not know in the target (or knows under another
        id) against the connector's own invoices there before anything is created.

        Returns the record to go on with (now naming the invoice found, if one was), or the
        outcome when it is settled here: already as Kantata asks (synced, whatever a stale
        record said), several of ours (a duplicate conflict), or different from what Kantata
        asks and from what the state file knows (a hand edit: a conflict)."""
        name = self.target.name
        named = self.target_id_in_kantata(inv)
        own = self.own_in_target(doc.reference, named)
        if not own:
            return record
        if len(own) > 1:
            duplicate = DuplicateInTargetError(
                name, doc.reference, [found.get("id") for found in own]
            )
            if dry_run:
                return "conflict", str(duplicate)
            record = record or self.store.new_invoice(inv.id)
            record.status = "conflict"
            return self.records.fail(record, "duplicate", str(duplicate), run_id, log, retry=False)
        invoice = own[0]
        target_id = _id(invoice.get("id"))
        assert target_id is not None
        if record is not None and record.target_id == target_id:
            return record
        log = log.bind(target_invoice_id=target_id)
        same_totals = self.target.as_asked(doc, invoice)
        if dry_run:
            return "would-update", f"found in {name} as invoice {target_id}: adopt it"
        record = record or self.store.new_invoice(inv.id)
        known_total = record.total_minor
        record.target_id = target_id
        record.target_link = self.target.link(invoice)
        record.target_state = str(invoice.get("state") or "") or None
        record.target_lines = None  # the lines as pushed are not known: totals are compared
        record.reference = doc.reference
        record.currency = doc.currency
        record.exponent = doc.exponent
        record.skip_reason = None
        target_minor = _minor(invoice.get("total_amount"), doc.exponent)
        log.info(f"found the invoice in {name}; the state file did not know it")
        if same_totals and not self.target.header_differs(doc, invoice):
            # Already what Kantata asks for: synced, whatever the state file said.
            record.fingerprint = fingerprint
            record.total_minor = doc.total_minor
            record.balance_in_cents = doc.balance_in_cents
            remember_kantata(record, inv)
            record.stage = "pushed"
            if record.status != "conflict":
                record.status = "pending"
            self.store.save_invoice(
                record,
                run_id=run_id,
                event="adopted",
                detail=f"{name} invoice {target_id} found in {name}, already as Kantata asks "
                "(the state file did not know it)",
            )
            written, why = self.writeback.write_success(inv, record, run_id, log)
            return ("repaired", None) if written == "pushed" else (written, why)
        if same_totals or force or (known_total is not None and target_minor == known_total):
            # Kantata changed since (or only the header differs, or the operator forces the
            # Kantata version): the normal update in place, same id.
            record.total_minor = known_total if known_total is not None else target_minor
            record.fingerprint = None
            record.stage = ""
            self.store.save_invoice(
                record,
                run_id=run_id,
                event="adopted",
                detail=f"{name} invoice {target_id} found in {name} (the state file did not "
                "know it); updating it to Kantata's version",
            )
            return record
        record.total_minor = target_minor
        record.fingerprint = fingerprint
        remember_kantata(record, inv)
        assert self.apply is not None
        return self.apply.conflict(
            record,
            "noko-edited",
            f"{name} invoice {target_id} ({doc.reference}) was found in {name}, not in the "
            f"state file, and differs from Kantata ({name} {invoice.get('total_amount')}, "
            f"Kantata {format_money(doc.total_minor, doc.exponent, doc.currency)}); it is left "
            f"as it is: run `kantata-sync retry {inv.id} --force` to restore the Kantata "
            f"version, or `kantata-sync resolve {inv.id}` to keep it",
            run_id,
            log,
        )
