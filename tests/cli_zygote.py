"""`python -m connector.faces.cli` without paying for Python's start and the imports each time.

The end-to-end tests run the CLI a few hundred times, and starting an interpreter and importing
the connector (SQLAlchemy, pydantic, httpx, ...) is most of the CPU each of those runs costs.
A zygote is a process started once per test worker that imports the CLI's modules and then,
for each run, forks: the child takes the run's arguments, environment (the whole of it, as
`subprocess.run(env=...)` gives), working directory, stdin from /dev/null and its stdout and
stderr into files, and runs the module as `python -m` would (`runpy`, as `__main__`). It ends as
any interpreter ends (atexit, non-daemon threads joined, streams flushed) with the CLI's exit
code, or killed by a signal, which the zygote reports as `subprocess` does (a negative code).

So every run is still its own process: nothing of one run (signal handlers, logging set-up,
globals) reaches the next, and the tests that send signals or kill processes start real ones.
The zygote itself starts no thread, so forking it is safe. A run that finds this worker's zygote
busy (two runs at once from threads) or the zygote gone starts a plain subprocess instead, as
every run does with `KANTATA_SYNC_TEST_FORK=0`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

MODULE = "connector.faces.cli"

# Runs in the zygote: one job a line on stdin; "<pid>" then "<exit code>" lines on stdout.
_ZYGOTE = r"""
import json, os, runpy, sys
import connector.faces, connector.faces.cli  # the imports every run needs, done once
# ...but the module itself runs as `__main__` in each child, as `python -m` runs it: not
# imported already (runpy would warn, and its globals would be shared).
del sys.modules["connector.faces.cli"]
del connector.faces.cli
control_in, control_out = sys.stdin.buffer, sys.stdout.buffer
os.write(1, b"ready\n")
for line in control_in:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(job["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        err = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        for fd in (null, out, err):
            os.close(fd)
        os.setpgid(0, 0)
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        sys.argv = [job["module"], *job["args"]]
        del control_in, control_out, line, job, pid
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
        sys.exit(0)
    os.write(1, f"{pid}\n".encode())
    _, status = os.waitpid(pid, 0)
    os.write(1, f"{os.waitstatus_to_exitcode(status)}\n".encode())
"""


class _Zygote:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.process: subprocess.Popen[bytes] | None = None
        self.broken = False
        atexit.register(self.stop)

    def _start(self) -> subprocess.Popen[bytes] | None:
        if self.process is not None and self.process.poll() is None:
            return self.process
        self.stop()  # a zygote that died: its pipes closed before a new one starts
        if self.broken:
            return None
        process = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,  # unbuffered: select() then sees every line the zygote wrote
            cwd=Path(__file__).resolve().parents[1],
        )
        self.process = process
        if self._line(process, 60) != "ready":
            self._give_up()
            return None
        return process

    @staticmethod
    def _line(process: subprocess.Popen[bytes], timeout: float) -> str | None:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        if not ready:
            return None
        return process.stdout.readline().decode().strip() or None

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()

    def run(
        self, args: list[str], env: Mapping[str, str], cwd: Path, timeout: float
    ) -> subprocess.CompletedProcess[str] | None:
        """The run's result, or None when this zygote cannot take it now."""
        if not self.lock.acquire(blocking=False):
            return None
        try:
            process = self._start()
            if process is None:
                return None
            with tempfile.TemporaryDirectory() as scratch:
                out, err = Path(scratch, "stdout"), Path(scratch, "stderr")
                job = {
                    "module": MODULE,
                    "args": list(args),
                    "env": dict(env),
                    "cwd": str(cwd),
                    "stdout": str(out),
                    "stderr": str(err),
                }
                assert process.stdin is not None
                process.stdin.write(json.dumps(job).encode() + b"\n")
                process.stdin.flush()
                started = time.monotonic()
                pid_line = self._line(process, 60)
                if pid_line is None:
                    self._give_up()
                    return None
                pid = int(pid_line)
                code_line = self._line(process, max(0.0, timeout - (time.monotonic() - started)))
                if code_line is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                    if self._line(process, 30) is None:
                        self._give_up()  # out of step with its child: plain runs from now on
                    raise subprocess.TimeoutExpired(
                        [sys.executable, "-m", MODULE, *args], timeout, _read(out), _read(err)
                    )
                return subprocess.CompletedProcess(
                    [sys.executable, "-m", MODULE, *args],
                    int(code_line),
                    _read(out),
                    _read(err),
                )
        finally:
            self.lock.release()

    def _give_up(self) -> None:
        self.broken = True
        self.stop()


def _read(path: Path) -> str:
    """The output as `subprocess.run(text=True)` gives it: decoded, universal newlines."""
    if not path.exists():
        return ""
    with path.open(encoding="utf-8", errors="replace", newline=None) as handle:
        return handle.read()


_ZYGOTES: dict[int, _Zygote] = {}


def run(
    args: list[str], env: Mapping[str, str], cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str] | None:
    """Run the CLI forked from this process's zygote; None: run it as a plain subprocess."""
    if os.environ.get("KANTATA_SYNC_TEST_FORK", "1") == "0":
        return None
    zygote = _ZYGOTES.setdefault(os.getpid(), _Zygote())
    return zygote.run(args, env, cwd, timeout)
