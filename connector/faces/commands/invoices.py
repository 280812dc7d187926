"""The commands about invoices: `status` (table, JSON, HTML), `show`, `retry`, `resolve`."""

from __future__ import annotations

import json
import sys
import threading
import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

# typer carries its own click; its exceptions are what `standalone_mode=False` lets through.
from connector.errors import (
    ApiError,
    ConfigError,
    ConnectorError,
    LockHeldError,
)
from connector.faces.app import open_connector
from connector.faces.commands.common import (
    _fail,
    _install_stop_handlers,
    _run_once,
    _settings,
    _summary,
    app,
)
from connector.faces.report import build_report, render_table
from connector.http.text import clean, neutralise, redact
from connector.state.store import Store


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
        report = build_report(store, target=settings.target_name)
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
        f"  {settings.target_name + ':':<10} {record.target_id or '-'}  "
        f"{record.target_link or ''}".rstrip(),
        f"  reference: {record.reference or '-'}   {settings.target_name} state: "
        f"{record.target_state or '-'}",
    ]
    if record.total_minor is not None and record.exponent is not None and record.currency:
        from mappings.money import format_money

        lines.append(
            f"  total:     {format_money(record.total_minor, record.exponent, record.currency)}"
        )
    if record.last_error:
        lines.append(f"  error:     {clean(record.last_error)}")
        lines.append(f"  attempts:  {record.attempts}, next retry {record.next_attempt_at or '-'}")
        lines.append(f"  to do:     {action_for(record, settings.target_name)}")
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
