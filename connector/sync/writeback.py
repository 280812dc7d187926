"""The write-back to Kantata: the external reference that tells Kantata where its invoice is
in the books (or why it is not), written only when it changes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from connector.errors import ApiError, AuthError, PermanentApiError, TransientApiError
from connector.http.text import clean
from connector.kantata.client import ExternalReferenceWrite, KantataClient
from connector.state.store import InvoiceRecord, Store
from connector.sync.outcome import EngineSettings, Outcome
from connector.sync.records import Records
from mappings.kantata import KantataInvoice
from mappings.money import format_money
from mappings.profile import Profile
from mappings.to_ledger import reference_for_id

SERVICE_MODEL = "invoice"


class Writeback:
    """The engine's Kantata write-back: one per engine, shared by its parts."""

    def __init__(
        self,
        *,
        kantata: KantataClient,
        store: Store,
        settings: EngineSettings,
        profile: Profile,
        records: Records,
        target_name: str,
        clock: Callable[[], datetime],
    ) -> None:
        self.kantata = kantata
        self.store = store
        self.settings = settings
        self.profile = profile
        self.records = records
        self.target_name = target_name
        self.clock = clock

    def success_reference(self, record: InvoiceRecord) -> ExternalReferenceWrite:
        total = (
            format_money(record.total_minor, record.exponent, record.currency)
            if record.total_minor is not None and record.exponent is not None and record.currency
            else ""
        )
        return ExternalReferenceWrite(
            service_name=self.settings.service_name,
            service_model=SERVICE_MODEL,
            service_model_ref=str(record.target_id),
            status="successful",
            external_link=_people_link(record.target_link, self.settings.noko_base_url),
            external_status=record.target_state,
            external_message=f"{self.target_name} invoice {record.reference} for {total}".strip(),
        )

    def reference_in_place(self, inv: KantataInvoice, record: InvoiceRecord) -> bool:
        current = inv.reference_for(self.settings.service_name)
        if current is None:
            # Kantata listed the invoice's references and ours is not among them: it was
            # removed, and is written again. Only when references were not sent at all is our
            # own record trusted.
            return bool(record.writeback_hash) and not inv.references_included
        wanted = self.success_reference(record)
        return (
            current.status == "successful"
            and current.service_model_ref == wanted.service_model_ref
            and (not wanted.external_link or current.external_link == wanted.external_link)
        )

    def stale_reference(self, inv: KantataInvoice, reference: ExternalReferenceWrite) -> str | None:
        """The id of our reference on the invoice as read when it names another object (an
        earlier Noko id, or the natural key a failure before any push wrote): it must be
        removed before the new one is written."""
        current = inv.reference_for(self.settings.service_name)
        if current is None or not current.id:
            return None
        if (current.service_model, current.service_model_ref) == (
            reference.service_model,
            reference.service_model_ref,
        ):
            return None
        return current.id

    def reference_same(self, inv: KantataInvoice, wanted: ExternalReferenceWrite) -> bool:
        """Whether Kantata already holds exactly this reference (e.g. written before the state
        file was lost): then writing it again would change nothing."""
        current = inv.reference_for(self.settings.service_name)
        if current is None:
            return False
        return (
            current.service_model_ref == wanted.service_model_ref
            and current.status == wanted.status
            and (current.external_link or None) == (wanted.external_link or None)
            and (current.external_status or None) == (wanted.external_status or None)
            and (current.external_message or None) == (wanted.external_message or None)
        )

    def write_success(
        self, inv: KantataInvoice, record: InvoiceRecord, run_id: str, log: Any
    ) -> tuple[Outcome, str | None]:
        reference = self.success_reference(record)
        digest = _hash_reference(reference)
        already = (
            record.writeback_hash == digest and self.reference_in_place(inv, record)
        ) or self.reference_same(inv, reference)
        try:
            if not already:
                self.kantata.write_external_reference(
                    inv.id, reference, replace=self.stale_reference(inv, reference)
                )
        except AuthError:
            # In the target; the write-back is done by the next cycle (the record says `pushed`).
            record.stage = "pushed"
            raise
        except (TransientApiError, PermanentApiError) as exc:
            record.stage = "pushed"
            return self.records.fail(
                record,
                "writeback",
                f"in {self.target_name} as invoice {record.target_id}, but writing the Kantata "
                f"reference failed: {exc}",
                run_id,
                log,
                retry=True,
            )
        record.stage = ""
        record.status = "synced"
        record.attempts = 0
        record.last_error = None
        record.error_kind = None
        record.next_attempt_at = None
        record.synced_at = self.clock()
        record.writeback_hash = digest
        self.store.save_invoice(
            record,
            durable=False,
            run_id=run_id,
            event="synced",
            detail=f"reference {reference.external_link}",
        )
        return "pushed", None

    def write_failure(
        self, kantata_id: str, record: InvoiceRecord, message: str, run_id: str, log: Any
    ) -> None:
        reference = ExternalReferenceWrite(
            service_name=self.settings.service_name,
            service_model=SERVICE_MODEL,
            service_model_ref=str(record.target_id)
            if record.target_id is not None
            else (record.reference or reference_for_id(kantata_id, self.profile)),
            status="failed",
            external_link=_people_link(record.target_link, self.settings.noko_base_url),
            external_message=clean(message, 1000),
        )
        self.write_reference(kantata_id, record, reference, run_id, log)

    def write_reference(
        self,
        kantata_id: str,
        record: InvoiceRecord,
        reference: ExternalReferenceWrite,
        run_id: str,
        log: Any,
    ) -> bool:
        """Write a reference unless the same one was written last; False if Kantata refused."""
        digest = _hash_reference(reference)
        if record.writeback_hash == digest:
            return True
        try:
            self.kantata.write_external_reference(kantata_id, reference)
        except ApiError as exc:
            log.warning("could not write the reference to Kantata", error=str(exc))
            return False
        record.writeback_hash = digest
        self.store.save_invoice(
            record,
            run_id=run_id,
            event=f"reference-{reference.status}",
            detail=reference.external_message or reference.external_status or "",
        )
        return True


def _people_link(url: str | None, api_base: str) -> str | None:
    """`url` unless it is an address of Noko's API (what releases before share_url stored)."""
    if not url or url.startswith(api_base.rstrip("/") + "/"):
        return None
    return url


def _hash_reference(reference: ExternalReferenceWrite) -> str:
    blob = json.dumps(reference.as_dict(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]
