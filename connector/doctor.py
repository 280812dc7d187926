"""`kantata-sync doctor`: each check one line with a verdict and, when it fails, the fix."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError

from connector.app import USER_AGENT, retry_policy
from connector.config import Settings
from connector.cpus import describe_cpus, probe_cpus, resolve_cpus
from connector.errors import (
    ApiError,
    ConfigError,
    NotFoundError,
    PermanentApiError,
    StateFileError,
)
from connector.http import RetryPolicy
from connector.kantata import KantataClient
from connector.noko import NokoClient
from connector.store import Store

Check = tuple[bool, str, str]
"""(passed, what was found, how to fix it)"""

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


def check_kantata(settings: Settings) -> list[Check]:
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
    checks: list[Check] = []
    try:
        try:
            user = client.current_user()
            name = _first_user_name(user)
            checks.append((True, f"Kantata token accepted ({name})", ""))
        except PermanentApiError as exc:
            checks.append(
                (
                    False,
                    f"Kantata refused the token: {exc}",
                    "Create a new OAuth token for an account user and set KANTATA_TOKEN.",
                )
            )
            return checks
        try:
            next(client.iter_invoice_pages(updated_after=None, per_page=1), None)
            checks.append((True, "Kantata user can read invoices (financial permission)", ""))
        except PermanentApiError as exc:
            checks.append(
                (
                    False,
                    f"Kantata refused to list invoices: {exc}",
                    "Give the token's user financial permission on the projects to sync.",
                )
            )
    except ApiError as exc:
        checks.append(
            (False, f"Kantata did not answer: {exc}", "Check KANTATA_BASE_URL and the network.")
        )
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


def check_noko(settings: Settings) -> list[Check]:
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
    try:
        next(iter(client.iter_pages("/invoices", {"state": "unpaid"}, per_page=1)), None)
        return [(True, "Noko token accepted; invoices readable", "")]
    except NotFoundError as exc:
        return [(False, f"Noko answered 404: {exc}", "Check NOKO_BASE_URL (it ends in /v2).")]
    except PermanentApiError as exc:
        return [
            (
                False,
                f"Noko refused the token: {exc}",
                "Create a personal access token in Noko (Integrations & Apps) and set NOKO_TOKEN;"
                " the account needs the invoicing feature.",
            )
        ]
    except ApiError as exc:
        return [(False, f"Noko did not answer: {exc}", "Check NOKO_BASE_URL and the network.")]
    finally:
        client.close()


def check_database(settings: Settings) -> Check:
    try:
        store = Store(settings.kantata_sync_database_url, create=False)
    except StateFileError as exc:
        return False, str(exc), "Point KANTATA_SYNC_DATABASE_URL at the state file."
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


def check_clock(settings: Settings, get: Callable[[str], httpx.Response] | None = None) -> Check:
    fetch = get or (lambda url: httpx.get(url, timeout=10.0, headers={"User-Agent": USER_AGENT}))
    for url in (settings.kantata_base_url, settings.noko_base_url):
        try:
            response = fetch(url)
        except httpx.HTTPError:
            continue
        header = response.headers.get("date")
        if not header:
            continue
        try:
            server = parsedate_to_datetime(header)
        except (TypeError, ValueError):
            continue
        skew = (datetime.now(UTC) - server).total_seconds()
        if abs(skew) > MAX_CLOCK_SKEW:
            return (
                False,
                f"local clock is {skew:+.0f} s off {url}'s",
                "Enable time synchronisation (systemd-timesyncd, chrony or ntpd).",
            )
        return True, f"clock within {abs(skew):.0f} s of {url}", ""
    return False, "no API sent a Date header to compare the clock with", "Check the network."


def check_cpus(settings: Settings) -> Check:
    """Where the process will run (`KANTATA_SYNC_CPUS`), and whether it can be put there."""
    setting = f"KANTATA_SYNC_CPUS={settings.kantata_sync_cpus}"
    try:
        target = resolve_cpus(settings.cpus())
    except ConfigError as exc:
        return False, str(exc), "Set KANTATA_SYNC_CPUS to all, one, or CPUs this process may use."
    if target is None:
        return True, f"runs on the CPUs the operating system chooses ({setting})", ""
    refused = probe_cpus()
    if refused is not None:
        return (
            False,
            f"{setting}: {refused}",
            "Use all, and pin the process from outside (taskset, systemd's CPUAffinity=).",
        )
    return True, f"runs on CPU {describe_cpus(target)} ({setting})", ""


def run_checks(settings: Settings, console: Console) -> bool:
    checks: list[Check] = [(True, "configuration valid", "")]
    checks.append(check_profile(settings))
    checks.append(check_cpus(settings))
    checks += check_kantata(settings)
    checks += check_noko(settings)
    checks.append(check_database(settings))
    checks.append(check_clock(settings))
    for passed, found, fix in checks:
        mark = "[green]ok  [/green]" if passed else "[red]FAIL[/red]"
        console.print(f"{mark} {escape(found)}", highlight=False)
        if not passed and fix:
            console.print(f"     fix: {escape(fix)}", highlight=False)
    return all(passed for passed, _, _ in checks)
