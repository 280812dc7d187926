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
from mappings.profile import default_profile_text
from sandbox import Sandbox, generate

SANDBOX_KANTATA_TOKEN = "sandbox-kantata-token"  # noqa: S105 - the sandbox's fixed token
SANDBOX_NOKO_TOKEN = "sandbox-noko-token"  # noqa: S105 - the sandbox's fixed token
SANDBOX_XERO_CLIENT_ID = "sandbox-xero-client"
SANDBOX_XERO_CLIENT_SECRET = "sandbox-xero-secret"  # noqa: S105 - the sandbox's fixed secret
LIVE_XERO = ("DRAFT", "SUBMITTED", "AUTHORISED", "PAID")


def _eligible(kantata: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in kantata["invoices"] if not i["draft"] and i["status"] != "cancelled"]


def _expected_total(invoice: dict[str, Any]) -> Decimal:
    return Decimal(int(invoice["balance_in_cents"])) / Decimal(int(invoice["currency_base_unit"]))


def _referenced(invoice: dict[str, Any], service_name: str) -> bool:
    ref = next(
        (r for r in invoice.get("external_references", []) if r["service_name"] == service_name),
        None,
    )
    return bool(ref and ref.get("status") == "successful")


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


def _xero_check(box: Sandbox, service_name: str) -> tuple[int, int, int, set[str]]:
    """(eligible Kantata invoices Xero can hold, live Xero documents with the right total,
    references written, ids of the eligible invoices Xero cannot hold and that have no live
    document): one live ACCREC invoice with `Reference` KS-<id> and the Kantata total (a
    credit note of minus that total for a negative one), in the same currency."""
    xero = box.xero.state()
    by_reference: dict[str, list[dict[str, Any]]] = {}
    for doc in [*xero["invoices"], *xero["credit_notes"]]:
        if doc.get("Status") in LIVE_XERO:
            by_reference.setdefault(str(doc.get("Reference")), []).append(doc)
    eligible = right = referenced = 0
    refused: set[str] = set()
    for invoice in _eligible(box.kantata.state()):
        matches = by_reference.get(f"KS-{invoice['id']}", [])
        if not _held(box, invoice):
            if not matches:  # a document here would be a wrong total: never made
                refused.add(str(invoice["id"]))
            continue
        eligible += 1
        expected = _expected_total(invoice)
        if len(matches) == 1:
            doc = matches[0]
            credit = doc.get("Type") == "ACCRECCREDIT"
            total = -Decimal(str(doc["Total"])) if credit else Decimal(str(doc["Total"]))
            if (
                total == expected
                and doc.get("CurrencyCode") == invoice["currency"]
                and doc.get("Type") == ("ACCRECCREDIT" if expected < 0 else "ACCREC")
            ):
                right += 1
        referenced += _referenced(invoice, service_name)
    return eligible, right, referenced, refused


def _held(box: Sandbox, invoice: dict[str, Any]) -> bool:
    """Whether Xero can hold the invoice: a currency the organisation has enabled, and at
    least one billable line (a Xero invoice needs one)."""
    billable = any(line.get("billable", True) for line in invoice.get("lines") or [])
    return invoice["currency"] in box.xero.currencies and billable


def _unheld(box: Sandbox) -> set[str]:
    """Ids of the eligible Kantata invoices Xero cannot hold (see `_held`)."""
    return {str(i["id"]) for i in _eligible(box.kantata.state()) if not _held(box, i)}


SANDBOX_XERO_TAX_TYPES = {
    "0": ("NONE", Decimal(0)),
    "10": ("TAX001", Decimal(10)),
    "20": ("TAX002", Decimal(20)),
    "8.875": ("TAX003", Decimal("8.875")),
}
"""The generated invoices' tax rates (sandbox.data.TAX_RATES) as tax types of the fake Xero."""


def sandbox_xero_profile(box: Sandbox, workdir: Path) -> Path:
    """The default mapping profile with the generated tax rates mapped to tax types the fake
    organisation gets here (a real one has its own: see `doctor`)."""
    for tax_type, rate in SANDBOX_XERO_TAX_TYPES.values():
        box.xero.tax_rates[tax_type] = rate
    mapped = "".join(f'"{rate}" = "{t}"\n' for rate, (t, _) in SANDBOX_XERO_TAX_TYPES.items())
    text = default_profile_text()
    if "\n[xero.tax_types]\n" not in text:
        raise RuntimeError("the default profile has no [xero.tax_types] section")
    text = text.replace("\n[xero.tax_types]\n", "\n[xero.tax_types]\n" + mapped, 1)
    path = workdir / "xero-profile.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def demo_settings(box: Sandbox, workdir: Path, target: str = "noko") -> Settings:
    """The connector's settings for the sandbox: every API at its loopback address."""
    return Settings(
        kantata_base_url=box.kantata_url,
        kantata_token=SANDBOX_KANTATA_TOKEN,
        noko_base_url=box.noko_url,
        noko_token=SANDBOX_NOKO_TOKEN,
        xero_client_id=SANDBOX_XERO_CLIENT_ID,
        xero_client_secret=SANDBOX_XERO_CLIENT_SECRET,
        xero_base_url=box.xero_api_url,
        xero_token_url=box.xero_token_url,
        xero_connections_url=box.xero_connections_url,
        xero_authorize_url=box.xero_authorize_url,
        xero_max_requests_per_minute=10_000,
        kantata_sync_target=target,
        kantata_sync_database_url=f"sqlite:///{workdir / 'demo.db'}",
        kantata_max_requests_per_second=500,
        noko_max_requests_per_second=500,
        noko_burst=20,
        kantata_sync_retry_initial_delay=0.05,
        kantata_sync_log_format="console",
        kantata_sync_log_level="warning",
    )


def run_demo(*, invoices: int, seed: int, workdir: Path, target: str = "noko") -> int:
    console = Console()
    try:
        # The fake Xero keeps Xero's real limits for the `sandbox` command; the demo lifts
        # them to finish in seconds (the client still paces and batches as configured).
        with Sandbox(xero_per_minute=10_000, xero_per_day=100_000) as box:
            generate(box.kantata, seed=seed, invoices=invoices)
            settings = demo_settings(box, workdir, target)
            unheld: set[str] = set()
            if target == "xero":
                profile = sandbox_xero_profile(box, workdir)
                settings = settings.model_copy(update={"kantata_sync_mapping_profile": profile})
                unheld = _unheld(box)
            name = settings.target_name
            where = box.xero_url if target == "xero" else box.noko_url
            console.print(
                f"[bold]Sandbox[/bold] Kantata at {box.kantata_url}, {name} at {where}, "
                f"{invoices} generated Kantata invoices."
            )
            with open_connector(settings) as connector:
                first = connector.engine.run_cycle(kind="sync")
                console.print(
                    f"First sync:  {dict(first.counts)} in {first.duration:.1f} s — "
                    f"{connector.target_stats.requests} {name} requests, "
                    f"{connector.kantata.stats.requests} Kantata requests"
                )
                target_before = connector.target_stats.requests
                kantata_before = connector.kantata.stats.requests
                second = connector.engine.run_cycle(kind="sync")
                console.print(
                    f"Second sync: {dict(second.counts)} in {second.duration:.1f} s — "
                    f"{connector.target_stats.requests - target_before} {name} requests, "
                    f"{connector.kantata.stats.requests - kantata_before} Kantata requests"
                )
                render_table(build_report(connector.store, target=name), console)
            refused: set[str] = set()
            if target == "xero":
                eligible, right, referenced, refused = _xero_check(
                    box, settings.kantata_sync_service_name
                )
            else:
                eligible, right, referenced = _noko_check(box, settings.kantata_sync_service_name)
            console.print(
                f"Check: {eligible} eligible Kantata invoices; {right} have exactly one {name} "
                f"invoice with the same total; {referenced} carry a successful reference."
            )
            if unheld:
                console.print(
                    f"{len(unheld)} more cannot be held in {name} (a currency the organisation "
                    f"has not enabled, or no billable line): {len(refused)} of them failed with "
                    f"a message and have no {name} invoice, as they must."
                )
            # Only the invoices the target cannot hold may fail, and each must.
            ok = (
                eligible == right == referenced
                and refused == unheld
                and set(first.failed) == unheld
                and set(second.failed) <= unheld
                and {first.final_outcome, second.final_outcome} <= {"ok", "failed"}
            )
            return 0 if ok else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
