"""`connector.memory`: freed heap memory goes back to the OS where the C library allows."""

from __future__ import annotations

import sys
import threading

import pytest

import connector.memory as memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_trims_on_linux_with_glibc() -> None:
    if memory._trim is None:
        pytest.fail("no malloc_trim found in this Linux C library")
    assert memory.release_free_memory() is True


def test_does_nothing_without_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_trim", None)
    assert memory.release_free_memory() is False


def test_a_second_caller_skips_instead_of_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(memory, "_trim", calls.append)
    lock = threading.Lock()
    monkeypatch.setattr(memory, "_lock", lock)
    with lock:  # another thread is trimming
        assert memory.release_free_memory() is False
    assert calls == []
    assert memory.release_free_memory() is True
    assert calls == [0]
