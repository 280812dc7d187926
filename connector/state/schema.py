"""The state file's schema and connections: the revision a file is at, bringing it to this
version's head (with Alembic, loaded only when a file is behind), and the SQLite settings of
every connection."""

from __future__ import annotations

import sqlite3
import threading
import time
from importlib import resources
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from connector import __version__

HEAD_REVISION = "0006"
"""The newest schema revision (the last file in `migrations/versions`). A file already at it is
opened without loading Alembic and its migration scripts, which is most of the cost of a
short command such as `status`; `tests/test_upgrade.py` checks it is Alembic's head."""

OPEN_WAIT_SECONDS = 30.0
"""How long an open waits for other processes setting up the same file (switching it to WAL,
migrating it) before it reports the file locked."""


class UnknownSchemaError(Exception):
    """The state file's schema revision is not one of this version's migrations."""


def migrate_when_free(engine: Engine, write_lock: threading.RLock) -> None:
    """`migrate`, started again while another process holds the new file. SQLite's busy
    timeout covers most waits, but not all of them: switching a file to WAL, or reading one
    while another connection is recovering or converting it, answers "database is locked" at
    once. Processes opening one new file at the same moment then retry here, on fresh
    connections, until `OPEN_WAIT_SECONDS` have passed."""
    deadline = time.monotonic() + OPEN_WAIT_SECONDS
    pause = 0.01
    while True:
        try:
            migrate(engine, write_lock)
            return
        except (SQLAlchemyError, sqlite3.Error) as exc:
            if not is_busy(exc) or time.monotonic() + pause > deadline:
                raise
        engine.dispose()
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def migrate(engine: Engine, write_lock: threading.RLock) -> None:
    """Bring the schema to head in one write transaction. `BEGIN IMMEDIATE` takes SQLite's
    write lock first, so processes opening a new file at the same moment migrate one after
    the other (the later ones wait, then find the schema at head) instead of racing. A file
    at head already is only read (no write lock, no Alembic)."""
    with engine.connect() as connection:
        if revision(connection) == HEAD_REVISION:
            return
    from alembic import command
    from alembic.config import Config
    from alembic.util.exc import CommandError

    script_location = str(resources.files("connector.state").joinpath("migrations"))
    config = Config()
    config.set_main_option("script_location", script_location)
    with write_lock, engine.begin() as connection:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        before = revision(connection)
        config.attributes["connection"] = connection
        try:
            command.upgrade(config, "head")
        except CommandError as exc:
            raise UnknownSchemaError(str(exc)) from None
        if revision(connection) != before:
            # Created or migrated: this version wrote its schema.
            write_meta(connection, "written_by", __version__)


def revision(connection: Any) -> str | None:
    """The schema revision Alembic recorded in the file (None: a new file)."""
    known = connection.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
    ).first()
    if known is None:
        return None
    row = connection.exec_driver_sql("SELECT version_num FROM alembic_version").first()
    return None if row is None else str(row[0])


def write_meta(connection: Any, key: str, value: str) -> None:
    connection.exec_driver_sql(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def is_busy(exc: BaseException) -> bool:
    """Whether SQLite refused because another connection holds the file."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    return "database is locked" in text or "database is busy" in text


def configure_connection(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
