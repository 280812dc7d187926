"""Time as Noko time entries at a standard hourly rate, when that is exact to the cent."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from sandbox import Sandbox
from tests.e2e import check_books, cli_env, run_cli, status_json

PROFILE = '[time]\nmode = "entries"\nbilling_increment = 15\n'


def _env(box: Sandbox, tmp_path: Path) -> dict[str, str]:
    profile = tmp_path / "profile.toml"
    profile.write_text(PROFILE)
    return cli_env(box, tmp_path, KANTATA_SYNC_MAPPING_PROFILE=str(profile))


def _invoice(box: Sandbox, minutes: tuple[int, ...]) -> int:
    workspace = box.kantata.add_workspace("Atlas build", currency="USD")
    lines: list[dict[str, Any]] = [
        {"kind": "time_entry", "time_in_minutes": m, "rate_in_cents": 13333, "taxable": True}
        for m in minutes
    ]
    lines.append({"kind": "expense", "amount_in_cents": 1999, "taxable": False})
    return box.kantata.add_invoice(
        workspace_ids=[workspace], currency="USD", tax_rate="10", lines=lines
    )


def _noko(box: Sandbox, kid: int) -> dict[str, Any]:
    found = [i for i in box.noko.state()["invoices"] if i["reference"] == f"KS-{kid}"]
    assert len(found) == 1
    return found[0]


def _total(box: Sandbox, kid: int) -> Decimal:
    return Decimal(int(box.kantata.invoice_state(kid)["balance_in_cents"])) / 100


def test_time_goes_as_entries_when_exact(box: Sandbox, tmp_path: Path) -> None:
    """Durations on the billing increment and one rate: time entries, exact total."""
    kid = _invoice(box, (60, 90))
    env = _env(box, tmp_path)
    done = run_cli(["sync"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    noko = _noko(box, kid)
    assert noko["entries"] == 2
    assert noko["expenses"] == 1
    assert noko["rate_calculation"]["calculation_method"] == "standard_hourly_rate"
    assert Decimal(str(noko["rate_calculation"]["standard_hourly_rate"])) == Decimal("133.33")
    assert Decimal(str(noko["total_amount"])) == _total(box, kid)
    assert check_books(box).problems == []


def test_time_falls_back_to_amounts_when_not_exact(box: Sandbox, tmp_path: Path) -> None:
    """A duration off the billing increment: time goes as exact-amount expenses instead."""
    kid = _invoice(box, (60, 50))
    done = run_cli(["sync"], _env(box, tmp_path), tmp_path)
    assert done.returncode == 0, done.stderr
    noko = _noko(box, kid)
    assert noko["entries"] == 0
    assert noko["expenses"] == 3
    assert Decimal(str(noko["total_amount"])) == _total(box, kid)


def test_entries_follow_updates_without_false_conflicts(box: Sandbox, tmp_path: Path) -> None:
    """An added time entry is added in place; later cycles see no hand edit."""
    kid = _invoice(box, (60, 90))
    env = _env(box, tmp_path)
    assert run_cli(["sync"], env, tmp_path).returncode == 0
    first = _noko(box, kid)
    box.kantata.update_invoice(
        kid,
        add_lines=[
            {"kind": "time_entry", "time_in_minutes": 45, "rate_in_cents": 13333, "taxable": True}
        ],
    )
    done = run_cli(["sync"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    second = _noko(box, kid)
    assert second["id"] == first["id"]
    assert second["entries"] == 3
    assert Decimal(str(second["total_amount"])) == _total(box, kid)
    again = run_cli(["sync"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    report = status_json(env, tmp_path)
    assert report["conflicts"] == []
    assert check_books(box).problems == []
