"""The state file: read-only commands never create one; a broken one is one line naming it,
never a traceback; every report names the database it read and the version that wrote it."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from connector import __version__
from connector.errors import StateFileError
from connector.state.store import Store
from sandbox import Sandbox, generate
from tests.e2e import cli_env, run_cli

pytestmark = pytest.mark.e2e  # the CLI in a subprocess

FAKE_ENV = {
    "KANTATA_BASE_URL": "http://127.0.0.1:9/api/v1",
    "KANTATA_TOKEN": "k" * 32,
    "NOKO_BASE_URL": "http://127.0.0.1:9/v2",
    "NOKO_TOKEN": "n" * 32,
    "KANTATA_SYNC_LOG_FORMAT": "json",
    "KANTATA_SYNC_HTTP_MAX_ATTEMPTS": "1",
}


def _env(tmp_path: Path, database: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        **FAKE_ENV,
        "KANTATA_SYNC_DATABASE_URL": f"sqlite:///{database}",
        "COLUMNS": "400",
    }


@pytest.mark.parametrize(
    "args", [["status"], ["status", "--json"], ["show", "1"], ["doctor"], ["reconcile"]]
)
def test_read_only_commands_never_create_a_state_file(tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "nowhere" / "state.db"
    done = run_cli(args, _env(tmp_path, missing), tmp_path, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"no state file at {missing}" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert not missing.exists()
    assert not missing.parent.exists()


def test_store_without_create_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StateFileError, match="no state file at"):
        Store(f"sqlite:///{tmp_path / 'x.db'}", create=False)
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("args", [["sync"], ["status"], ["status", "--json"], ["show", "1"]])
def test_random_bytes_in_the_state_file_are_one_line(tmp_path: Path, args: list[str]) -> None:
    database = tmp_path / "state.db"
    database.write_bytes(os.urandom(64 * 1024))
    done = run_cli(args, _env(tmp_path, database), tmp_path, timeout=10)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(database) in lines[0]
    assert "not a readable kantata-sync database" in lines[0]
    assert len(lines[0]) < 300


def test_a_state_file_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a regular file, not a directory")
    done = run_cli(["sync"], _env(tmp_path, blocker / "state.db"), tmp_path, timeout=30)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert str(blocker / "state.db") in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_full_disk_at_start_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A state file that cannot grow (SQLite's max_page_count stands in for a full disk)."""
    database = tmp_path / "state.db"
    Store(f"sqlite:///{database}").close()
    db = sqlite3.connect(database, isolation_level=None)
    db.execute("DROP TABLE meta")
    db.execute("UPDATE alembic_version SET version_num = '0003'")
    db.execute("VACUUM")
    db.close()
    # The migration needs a page more than the file may have.
    store_pages = sqlite3.connect(database).execute("PRAGMA page_count").fetchone()[0]
    from connector.state import schema

    original = schema.configure_connection

    def limited(dbapi_connection: object, record: object) -> None:
        original(dbapi_connection, record)
        dbapi_connection.execute(f"PRAGMA max_page_count={store_pages}")  # type: ignore[attr-defined]

    monkeypatch.setattr(schema, "configure_connection", limited)
    with pytest.raises(StateFileError, match="disk is full"):
        Store(f"sqlite:///{database}")


def test_every_report_names_its_database_and_writer(tmp_path: Path) -> None:
    with Sandbox() as box:
        generate(box.kantata, seed=81, invoices=2, draft_rate=0, cancelled_rate=0)
        env = cli_env(box, tmp_path, COLUMNS="400")
        assert run_cli(["sync"], env, tmp_path).returncode == 0
        report = json.loads(run_cli(["status", "--json"], env, tmp_path).stdout)
        table = run_cli(["status"], env, tmp_path).stdout
        html_path = tmp_path / "r.html"
        assert run_cli(["status", "--html", str(html_path)], env, tmp_path).returncode == 0
    database = str(tmp_path / "state.db")
    assert report["database"]["path"] == database
    assert report["database"]["written_by"] == __version__
    assert database in table and f"written by kantata-sync {__version__}" in table
    assert database in html_path.read_text()


def test_a_metrics_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    with Sandbox() as box, socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = cli_env(box, tmp_path, KANTATA_SYNC_METRICS_PORT=str(port))
        done = run_cli(["run"], env, tmp_path, timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"KANTATA_SYNC_METRICS_PORT: cannot listen on 127.0.0.1:{port}" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_full_disk_mid_run_stops_the_cycle_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits start failing (ENOSPC) in the middle of a cycle: the cycle ends with the state
    file named, the cursor stays, and the next run with space again finishes the job, each
    invoice once in Noko."""
    from connector.faces.app import open_connector
    from tests.e2e import check_books, settings_for

    real = Store._commit_until
    calls = {"n": 0}

    def filling(self: Store, ticket: int) -> None:
        calls["n"] += 1
        if calls["n"] > 12:
            raise sqlite3.OperationalError("database or disk is full")
        real(self, ticket)

    with Sandbox() as box:
        generate(box.kantata, seed=82, invoices=30, draft_rate=0, cancelled_rate=0)
        settings = settings_for(box, tmp_path, kantata_sync_workers=4)
        monkeypatch.setattr(Store, "_commit_until", filling)
        with pytest.raises(StateFileError, match="disk is full"), open_connector(settings) as c:
            c.engine.run_cycle()
        monkeypatch.setattr(Store, "_commit_until", real)
        with open_connector(settings) as c:
            assert c.store.get_cursor() is None
            c.store.close_stale_runs()
            result = c.engine.run_cycle()
            assert result.exit_code == 0, result.failed
        books = check_books(box)
        assert books.problems == []
        assert books.noko_invoices == 30


def test_a_state_file_from_an_unknown_schema_is_one_line(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    Store(f"sqlite:///{database}").close()
    with sqlite3.connect(database) as db:
        db.execute("UPDATE alembic_version SET version_num = '0099_future'")
    done = run_cli(["status"], _env(tmp_path, database), tmp_path, timeout=10)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"state file {database} has a schema this version" in done.stderr
