"""The state file on disk: where a database URL points, one line for what went wrong with the
file, its creation readable by its owner only, and the one-writer lock beside it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from sqlalchemy.engine.url import make_url

from connector.errors import ConfigError, LockHeldError, StateFileError


def sqlite_path(database_url: str) -> Path | None:
    """File path of a `sqlite:///` URL, None for an in-memory database."""
    try:
        url = make_url(database_url)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises several types for bad URLs
        raise ConfigError(f"KANTATA_SYNC_DATABASE_URL: not a database URL: {exc}") from None
    if not url.drivername.startswith("sqlite"):
        raise ConfigError(
            "KANTATA_SYNC_DATABASE_URL: only sqlite:/// URLs are supported, "
            f"got {url.drivername}://"
        )
    if not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def state_file_problem(exc: BaseException, path: Path | None) -> str:
    """One line for an error of the state file itself (corrupt, unwritable, disk full)."""
    where = str(path) if path is not None else "the in-memory state database"
    original = getattr(exc, "orig", None) or exc
    reason = (
        getattr(original, "strerror", None) or str(original).splitlines()[0] or type(exc).__name__
    )
    lowered = reason.lower()
    if "not a database" in lowered or "malformed" in lowered:
        return (
            f"state file {where} is not a readable kantata-sync database ({reason}): move it "
            "aside (the next sync rebuilds the records from Kantata and Noko, creating nothing "
            "twice) or restore a backup"
        )
    if "full" in lowered or "no space" in lowered:
        return (
            f"state file {where}: the disk is full ({reason}): free some space; the next run "
            "continues where this one stopped"
        )
    return (
        f"state file {where} cannot be used ({reason}): check that it and its directory are "
        "writable by this user"
    )


def prepare_file(path: Path) -> None:
    """Create the state file (and its directory) readable by its owner only."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        for suffix in ("", "-wal", "-shm"):
            target = Path(f"{path}{suffix}")
            if target.exists():
                target.chmod(0o600)
    except OSError as exc:
        raise StateFileError(
            f"KANTATA_SYNC_DATABASE_URL: cannot create the state file {path}: {exc.strerror}"
        ) from None


class WriterLock:
    """The database's writer lock (`<file>.lock`, holding the holder's pid); the OS drops it
    when the holder dies, even by SIGKILL, so a crashed process never blocks the next one."""

    def __init__(self, database: Path | None) -> None:
        self.database = database
        self.path = None if database is None else Path(f"{database}.lock")
        self._fd: int | None = None

    def acquire(self, wait: float = 0.0) -> bool:
        """Take the lock, waiting up to `wait` seconds; True when it was taken now (False: an
        in-memory database, or held already)."""
        if self.path is None or self._fd is not None:
            return False
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    os.close(fd)
                    raise LockHeldError(
                        f"another kantata-sync process (pid {holder}) is working on "
                        f"{self.database}; try again when it has finished"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
