"""`kantata-sync`: the command line. Output on stdout, logs on stderr.

Exit codes: 0 all handled invoices synced or deliberately skipped; 1 some failed (recorded and
retried later) or another process holds the state database; 2 usage or configuration errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import structlog
import typer
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

# typer carries its own click; its exceptions are what `standalone_mode=False` lets through.
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperOption

from connector import __version__
from connector.errors import (
    ApiError,
    AuthError,
    ConfigError,
    ConnectorError,
    LockHeldError,
)
from connector.faces.app import open_connector
from connector.faces.config import Settings, load_settings
from connector.faces.logs import configure_logging
from connector.faces.notify import notify
from connector.faces.report import build_report, render_table
from connector.http.text import clean, neutralise, redact
from connector.state.store import Store, sqlite_path, state_file_problem
from connector.sync.engine import CycleResult


def _flag_type(self: TyperOption, ctx: Any) -> str | None:
    """No `<bool>` beside a flag in `--help`: a flag takes no value."""
    return None if self.is_bool_flag else _option_type(self, ctx)


_option_type = TyperOption.display_type_rich
TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]

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
    counts = ", ".join(f"{v} {k}" for k, v in sorted(result.counts.items()) if v) or "nothing"
    line = f"{result.kind} {result.final_outcome}: {counts} in {result.duration:.1f} s"
    if result.failed:
        line += "; see `kantata-sync status`"
    if result.error:
        line += f"; {result.error}"
    return neutralise(line)


# What one invoice costs on each side, before a backfill has measured it: about one Noko
# request per line plus one for the invoice (a few lines each), one Kantata write-back.
EXPECTED_NOKO_REQUESTS = 6.0
EXPECTED_KANTATA_REQUESTS = 1.0
# How many invoices the expectation weighs against what the run has measured so far.
PRIOR_WEIGHT = 10.0


class Pace:
    """Time left from the paced rate: the remaining invoices times the requests each costs
    (measured so far, weighed against the expectation while few are done) divided by each
    API's configured requests per second; the slower side sets the pace. Early samples of a
    rate (the first invoices are skipped drafts, or a burst) would say anything."""

    def __init__(
        self,
        noko_rate: float,
        kantata_rate: float,
        requests: Any = None,
    ) -> None:
        self.noko_rate = noko_rate
        self.kantata_rate = kantata_rate
        # () -> (Noko requests, Kantata requests) sent so far in this run.
        self.requests = requests

    def seconds_left(self, done: int, total: int | None) -> float | None:
        if total is None:
            return None
        remaining = max(total - done, 0)
        noko_sent, kantata_sent = self.requests() if self.requests is not None else (0, 0)
        per_noko = (EXPECTED_NOKO_REQUESTS * PRIOR_WEIGHT + noko_sent) / (PRIOR_WEIGHT + done)
        per_kantata = (EXPECTED_KANTATA_REQUESTS * PRIOR_WEIGHT + kantata_sent) / (
            PRIOR_WEIGHT + done
        )
        return remaining * max(per_noko / self.noko_rate, per_kantata / self.kantata_rate)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "time left unknown"
    whole = round(seconds)
    if whole < 60:
        return f"about {whole} s left"
    hours, rest = divmod(whole, 3600)
    minutes = round(rest / 60) if hours else max(round(rest / 60), 1)
    if hours:
        return f"about {hours} h {minutes} min left"
    return f"about {minutes} min left"


class Progress:
    """Backfill progress on stderr: a live bar on a terminal, a plain line every few seconds
    otherwise (so logs collected by a service manager stay readable).

    The bar draws on the console the log lines print through (`stderr_console`), so a log
    line lands above the bar; the time left comes from `Pace`."""

    def __init__(
        self,
        label: str,
        pace: Pace | None = None,
        console: Console | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        from connector.faces.logs import stderr_console

        self.label = label
        self.pace = pace
        self.clock = clock
        self.total: int | None = None
        self.done = 0
        self.counts: dict[str, int] = {}
        self.started = clock()
        self.last_line = 0.0
        self.lock = threading.Lock()
        self.bar: Any = None
        console = console if console is not None else stderr_console()
        if console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:.1f}/s"),
                TextColumn("{task.fields[detail]}"),
                TextColumn("{task.fields[left]}"),
                console=console,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self.task = self.bar.add_task(label, total=None, rate=0.0, detail="", left="")
            self.bar.start()

    def left(self) -> str:
        seconds = None if self.pace is None else self.pace.seconds_left(self.done, self.total)
        return _duration(seconds)

    def page(self, _number: int, total: int) -> None:
        with self.lock:
            self.total = max(total, self.total or 0)
            if self.bar is not None:
                self.bar.update(self.task, total=self.total, left=self.left())

    def advance(self, counts: Any) -> None:
        with self.lock:
            self.counts = dict(counts)
            self.done = sum(self.counts.values())
            now = self.clock()
            rate = self.done / max(now - self.started, 1e-6)
            detail = ", ".join(f"{v} {k}" for k, v in sorted(self.counts.items()) if v)
            if self.bar is not None:
                self.bar.update(
                    self.task, completed=self.done, rate=rate, detail=detail, left=self.left()
                )
            elif now - self.last_line >= 5.0:
                self.last_line = now
                of = f"/{self.total}" if self.total else ""
                sys.stderr.write(
                    f"{self.label}: {self.done}{of} invoices ({detail}), {rate:.1f}/s, "
                    f"{self.left()}\n"
                )
                sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


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
                    noko, kantata = connector.noko.stats, connector.kantata.stats
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


@app.command()
def sync(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be pushed; write nothing anywhere.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON line per invoice handled on stdout (id, action, Noko id, total); "
            "the summary goes to stderr.",
        ),
    ] = False,
    full_refresh: Annotated[
        bool,
        typer.Option(
            "--full-refresh",
            help="Read every invoice from the start, not from the cursor; unchanged invoices "
            "cost no writes.",
        ),
    ] = False,
) -> None:
    """Run one cycle: everything changed in Kantata up to now."""
    settings = _settings()
    stop = threading.Event()
    _install_stop_handlers(stop)
    result = _run_once(
        settings,
        stop,
        on_invoice=_json_lines(dry_run) if as_json else None,
        kind="sync",
        dry_run=dry_run,
        full_refresh=full_refresh,
    )
    if dry_run and not as_json:
        _print_plan(result)
    typer.echo(_summary(result), err=as_json)
    raise typer.Exit(result.exit_code)


def _json_lines(dry_run: bool) -> Any:
    """For `sync --json`: a hook per connector that writes one JSON line per invoice handled:
    its Kantata id, the action, the Noko invoice id and the total (a decimal string) with its
    currency, and the reason when it failed or waits."""

    def hook(connector: Any) -> Any:
        from mappings.kantata import KantataInvoice
        from mappings.money import to_major
        from mappings.to_ledger import to_ledger

        def on_invoice(kantata_id: str, outcome: str, detail: str | None, inv: Any) -> None:
            record = connector.store.get_invoice(kantata_id)
            line: dict[str, Any] = {
                "kantata_invoice_id": kantata_id,
                "action": outcome,
                "noko_invoice_id": record.target_id if record is not None else None,
                "total": None,
                "currency": None,
            }
            if dry_run and outcome.startswith("would-") and isinstance(inv, KantataInvoice):
                doc = to_ledger(inv, connector.engine.profile)
                line["total"] = str(to_major(doc.total_minor, doc.exponent))
                line["currency"] = doc.currency
            elif (
                record is not None
                and record.total_minor is not None
                and record.exponent is not None
            ):
                line["total"] = str(to_major(record.total_minor, record.exponent))
                line["currency"] = record.currency
            if outcome in ("failed", "waiting", "conflict", "state-written") or outcome.startswith(
                "would-"
            ):
                line["detail"] = detail
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()

        return on_invoice

    return hook


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
    if start is not None and start > datetime.now(UTC):
        raise _fail(f"--since {since} is in the future (UTC): there is nothing to backfill yet")
    settings = _settings()
    stop = threading.Event()
    _install_stop_handlers(stop)
    pace = Pace(settings.noko_max_requests_per_second, settings.kantata_max_requests_per_second)
    result = _run_once(
        settings,
        stop,
        Progress("backfill", pace),
        kind="backfill",
        since=start,
        until=end,
        dry_run=dry_run,
    )
    if dry_run:
        _print_plan(result)
    typer.echo(_summary(result))
    raise typer.Exit(result.exit_code)


def _print_plan(result: CycleResult) -> None:
    """What a dry run would do, invoice by invoice, with the totals."""
    labels = {"would-push": "create", "would-update": "update", "would-cancel": "delete"}
    for kantata_id, (outcome, what) in sorted(result.planned.items(), key=lambda i: int(i[0])):
        label = labels.get(outcome, outcome)
        typer.echo(f"would {label:<6} Noko invoice for Kantata invoice {kantata_id}: {what}")
    for kantata_id, why in sorted(result.failed.items(), key=lambda i: int(i[0])):
        typer.echo(f"would fail   Kantata invoice {kantata_id}: {why}")
    counts = dict.fromkeys(labels.values(), 0)
    for outcome, _ in result.planned.values():
        counts[labels.get(outcome, outcome)] = counts.get(labels.get(outcome, outcome), 0) + 1
    typer.echo(
        "Dry run, nothing written: "
        + ", ".join(f"{n} to {label}" for label, n in counts.items())
        + f", {len(result.failed)} would fail"
    )


@app.command()
def run(
    interval: Annotated[
        float | None,
        typer.Option(
            help="Seconds between cycles (default KANTATA_SYNC_INTERVAL or 300).", min=0.1
        ),
    ] = None,
) -> None:
    """Run as a daemon: one cycle every interval until SIGTERM or SIGINT; SIGHUP reads the
    token files again."""
    from connector.faces.daemon import Daemon
    from connector.faces.observe import DaemonHealth, Metrics, serve
    from connector.sync.scheduler import run_forever

    settings = _settings(kantata_sync_interval=interval)
    stop = threading.Event()
    _install_stop_handlers(stop)
    health = DaemonHealth(interval=settings.kantata_sync_interval)
    metrics = Metrics()
    try:
        daemon = Daemon(settings, stop=stop, health=health, metrics=metrics)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    signal.signal(signal.SIGHUP, lambda _signum, _frame: daemon.reload_in_background())
    log = structlog.get_logger("kantata_sync")
    server = None
    try:
        if settings.kantata_sync_metrics_port is not None:
            try:
                server = serve(
                    settings.kantata_sync_metrics_host,
                    settings.kantata_sync_metrics_port,
                    store=daemon.store,
                    stats=daemon.stats,
                    health=health,
                    render_html=_html_renderer(),
                    metrics=metrics,
                    status_token_file=settings.kantata_sync_status_token_file,
                    exposed=settings.status_exposed(),
                )
            except OSError as exc:
                raise _fail(
                    "KANTATA_SYNC_METRICS_PORT: cannot listen on "
                    f"{settings.kantata_sync_metrics_host}:"
                    f"{settings.kantata_sync_metrics_port} ({exc.strerror or exc}): "
                    "choose a free port, or stop what is using it"
                ) from None
            log.info(
                "health and metrics endpoint listening",
                url=f"http://{settings.kantata_sync_metrics_host}:"
                f"{server.server_address[1]}/healthz",
                status_report="bearer token"
                if settings.kantata_sync_status_token_file is not None
                else ("refused (not on loopback)" if settings.status_exposed() else "loopback"),
            )
        run_forever(daemon.cycle, interval=settings.kantata_sync_interval, stop=stop)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        daemon.close()
    raise typer.Exit(0)


def _html_renderer() -> Any:
    try:
        from connector.faces.report_html import render_html
    except ImportError:  # the HTML page is optional for the daemon's endpoint
        return None
    return render_html


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Also write the report as a self-contained HTML page."),
    ] = None,
) -> None:
    """Report what is synced, what failed and why, and what to do about it."""
    settings = _settings()
    try:
        store = Store(settings.kantata_sync_database_url, create=False)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    try:
        report = build_report(store)
    finally:
        store.close()
    if html is not None:
        from connector.faces.report_html import render_html

        page = render_html(report, stale_after=max(3 * settings.kantata_sync_interval, 3600.0))
        try:
            partial = html.with_name(f".{html.name}.tmp")
            partial.write_text(page, encoding="utf-8")
            partial.replace(html)
        except OSError as exc:
            raise _fail(f"--html: cannot write {html}: {exc.strerror}") from None
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    elif html is None:
        render_table(report, Console())
    else:
        typer.echo(f"Report written to {html}")
    raise typer.Exit(0)


@app.command()
def retry(
    ids: Annotated[list[str] | None, typer.Argument(help="Kantata invoice ids.")] = None,
    all_failed: Annotated[
        bool, typer.Option("--all-failed", help="Retry every failed invoice.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Also overwrite a conflict with the Kantata version (a hand edit in Noko, an "
            "invoice deleted in Noko) and push even if nothing changed.",
        ),
    ] = False,
) -> None:
    """Retry invoices now, without waiting for their next retry time.

    A conflict is overwritten only with --force.
    """
    settings = _settings()
    chosen = list(ids or [])
    if all_failed:
        store = Store(settings.kantata_sync_database_url)
        try:
            chosen += store.failed_ids()
        finally:
            store.close()
    chosen = list(dict.fromkeys(i.strip() for i in chosen if i.strip()))
    bad = [i for i in chosen if not i.isdigit()]
    if bad:
        raise _fail(f"not a Kantata invoice id: {', '.join(bad)}")
    if not chosen:
        if all_failed:
            typer.echo("No failed invoices to retry.")
            raise typer.Exit(0)
        raise _fail("name at least one Kantata invoice id, or use --all-failed")
    stop = threading.Event()
    _install_stop_handlers(stop)
    result = _run_once(settings, stop, kind="sync", only_ids=chosen, force=force)
    if result.auth_error is not None:  # the invoices were left as they were: not "ok"
        typer.echo(_summary(result))
        raise typer.Exit(1)
    for kantata_id in chosen:
        verdict = result.failed.get(kantata_id)
        typer.echo(f"{kantata_id}: {'failed: ' + clean(verdict) if verdict else 'ok'}")
    raise typer.Exit(result.exit_code)


@app.command()
def resolve(
    ids: Annotated[list[str], typer.Argument(help="Kantata invoice ids in conflict.")],
) -> None:
    """Settle conflicts by keeping each Noko invoice as it is now.

    After a correction made by hand in Noko, say: the Kantata invoice is taken as in step with
    it from then on.
    """
    bad = [i for i in ids if not i.strip().isdigit()]
    if bad:
        raise _fail(f"not a Kantata invoice id: {', '.join(bad)}")
    settings = _settings()
    code = 0
    try:
        with (
            open_connector(settings) as connector,
            connector.store.writer(wait=settings.kantata_sync_lock_wait),
        ):
            run_id = uuid.uuid4().hex[:12]
            for kantata_id in ids:
                try:
                    typer.echo(connector.engine.accept(kantata_id.strip(), run_id))
                except (ConnectorError, ApiError) as exc:
                    typer.echo(clean(f"{kantata_id}: {exc}"))
                    code = 1
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    except LockHeldError as exc:
        raise _fail(str(exc), code=1) from None
    raise typer.Exit(code)


@app.command()
def show(kantata_invoice_id: Annotated[str, typer.Argument(help="Kantata invoice id.")]) -> None:
    """One invoice: its state, both sides' ids and links, and its history."""
    if not kantata_invoice_id.strip().isdigit():
        raise _fail(f"not a Kantata invoice id: {kantata_invoice_id}")
    kantata_invoice_id = kantata_invoice_id.strip()
    settings = _settings()
    try:
        store = Store(settings.kantata_sync_database_url, create=False)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    try:
        record = store.get_invoice(kantata_invoice_id)
        if record is None:
            raise _fail(f"invoice {kantata_invoice_id} is not in the state database", code=1)
        events = store.events(kantata_invoice_id)
    finally:
        store.close()
    console = Console()
    from connector.faces.report import action_for

    kantata_link = f"{settings.kantata_base_url}/invoices/{record.kantata_id}"
    lines = [
        f"Kantata invoice {record.kantata_id}: {record.status}"
        + (f" ({record.skip_reason})" if record.skip_reason else ""),
        f"  Kantata:   {kantata_link}",
        f"  Noko:      {record.target_id or '-'}  {record.target_link or ''}".rstrip(),
        f"  reference: {record.reference or '-'}   Noko state: {record.target_state or '-'}",
    ]
    if record.total_minor is not None and record.exponent is not None and record.currency:
        from mappings.money import format_money

        lines.append(
            f"  total:     {format_money(record.total_minor, record.exponent, record.currency)}"
        )
    if record.last_error:
        lines.append(f"  error:     {clean(record.last_error)}")
        lines.append(f"  attempts:  {record.attempts}, next retry {record.next_attempt_at or '-'}")
        lines.append(f"  to do:     {action_for(record)}")
    for line in lines:  # the Noko link and the error came from outside
        console.print(neutralise(redact(line)), highlight=False, markup=False)
    console.print("History:", highlight=False)
    for ev in events:
        console.print(
            f"  {ev.at:%Y-%m-%d %H:%M:%S} {ev.event:<16} {clean(ev.detail)}",
            highlight=False,
            markup=False,
        )
    raise typer.Exit(0)


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
    """List the differences between Kantata, Noko and the state database; optionally repair."""
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
            f"Compared {outcome.kantata_invoices} Kantata and {outcome.noko_invoices} Noko "
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


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    kantata_port: Annotated[int, typer.Option(help="Port of the fake Kantata.")] = 8701,
    noko_port: Annotated[int, typer.Option(help="Port of the fake Noko.")] = 8702,
    invoices: Annotated[int, typer.Option(help="Invoices to generate.", min=0)] = 120,
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 7,
) -> None:
    """Serve a fake Kantata OX and a fake Noko on this machine, with generated data.

    Break things on purpose through the admin API under /_sandbox/ on either port
    (no token, never rate-limited or faulted), then run `sync` and `status`.
    With the default ports:

    \b
    K=http://127.0.0.1:8701/_sandbox N=http://127.0.0.1:8702/_sandbox
    # what a fake holds, and the requests it received:
    curl -s "$K/state?invoices=false"
    # Noko throttles 30% and fails 10% of requests (seeded); '{}' stops it:
    curl -s -XPOST $N/faults -d '{"rate_429": 0.3, "rate_5xx": 0.1, "seed": 1}'
    # a malformed amount on a line of Kantata invoice 4001, then undone:
    curl -s -XPOST $K/invoices/4001/corrupt \\
      -d '{"field": "amount_in_cents", "value": "12.5"}'
    curl -s -XDELETE $K/invoices/4001/corrupt
    # hand edits in Noko: an expense added, a state, a deletion:
    curl -s -XPATCH $N/invoices/ID \\
      -d '{"add_expenses": [{"price": "9.99", "project_id": PROJECT}]}'
    curl -s -XPOST $N/invoices/ID/state -d '{"state": "paid"}'
    curl -s -XDELETE $N/invoices/ID

    The README's "The sandbox" section lists every admin path.
    """
    from connector.faces.demo import SANDBOX_KANTATA_TOKEN, SANDBOX_NOKO_TOKEN
    from sandbox import Sandbox, generate

    configure_logging("auto", "info")
    box = Sandbox(host=host, kantata_port=kantata_port, noko_port=noko_port)
    generate(box.kantata, seed=seed, invoices=invoices)
    box.start()
    typer.echo(f"Kantata: {box.kantata_url}  token: {SANDBOX_KANTATA_TOKEN}")
    typer.echo(f"Noko:    {box.noko_url}  token: {SANDBOX_NOKO_TOKEN}")
    kantata_admin = box.kantata_url.rsplit("/api/v1", 1)[0] + "/_sandbox"
    noko_admin = box.noko_url.rsplit("/v2", 1)[0] + "/_sandbox"
    typer.echo(
        f"Admin:   {kantata_admin} and {noko_admin} (faults, corruption, hand edits: "
        "see `kantata-sync sandbox --help`)"
    )
    typer.echo("Ctrl-C stops it.")
    box.serve_forever()


@app.command()
def demo(
    invoices: Annotated[int, typer.Option(help="Invoices to generate.", min=1)] = 80,
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 7,
) -> None:
    """Start the sandbox, sync it twice, print the report, and stop: the whole job."""
    from connector.faces.demo import run_demo

    configure_logging("auto", "warning")
    raise typer.Exit(run_demo(invoices=invoices, seed=seed, workdir=Path(tempfile.mkdtemp())))


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        typer.echo("kantata-sync: aborted", err=True)
        sys.exit(130)
    except NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ClickException as exc:
        # A usage error: one line, as for every other error, with where to find help.
        command = exc.ctx.command_path if isinstance(exc, UsageError) and exc.ctx else ""
        hint = f" (see `{command} --help`)" if command else ""
        typer.echo(f"kantata-sync: {clean(exc.format_message())}{hint}", err=True)
        sys.exit(exc.exit_code)
    except AuthError as exc:
        typer.echo(f"kantata-sync: {neutralise(exc.summary())}", err=True)
        sys.exit(1)
    except ConfigError as exc:
        typer.echo(f"kantata-sync: {neutralise(str(exc))}", err=True)
        sys.exit(2)
    except ConnectorError as exc:  # an API failing under a command that does not expect it
        typer.echo(f"kantata-sync: {clean(str(exc))}", err=True)
        sys.exit(1)
    except (SQLAlchemyError, sqlite3.Error) as exc:
        # The state file failed under a command (a full disk, a file made unreadable): one
        # line naming it, never a traceback. What was committed stays; the next run goes on.
        typer.echo(f"kantata-sync: {clean(state_file_problem(exc, _state_path()))}", err=True)
        sys.exit(2)
    except OSError as exc:
        typer.echo(f"kantata-sync: {clean(str(exc))}", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


def _state_path() -> Path | None:
    try:
        return sqlite_path(load_settings(state.config).kantata_sync_database_url)
    except ConnectorError:
        return None


if __name__ == "__main__":
    main()
