"""Fixtures shared by the test suites.

Helper functions (not fixtures) live in support modules: `tests/e2e.py` (CLI runs, settings,
books), `tests/loopback.py`, `tests/faults_support.py`, `tests/xero_support.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.faces.config import Settings
from sandbox import Sandbox
from tests.e2e import settings_for


@pytest.fixture
def box() -> Iterator[Sandbox]:
    """Fake Kantata and Noko over loopback HTTP, fresh for each test."""
    with Sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def settings(box: Sandbox, tmp_path: Path) -> Callable[..., Settings]:
    """Settings pointing at `box`, with the state in this test's tmp dir; keyword arguments
    override any field."""

    def make(**extra: Any) -> Settings:
        return settings_for(box, tmp_path, **extra)

    return make
