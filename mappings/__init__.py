"""Pure translation from Kantata invoices to ledger documents and Noko payloads."""
