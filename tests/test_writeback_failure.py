"""A failed write-back is a failure: the summary, the exit code and `status` agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import FaultConfig, Sandbox, generate
from tests.e2e import cli_env, run_cli, status_json

pytestmark = pytest.mark.e2e  # the CLI in a subprocess against the sandbox


def _ids(box: Sandbox) -> list[int]:
    return [
        int(inv["id"])
        for inv in box.kantata.state()["invoices"]
        if not inv["draft"] and inv["status"] != "cancelled"
    ]


def test_repair_write_backs_answering_503_fail_the_sync(tmp_path: Path) -> None:
    """Synced invoices whose Kantata reference was changed are repaired by a write-back; when
    every write-back answers 503, `sync` says failed and exits 1, and `status` lists them."""
    with Sandbox() as box:
        generate(box.kantata, seed=71, invoices=10, draft_rate=0, cancelled_rate=0)
        env = cli_env(box, tmp_path, KANTATA_SYNC_HTTP_MAX_ATTEMPTS="2")
        assert run_cli(["sync"], env, tmp_path).returncode == 0
        ids = _ids(box)
        for kantata_id in ids:
            box.kantata.upsert_external_reference(
                {
                    "subject_type": "Invoice",
                    "subject_id": str(kantata_id),
                    "service_name": "noko",
                    "service_model": "invoice",
                    "service_model_ref": "999999",
                    "status": "successful",
                }
            )
        box.kantata.touch(ids)
        box.kantata.set_faults(
            FaultConfig(rate_5xx=1.0, only_paths=("/api/v1/external_references/",))
        )
        done = run_cli(["sync"], env, tmp_path)
        assert done.returncode == 1, done.stdout
        assert "repaired" not in done.stdout
        assert f"{len(ids)} failed" in done.stdout
        report = status_json(env, tmp_path)
        assert report["counts"]["failed"] == len(ids)
        assert {f["kantata_invoice_id"] for f in report["failures"]} == {str(i) for i in ids}
        assert all(f["error_kind"] == "writeback" for f in report["failures"])


def test_push_write_backs_answering_503_fail_the_sync(tmp_path: Path) -> None:
    with Sandbox() as box:
        generate(box.kantata, seed=72, invoices=6, draft_rate=0, cancelled_rate=0)
        box.kantata.set_faults(
            FaultConfig(rate_5xx=1.0, only_paths=("/api/v1/external_references/",))
        )
        env = cli_env(box, tmp_path, KANTATA_SYNC_HTTP_MAX_ATTEMPTS="2")
        done = run_cli(["sync"], env, tmp_path)
        assert done.returncode == 1, done.stdout
        report = status_json(env, tmp_path)
        assert report["counts"]["failed"] == len(_ids(box))
        assert len(report["failures"]) == len(_ids(box))
