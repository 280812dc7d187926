"""`KANTATA_SYNC_CPUS`: where the process runs; every wrong value is refused by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import connector.cpus as cpus
from connector.config import load_settings
from connector.cpus import apply_cpus, describe_cpus, parse_cpus
from connector.doctor import check_cpus
from connector.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("all", "all"),
        (" ONE ", "one"),
        ("3", frozenset({3})),
        ("0,2-3", frozenset({0, 2, 3})),
        ("1-1, 4", frozenset({1, 4})),
    ],
)
def test_parse(text: str, parsed: object) -> None:
    assert parse_cpus(text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("two", "'two' is not a CPU number"),
        ("1,,2", "'' is not a CPU number"),
        ("3-1", "runs backwards"),
        ("-1", "not a CPU number"),
        ("5000", "beyond 4095"),
    ],
)
def test_parse_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cpus(text)


def test_describe() -> None:
    assert describe_cpus({0, 2, 3, 4, 7}) == "0,2-4,7"
    assert describe_cpus({5}) == "5"


def test_setting_from_the_environment_and_its_error() -> None:
    assert load_settings(None, environ={"KANTATA_SYNC_CPUS": "one"}).cpus() == "one"
    assert load_settings(None, environ={}).cpus() == "all"
    with pytest.raises(ConfigError, match=r"(?i)kantata_sync_cpus") as info:
        load_settings(None, environ={"KANTATA_SYNC_CPUS": "fast"})
    assert "'fast' is not a CPU number" in str(info.value)


class _FakeOs:
    def __init__(self, allowed: set[int], refuse: bool = False) -> None:
        self.allowed = allowed
        self.refuse = refuse
        self.pinned: list[tuple[int, frozenset[int]]] = []

    def sched_getaffinity(self, pid: int) -> set[int]:
        return set(self.allowed)

    def sched_setaffinity(self, pid: int, target: frozenset[int]) -> None:
        if self.refuse:
            raise PermissionError(1, "Operation not permitted")
        self.pinned.append((pid, frozenset(target)))


def test_one_takes_the_highest_allowed_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeOs({0, 1, 5})
    monkeypatch.setattr(cpus, "os", fake)
    assert apply_cpus("one") == frozenset({5})
    assert fake.pinned[0] == (0, frozenset({5}))


def test_all_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeOs({0, 1})
    monkeypatch.setattr(cpus, "os", fake)
    assert apply_cpus("all") is None
    assert fake.pinned == []


def test_a_cpu_the_process_may_not_use_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpus, "os", _FakeOs({0, 1}))
    with pytest.raises(ConfigError, match=r"names CPU 3,7, which this process may not use "):
        apply_cpus(frozenset({1, 3, 7}))


def test_refused_by_the_system(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpus, "os", _FakeOs({0, 1}, refuse=True))
    with pytest.raises(ConfigError, match="may not choose its CPUs here"):
        apply_cpus("one")


def test_a_platform_without_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpus, "os", object())
    with pytest.raises(ConfigError, match="cannot keep a process on given CPUs"):
        apply_cpus("one")
    assert apply_cpus("all") is None


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux affinity calls")
def test_every_thread_moves_in_a_real_process() -> None:
    """In a process of its own (not to pin the test run): threads already started and threads
    started afterwards all end up on the one CPU."""
    script = """
import os, threading
from connector.cpus import apply_cpus
seen = {}
ready, done = threading.Event(), threading.Event()
def early():
    ready.set(); done.wait(10)
    seen["early"] = os.sched_getaffinity(0)
t = threading.Thread(target=early); t.start(); ready.wait(10)
target = apply_cpus("one")
late = threading.Thread(target=lambda: seen.__setitem__("late", os.sched_getaffinity(0)))
late.start(); late.join(); done.set(); t.join()
print(sorted(target), sorted(seen["early"]), sorted(seen["late"]), sorted(os.sched_getaffinity(0)))
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=60,
    ).stdout.split("]")
    highest = max(os.sched_getaffinity(0))
    assert [part.strip(" [\n") for part in out[:4]] == [str(highest)] * 4


def _settings(value: str) -> Any:
    return load_settings(None, environ={"KANTATA_SYNC_CPUS": value})


def test_doctor_says_where_the_process_will_run(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeOs({0, 1, 2})
    monkeypatch.setattr(cpus, "os", fake)
    assert check_cpus(_settings("one")) == (True, "runs on CPU 2 (KANTATA_SYNC_CPUS=one)", "")
    assert check_cpus(_settings("0-1"))[:2] == (True, "runs on CPU 0-1 (KANTATA_SYNC_CPUS=0-1)")
    passed, found, _ = check_cpus(_settings("all"))
    assert passed and "operating system" in found
    # The probe asks to stay where it is: nothing moved.
    assert all(target == frozenset({0, 1, 2}) for _, target in fake.pinned)


def test_doctor_fails_a_cpu_not_allowed_and_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpus, "os", _FakeOs({0, 1}))
    passed, found, fix = check_cpus(_settings("5"))
    assert not passed
    assert "names CPU 5" in found
    assert "CPUs this process may use" in fix
    monkeypatch.setattr(cpus, "os", _FakeOs({0, 1}, refuse=True))
    passed, found, fix = check_cpus(_settings("one"))
    assert not passed
    assert "may not choose its CPUs here" in found
    assert "CPUAffinity=" in fix
