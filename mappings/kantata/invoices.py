"""One `GET /invoices` page into invoices: `results` order, the id-keyed maps, one
`KantataInvoice` or `UndecodableInvoice` per result; the page's counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from mappings.errors import MappingError
from mappings.kantata.fields import _as_integer, _fingerprint, _map, _Reader, _tax_rate
from mappings.kantata.lines import _decode_lines
from mappings.kantata.records import (
    LINE_ASSOCIATIONS,
    DecodedInvoice,
    KantataExternalReference,
    KantataInvoice,
    KantataUser,
    KantataWorkspace,
    UndecodableInvoice,
)
from mappings.money import (
    MoneyError,
    exponent_for_base_unit,
    exponent_for_code,
)


def result_ids(body: Mapping[str, Any], key: str = "invoices") -> list[str]:
    """Ids of the page's results of one key, in the order of `results`."""
    results = body.get("results")
    if not isinstance(results, list):
        return []
    out: list[str] = []
    for item in results:
        if isinstance(item, Mapping) and item.get("key") == key and item.get("id") is not None:
            out.append(str(item["id"]))
    return out


def decode_invoices(body: Mapping[str, Any]) -> list[DecodedInvoice]:
    """Every invoice of a page body, in `results` order; bad ones as `UndecodableInvoice`."""
    invoices = _map(body, "invoices")
    out: list[DecodedInvoice] = []
    for invoice_id in result_ids(body):
        record = invoices.get(invoice_id)
        if not isinstance(record, Mapping):
            error = MappingError(
                invoice_id, "invoices", "listed in results but absent from the map"
            )
            out.append(
                UndecodableInvoice(invoice_id, error, None, _fingerprint(invoice_id, {}, {}))
            )
            continue
        out.append(decode_invoice(invoice_id, record, body))
    return out


def decode_invoice(
    invoice_id: str, record: Mapping[str, Any], body: Mapping[str, Any]
) -> DecodedInvoice:
    """One invoice with its side-loaded lines, workspaces, recipient and references."""
    raw_lines: dict[str, Any] = {}
    for ids_field, map_key, _kind in LINE_ASSOCIATIONS:
        ids = record.get(ids_field)
        if isinstance(ids, list):
            side = _map(body, map_key)
            raw_lines[ids_field] = [side.get(str(i)) for i in ids]
    fingerprint = _fingerprint(invoice_id, record, raw_lines)
    reader = _Reader(invoice_id, record, "")
    try:
        return _decode(invoice_id, reader, body, fingerprint)
    except MappingError as error:
        try:
            updated_at = reader.moment("updated_at")
        except MappingError:
            updated_at = None
        draft = record.get("draft")
        status = record.get("status")
        return UndecodableInvoice(
            invoice_id,
            error,
            updated_at,
            fingerprint,
            draft=draft if isinstance(draft, bool) else None,
            status=status if isinstance(status, str) else None,
        )


def _decode(
    invoice_id: str, r: _Reader, body: Mapping[str, Any], fingerprint: str
) -> KantataInvoice:
    updated_at = r.moment("updated_at", required=True)
    assert updated_at is not None
    draft = r.flag("draft")
    status = r.text("status")
    currency = r.text("currency", required=True).strip().upper()
    try:
        code_exponent = exponent_for_code(currency)
    except MoneyError:
        raise r.fail("currency", f"unknown currency {currency!r}") from None
    base_unit = r.integer("currency_base_unit")
    exponent = code_exponent
    if base_unit is not None:
        try:
            exponent = exponent_for_base_unit(base_unit)
        except MoneyError as exc:
            raise r.fail("currency_base_unit", str(exc)) from None
        if exponent != code_exponent:
            raise r.fail(
                "currency_base_unit",
                f"{base_unit} does not match {currency}'s minor unit (10^{code_exponent})",
            )

    workspaces: list[KantataWorkspace] = []
    workspace_map = _map(body, "workspaces")
    for ws_id in r.ids("workspace_ids") or []:
        ws = workspace_map.get(ws_id)
        if not isinstance(ws, Mapping):
            raise r.fail("workspace_ids", f"workspace {ws_id} is absent from the included map")
        workspaces.append(KantataWorkspace(ws_id, _Reader(invoice_id, ws, "").text("title")))

    recipient: KantataUser | None = None
    recipient_id = r.ident("recipient_id")
    if recipient_id is not None:
        user = _map(body, "users").get(recipient_id)
        if isinstance(user, Mapping):
            ur = _Reader(invoice_id, user, f"users[{recipient_id}].")
            recipient = KantataUser(recipient_id, ur.text("full_name"), ur.text("email_address"))

    lines = _decode_lines(invoice_id, r, body, currency)
    if len(workspaces) == 1:
        # Kantata gives a time entry's or expense's `workspace_id` only with a `workspace`
        # include, which the invoice list has no documented way to ask for. On an invoice of
        # one project every line is on that project: said, not guessed.
        only = workspaces[0].id
        lines = [
            line if line.workspace_id is not None else replace(line, workspace_id=only)
            for line in lines
        ]

    references: list[KantataExternalReference] = []
    ref_map = _map(body, "external_references")
    for ref_id in r.ids("external_reference_ids") or []:
        ref = ref_map.get(ref_id)
        if isinstance(ref, Mapping):
            rr = _Reader(invoice_id, ref, f"external_references[{ref_id}].")
            references.append(
                KantataExternalReference(
                    ref_id,
                    rr.text("service_name"),
                    rr.text("service_model"),
                    rr.text("service_model_ref"),
                    rr.text("status"),
                    rr.text("external_status"),
                    rr.text("external_message"),
                    rr.text("external_link"),
                )
            )

    number = r.raw("user_invoice_number")
    return KantataInvoice(
        id=invoice_id,
        created_at=r.moment("created_at"),
        updated_at=updated_at,
        invoice_date=r.day("invoice_date"),
        due_date=r.day("due_date"),
        payment_schedule=r.integer("payment_schedule", minimum=0),
        draft=draft,
        status=status,
        title=r.text("title"),
        user_invoice_number="" if number is None else r.text("user_invoice_number"),
        user_invoice_title=r.text("user_invoice_title"),
        purchase_order=r.text("purchase_order"),
        project_code=r.text("project_code"),
        message=r.text("message"),
        tax_rate=_tax_rate(r),
        balance_in_cents=None
        if r.raw("balance_in_cents") is None
        else r.amount("balance_in_cents"),
        currency=currency,
        exponent=exponent,
        currency_symbol=r.text("currency_symbol"),
        recipient=recipient,
        workspaces=tuple(workspaces),
        lines=tuple(lines),
        external_references=tuple(references),
        source_fingerprint=fingerprint,
        references_included="external_reference_ids" in r.record,
    )


def page_meta(body: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(`count`, `meta.page_count`) of a page body, when present and whole."""
    count = _as_integer(body.get("count"))
    meta = body.get("meta")
    page_count = _as_integer(meta.get("page_count")) if isinstance(meta, Mapping) else None
    return count, page_count


def ids_of(values: Sequence[Any]) -> list[str]:
    return [str(v) for v in values]
