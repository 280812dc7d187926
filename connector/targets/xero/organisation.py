"""What the Xero organisation holds, read once a process: its tax rates, accounts and short
code; the plan of a ledger document checked against them; the deep link for people."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import structlog

from connector.errors import ApiError, AuthError, LimitReachedError
from connector.targets.base import TargetInvoice
from connector.targets.xero.client import XeroClient, deep_link
from connector.targets.xero.documents import (
    CREDIT_NOTES,
    collection_of,
    decimal_of,
    id_of,
    money_of,
)
from mappings.errors import MappingError
from mappings.ledger import LedgerDocument
from mappings.targets.xero import XeroPlan, plan_invoice
from mappings.targets.xero_profile import XeroSettings

log = structlog.get_logger(__name__)


class Organisation:
    """The organisation's settings (read once) and the plans checked against them."""

    def __init__(self, client: XeroClient, settings: XeroSettings, lock: threading.RLock) -> None:
        self.client = client
        self.settings = settings
        self.lock = lock
        self._short_code: str | None = None
        self._rates: dict[str, Decimal] | None = None
        self._accounts: dict[str, str] | None = None

    def loaded(self) -> tuple[dict[str, Decimal], dict[str, str]]:
        """(active tax rates by tax type, account status by code), listed once."""
        with self.lock:
            if self._rates is None:
                rates: dict[str, Decimal] = {}
                for row in self.client.tax_rates():
                    if str(row.get("Status") or "ACTIVE") != "ACTIVE":
                        continue
                    rate = decimal_of(row.get("EffectiveRate"))
                    if rate is None:
                        rate = sum(
                            (money_of(c.get("Rate")) for c in row.get("TaxComponents") or ()),
                            Decimal(0),
                        )
                    rates[str(row.get("TaxType"))] = rate
                self._rates = rates
            if self._accounts is None:
                self._accounts = {
                    str(row.get("Code")): str(row.get("Status") or "ACTIVE")
                    for row in self.client.accounts()
                    if row.get("Code")
                }
            return self._rates, self._accounts

    def short_code(self) -> str:
        with self.lock:
            if self._short_code is None:
                self._short_code = str(self.client.organisation().get("ShortCode") or "")
            return self._short_code

    def link(self, invoice: TargetInvoice) -> str | None:
        """The deep link into the organisation (its ShortCode, read once)."""
        doc_id = invoice.get("id") or id_of(invoice)
        if not doc_id:
            return None
        try:
            code = self.short_code()
        except (AuthError, LimitReachedError):
            raise
        except ApiError as exc:
            log.warning("xero.no_short_code", error=str(exc))
            return None
        if not code:
            return None
        return deep_link(code, str(doc_id), credit_note=collection_of(invoice) == CREDIT_NOTES)

    def plan(self, doc: LedgerDocument, *, check: bool = True) -> XeroPlan:
        """The Xero plan of a ledger document; with `check`, its accounts and tax types must be
        active in the organisation (a `MappingError` names the line otherwise)."""
        rates, accounts = self.loaded() if check else (None, None)
        plan = plan_invoice(doc, self.settings, tax_rates=rates)
        if plan.due_date is None:
            # Xero approves nothing without a DueDate: Kantata's terms from the invoice date.
            due = doc.invoice_date + timedelta(days=doc.payment_schedule or 0)
            plan = replace(plan, due_date=due.isoformat())
        if accounts is not None and rates is not None:
            for line in plan.lines:
                if accounts.get(line.account_code) not in ("ACTIVE",):
                    raise MappingError(
                        doc.kantata_id,
                        "account",
                        f"Xero has no active account {line.account_code} (line {line.key}): "
                        "set the account codes in [xero.accounts] / sales_account",
                    )
                if line.tax_type not in rates:
                    raise MappingError(
                        doc.kantata_id,
                        "tax_type",
                        f"Xero has no active tax type {line.tax_type} (line {line.key}): "
                        "set it in [xero] / [xero.tax_types]",
                    )
        return plan
