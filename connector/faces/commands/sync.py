"""The commands that sync: `sync` (one cycle), `backfill` (a date range), `run` (the daemon)."""

from __future__ import annotations

import json
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import structlog
import typer

# typer carries its own click; its exceptions are what `standalone_mode=False` lets through.
from connector.errors import (
    ConfigError,
)
from connector.faces.commands.common import (
    _fail,
    _html_renderer,
    _install_stop_handlers,
    _parse_day,
    _run_once,
    _settings,
    _summary,
    app,
)
from connector.faces.progress import EXPECTED_XERO_REQUESTS, Pace, Progress
from connector.sync.engine import CycleResult


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
        _print_plan(result, settings.target_name)
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
    if settings.kantata_sync_target == "xero":
        pace = Pace(
            settings.xero_max_requests_per_minute / 60.0,
            settings.kantata_max_requests_per_second,
            expected=EXPECTED_XERO_REQUESTS,
        )
    else:
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
        _print_plan(result, settings.target_name)
    typer.echo(_summary(result))
    raise typer.Exit(result.exit_code)


def _print_plan(result: CycleResult, target: str = "Noko") -> None:
    """What a dry run would do, invoice by invoice, with the totals."""
    labels = {"would-push": "create", "would-update": "update", "would-cancel": "delete"}
    for kantata_id, (outcome, what) in sorted(result.planned.items(), key=lambda i: int(i[0])):
        label = labels.get(outcome, outcome)
        typer.echo(f"would {label:<6} {target} invoice for Kantata invoice {kantata_id}: {what}")
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
                    target=settings.target_name,
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
