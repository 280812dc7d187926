"""Which CPUs the connector's process runs on (`KANTATA_SYNC_CPUS`).

CPython runs one thread's Python code at a time, so the connector's threads (the scan, the
workers, the store's commits) gain nothing from several CPUs, and pay when the scheduler
spreads them: every hand-over of the interpreter lock between threads on different CPUs
crosses caches. Kept on one CPU, the same backfill costs about 30% less CPU (see
docs/PERFORMANCE.md). Waiting on the network or the disk needs no CPU either way.

- `all` (the default): wherever the operating system schedules it.
- `one`: the highest-numbered CPU this process may use (CPU 0 usually takes most interrupts).
- a list such as `3` or `0,2-3`: those CPUs; each must be one the process may use.

Where the platform cannot pin a process (macOS, Windows), `one` and lists are refused with a
clear error rather than ignored.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Literal

from connector.errors import ConfigError

__all__ = [
    "CpuChoice",
    "apply_cpus",
    "describe_cpus",
    "parse_cpus",
    "pin_process",
    "probe_cpus",
    "resolve_cpus",
]

CpuChoice = Literal["all", "one"] | frozenset[int]

_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
MAX_CPU = 4095


def parse_cpus(text: str) -> CpuChoice:
    """`all`, `one`, or a list of CPU numbers and ranges (`0,2-3`); ValueError otherwise."""
    value = text.strip().lower()
    if value in ("all", "one"):
        return value  # type: ignore[return-value]
    if not value:
        raise ValueError("is empty: use all, one, or CPU numbers such as 0,2-3")
    cpus: set[int] = set()
    for part in value.split(","):
        match = _RANGE.fullmatch(part.strip())
        if match is None:
            raise ValueError(
                f"{part.strip()!r} is not a CPU number or range: use all, one, or e.g. 0,2-3"
            )
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise ValueError(f"range {part.strip()!r} runs backwards")
        if last > MAX_CPU:
            raise ValueError(f"CPU {last} is beyond {MAX_CPU}")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def describe_cpus(cpus: frozenset[int] | set[int]) -> str:
    """`0,2-3` for {0, 2, 3}."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def resolve_cpus(choice: CpuChoice) -> frozenset[int] | None:
    """The CPUs `choice` means for this process (None for `all`), without moving it;
    `ConfigError` naming what is wrong when it cannot be done here."""
    if choice == "all":
        return None
    if not hasattr(os, "sched_setaffinity"):
        raise ConfigError(
            "KANTATA_SYNC_CPUS: this platform cannot keep a process on given CPUs; use all"
        )
    allowed = frozenset(os.sched_getaffinity(0))
    if choice == "one":
        target = frozenset({max(allowed)})
    else:
        assert isinstance(choice, frozenset)
        outside = choice - allowed
        if outside:
            raise ConfigError(
                f"KANTATA_SYNC_CPUS names CPU {describe_cpus(outside)}, which this process may "
                f"not use (it may use {describe_cpus(allowed)})"
            )
        target = choice
    return target


def probe_cpus() -> str | None:
    """Why this process may not choose its CPUs (a system call filter, say), or None if it
    may: it asks to stay where it is, which changes nothing."""
    if not hasattr(os, "sched_setaffinity"):
        return "this platform cannot keep a process on given CPUs"
    try:
        os.sched_setaffinity(0, os.sched_getaffinity(0))
    except OSError as exc:
        return _refused(exc)
    return None


def _refused(exc: OSError) -> str:
    return f"the process may not choose its CPUs here ({exc.strerror or exc})"


def apply_cpus(choice: CpuChoice) -> frozenset[int] | None:
    """Keep this process (every thread it has, and those it starts) on the chosen CPUs.

    Returns the CPUs it now runs on, or None for `all` (nothing changed)."""
    target = resolve_cpus(choice)
    if target is None:
        return None
    try:
        pin_process(target)
    except OSError as exc:  # e.g. a seccomp filter that refuses the call (EPERM)
        raise ConfigError(
            f"KANTATA_SYNC_CPUS (CPU {describe_cpus(target)}): {_refused(exc)}; use all, or "
            "pin it from outside (taskset, systemd's CPUAffinity=)"
        ) from None
    return target


def pin_process(target: frozenset[int] | set[int]) -> None:
    """Set the CPUs of the calling thread (OSError if refused), then of every other thread
    already running, best effort: Linux pins one thread at a time, and new threads inherit."""
    os.sched_setaffinity(0, target)
    with contextlib.suppress(OSError):
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                os.sched_setaffinity(int(task.name), target)
