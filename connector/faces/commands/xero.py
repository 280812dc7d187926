"""`kantata-sync xero login`: connect an app to Xero with the authorization code flow (PKCE)."""

from __future__ import annotations

import webbrowser
from typing import Annotated

import typer

from connector.errors import AuthError, ConfigError, ConnectorError
from connector.faces.commands.common import _fail, _settings, app
from connector.faces.config import Settings
from connector.http.text import clean

xero_app = typer.Typer(
    help="Xero as the target: connect this machine to a Xero organisation.",
    no_args_is_help=True,
)
app.add_typer(xero_app, name="xero")

LOGIN_PORT = 8765


@xero_app.command("login")
def login(
    port: Annotated[
        int,
        typer.Option(
            help="Loopback port of the redirect: register http://127.0.0.1:PORT/callback as "
            "the Xero app's redirect URI.",
            min=0,
            max=65535,
        ),
    ] = LOGIN_PORT,
    browser: Annotated[
        bool,
        typer.Option(
            "--browser/--no-browser",
            help="Open the address in a browser (otherwise only print it).",
        ),
    ] = True,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for Xero's redirect.", min=1)
    ] = 300.0,
) -> None:
    """Sign in to Xero in a browser and keep the refresh token in XERO_TOKEN_FILE.

    Needs XERO_CLIENT_ID (and XERO_CLIENT_SECRET unless the app is a PKCE app) and
    XERO_TOKEN_FILE. The file is readable by its owner only and replaced atomically at every
    refresh; later runs use it instead of client credentials. Run it again when Xero says the
    refresh token is no longer valid.
    """
    from connector.faces.xero import run_login

    settings = _settings()

    def open_browser(url: str) -> bool:
        return webbrowser.open(url) if browser else False

    try:
        run_login(
            settings,
            announce=typer.echo,
            open_browser=open_browser,
            port=port,
            timeout=timeout,
        )
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    except AuthError as exc:
        raise _fail(exc.summary(), code=1) from None
    except ConnectorError as exc:
        raise _fail(clean(str(exc)), code=1) from None
    except OSError as exc:
        raise _fail(f"xero login: cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    _say_organisations(settings)
    raise typer.Exit(0)


def _say_organisations(settings: Settings) -> None:
    """The organisations the new connection reaches, and whether XERO_TENANT_ID is needed."""
    import httpx

    from connector.faces.doctor_xero import connections
    from connector.faces.xero import token_source

    try:
        with httpx.Client(timeout=30.0) as http:
            rows = connections(settings, http, token_source(settings, http))
    except (ConnectorError, httpx.HTTPError, ValueError) as exc:
        typer.echo(f"(the organisations could not be listed: {clean(str(exc))})")
        return
    for row in rows:
        typer.echo(f"Organisation: {row.get('tenantName')} (tenant id {row.get('tenantId')})")
    if len(rows) > 1 and settings.xero_tenant_id is None:
        typer.echo("Set XERO_TENANT_ID to the one to sync into.")
