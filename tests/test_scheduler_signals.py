"""The daemon's main thread runs signal handlers within a second, whichever thread the kernel
hands the signal to."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from connector.sync.scheduler import run_forever

# A daemon with a cycle every 600 s whose SIGHUP handler sets the stop. The signal goes to
# another thread of the process (`pthread_kill`), as the kernel does when the main thread has
# a signal pending already or is being traced.
_CHILD = """
import signal, threading, time
from connector.sync.scheduler import run_forever
stop = threading.Event()
def handled(signum, frame):
    print("handled", flush=True)
    stop.set()
signal.signal(signal.SIGHUP, handled)
def poke():
    time.sleep(0.5)
    signal.pthread_kill(threading.get_ident(), signal.SIGHUP)
    time.sleep(60)
threading.Thread(target=poke, daemon=True).start()
run_forever(lambda: None, interval=600, stop=stop)
print("returned", flush=True)
"""


def test_a_signal_delivered_to_another_thread_is_handled_without_waiting_for_the_cycle() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ours = [line for line in done.stdout.splitlines() if line in ("handled", "returned")]
    assert ours == ["handled", "returned"], done.stdout
    assert time.monotonic() - started < 20  # not the 600 s interval


def test_a_stop_ends_the_wait_and_the_cycle_in_flight_is_waited_for() -> None:
    stop = threading.Event()
    cycles: list[str] = []

    def cycle() -> None:
        cycles.append("started")
        stop.set()
        time.sleep(0.3)  # the stop arrives while the cycle runs
        cycles.append("ended")

    run_forever(cycle, interval=600, stop=stop)
    assert cycles == ["started", "ended"]
