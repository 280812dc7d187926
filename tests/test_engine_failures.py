"""Failures are data: recorded, retried with a growing delay, never silently dropped."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import connector.sync.engine as engine_module
import connector.targets.noko.target as noko_target
from connector.faces.app import open_connector
from sandbox import FaultConfig, Sandbox, generate
from tests.e2e import check_books, settings_for


def _eligible_ids(box: Sandbox) -> list[str]:
    return [
        str(inv["id"])
        for inv in box.kantata.state()["invoices"]
        if not inv["draft"] and inv["status"] != "cancelled"
    ]


def test_unexpected_error_is_recorded_and_retried(
    box: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug hit by one invoice fails that invoice alone, and the next cycle retries it."""
    generate(box.kantata, seed=41, invoices=10, draft_rate=0, cancelled_rate=0)
    victim = _eligible_ids(box)[3]
    real = engine_module.to_ledger

    def flaky(inv: Any, profile: Any) -> Any:
        if inv.id == victim:
            raise RuntimeError("boom")
        return real(inv, profile)

    monkeypatch.setattr(engine_module, "to_ledger", flaky)
    with open_connector(settings_for(box, tmp_path)) as c:
        first = c.engine.run_cycle()
        assert set(first.failed) == {victim}
        record = c.store.get_invoice(victim)
        assert record is not None
        assert record.status == "failed"
        assert "boom" in (record.last_error or "")
        assert record.next_attempt_at is not None
        monkeypatch.setattr(engine_module, "to_ledger", real)
        time.sleep(0.05)
        second = c.engine.run_cycle()
        assert second.failed == {}
        fixed = c.store.get_invoice(victim)
        assert fixed is not None
        assert fixed.status == "synced"
    assert check_books(box).problems == []


def test_transient_failure_backs_off_then_succeeds(box: Sandbox, tmp_path: Path) -> None:
    """Noko failing every create: invoices are failed with attempts and a next retry time;
    once Noko recovers they sync, each exactly once."""
    generate(box.kantata, seed=42, invoices=6, draft_rate=0, cancelled_rate=0)
    box.noko.set_faults(FaultConfig(rate_5xx=1.0, only_paths=("/v2/expenses",)))
    settings = settings_for(
        box, tmp_path, kantata_sync_http_max_attempts=2, kantata_sync_retry_initial_delay=0.01
    )
    with open_connector(settings) as c:
        first = c.engine.run_cycle()
        assert first.exit_code == 1
        report = {r.kantata_id: r for r in c.store.all_invoices()}
        for kantata_id in _eligible_ids(box):
            assert report[kantata_id].status == "failed"
            assert report[kantata_id].attempts == 1
            assert report[kantata_id].error_kind == "transient"
        box.noko.set_faults(FaultConfig())
        time.sleep(0.05)
        second = c.engine.run_cycle()
        assert second.exit_code == 0, second.failed
    assert check_books(box).problems == []


def test_permanent_refusal_is_not_hammered(box: Sandbox, tmp_path: Path) -> None:
    """A mapping error is recorded once; an unchanged invoice is not retried by later cycles."""
    generate(box.kantata, seed=43, invoices=4, draft_rate=0, cancelled_rate=0)
    victim = int(_eligible_ids(box)[0])
    box.kantata.corrupt_invoice(victim, "currency", "XXX")
    with open_connector(settings_for(box, tmp_path)) as c:
        first = c.engine.run_cycle()
        assert str(victim) in first.failed
        assert "currency" in first.failed[str(victim)]
        writes = len(box.kantata.state()["stats"]["writes"])
        second = c.engine.run_cycle()
        assert str(victim) in second.failed
        record = c.store.get_invoice(str(victim))
        assert record is not None
        assert record.attempts == 1
        assert len(box.kantata.state()["stats"]["writes"]) == writes


def test_total_mismatch_is_recorded_not_hidden(
    box: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When Noko's totals differ from Kantata's, the invoice is failed with both figures, the
    Kantata reference says so, and it is not pushed again by itself. The invoice just created
    with the wrong totals is deleted again (it used to stay in Noko, recorded as the invoice's
    Noko id: that was the bug), with its expenses."""
    generate(box.kantata, seed=44, invoices=3, draft_rate=0, cancelled_rate=0)
    victim = _eligible_ids(box)[0]
    real = noko_target.check_totals

    def skewed(plan: Any, invoice: Any) -> list[str]:
        if plan.kantata_id == victim:
            return ["total_amount is 1.00, expected 2.00"]
        return real(plan, invoice)

    monkeypatch.setattr(noko_target, "check_totals", skewed)
    with open_connector(settings_for(box, tmp_path)) as c:
        first = c.engine.run_cycle()
        assert set(first.failed) == {victim}
        record = c.store.get_invoice(victim)
        assert record is not None
        assert record.error_kind == "verify"
        assert record.target_id is None
        assert not [i for i in box.noko.state()["invoices"] if i["reference"] == f"KS-{victim}"]
        assert record.next_attempt_at is None
        refs = box.kantata.external_references(int(victim))
        assert refs[0]["status"] == "failed"
        assert "expected 2.00" in refs[0]["external_message"]
        noko_writes = len(box.noko.state()["stats"]["writes"])
        second = c.engine.run_cycle()
        assert victim in second.failed
        assert len(box.noko.state()["stats"]["writes"]) == noko_writes


def test_noko_read_failure_is_reported_as_noko(box: Sandbox, tmp_path: Path) -> None:
    """When only reading Noko's changes fails, the cycle says so (not 'Kantata'), exits 1,
    and the next clean cycle is healthy again."""
    generate(box.kantata, seed=45, invoices=4, draft_rate=0, cancelled_rate=0)
    settings = settings_for(box, tmp_path, kantata_sync_http_max_attempts=2)
    with open_connector(settings) as c:
        assert c.engine.run_cycle().exit_code == 0
        box.noko.set_faults(FaultConfig(rate_5xx=1.0, only_paths=("/v2/invoices",)))
        broken = c.engine.run_cycle()
        assert broken.outcome == "degraded"
        assert broken.exit_code == 1
        assert broken.error is not None
        assert "Noko" in broken.error
        assert "Kantata" not in broken.error
        box.noko.set_faults(FaultConfig())
        assert c.engine.run_cycle().exit_code == 0
