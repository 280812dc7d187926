"""`kantata-sync`: the command line. Output on stdout, logs on stderr.

Exit codes: 0 all handled invoices synced or deliberately skipped; 1 some failed (recorded and
retried later) or another process holds the state database; 2 usage or configuration errors.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import structlog
import typer
from rich.console import Console

from connector import __version__
from connector.app import open_connector
from connector.config import Settings, load_settings
from connector.engine import CycleResult
from connector.errors import ConfigError, LockHeldError
from connector.logs import configure_logging
from connector.report import build_report, render_table
from connector.store import Store

app = typer.Typer(
    name="kantata-sync",
    help="Sync Kantata OX invoices into Noko, exactly once and to the cent.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML config file (environment variables override it).",
        envvar="KANTATA_SYNC_CONFIG",
        exists=False,
        dir_okay=False,
    ),
]


class _State:
    config: Path | None = None


state = _State()


@app.callback()
def _root(
    config: ConfigOption = None,
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        typer.echo(f"kantata-sync {__version__}")
        raise typer.Exit(0)
    state.config = config


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"kantata-sync: {message}", err=True)
    return typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    try:
        settings = load_settings(state.config)
        if overrides:
            settings = Settings.model_validate(
                {**settings.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
            )
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    configure_logging(settings.kantata_sync_log_format, settings.kantata_sync_log_level)
    return settings


def _install_stop_handlers(stop: threading.Event) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        structlog.get_logger("kantata_sync").info(
            "signal received; finishing the invoice in flight", signal=signal.Signals(signum).name
        )
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _summary(result: CycleResult) -> str:
    counts = ", ".join(f"{v} {k}" for k, v in sorted(result.counts.items()) if v) or "nothing"
    line = f"{result.kind} {result.outcome}: {counts} in {result.duration:.1f} s"
    if result.failed:
        line += f"; {len(result.failed)} failed (see `kantata-sync status`)"
    if result.error:
        line += f"; {result.error}"
    return line


def _parse_day(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date in YYYY-MM-DD form", param_hint=option
        ) from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _run_once(settings: Settings, stop: threading.Event, **kwargs: Any) -> CycleResult:
    try:
        with (
            open_connector(settings, stop=stop) as connector,
            connector.store.writer(wait=settings.kantata_sync_lock_wait),
        ):
            connector.store.close_stale_runs()
            return connector.engine.run_cycle(**kwargs)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    except LockHeldError as exc:
        raise _fail(str(exc), code=1) from None


@app.command()
def sync() -> None:
    """Run one cycle: everything changed in Kantata up to now."""
    settings = _settings()
    stop = threading.Event()
    _install_stop_handlers(stop)
    result = _run_once(settings, stop, kind="sync")
    typer.echo(_summary(result))
    raise typer.Exit(result.exit_code)


@app.command()
def backfill(
    since: Annotated[str, typer.Option(help="First day (YYYY-MM-DD) of invoice updates to sync.")],
    until: Annotated[
        str | None, typer.Option(help="Last day (YYYY-MM-DD), inclusive; default: up to now.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be pushed; write nothing anywhere.")
    ] = False,
) -> None:
    """Sync a window of history; never moves the incremental cursor backwards."""
    start = _parse_day(since, "--since")
    end = _parse_day(until, "--until")
    if end is not None:
        end += timedelta(days=1)
    if start is not None and end is not None and end <= start:
        raise _fail("--until must not be before --since")
    settings = _settings()
    stop = threading.Event()
    _install_stop_handlers(stop)
    result = _run_once(settings, stop, kind="backfill", since=start, until=end, dry_run=dry_run)
    typer.echo(_summary(result))
    raise typer.Exit(result.exit_code)


@app.command()
def run(
    interval: Annotated[
        float | None,
        typer.Option(
            help="Seconds between cycles (default KANTATA_SYNC_INTERVAL or 300).", min=0.1
        ),
    ] = None,
) -> None:
    """Run as a daemon: one cycle every interval until SIGTERM or SIGINT."""
    from connector.scheduler import run_forever

    settings = _settings(kantata_sync_interval=interval)
    stop = threading.Event()
    _install_stop_handlers(stop)
    try:
        with open_connector(settings, stop=stop) as connector:
            log = structlog.get_logger("kantata_sync")

            def cycle() -> None:
                try:
                    with connector.store.writer(wait=0):
                        connector.store.close_stale_runs()
                        connector.engine.run_cycle(kind="sync")
                except LockHeldError as exc:
                    log.warning("cycle skipped", reason=str(exc))

            run_forever(cycle, interval=settings.kantata_sync_interval, stop=stop)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(0)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Report what is synced, what failed and why, and what to do about it."""
    settings = _settings()
    try:
        store = Store(settings.kantata_sync_database_url)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    try:
        report = build_report(store)
    finally:
        store.close()
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        render_table(report, Console())
    raise typer.Exit(0)


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    kantata_port: Annotated[int, typer.Option(help="Port of the fake Kantata.")] = 8701,
    noko_port: Annotated[int, typer.Option(help="Port of the fake Noko.")] = 8702,
    invoices: Annotated[int, typer.Option(help="Invoices to generate.", min=0)] = 120,
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 7,
) -> None:
    """Serve a fake Kantata OX and a fake Noko on this machine, with generated data."""
    from connector.sandbox import Sandbox, generate

    configure_logging("auto", "info")
    box = Sandbox(host=host, kantata_port=kantata_port, noko_port=noko_port)
    generate(box.kantata, seed=seed, invoices=invoices)
    box.start()
    typer.echo(f"Kantata: {box.kantata_url}  token: {box.kantata_token}")
    typer.echo(f"Noko:    {box.noko_url}  token: {box.noko_token}")
    typer.echo("Ctrl-C stops it.")
    box.serve_forever()


@app.command()
def demo(
    invoices: Annotated[int, typer.Option(help="Invoices to generate.", min=1)] = 80,
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 7,
) -> None:
    """Start the sandbox, sync it twice, print the report, and stop: the whole job."""
    from connector.demo import run_demo

    configure_logging("auto", "warning")
    raise typer.Exit(run_demo(invoices=invoices, seed=seed, workdir=Path(tempfile.mkdtemp())))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
