"""Shared tools of the end-to-end tests: run the real CLI, and check both systems' books."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from connector.faces.config import Settings
from sandbox import Sandbox
from tests import cli_zygote

KANTATA_TOKEN = "sandbox-kantata-token"
NOKO_TOKEN = "sandbox-noko-token"


def cli_env(box: Sandbox, tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment with only what the CLI needs: the sandbox's URLs, tokens, a temp DB."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "KANTATA_BASE_URL": box.kantata_url,
        "KANTATA_TOKEN": KANTATA_TOKEN,
        "NOKO_BASE_URL": box.noko_url,
        "NOKO_TOKEN": NOKO_TOKEN,
        "KANTATA_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        "NOKO_MAX_REQUESTS_PER_SECOND": "1000",
        "KANTATA_MAX_REQUESTS_PER_SECOND": "1000",
        "NOKO_BURST": "50",
        "KANTATA_SYNC_RETRY_INITIAL_DELAY": "0.01",
        "KANTATA_SYNC_LOG_FORMAT": "json",
    }
    env.update(extra)
    return env


def settings_for(box: Sandbox, tmp_path: Path, **extra: Any) -> Settings:
    """Settings for an in-process connector against `box`, state in `tmp_path`."""
    values: dict[str, Any] = {
        "kantata_base_url": box.kantata_url,
        "kantata_token": KANTATA_TOKEN,
        "noko_base_url": box.noko_url,
        "noko_token": NOKO_TOKEN,
        "kantata_sync_database_url": f"sqlite:///{tmp_path / 'state.db'}",
        "kantata_max_requests_per_second": 5000,
        "noko_max_requests_per_second": 5000,
        "noko_burst": 100,
        "kantata_sync_retry_initial_delay": 0.01,
        "kantata_sync_log_level": "warning",
    }
    values.update(extra)
    return Settings(**values)


def run_cli(
    args: list[str], env: Mapping[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m connector.faces.cli *args` in its own process, to its end: forked from a
    zygote that has imported the CLI already (`tests/cli_zygote.py`), or started plainly."""
    forked = cli_zygote.run(args, env, cwd, timeout)
    if forked is not None:
        return forked
    return subprocess.run(
        [sys.executable, "-m", "connector.faces.cli", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def status_json(env: Mapping[str, str], cwd: Path) -> dict[str, Any]:
    done = run_cli(["status", "--json"], env, cwd)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@dataclass
class Books:
    eligible: int
    problems: list[str]
    noko_invoices: int
    orphans: int


def check_books(box: Sandbox, service_name: str = "noko", prefix: str = "KS-") -> Books:
    """Every eligible Kantata invoice has exactly one Noko invoice with its total and a
    successful reference to it; drafts and cancelled ones have neither; no orphan expenses."""
    kantata = box.kantata.state()
    noko = box.noko.state()
    by_reference: dict[str, list[dict[str, Any]]] = {}
    for invoice in noko["invoices"]:
        by_reference.setdefault(str(invoice["reference"]), []).append(invoice)
    problems: list[str] = []
    eligible = 0
    for invoice in kantata["invoices"]:
        kid = str(invoice["id"])
        matches = by_reference.pop(f"{prefix}{kid}", [])
        refs = [
            r for r in invoice.get("external_references", []) if r["service_name"] == service_name
        ]
        if invoice["draft"] or invoice["status"] == "cancelled":
            if matches:
                problems.append(f"{kid}: draft/cancelled but in Noko")
            if refs:
                problems.append(f"{kid}: draft/cancelled but has a reference")
            continue
        eligible += 1
        if len(matches) != 1:
            problems.append(f"{kid}: {len(matches)} Noko invoices")
            continue
        expected = Decimal(int(invoice["balance_in_cents"])) / Decimal(
            int(invoice["currency_base_unit"])
        )
        total = Decimal(str(matches[0]["total_amount"]))
        if total != expected:
            problems.append(f"{kid}: Noko total {total} != Kantata {expected}")
        if len(refs) != 1 or refs[0].get("status") != "successful":
            problems.append(f"{kid}: reference {refs}")
        elif str(refs[0].get("service_model_ref")) != str(matches[0]["id"]):
            problems.append(f"{kid}: reference points at {refs[0].get('service_model_ref')}")
    for reference, extra in by_reference.items():
        problems.append(f"Noko invoice {reference} matches no Kantata invoice ({len(extra)})")
    orphans = [
        e
        for e in noko["expenses"]
        if not e.get("invoice") and "[" + prefix in str(e.get("description") or "")
    ]
    for expense in orphans:
        problems.append(f"orphan expense {expense['id']}: {expense['description']}")
    return Books(eligible, problems, len(noko["invoices"]), len(orphans))
