"""Fixtures shared by the test suites, and the `e2e` marker's rule.

A test is end to end (`-m e2e`) when it runs the CLI in a subprocess or talks real HTTP to the
sandbox: every test that takes the `box` fixture is marked here; modules and tests that start
processes or a `Sandbox` themselves carry `pytest.mark.e2e`. `pytest -m "not e2e"` runs the
fast unit layer; `make test` runs everything.

Helper functions (not fixtures) live in support modules: `tests/e2e.py` (CLI runs, settings,
books), `tests/strategies.py`, `tests/loopback.py`, `tests/faults_support.py`,
`tests/xero_support.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.faces.config import Settings
from sandbox import Sandbox
from tests.e2e import settings_for


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "box" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


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
