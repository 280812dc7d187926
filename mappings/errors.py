"""The one error the pure mapping raises: it names the invoice and the field at fault."""

from __future__ import annotations


class MappingError(ValueError):
    """A Kantata invoice that cannot be turned into a correct ledger document."""

    def __init__(self, invoice_id: str, field: str, message: str) -> None:
        self.invoice_id = invoice_id
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"invoice {self.invoice_id}: {self.field}: {self.message}"
