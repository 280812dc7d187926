"""Processes opening a new state file at the same moment: one migrates, the others wait."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc

from connector.errors import StateFileError
from connector.state import schema
from connector.state.store import Store

# Each child waits for the go file, then opens the store (which migrates it) and prints the
# schema revision; every child reaches the go file long before it appears.
_CHILD = """
import os, sys, time
from connector.state.store import Store
database, go = sys.argv[1], sys.argv[2]
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
store = Store(f"sqlite:///{database}")
print(store.schema_revision(), flush=True)
store.close()
"""


@pytest.mark.e2e  # four processes migrating one file
def test_simultaneous_first_opens_all_end_at_the_head_revision(tmp_path: Path) -> None:
    """Four processes migrate a fresh file at once: no 'table already exists', all at head."""
    reference = Store("sqlite://")
    head = reference.schema_revision()
    reference.close()
    assert head is not None
    for attempt in range(2):
        database = tmp_path / f"state-{attempt}.db"
        go = tmp_path / f"go-{attempt}"
        children = [
            subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(database), str(go)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        try:
            for child in children:
                assert child.stdout is not None
                assert child.stdout.readline().strip() == "ready"
            time.sleep(0.05)
            go.touch()
            results = [child.communicate(timeout=60) for child in children]
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.communicate()
        for child, (out, err) in zip(children, results, strict=True):
            assert child.returncode == 0, err[-2000:]
            assert out.split() == [head], out


def _refusing_migrate(refusals: list[str]) -> tuple[list[int], object]:
    """A `schema.migrate` that answers each of `refusals` in turn, then migrates."""
    calls = [0]
    migrate = schema.migrate

    def refusing(engine: Any, write_lock: Any) -> None:
        calls[0] += 1
        if calls[0] <= len(refusals):
            raise sqlalchemy.exc.OperationalError(
                "PRAGMA journal_mode=WAL", {}, sqlite3.OperationalError(refusals[calls[0] - 1])
            )
        migrate(engine, write_lock)

    return calls, refusing


def test_an_open_refused_as_locked_is_tried_again_on_a_fresh_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite answers "database is locked" at once, without its busy wait, when another
    process is switching the new file to WAL: the open starts again rather than fail."""
    calls, refusing = _refusing_migrate(["database is locked", "database is locked"])
    monkeypatch.setattr(schema, "migrate", refusing)
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        assert calls[0] == 3
        assert store.schema_revision() == _head()
    finally:
        store.close()


def test_an_open_refused_for_another_reason_is_reported_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls, refusing = _refusing_migrate(["disk I/O error"])
    monkeypatch.setattr(schema, "migrate", refusing)
    with pytest.raises(StateFileError, match="disk I/O error"):
        Store(f"sqlite:///{tmp_path / 'state.db'}")
    assert calls[0] == 1


def test_a_file_locked_past_the_wait_is_reported_as_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls, refusing = _refusing_migrate(["database is locked"] * 1000)
    monkeypatch.setattr(schema, "migrate", refusing)
    monkeypatch.setattr(schema, "OPEN_WAIT_SECONDS", 0.2)
    with pytest.raises(StateFileError, match="database is locked"):
        Store(f"sqlite:///{tmp_path / 'state.db'}")
    assert 2 <= calls[0] < 1000


def _head() -> str | None:
    reference = Store("sqlite://")
    try:
        return reference.schema_revision()
    finally:
        reference.close()
