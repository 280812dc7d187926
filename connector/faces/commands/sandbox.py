"""The commands on the sandbox: `sandbox` (fake Kantata, Noko and Xero served here) and `demo`."""

from __future__ import annotations

import enum
import tempfile
from pathlib import Path
from typing import Annotated

import typer

# typer carries its own click; its exceptions are what `standalone_mode=False` lets through.
from connector.faces.commands.common import (
    app,
)
from connector.faces.logs import configure_logging


class Target(enum.StrEnum):
    noko = "noko"
    xero = "xero"


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    kantata_port: Annotated[int, typer.Option(help="Port of the fake Kantata.")] = 8701,
    noko_port: Annotated[int, typer.Option(help="Port of the fake Noko.")] = 8702,
    xero_port: Annotated[int, typer.Option(help="Port of the fake Xero.")] = 8703,
    invoices: Annotated[int, typer.Option(help="Invoices to generate.", min=0)] = 120,
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 7,
) -> None:
    """Serve a fake Kantata OX, a fake Noko and a fake Xero on this machine, with generated data.

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
    from connector.faces.demo import (
        SANDBOX_KANTATA_TOKEN,
        SANDBOX_NOKO_TOKEN,
        SANDBOX_XERO_CLIENT_ID,
        SANDBOX_XERO_CLIENT_SECRET,
    )
    from sandbox import Sandbox, generate

    configure_logging("auto", "info")
    box = Sandbox(host=host, kantata_port=kantata_port, noko_port=noko_port, xero_port=xero_port)
    generate(box.kantata, seed=seed, invoices=invoices)
    box.start()
    typer.echo(f"Kantata: {box.kantata_url}  token: {SANDBOX_KANTATA_TOKEN}")
    typer.echo(f"Noko:    {box.noko_url}  token: {SANDBOX_NOKO_TOKEN}")
    typer.echo(
        f"Xero:    XERO_BASE_URL={box.xero_api_url} XERO_TOKEN_URL={box.xero_token_url} "
        f"XERO_CONNECTIONS_URL={box.xero_connections_url} "
        f"XERO_AUTHORIZE_URL={box.xero_authorize_url} "
        f"XERO_CLIENT_ID={SANDBOX_XERO_CLIENT_ID} XERO_CLIENT_SECRET={SANDBOX_XERO_CLIENT_SECRET}"
    )
    kantata_admin = box.kantata_url.rsplit("/api/v1", 1)[0] + "/_sandbox"
    noko_admin = box.noko_url.rsplit("/v2", 1)[0] + "/_sandbox"
    typer.echo(
        f"Admin:   {kantata_admin}, {noko_admin} and {box.xero_url}/_sandbox (faults, "
        "corruption, hand edits: "
        "see `kantata-sync sandbox --help`)"
    )
    typer.echo("Ctrl-C stops it.")
    box.serve_forever()


@app.command()
def demo(
    invoices: Annotated[int, typer.Option(help="Invoices to generate.", min=1)] = 80,
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 7,
    target: Annotated[
        Target, typer.Option(help="The accounting system the invoices go to.")
    ] = Target.noko,
) -> None:
    """Start the sandbox, sync it twice, print the report, and stop: the whole job."""
    from connector.faces.demo import run_demo

    configure_logging("auto", "warning")
    workdir = Path(tempfile.mkdtemp())
    raise typer.Exit(run_demo(invoices=invoices, seed=seed, workdir=workdir, target=target.value))
