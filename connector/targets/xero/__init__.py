"""Xero, the second accounting system: OAuth (`auth`) and the Accounting API client (`client`).

Pure planning (ledger -> Xero payloads, markers, the total check) is `mappings.targets.xero`.
"""
