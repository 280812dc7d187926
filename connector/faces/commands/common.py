"""What every command shares: the typer app and its root options, settings loading, one-line
failures, the stop signals, a cycle's summary line."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from datetime import UTC, date, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import structlog
import typer

# typer carries its own click; its exceptions are what `standalone_mode=False` lets through.
from typer.core import TyperOption

from connector import __version__
from connector.errors import (
    ConfigError,
    LockHeldError,
)
from connector.faces.app import open_connector
from connector.faces.config import Settings, load_settings
from connector.faces.logs import configure_logging
from connector.faces.notify import notify
from connector.faces.progress import Progress
from connector.http.text import neutralise
from connector.sync.engine import CycleResult


def _flag_type(self: TyperOption, ctx: Any) -> str | None:
    """No `<bool>` beside a flag in `--help`: a flag takes no value."""
    return None if self.is_bool_flag else _option_type(self, ctx)


_option_type = TyperOption.display_type_rich
TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]

app = typer.Typer(
    name="kantata-sync",
    help="Sync Kantata OX invoices into Noko or Xero, exactly once and to the cent.",
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


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"kantata-sync {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    config: ConfigOption = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    state.config = config


def _fail(message: str, code: int = 2) -> typer.Exit:
    # Our own words (a setting's name, a path): control characters neutralised. Text from an
    # API is cleaned where it enters (`connector.http.text.clean`).
    typer.echo(f"kantata-sync: {neutralise(message)}", err=True)
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


STOP_GRACE = 7.0
"""Seconds between SIGTERM and the process's end at the latest. Waits (pacing, retry backoff,
the daemon's sleep) end at once and an answer arriving slowly is dropped between two reads;
only a read that gets no byte at all outlasts the stop, and this bounds it."""


def _exit_now(reason: str) -> None:
    """End the process at once with exit 0. What was in flight is what recovery handles: the
    state database commits atomically, and a create that got no answer is found by its
    reference at the next run."""
    structlog.get_logger("kantata_sync").warning(reason)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(0)


def _install_stop_handlers(stop: threading.Event, *, grace: float = STOP_GRACE) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            _exit_now(f"second {name}; exiting now, work in flight is left to recovery")
        structlog.get_logger("kantata_sync").info(
            "signal received; ending the waits and requests in flight", signal=name
        )
        stop.set()
        timer = threading.Timer(
            grace,
            _exit_now,
            args=(
                f"still running {grace:.0f} s after {name}; exiting, work in flight is left "
                "to recovery",
            ),
        )
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _summary(result: CycleResult) -> str:
    from connector.faces.report import DAY_LIMIT_OUTCOME, day_limit

    counts = ", ".join(f"{v} {k}" for k, v in sorted(result.counts.items()) if v) or "nothing"
    # A cycle that ran out of the target's day budget says so, as `status` does: not a failure.
    outcome = result.final_outcome
    if outcome != "failed" and day_limit(result.error) is not None:
        outcome = DAY_LIMIT_OUTCOME
    line = f"{result.kind} {outcome}: {counts} in {result.duration:.1f} s"
    if result.failed:
        line += "; see `kantata-sync status`"
    if result.error:
        line += f"; {result.error}"
    return neutralise(line)


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


def _run_once(
    settings: Settings,
    stop: threading.Event,
    progress: Progress | None = None,
    on_invoice: Any = None,
    **kwargs: Any,
) -> CycleResult:
    try:
        with (
            open_connector(settings, stop=stop) as connector,
            connector.store.writer(wait=settings.kantata_sync_lock_wait),
        ):
            connector.store.close_stale_runs()
            if progress is not None:
                connector.engine.on_page = progress.page
                connector.engine.on_progress = progress.advance
                if progress.pace is not None:
                    noko, kantata = connector.target_stats, connector.kantata.stats
                    progress.pace.requests = lambda: (noko.requests, kantata.requests)
            if on_invoice is not None:
                connector.engine.on_invoice = on_invoice(connector)
            try:
                result = connector.engine.run_cycle(**kwargs)
            finally:
                if progress is not None:
                    progress.close()
            if not kwargs.get("dry_run"):
                notify(connector.store, settings.webhook_url())
            return result
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    except LockHeldError as exc:
        raise _fail(str(exc), code=1) from None


def _html_renderer() -> Any:
    try:
        from connector.faces.report_html import render_html
    except ImportError:  # the HTML page is optional for the daemon's endpoint
        return None
    return render_html
