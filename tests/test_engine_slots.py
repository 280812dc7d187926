"""The bound between the scan and the workers (`connector.sync.pool.Slots`): never more than
`capacity` invoices in flight; a full feeder resumes at half; `drain` returns only when all are
back."""

from __future__ import annotations

import random
import threading
import time

import pytest

from connector.sync.pool import Slots


def _started(target: object) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread


def test_a_full_feeder_waits_until_half_are_back() -> None:
    slots = Slots(4)
    for _ in range(4):
        slots.acquire()
    fed = threading.Event()

    def feed() -> None:
        slots.acquire()
        fed.set()

    thread = _started(feed)
    slots.release()  # 3 in flight: above half, the feeder keeps waiting
    assert not fed.wait(0.2)
    slots.release()  # 2 in flight: half, it goes on
    assert fed.wait(5)
    thread.join(5)
    assert slots.in_flight == 3


def test_never_more_than_capacity_in_flight_and_drain_waits_for_all() -> None:
    slots = Slots(6)
    highest = 0
    lock = threading.Lock()
    done: list[int] = []
    workers: list[threading.Thread] = []

    def work(item: int) -> None:
        nonlocal highest
        with lock:
            highest = max(highest, slots.in_flight)
        time.sleep(random.random() / 500)
        done.append(item)
        slots.release()

    for item in range(200):
        slots.acquire()
        assert slots.in_flight <= 6
        workers.append(_started(lambda item=item: work(item)))
    slots.drain()
    assert slots.in_flight == 0
    assert sorted(done) == list(range(200))
    assert 1 <= highest <= 6
    for thread in workers:
        thread.join(5)


def test_drain_returns_at_once_when_nothing_is_in_flight() -> None:
    slots = Slots(1)
    slots.drain()
    slots.acquire()
    slots.release()
    slots.drain()
    assert slots.in_flight == 0


def test_more_releases_than_acquires_is_an_error() -> None:
    slots = Slots(2)
    slots.acquire()
    slots.release()
    with pytest.raises(ValueError, match="more slots"):
        slots.release()


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Slots(0)
