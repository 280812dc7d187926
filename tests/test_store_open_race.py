"""Processes opening a new state file at the same moment: one migrates, the others wait."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from connector.state.store import Store

pytestmark = pytest.mark.e2e  # four processes migrating one file

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
