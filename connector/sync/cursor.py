"""One cycle's read of Kantata: which versions were handed out already (`Seen`) and the
bookkeeping from which the next cursor is set (`Scan`)."""

from __future__ import annotations

from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class Seen:
    """The invoices handed out in this cycle, each with the `updated_at` it had: what tells a
    row read again (pages shifted, a second pass) from a new version.

    Kept for the whole cycle, so kept small: 16 bytes an invoice instead of a dict entry with a
    string and a datetime (about 200). Kantata ids are decimal numbers and a scan reads them in
    ascending order, so the usual write is an append to two int64 arrays and a read a binary
    search. Anything else (an id out of order, as retries and a second pass bring; an id that
    is not a plain number) goes to a dict beside them."""

    __slots__ = ("_ids", "_other", "_times")

    def __init__(self) -> None:
        self._ids = array("q")
        self._times = array("q")
        self._other: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ids) + len(self._other)

    @staticmethod
    def _number(kantata_id: str) -> int | None:
        if (
            kantata_id.isascii()
            and kantata_id.isdigit()
            and len(kantata_id) < 19
            and (kantata_id[0] != "0" or kantata_id == "0")
        ):
            return int(kantata_id)
        return None

    def _index(self, number: int) -> int | None:
        ids = self._ids
        if not ids or number > ids[-1]:
            return None
        index = bisect_left(ids, number)
        return index if ids[index] == number else None

    def _micros(self, kantata_id: str) -> int | None:
        number = self._number(kantata_id)
        if number is not None:
            index = self._index(number)
            if index is not None:
                return self._times[index]
        return self._other.get(kantata_id)

    def __contains__(self, kantata_id: object) -> bool:
        return isinstance(kantata_id, str) and self._micros(kantata_id) is not None

    def get(self, kantata_id: str) -> datetime | None:
        micros = self._micros(kantata_id)
        return None if micros is None else _EPOCH + micros * _MICROSECOND

    def __setitem__(self, kantata_id: str, updated: datetime) -> None:
        micros = (updated - _EPOCH) // _MICROSECOND
        number = self._number(kantata_id)
        if number is not None:
            ids = self._ids
            if not ids or number > ids[-1]:
                # Past every id kept: never in `_other`, which only takes ids below the last.
                ids.append(number)
                self._times.append(micros)
                return
            index = self._index(number)
            if index is not None:
                self._times[index] = micros
                return
        self._other[kantata_id] = micros

    def setdefault(self, kantata_id: str, updated: datetime) -> None:
        if kantata_id not in self:
            self[kantata_id] = updated


@dataclass
class Scan:
    """Bookkeeping of one cycle's read of Kantata."""

    max_updated: datetime | None = None
    server_time: datetime | None = None
    """Kantata's clock (its `Date` header) at the scan's first page."""
    seen: Seen = field(default_factory=Seen)
    shrank: bool = False
    complete: bool = False
