"""`kantata-sync`: the command line. Output on stdout, logs on stderr.

Exit codes: 0 all handled invoices synced or deliberately skipped; 1 some failed (recorded and
retried later) or another process holds the state database; 2 usage or configuration errors.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import typer
from sqlalchemy.exc import SQLAlchemyError

# typer carries its own click; its exceptions are what `standalone_mode=False` lets through.
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from connector.errors import (
    AuthError,
    ConfigError,
    ConnectorError,
)

# Each module registers its commands on `app`; the import order is the order in `--help`.
# isort: off
from connector.faces.commands import sync  # noqa: F401
from connector.faces.commands import invoices  # noqa: F401
from connector.faces.commands import ops  # noqa: F401
from connector.faces.commands import sandbox  # noqa: F401
from connector.faces.commands import xero  # noqa: F401

# isort: on
from connector.faces.commands.common import (
    app,
    state,
)
from connector.faces.config import load_settings
from connector.faces.progress import Pace, Progress
from connector.http.text import clean, neutralise
from connector.state.store import sqlite_path, state_file_problem

__all__ = ["Pace", "Progress", "app", "main"]


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
