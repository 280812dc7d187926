"""Batches of writes made from invoices handled one by one.

The engine handles each invoice in a worker of its own (decide, write, verify, write back),
which keeps one invoice's story in one place. A target that takes many invoices per request
(Xero: 50) would then see one request per invoice. `Writes` sits between the two: each worker
hands its one write to a lane (create, update, cancel) and waits; a lane sends what it holds
in one call when it is full, when every invoice the engine has in hand is waiting in a lane
(or as many as it has workers: nothing more can come), or after `linger` seconds (a safety
net, long enough for workers busy with Kantata's paced write-backs to come back: a batch sent
early is a request of the target's budget spent on a few invoices), and hands each worker its
own result. With `batch_size == 1` (Noko) each write is sent
at once in the worker's own thread.

An exception the whole call raised (a refused token, a spent day budget) reaches every worker
of that batch; an item's own exception reaches only its worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from connector.targets.base import Cancel, Cancelled, Target, Write, Written

I = TypeVar("I")  # noqa: E741
R = TypeVar("R")


@dataclass
class _Slot(Generic[I, R]):
    item: I
    result: R | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass
class _Shared:
    """What every lane of one `Writes` shares: one lock, and who is working or waiting."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    active: int = 0
    """Invoices handed to the workers and not finished (`enter`/`leave`)."""
    workers: int = 1
    """How many of them can run at once."""
    waiting: int = 0
    """Workers waiting in a lane for their write."""
    closed: bool = False


class _Lane(Generic[I, R]):
    def __init__(
        self,
        send: Callable[[Sequence[I]], Sequence[R | Exception]],
        size: int,
        shared: _Shared,
        linger: float,
        clock: Callable[[], float],
    ) -> None:
        self.send = send
        self.size = max(1, size)
        self.shared = shared
        self.linger = linger
        self.clock = clock
        self.pending: list[_Slot[I, R]] = []
        self.since: float | None = None
        """When the oldest pending item came."""
        self.calls = 0
        """Calls sent (for tests and figures)."""

    def submit(self, item: I) -> R:
        if self.size == 1:
            self.calls += 1
            return _unwrap(_one(self.send, [item])[0])
        slot: _Slot[I, R] = _Slot(item)
        cond = self.shared.cond
        with cond:
            if not self.pending:
                self.since = self.clock()
            self.pending.append(slot)
            self.shared.waiting += 1
            try:
                while not slot.done:
                    if self._due():
                        self._send_some()
                        continue
                    cond.wait(timeout=self._left())
            finally:
                self.shared.waiting -= 1
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _due(self) -> bool:
        if not self.pending:
            return False
        shared = self.shared
        return (
            len(self.pending) >= self.size
            or shared.closed
            or shared.waiting >= min(shared.active, shared.workers)
            or self._left() <= 0
        )

    def _left(self) -> float:
        if self.since is None:
            return self.linger
        return max(0.0, self.linger - (self.clock() - self.since))

    def _send_some(self) -> None:
        """Send up to `size` pending items (called holding the lock; released while sending)."""
        batch, self.pending = self.pending[: self.size], self.pending[self.size :]
        self.since = self.clock() if self.pending else None
        self.calls += 1
        cond = self.shared.cond
        cond.release()
        try:
            results = _one(self.send, [slot.item for slot in batch])
        finally:
            cond.acquire()
        for slot, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                slot.error = result
            else:
                slot.result = result
            slot.done = True
        cond.notify_all()


def _one(
    send: Callable[[Sequence[I]], Sequence[R | Exception]], items: list[I]
) -> list[R | BaseException]:
    """The call's results, one per item; an exception of the call itself goes to each item."""
    try:
        results = list(send(items))
    except BaseException as exc:  # noqa: BLE001 - handed to every waiting worker
        return [exc] * len(items)
    if len(results) != len(items):
        problem = RuntimeError(
            f"the target answered {len(results)} results for a batch of {len(items)}"
        )
        return [problem] * len(items)
    return list(results)


def _unwrap(result: R | BaseException) -> R:
    if isinstance(result, BaseException):
        raise result
    return result


class Writes:
    """The engine's writes to its target, coalesced into the target's batches."""

    def __init__(
        self,
        target: Target,
        *,
        workers: int = 1,
        linger: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shared = _Shared(workers=max(1, workers))
        size = target.batch_size
        self._create: _Lane[Write, Written] = _Lane(target.create, size, self.shared, linger, clock)
        self._update: _Lane[Write, Written] = _Lane(target.update, size, self.shared, linger, clock)
        self._cancel: _Lane[Cancel, Cancelled] = _Lane(
            target.cancel, size, self.shared, linger, clock
        )

    def create(self, item: Write) -> Written:
        return self._create.submit(item)

    def update(self, item: Write) -> Written:
        return self._update.submit(item)

    def cancel(self, item: Cancel) -> Cancelled:
        return self._cancel.submit(item)

    @property
    def calls(self) -> dict[str, int]:
        return {
            "create": self._create.calls,
            "update": self._update.calls,
            "cancel": self._cancel.calls,
        }

    def enter(self) -> None:
        """An invoice is handed to the workers (call it when it is queued, not when a worker
        starts on it: an invoice still queued may yet come to write)."""
        with self.shared.cond:
            self.shared.active += 1
            self.shared.closed = False

    def leave(self) -> None:
        """An invoice is done with: those waiting may now be all that is left."""
        with self.shared.cond:
            self.shared.active = max(0, self.shared.active - 1)
            self.shared.cond.notify_all()

    def close(self) -> None:
        """The cycle ends or stops: send whatever waits, now."""
        with self.shared.cond:
            self.shared.closed = True
            self.shared.cond.notify_all()
