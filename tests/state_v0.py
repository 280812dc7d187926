"""The sandbox history behind `tests/fixtures/state/v0.sql`, a state file written by the release
before the store's columns became neutral (`noko_*` -> `target_*`).

`build(box, tmp_path)` replays it: both fakes' clocks frozen at `FROZEN`, `generate(seed=SEED)`,
one invoice with a currency Kantata cannot map (failed), a `sync`, then one synced invoice paid in
Noko and cancelled in Kantata (a conflict), and a second `sync`; one worker, so that Noko's ids
come out the same every time, and Noko's people's links on a fixed host, whatever the port.
Drafts and cancelled invoices are skipped.

Made with `python -m tests.state_v0 tests/fixtures/state/v0.sql` at commit e02f21a.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox import Sandbox, generate
from tests.e2e import cli_env, run_cli

FROZEN = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
SEED = 1505
SHARE_ROOT = "https://sandbox-noko.example"


def env(box: Sandbox, tmp_path: Path) -> dict[str, str]:
    return cli_env(box, tmp_path, KANTATA_SYNC_WORKERS="1")


def _sync(box: Sandbox, tmp_path: Path) -> None:
    done = run_cli(["sync"], env(box, tmp_path), tmp_path)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode in (0, 1), done.stdout + done.stderr


def build(box: Sandbox, tmp_path: Path) -> None:
    """Replay the history; leaves the state file at `tmp_path / 'state.db'`."""
    box.kantata.set_clock(FROZEN)
    box.noko.set_clock(FROZEN)
    box.noko.share_root = SHARE_ROOT
    generate(box.kantata, seed=SEED, invoices=10, draft_rate=0.2, cancelled_rate=0.1)
    invoices = box.kantata.state()["invoices"]
    eligible = [i for i in invoices if not i["draft"] and i["status"] != "cancelled"]
    box.kantata.corrupt_invoice(int(eligible[0]["id"]), "currency", "XXX")
    _sync(box, tmp_path)
    victim = int(eligible[1]["id"])
    (pushed,) = [i for i in box.noko.state()["invoices"] if i["reference"] == f"KS-{victim}"]
    box.noko.set_invoice_state(int(pushed["id"]), "paid")
    box.kantata.cancel(victim)
    _sync(box, tmp_path)


def books(box: Sandbox) -> dict[str, Any]:
    """What the sandbox holds after `build`, to show a replay reached the same books."""
    noko = [
        (i["id"], i["reference"], str(i["total_amount"]), i["state"])
        for i in box.noko.state()["invoices"]
    ]
    kantata = [
        (
            i["id"],
            i["status"],
            sorted(
                (r["service_name"], str(r.get("service_model_ref")), r.get("status"))
                for r in i.get("external_references", [])
            ),
        )
        for i in box.kantata.state()["invoices"]
    ]
    return {"noko": noko, "kantata": kantata}


def main(out: str) -> None:
    with tempfile.TemporaryDirectory() as tmp, Sandbox() as box:
        build(box, Path(tmp))
        # Kept as SQL text, not as a database file: `sqlite3 state.db .dump`.
        with sqlite3.connect(Path(tmp) / "state.db") as made:
            Path(out).write_text("\n".join(made.iterdump()) + "\n")
        made.close()
        print(books(box))


if __name__ == "__main__":
    main(sys.argv[1])
