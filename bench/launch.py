"""Starting the connector's child process (`bench.child`), placed on its own CPU.

Where a process may choose its CPUs, the connector goes on the highest-numbered one and this
process (the sandbox, the fakes) moves to the others while the child runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _probe_cpus() -> str | None:
    """Why this process may not choose its CPUs (a system call filter, say), or None."""
    if not hasattr(os, "sched_setaffinity"):
        return "(this platform cannot keep a process on given CPUs)"
    try:
        os.sched_setaffinity(0, os.sched_getaffinity(0))
    except OSError as exc:
        return f"(the process may not choose its CPUs here: {exc.strerror or exc})"
    return None


def _pin(target: frozenset[int] | set[int]) -> None:
    """This process, every thread of it, on `target` (as `taskset -a -p` would)."""
    os.sched_setaffinity(0, target)
    with contextlib.suppress(OSError):
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                os.sched_setaffinity(int(task.name), target)


CPUS_REFUSED = _probe_cpus()
"""Why a process may not choose its CPUs on this machine, or None."""
CPUS = "one" if CPUS_REFUSED is None else "all"
"""Where the benchmark places the connector (and the naive baseline) in every run but one, as
an operator would with taskset or systemd's CPUAffinity=: `one` is the highest-numbered CPU.
Meanwhile the benchmark's own process (the sandbox, the fakes) moves to the other CPUs, so that
it does not share the connector's. One in-process run repeats with `all`, as the operating
system schedules it, for comparison. Where a process may not choose its CPUs, every run uses
`all`."""


class BenchError(RuntimeError):
    pass


@contextlib.contextmanager
def _apart(cpus: str) -> Iterator[list[int] | None]:
    """While a child runs on `cpus` (`one`: the highest-numbered CPU), keep this process (every
    thread) off the CPUs the child takes. Yields (the CPUs the child is placed on, all the
    CPUs) or None: the child inherits this process's narrowed set and places itself. Nothing
    changes for `all`, or with one CPU."""
    if cpus == "all" or CPUS_REFUSED is not None:
        yield None
        return
    allowed = frozenset(os.sched_getaffinity(0))
    taken = frozenset({max(allowed)})
    others = allowed - taken
    if not others:
        yield None
        return
    _pin(others)
    try:
        yield sorted(taken)
    finally:
        _pin(allowed)


def launch(job: dict[str, Any], log: Path, timeout: float) -> dict[str, Any]:
    cpus = str(job.setdefault("cpus", CPUS))
    with _apart(cpus) as placed:
        job["cpus_placed"] = placed
        return spawn(job, log, timeout)


def spawn(job: dict[str, Any], log: Path, timeout: float) -> dict[str, Any]:
    with log.open("w") as stderr:
        done = subprocess.run(
            [sys.executable, "-m", "bench.child"],
            input=json.dumps(job),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            check=False,
        )
    if done.returncode != 0 or not done.stdout.strip():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise BenchError(f"the connector process failed ({done.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
