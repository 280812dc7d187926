"""The Batcher: writes of invoices handled one by one, sent in the target's batches."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from connector.errors import AuthError, PermanentApiError
from connector.sync.batch import Writes
from connector.targets.base import Cancel, Cancelled, Write, Written


class FakeTarget:
    """Records each call's batch; an item whose kantata_id starts with 'bad' is refused."""

    def __init__(self, batch_size: int, fail_call: BaseException | None = None) -> None:
        self.batch_size = batch_size
        self.calls: list[list[str]] = []
        self.threads: list[str] = []
        self.fail_call = fail_call
        self.short = False
        self.lock = threading.Lock()

    def _answer(self, items: Sequence[Any]) -> list[Any]:
        with self.lock:
            self.calls.append([item.kantata_id for item in items])
            self.threads.append(threading.current_thread().name)
        if self.fail_call is not None:
            raise self.fail_call
        results: list[Any] = []
        for item in items:
            if item.kantata_id.startswith("bad"):
                results.append(PermanentApiError("fake", f"refused {item.kantata_id}"))
            else:
                results.append(
                    Written(
                        invoice={"id": f"T{item.kantata_id}"},
                        target_id=f"T{item.kantata_id}",
                        link=None,
                        state="AUTHORISED",
                        lines=[],
                    )
                )
        return results[:-1] if self.short else results

    def create(self, items: Sequence[Write]) -> list[Any]:
        return self._answer(items)

    def update(self, items: Sequence[Write]) -> list[Any]:
        return self._answer(items)

    def cancel(self, items: Sequence[Cancel]) -> list[Any]:
        with self.lock:
            self.calls.append([item.kantata_id for item in items])
        return [Cancelled(target_id=item.target_id, state="VOIDED") for item in items]


def _write(kantata_id: str) -> Write:
    return Write(kantata_id=kantata_id, doc=None)  # type: ignore[arg-type]


def _run_workers(writes: Writes, ids: list[str]) -> dict[str, Any]:
    """Each id in a thread of its own, as the engine's workers would: handed over (`enter`)
    before any starts, `leave` when done. Returns each id's result or exception."""
    results: dict[str, Any] = {}
    for _ in ids:
        writes.enter()

    def work(kantata_id: str) -> None:
        try:
            results[kantata_id] = writes.create(_write(kantata_id))
        except BaseException as exc:  # noqa: BLE001
            results[kantata_id] = exc
        finally:
            writes.leave()

    threads = [threading.Thread(target=work, args=(i,), name=f"w{i}") for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_one_at_a_time_goes_straight_through_in_the_callers_thread() -> None:
    target = FakeTarget(batch_size=1)
    writes = Writes(target, workers=4)  # type: ignore[arg-type]
    written = writes.create(_write("1"))
    assert written.target_id == "T1"
    assert target.calls == [["1"]]
    assert target.threads == [threading.current_thread().name]
    with pytest.raises(PermanentApiError, match="refused bad2"):
        writes.update(_write("bad2"))


def test_concurrent_workers_share_full_batches() -> None:
    target = FakeTarget(batch_size=50)
    writes = Writes(target, workers=120, linger=60)  # type: ignore[arg-type]
    ids = [str(n) for n in range(120)]
    results = _run_workers(writes, ids)
    assert sorted(len(call) for call in target.calls) == [20, 50, 50]
    assert sorted(i for call in target.calls for i in call) == sorted(ids)
    assert all(results[i].target_id == f"T{i}" for i in ids)


def test_fewer_workers_than_a_batch_send_when_all_of_them_wait() -> None:
    target = FakeTarget(batch_size=50)
    writes = Writes(target, workers=7, linger=60)  # type: ignore[arg-type]
    ids = [str(n) for n in range(7)]
    # More invoices are handed over than workers can run: 7 waiting is everything that can come.
    for _ in range(30):
        writes.enter()
    results = _run_workers(writes, ids)
    assert [len(call) for call in target.calls] == [7]
    assert all(results[i].target_id == f"T{i}" for i in ids)


def test_an_items_own_error_reaches_only_its_worker() -> None:
    target = FakeTarget(batch_size=10)
    writes = Writes(target, workers=4, linger=60)  # type: ignore[arg-type]
    results = _run_workers(writes, ["1", "bad2", "3", "4"])
    assert len(target.calls) == 1
    assert isinstance(results["bad2"], PermanentApiError)
    assert [results[i].target_id for i in ("1", "3", "4")] == ["T1", "T3", "T4"]


def test_an_error_of_the_whole_call_reaches_every_worker_of_the_batch() -> None:
    refused = AuthError("xero", "token refused", status=401)
    target = FakeTarget(batch_size=10, fail_call=refused)
    writes = Writes(target, workers=3, linger=60)  # type: ignore[arg-type]
    results = _run_workers(writes, ["1", "2", "3"])
    assert all(results[i] is refused for i in ("1", "2", "3"))


def test_an_answer_with_too_few_results_fails_every_item_of_it() -> None:
    target = FakeTarget(batch_size=10)
    target.short = True
    writes = Writes(target, workers=2, linger=60)  # type: ignore[arg-type]
    results = _run_workers(writes, ["1", "2"])
    assert all(isinstance(results[i], RuntimeError) for i in ("1", "2"))
    assert "1 results for a batch of 2" in str(results["1"])


def test_a_write_outside_the_workers_is_sent_at_once() -> None:
    target = FakeTarget(batch_size=50)
    writes = Writes(target, workers=8, linger=60)  # type: ignore[arg-type]
    assert writes.cancel(Cancel("9", "KS-9", "T9")).state == "VOIDED"
    assert writes.create(_write("10")).target_id == "T10"
    assert writes.calls == {"create": 1, "update": 0, "cancel": 1}


def test_linger_sends_a_batch_that_waits_too_long() -> None:
    ticks = iter(range(0, 10_000, 10))
    target = FakeTarget(batch_size=50)
    # 5 invoices in hand, one writing: only the time it has waited can send it.
    writes = Writes(target, workers=5, linger=1, clock=lambda: float(next(ticks)))  # type: ignore[arg-type]
    for _ in range(5):
        writes.enter()
    assert writes.create(_write("1")).target_id == "T1"
    assert target.calls == [["1"]]


def test_close_sends_what_waits() -> None:
    target = FakeTarget(batch_size=50)
    writes = Writes(target, workers=5, linger=3600)  # type: ignore[arg-type]
    for _ in range(5):
        writes.enter()
    got: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: got.update(w=writes.create(_write("1"))))
    thread.start()
    thread.join(timeout=0.2)
    assert thread.is_alive() and target.calls == []
    writes.close()
    thread.join(timeout=10)
    assert got["w"].target_id == "T1"


def test_invoice_locks_keep_one_thread_per_invoice_and_never_tie_two_invoices() -> None:
    """A worker waiting in a batch holds its invoice's lock: another invoice's worker must
    never wait for it (a shared, hashed lock could), the same invoice's must."""
    from connector.sync.pool import InvoiceLocks

    locks = InvoiceLocks()
    # Many ids held at once by one thread: none waits for another (a hashed stripe would).
    with contextlib.ExitStack() as stack:
        for n in range(5000):
            stack.enter_context(locks.hold(str(n)))
        assert len(locks) == 5000
    assert len(locks) == 0  # nothing kept per invoice once it is done
    entered = threading.Event()
    order: list[str] = []
    with locks.hold("7"):
        thread = threading.Thread(target=lambda: (entered.set(), _hold(locks, "7", order)))
        thread.start()
        entered.wait(5)
        order.append("first done")
    thread.join(5)
    assert order == ["first done", "second"]
    assert len(locks) == 0


def _hold(locks: Any, key: str, order: list[str]) -> None:
    with locks.hold(key):
        order.append("second")
