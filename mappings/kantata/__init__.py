"""Typed Kantata records decoded from API bodies: lenient about ids, strict about money.

`decode_invoices(body)` turns one `GET /invoices` page (results order, id-keyed maps, side-loaded
associations) into one `KantataInvoice` or one `MappingError` per result, so a single malformed
invoice never spoils its page.
"""

from mappings.kantata.invoices import decode_invoice, decode_invoices, ids_of, page_meta, result_ids
from mappings.kantata.records import (
    KIND_PREFIX,
    LINE_ASSOCIATIONS,
    DecodedInvoice,
    KantataExternalReference,
    KantataInvoice,
    KantataLine,
    KantataUser,
    KantataWorkspace,
    LineKind,
    UndecodableInvoice,
)

__all__ = [
    "KIND_PREFIX",
    "LINE_ASSOCIATIONS",
    "DecodedInvoice",
    "KantataExternalReference",
    "KantataInvoice",
    "KantataLine",
    "KantataUser",
    "KantataWorkspace",
    "LineKind",
    "UndecodableInvoice",
    "decode_invoice",
    "decode_invoices",
    "ids_of",
    "page_meta",
    "result_ids",
]
