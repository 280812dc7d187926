"""The commands that look after the state and the books: `cursor show|set`, `doctor`,
`reconcile`."""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

import structlog
import typer
from rich.console import Console

# typer carries its own click; its exceptions are what `standalone_mode=False` lets through.
from connector.errors import (
    ConfigError,
    LockHeldError,
)
from connector.faces.app import open_connector
from connector.faces.commands.common import (
    _fail,
    _install_stop_handlers,
    _parse_day,
    _settings,
    app,
)
from connector.faces.config import Settings
from connector.http.text import clean
from connector.state.store import Store, sqlite_path

cursor_app = typer.Typer(
    help="Show or move the incremental cursor (where the next `sync` starts reading).",
    no_args_is_help=True,
)
app.add_typer(cursor_app, name="cursor")


def _parse_moment(value: str) -> datetime:
    """`YYYY-MM-DD` (midnight UTC) or an ISO 8601 moment; without an offset it is UTC."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(
            f"cursor set: {value!r} is not a date (YYYY-MM-DD) or a moment (YYYY-MM-DDTHH:MM:SSZ)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _existing_store(settings: Settings) -> Store:
    """The state file, which must exist already: reading it never creates one."""
    from connector.state.store import sqlite_path

    path = sqlite_path(settings.kantata_sync_database_url)
    if path is not None and not path.exists():
        raise _fail(f"no state file at {path} (KANTATA_SYNC_DATABASE_URL)")
    try:
        return Store(settings.kantata_sync_database_url)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


@cursor_app.command("show")
def cursor_show() -> None:
    """Print the cursor: the next `sync` reads invoices updated after it, less the look-back."""
    settings = _settings()
    store = _existing_store(settings)
    try:
        cursor = store.get_cursor()
    finally:
        store.close()
    if cursor is None:
        typer.echo("cursor: none (the next sync reads every invoice)")
    else:
        lookback = settings.kantata_sync_lookback_seconds
        typer.echo(
            f"cursor: {_stamp(cursor)} (the next sync reads invoices updated after "
            f"{_stamp(cursor - timedelta(seconds=lookback))}, {lookback:g} s of look-back)"
        )
    raise typer.Exit(0)


@cursor_app.command("set")
def cursor_set(
    moment: Annotated[
        str,
        typer.Argument(
            metavar="DATE",
            help="YYYY-MM-DD (midnight UTC) or YYYY-MM-DDTHH:MM:SSZ; not in the future.",
        ),
    ],
    skip: Annotated[
        bool,
        typer.Option(
            "--skip",
            help="Allow moving the cursor forward (or setting the first one): `sync` then "
            "never reads invoices updated before it; a backfill can.",
        ),
    ] = False,
) -> None:
    """Move the cursor (back to read history again; forward only with --skip).

    Invoices read again that did not change cost no writes. Moved forward, `sync` never reads
    the invoices updated in between.
    """
    value = _parse_moment(moment)
    now = datetime.now(UTC)
    if value > now:
        raise _fail(f"cursor set: {_stamp(value)} is in the future (now is {_stamp(now)})")
    settings = _settings()
    try:
        store = Store(settings.kantata_sync_database_url)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    try:
        with store.writer(wait=settings.kantata_sync_lock_wait):
            before = store.get_cursor()
            if not skip and (before is None or value > before):
                since = f"the cursor ({_stamp(before)})" if before else "the start"
                raise _fail(
                    f"cursor set: {_stamp(value)} is after {since}: sync would never read "
                    "the invoices updated in between; add --skip if that is what you mean "
                    "(`backfill --since` can read them later)"
                )
            store.set_cursor(value)
    except LockHeldError as exc:
        raise _fail(str(exc), code=1) from None
    finally:
        store.close()
    structlog.get_logger("kantata_sync").info(
        "cursor set", before=_stamp(before) if before else None, after=_stamp(value)
    )
    typer.echo(f"cursor: {_stamp(value)} (was {_stamp(before) if before else 'none'})")
    raise typer.Exit(0)


@app.command()
def doctor() -> None:
    """Check config, tokens, permissions, database and clock; one line and a fix for each."""
    from connector.faces.doctor import run_checks

    settings = _settings()
    ok = run_checks(settings, Console())
    path = sqlite_path(settings.kantata_sync_database_url)
    if path is not None and not path.exists():
        raise typer.Exit(2)  # nothing can run here: the check above said where it looked
    raise typer.Exit(0 if ok else 1)


@app.command()
def reconcile(
    since: Annotated[
        str | None, typer.Option(help="Compare invoices updated from this day (YYYY-MM-DD).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="...up to this day, inclusive.")] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Repair what is safe to repair (via the engine).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """List the differences between Kantata, the target (Noko or Xero) and the state database;
    optionally repair."""
    from connector.sync.reconcile import reconcile as run_reconcile

    start = _parse_day(since, "--since")
    end = _parse_day(until, "--until")
    if end is not None:
        end += timedelta(days=1)
    settings = _settings()
    stop = threading.Event()
    _install_stop_handlers(stop)
    try:
        with (
            # Without --apply it only reads: an existing state file records its findings,
            # but none is created.
            open_connector(settings, stop=stop, create=apply) as connector,
            connector.store.writer(wait=settings.kantata_sync_lock_wait),
        ):
            outcome = run_reconcile(connector.engine, since=start, until=end, apply=apply)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    except LockHeldError as exc:
        raise _fail(str(exc), code=1) from None
    if as_json:
        sys.stdout.write(json.dumps(outcome.as_dict(), indent=2) + "\n")
    else:
        console = Console()
        console.print(
            f"Compared {outcome.kantata_invoices} Kantata and {outcome.noko_invoices} "
            f"{settings.target_name} "
            f"invoices: {len(outcome.differences)} "
            f"difference{'' if len(outcome.differences) == 1 else 's'}.",
            highlight=False,
        )
        for diff in outcome.differences:
            verdict = ""
            if apply:
                kid = diff.kantata_invoice_id
                if kid is not None and kid in outcome.repaired:
                    verdict = "  -> repaired"
                elif kid is not None and kid in outcome.still_failing:
                    verdict = f"  -> still failing: {outcome.still_failing[kid]}"
                else:
                    verdict = "  -> left alone (not repaired automatically)"
            console.print(
                f"  {diff.kind:<18} kantata {diff.kantata_invoice_id or '-':<10} "
                f"noko {diff.target_id or '-':<8} {clean(diff.detail)}{verdict}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        if apply:
            console.print(
                f"Repaired {len(outcome.repaired)}; still failing {len(outcome.still_failing)}.",
                highlight=False,
            )
    unresolved = [d for d in outcome.differences if d.kantata_invoice_id not in outcome.repaired]
    raise typer.Exit(1 if unresolved else 0)
