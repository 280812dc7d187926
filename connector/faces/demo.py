"""`kantata-sync demo`: the whole job against the sandbox, in seconds, leaving nothing behind."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console

from connector.faces.app import open_connector
from connector.faces.config import Settings
from connector.faces.report import build_report, render_table
from sandbox import Sandbox, generate

SANDBOX_KANTATA_TOKEN = "sandbox-kantata-token"  # noqa: S105 - the sandbox's fixed token
SANDBOX_NOKO_TOKEN = "sandbox-noko-token"  # noqa: S105 - the sandbox's fixed token


def _noko_check(box: Sandbox, service_name: str) -> tuple[int, int, int]:
    """(eligible Kantata invoices, Noko invoices with the right total, references written)."""
    kantata = box.kantata.state()
    noko = box.noko.state()
    by_reference: dict[str, list[dict[str, Any]]] = {}
    for invoice in noko["invoices"]:
        by_reference.setdefault(str(invoice["reference"]), []).append(invoice)
    eligible = right = referenced = 0
    for invoice in kantata["invoices"]:
        if invoice["draft"] or invoice["status"] == "cancelled":
            continue
        eligible += 1
        matches = by_reference.get(f"KS-{invoice['id']}", [])
        base = int(invoice["currency_base_unit"])
        expected = Decimal(int(invoice["balance_in_cents"])) / Decimal(base)
        if len(matches) == 1 and Decimal(str(matches[0]["total_amount"])) == expected:
            right += 1
        ref = next(
            (
                r
                for r in invoice.get("external_references", [])
                if r["service_name"] == service_name
            ),
            None,
        )
        if ref and ref.get("status") == "successful":
            referenced += 1
    return eligible, right, referenced


def run_demo(*, invoices: int, seed: int, workdir: Path) -> int:
    console = Console()
    try:
        with Sandbox() as box:
            generate(box.kantata, seed=seed, invoices=invoices)
            settings = Settings(
                kantata_base_url=box.kantata_url,
                kantata_token=SANDBOX_KANTATA_TOKEN,
                noko_base_url=box.noko_url,
                noko_token=SANDBOX_NOKO_TOKEN,
                kantata_sync_database_url=f"sqlite:///{workdir / 'demo.db'}",
                kantata_max_requests_per_second=500,
                noko_max_requests_per_second=500,
                noko_burst=20,
                kantata_sync_retry_initial_delay=0.05,
                kantata_sync_log_format="console",
                kantata_sync_log_level="warning",
            )
            console.print(
                f"[bold]Sandbox[/bold] Kantata at {box.kantata_url}, Noko at {box.noko_url}, "
                f"{invoices} generated Kantata invoices."
            )
            with open_connector(settings) as connector:
                first = connector.engine.run_cycle(kind="sync")
                console.print(f"First sync:  {dict(first.counts)} in {first.duration:.1f} s")
                noko_before = connector.noko.stats.requests
                kantata_before = connector.kantata.stats.requests
                second = connector.engine.run_cycle(kind="sync")
                console.print(
                    f"Second sync: {dict(second.counts)} in {second.duration:.1f} s — "
                    f"{connector.noko.stats.requests - noko_before} Noko requests, "
                    f"{connector.kantata.stats.requests - kantata_before} Kantata requests"
                )
                render_table(build_report(connector.store), console)
            eligible, right, referenced = _noko_check(box, settings.kantata_sync_service_name)
            console.print(
                f"Check: {eligible} eligible Kantata invoices; {right} have exactly one Noko "
                f"invoice with the same total; {referenced} carry a successful reference."
            )
            ok = eligible == right == referenced and not second.failed
            return 0 if ok and first.exit_code == 0 else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
