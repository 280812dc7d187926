"""The `[xero]` section of the mapping profile: account codes, tax types, contacts, drafts.

Defaults work with a standard Xero organisation: every line on sales account `200`, taxable
lines on tax type `OUTPUT`, the rest on `NONE`.

    [xero]
    sales_account = "200"
    keep_as_draft = false

    [xero.accounts]            # line kind -> account code (kinds as Kantata names them)
    expense = "260"

    [xero.tax_types]           # Kantata tax rate (percent) -> Xero tax type
    "8.875" = "TAX001"

    [xero.contacts]            # Kantata client id (or customer name) -> Xero ContactID
    "4411" = "3f5c...-..."
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mappings.profile import Profile

LINE_KINDS = ("time_entry", "expense", "additional_item", "fixed_fee_item", "billing_milestone")
_ACCOUNT_CODE = re.compile(r"^[A-Za-z0-9._-]{1,10}$")
_TAX_TYPE = re.compile(r"^[A-Z0-9_]{1,50}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class XeroSettings(BaseModel):
    """What the Xero planner needs from the operator; see the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sales_account: str = "200"
    accounts: dict[str, str] = Field(default_factory=dict)
    taxable_tax_type: str = "OUTPUT"
    untaxed_tax_type: str = "NONE"
    tax_types: dict[str, str] = Field(default_factory=dict)
    """Kantata tax rate (a decimal percentage, as text) -> Xero tax type for taxable lines."""
    contacts: dict[str, str] = Field(default_factory=dict)
    """Kantata client id or customer name -> an existing Xero ContactID."""
    keep_as_draft: bool = False

    @classmethod
    def from_profile(cls, profile: Profile) -> XeroSettings:
        """The profile's `[xero]` section; `ProfileError` naming the line and key at fault."""
        return profile.target_settings("xero", cls)

    @field_validator("sales_account")
    @classmethod
    def _code(cls, value: str) -> str:
        if not _ACCOUNT_CODE.match(value):
            raise ValueError(f"{value!r} is not a Xero account code (1-10 letters or digits)")
        return value

    @field_validator("accounts")
    @classmethod
    def _codes(cls, value: dict[str, str]) -> dict[str, str]:
        for kind, code in value.items():
            if kind not in LINE_KINDS:
                raise ValueError(f"unknown line kind {kind!r}; kinds: {', '.join(LINE_KINDS)}")
            if not _ACCOUNT_CODE.match(code):
                raise ValueError(f"{kind} = {code!r} is not a Xero account code")
        return value

    @field_validator("taxable_tax_type", "untaxed_tax_type")
    @classmethod
    def _tax_type(cls, value: str) -> str:
        if not _TAX_TYPE.match(value):
            raise ValueError(f"{value!r} is not a Xero tax type (e.g. OUTPUT, NONE, TAX001)")
        return value

    @field_validator("tax_types")
    @classmethod
    def _rates(cls, value: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for rate, tax_type in value.items():
            try:
                number = Decimal(rate)
            except InvalidOperation:
                raise ValueError(f"{rate!r} is not a tax rate in percent") from None
            if not number.is_finite() or number < 0:
                raise ValueError(f"{rate!r} is not a tax rate in percent")
            if not _TAX_TYPE.match(tax_type):
                raise ValueError(f"{rate} = {tax_type!r} is not a Xero tax type")
            out[format(number.normalize(), "f")] = tax_type
        return out

    @field_validator("contacts")
    @classmethod
    def _contact_ids(cls, value: dict[str, str]) -> dict[str, str]:
        for key, contact_id in value.items():
            if not key.strip() or not _UUID.match(contact_id):
                raise ValueError(f"{key!r} = {contact_id!r}: values must be Xero ContactIDs")
        return value

    def account_for(self, kind: str) -> str:
        """The account code of a line of this kind."""
        return self.accounts.get(kind, self.sales_account)

    def tax_type_for(self, taxable: bool, rate: Decimal | None) -> str:
        """The tax type of a line: per the invoice's rate when mapped, else the default."""
        if not taxable:
            return self.untaxed_tax_type
        if rate is not None:
            mapped = self.tax_types.get(format(rate.normalize(), "f"))
            if mapped is not None:
                return mapped
        return self.taxable_tax_type

    def contact_for(self, client_id: str | None, customer_name: str) -> str | None:
        """The ContactID the operator mapped this client (or customer name) to, if any."""
        if client_id and client_id in self.contacts:
            return self.contacts[client_id]
        return self.contacts.get(customer_name)
