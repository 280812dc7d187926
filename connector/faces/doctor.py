"""`kantata-sync doctor`: each check one line with a verdict and, when it fails, the fix."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from urllib.parse import urlsplit

from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError

from connector.errors import (
    ApiError,
    AuthError,
    ConfigError,
    NotFoundError,
    PermanentApiError,
    StateFileError,
)
from connector.faces.app import USER_AGENT, retry_policy
from connector.faces.config import Settings
from connector.http import RetryPolicy
from connector.kantata.client import KantataClient
from connector.state.store import Store
from connector.targets.noko.client import NokoClient

Check = tuple[bool, str, str]
"""(passed, what was found, how to fix it)"""
ServerTime = tuple[str, "datetime | None"]
"""(an API's base URL, its clock from the `Date` of an answer)"""

MAX_CLOCK_SKEW = 60.0


def _quick(policy: RetryPolicy) -> RetryPolicy:
    return RetryPolicy(max_attempts=2, initial_delay=policy.initial_delay, max_total=10.0)


def check_profile(settings: Settings) -> Check:
    try:
        settings.profile()
    except ConfigError as exc:
        return False, str(exc), "Correct the mapping profile named in the message."
    source = settings.kantata_sync_mapping_profile or "built-in default"
    return True, f"mapping profile valid ({source})", ""


def _api_problem(api: str, base_url: str, exc: ApiError, doing: str) -> Check:
    """What an API's refusal or silence means, with the fix that matches it: a wrong base URL
    (404) is not a bad token (401), and neither is a host that cannot be reached."""
    env = f"{api.upper()}_BASE_URL"
    token = f"{api.upper()}_TOKEN"
    host = urlsplit(base_url).netloc or base_url
    status = exc.status
    detail = exc.message
    if isinstance(exc, AuthError) and status == 401:
        fix = (
            "Create a new OAuth token for an account user and set KANTATA_TOKEN."
            if api == "Kantata"
            else "Create a personal access token in Noko (Integrations & Apps) and set NOKO_TOKEN."
        )
        return False, f"{api} at {host} refused the token (HTTP 401) {doing}: {detail}", fix
    if isinstance(exc, AuthError):
        fix = (
            "Give the token's user financial permission on the projects to sync."
            if api == "Kantata"
            else "Use the token of a Noko user who may manage invoices (the account needs the "
            "invoicing feature)."
        )
        return False, f"{api} at {host} denied access (HTTP {status}) {doing}: {detail}", fix
    if isinstance(exc, NotFoundError):
        return (
            False,
            f"{api} at {host} answered 404 Not Found for {exc.path} {doing}: {env} "
            f"({base_url}) is not the {api} API root",
            f"Set {env} to the API root ({DEFAULT_BASE[api]} for the hosted service); the "
            f"token ({token}) was not checked.",
        )
    if isinstance(exc, PermanentApiError):
        return (
            False,
            f"{api} at {host} answered HTTP {status} {doing}: {detail}",
            f"Check {env} ({base_url}); the message above says what {api} objected to.",
        )
    if status is None:
        return (
            False,
            f"could not reach {api} at {host} {doing}: {detail}",
            f"Check {env} ({base_url}) and that {host} can be reached from this machine (DNS, "
            "proxy, firewall).",
        )
    return (
        False,
        f"{api} at {host} answered HTTP {status} {doing} (a server error or rate limit): {detail}",
        f"Try again later; if it lasts, check {api}'s status page.",
    )


DEFAULT_BASE = {
    "Kantata": "https://api.mavenlink.com/api/v1",
    "Noko": "https://api.nokotime.com/v2",
}


def check_kantata(settings: Settings, times: list[ServerTime] | None = None) -> list[Check]:
    """The token (the user it belongs to), then a one-row read of invoices; their answers'
    `Date` go to `times` for the clock check (no extra request)."""
    try:
        token = settings.kantata_secret()
    except ConfigError as exc:
        return [(False, str(exc), "Set KANTATA_TOKEN (or KANTATA_TOKEN_FILE).")]
    client = KantataClient(
        settings.kantata_base_url,
        token,
        rate=settings.kantata_max_requests_per_second,
        retry=_quick(retry_policy(settings)),
        timeout=20.0,
        user_agent=USER_AGENT,
    )
    host = urlsplit(settings.kantata_base_url).netloc
    checks: list[Check] = []
    try:
        try:
            user = client.current_user()
        except ApiError as exc:
            return [_api_problem("Kantata", settings.kantata_base_url, exc, "checking the token")]
        checks.append(
            (True, f"Kantata at {host} accepted the token ({_first_user_name(user)})", "")
        )
        try:
            page = next(client.iter_invoice_pages(updated_after=None, per_page=1), None)
        except ApiError as exc:
            checks.append(
                _api_problem("Kantata", settings.kantata_base_url, exc, "listing invoices")
            )
            return checks
        if times is not None and page is not None:
            times.append((settings.kantata_base_url, page.server_time))
        checks.append((True, "Kantata user can read invoices (financial permission)", ""))
    finally:
        client.close()
    return checks


def _first_user_name(body: object) -> str:
    if isinstance(body, dict):
        users = body.get("users")
        if isinstance(users, dict):
            for user in users.values():
                if isinstance(user, dict) and user.get("full_name"):
                    return str(user["full_name"])
    return "user"


def check_noko(settings: Settings, times: list[ServerTime] | None = None) -> list[Check]:
    """One page of one invoice (`GET /invoices`, documented): the token and the invoicing
    feature at once. Noko's `/current_user` is documented as not implemented: not used."""
    try:
        token = settings.noko_secret()
    except ConfigError as exc:
        return [(False, str(exc), "Set NOKO_TOKEN (or NOKO_TOKEN_FILE).")]
    client = NokoClient(
        settings.noko_base_url,
        token,
        rate=settings.noko_max_requests_per_second,
        burst=settings.noko_burst,
        retry=_quick(retry_policy(settings)),
        timeout=20.0,
        user_agent=USER_AGENT,
    )
    host = urlsplit(settings.noko_base_url).netloc
    seen: list[datetime | None] = []
    try:
        pages = client.iter_pages(
            "/invoices", {"state": "unpaid"}, per_page=1, on_server_time=seen.append
        )
        next(iter(pages), None)
    except ApiError as exc:
        return [_api_problem("Noko", settings.noko_base_url, exc, "listing invoices")]
    finally:
        client.close()
    if times is not None and seen:
        times.append((settings.noko_base_url, seen[0]))
    return [(True, f"Noko at {host} accepted the token; invoices readable", "")]


def check_database(settings: Settings) -> Check:
    try:
        store = Store(settings.kantata_sync_database_url, create=False)
    except StateFileError as exc:
        return (
            False,
            str(exc),
            "Run `kantata-sync sync` (or `backfill`) to create it, or point "
            "KANTATA_SYNC_DATABASE_URL at the existing one.",
        )
    except ConfigError as exc:
        return False, str(exc), "Point KANTATA_SYNC_DATABASE_URL at a writable location."
    except SQLAlchemyError as exc:  # a broken file must be reported, not crash the doctor
        return False, f"state database unusable: {exc}", "Restore it from a backup or move it."
    try:
        revision = store.schema_revision()
        store.set_cursor(store.get_cursor())
        path = store.path
        if path is not None:
            mode = os.stat(path).st_mode & 0o777
            if mode & 0o077:
                return (
                    False,
                    f"state database {path} is readable by others (mode {mode:o})",
                    f"chmod 600 {path}",
                )
        where = str(path) if path else "in memory"
        return True, f"state database writable ({where}, schema {revision})", ""
    except (SQLAlchemyError, OSError) as exc:  # a read-only disk shows up here
        return False, f"state database not writable: {exc}", "Check the file's permissions."
    finally:
        store.close()


def check_clock(times: list[ServerTime]) -> Check:
    """This machine's clock against the `Date` of the APIs' answers to the checks above (no
    request of its own)."""
    for url, server in times:
        if server is None:
            continue
        skew = (datetime.now(UTC) - server).total_seconds()
        host = urlsplit(url).netloc
        if abs(skew) > MAX_CLOCK_SKEW:
            return (
                False,
                f"local clock is {skew:+.0f} s off {host}'s",
                "Enable time synchronisation (systemd-timesyncd, chrony or ntpd).",
            )
        return True, f"clock within {abs(skew):.0f} s of {host}", ""
    if not times:
        return (
            False,
            "clock not compared: no API answered the checks above",
            "Fix the checks above first; the clock is compared with their answers.",
        )
    hosts = ", ".join(urlsplit(url).netloc for url, _ in times)
    return (
        False,
        f"clock not compared: {hosts} sent no Date header",
        "Compare the clock by hand (timedatectl) or run doctor again.",
    )


def run_checks(settings: Settings, console: Console) -> bool:
    checks: list[Check] = [(True, "configuration valid", "")]
    checks.append(check_profile(settings))
    times: list[ServerTime] = []
    checks += check_kantata(settings, times)
    if settings.kantata_sync_target == "xero":
        from connector.faces.doctor_xero import check_xero

        try:
            profile = settings.profile()
        except ConfigError:
            profile = None  # named by the profile check above
        checks += check_xero(settings, profile)
    else:
        checks += check_noko(settings, times)
    checks.append(check_database(settings))
    checks.append(check_clock(times))
    for passed, found, fix in checks:
        mark = "[green]ok  [/green]" if passed else "[red]FAIL[/red]"
        console.print(f"{mark} {escape(found)}", highlight=False)
        if not passed and fix:
            console.print(f"     fix: {escape(fix)}", highlight=False)
    return all(passed for passed, _, _ in checks)
