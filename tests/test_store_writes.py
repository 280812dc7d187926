"""The store's write path: durable writes, lazy writes joining the next commit, group commit."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connector.state.store import LAZY_BATCH, Store


def _store(tmp_path: Path) -> tuple[Store, str]:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    return Store(url), url


def test_durable_write_is_on_disk_when_save_returns(tmp_path: Path) -> None:
    store, url = _store(tmp_path)
    record = store.new_invoice("1")
    record.stage = "pushing"
    store.save_invoice(record, run_id="r", event="push-started", detail="intent")
    other = Store(url)  # another process's view: reads the file only
    seen = other.get_invoice("1")
    assert seen is not None and seen.stage == "pushing"
    assert [e.event for e in other.events("1")] == ["push-started"]


def test_lazy_write_waits_for_the_next_commit_but_is_read_back_at_once(tmp_path: Path) -> None:
    store, url = _store(tmp_path)
    record = store.new_invoice("1")
    store.save_invoice(record, run_id="r", event="push-started")
    record.status = "synced"
    store.save_invoice(record, durable=False, run_id="r", event="synced")
    other = Store(url)
    on_disk = other.get_invoice("1")
    assert on_disk is not None and on_disk.status == "pending"  # not committed yet
    mine = store.get_invoice("1")  # a read in the writing process commits first
    assert mine is not None and mine.status == "synced"
    again = other.get_invoice("1")
    assert again is not None and again.status == "synced"
    assert [e.event for e in other.events("1")] == ["push-started", "synced"]


def test_a_durable_write_commits_the_lazy_ones_before_it_in_order(tmp_path: Path) -> None:
    store, url = _store(tmp_path)
    first = store.new_invoice("1")
    first.status = "skipped"
    store.save_invoice(first, durable=False, event="skipped")
    first.skip_reason = "draft"
    store.save_invoice(first, durable=False, event="skipped-again")
    second = store.new_invoice("2")
    store.save_invoice(second, event="push-started")
    other = Store(url)
    seen = other.get_invoice("1")
    assert seen is not None and seen.status == "skipped" and seen.skip_reason == "draft"
    assert [e.event for e in other.events("1")] == ["skipped", "skipped-again"]


def test_the_record_is_copied_when_saved_not_when_committed(tmp_path: Path) -> None:
    store, url = _store(tmp_path)
    record = store.new_invoice("1")
    record.status = "synced"
    store.save_invoice(record, durable=False)
    record.status = "failed"  # changed after the save, never saved again
    store.flush()
    seen = Store(url).get_invoice("1")
    assert seen is not None and seen.status == "synced"


def test_close_and_cursor_writes_commit_what_is_pending(tmp_path: Path) -> None:
    store, url = _store(tmp_path)
    store.save_invoice(store.new_invoice("1"), durable=False, event="skipped")
    store.close()
    assert Store(url).get_invoice("1") is not None

    store, url = _store(tmp_path / "b")
    store.save_invoice(store.new_invoice("2"), durable=False)
    store.set_cursor(datetime(2026, 1, 1, tzinfo=UTC))
    other = Store(url)
    assert other.get_invoice("2") is not None
    assert other.get_cursor() == datetime(2026, 1, 1, tzinfo=UTC)


def test_lazy_writes_are_committed_in_batches(tmp_path: Path) -> None:
    store, url = _store(tmp_path)
    for n in range(LAZY_BATCH):
        store.save_invoice(store.new_invoice(str(n)), durable=False)
    assert Store(url).counts().get("pending") == LAZY_BATCH


def test_concurrent_durable_writes_all_land_once(tmp_path: Path) -> None:
    store, url = _store(tmp_path)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for n in range(40):
                record = store.new_invoice(f"{worker}-{n}")
                store.save_invoice(record, run_id="r", event="push-started")
                record.status = "synced"
                store.save_invoice(record, durable=(n % 2 == 0), run_id="r", event="synced")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    store.flush()
    other = Store(url)
    assert other.counts() == {"synced": 320}
    assert [e.event for e in other.events("3-7")] == ["push-started", "synced"]


class _CommitFailsOnce:
    """The store's engine, whose first commit of the batched writes fails after its
    statements ran (the disk is full, say)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.failed = False

    def raw_connection(self) -> Any:
        outer = self
        proxied = self._engine.raw_connection()
        driver = proxied.driver_connection

        class _Driver:
            def commit(self) -> None:
                if not outer.failed:
                    outer.failed = True
                    raise sqlite3.OperationalError("database or disk is full")
                driver.commit()

            def __getattr__(self, name: str) -> Any:
                return getattr(driver, name)

        class _Proxied:
            driver_connection = _Driver()

            def close(self) -> None:
                proxied.close()

        return _Proxied()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def test_a_failed_commit_keeps_the_writes_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, url = _store(tmp_path)
    store.save_invoice(store.new_invoice("1"), durable=False, event="skipped")
    flaky = _CommitFailsOnce(store.engine)
    monkeypatch.setattr(store, "engine", flaky)
    with pytest.raises(sqlite3.OperationalError):
        store.save_invoice(store.new_invoice("2"), event="push-started")
    assert flaky.failed
    assert Store(url).get_invoice("1") is None
    store.flush()
    other = Store(url)
    assert other.get_invoice("1") is not None and other.get_invoice("2") is not None
    assert [e.event for e in other.events("1")] == ["skipped"]


def test_invoice_record_has_exactly_the_tables_columns() -> None:
    """The plain record the engine works on and the table it is stored in stay field for field
    the same: a column added to one and not the other would be lost or fail on save."""
    import dataclasses

    from connector.state.models import InvoiceRecord, InvoiceRow

    table = InvoiceRow.__table__  # type: ignore[attr-defined]
    assert [f.name for f in dataclasses.fields(InvoiceRecord)] == [c.name for c in table.columns]


def test_every_field_round_trips_through_the_file(tmp_path: Path) -> None:
    store, url = _store(tmp_path)
    record = store.new_invoice("7", status="synced")
    when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    record.target_id = "42"
    record.total_minor = 123_456
    record.kantata_updated_at = when
    record.next_attempt_at = when
    record.target_lines = '{"a": 1}'
    store.save_invoice(record)
    seen = Store(url).get_invoice("7")
    assert seen == record
    assert seen is not record


def test_several_saves_of_one_invoice_in_a_batch_leave_the_last_and_every_event(
    tmp_path: Path,
) -> None:
    store, url = _store(tmp_path)
    first = store.new_invoice("1")
    store.save_invoice(first, durable=False, run_id="r", event="skipped")
    other = store.new_invoice("2")
    store.save_invoice(other, durable=False, run_id="r", event="skipped")
    first.status = "pushed-ish"
    first.stage = "pushed"
    store.save_invoice(first, durable=False, run_id="r", event="pushed")
    first.status = "synced"
    first.stage = ""
    store.save_invoice(first, durable=False, run_id="r", event="synced")
    store.flush()
    reader = Store(url)
    on_disk = reader.get_invoice("1")
    assert on_disk is not None and (on_disk.status, on_disk.stage) == ("synced", "")
    assert reader.get_invoice("2") is not None
    assert [e.event for e in reader.events("1")] == ["skipped", "pushed", "synced"]


def test_a_read_waits_for_a_commit_another_thread_has_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write taken from the queue by another thread's commit, not yet committed: a read in
    this thread still sees it (it waits for that commit), never the row as it was before."""
    store, _ = _store(tmp_path)
    record = store.new_invoice("1")
    store.save_invoice(record)  # durable: on disk as pending
    raw = store._writer_connection()
    inside = threading.Event()
    release = threading.Event()

    class SlowCommit:
        def __getattr__(self, name: str) -> Any:
            return getattr(raw, name)

        def commit(self) -> None:
            inside.set()  # the batch is out of the queue, not yet on disk
            release.wait(5)
            raw.commit()

    monkeypatch.setattr(store, "_writer_connection", lambda: SlowCommit())
    record.status = "synced"
    store.save_invoice(record, durable=False)
    committer = threading.Thread(target=store.flush)
    committer.start()
    assert inside.wait(5)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.append(store.get_invoice("1").status))  # type: ignore[union-attr]
    reader.start()
    reader.join(0.2)
    assert seen == []  # the read waits for the commit under way
    release.set()
    committer.join(5)
    reader.join(5)
    assert seen == ["synced"]
