"""Handing freed heap memory back to the operating system between pages.

A backfill allocates and frees a page of invoices (decoded bodies, requests, answers) over
and over, from several threads. glibc keeps what was freed in its per-thread arenas for
reuse, and the resident size then creeps up with every page as those arenas fragment,
although nothing stays alive. `malloc_trim(0)` returns the free parts of every arena; the
engine calls it after each page and at the end of a cycle, so memory stays flat however long
the history. Elsewhere (musl, macOS, Windows) there is no such call and this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from collections.abc import Callable

__all__ = ["release_free_memory"]


def _load_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_trim = _load_trim()
_lock = threading.Lock()


def release_free_memory() -> bool:
    """Return free heap memory to the OS; False where the C library cannot.

    One caller at a time: a second thread arriving meanwhile skips instead of waiting."""
    if _trim is None or not _lock.acquire(blocking=False):
        return False
    try:
        _trim(0)
    finally:
        _lock.release()
    return True
