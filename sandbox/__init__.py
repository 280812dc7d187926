"""Fake Kantata OX, Noko v2 and Xero APIs on localhost, for the CLI's sandbox/demo and for tests.

    with Sandbox(noko_rate_limit=2.0) as sandbox:
        generate(sandbox.kantata, seed=7, invoices=50)
        ...  # point the connector at sandbox.kantata_url and sandbox.noko_url

State can be driven in-process (`sandbox.kantata.update_invoice(...)`) or over HTTP under
`/_sandbox/` on either server (no auth, never rate-limited or faulted).
"""

from sandbox.data import generate
from sandbox.faults import FaultConfig, FaultInjector, RateLimiter
from sandbox.kantata import FakeKantata
from sandbox.noko import FakeNoko, NokoTotals
from sandbox.server import Sandbox
from sandbox.xero import FakeXero

__all__ = [
    "FakeKantata",
    "FakeNoko",
    "FakeXero",
    "FaultConfig",
    "FaultInjector",
    "NokoTotals",
    "RateLimiter",
    "Sandbox",
    "generate",
]
