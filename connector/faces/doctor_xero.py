"""`doctor` with KANTATA_SYNC_TARGET=xero: the credentials (a token is granted), the tenant
(the connections: exactly one, or the configured one), the scopes, the organisation (short
code, base currency), and that the account codes and tax types the profile names exist. Each
check one line, with the fix when it fails. Documented endpoints only: the token endpoint,
`GET /connections`, `/Organisation`, `/Accounts`, `/TaxRates` and one listing of invoices."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from connector.errors import ApiError, AuthError, ConfigError
from connector.faces.config import Settings
from connector.faces.xero import XERO_TIMEOUT, build_client, token_source, xero_section
from connector.http import ApiStats
from connector.targets.xero.auth import (
    ClientCredentials,
    RefreshTokenGrant,
    TokenSource,
    scopes_for,
)
from connector.targets.xero.client import XeroClient
from mappings.profile import Profile

Check = tuple[bool, str, str]

CREDENTIALS_FIX = (
    "Set XERO_CLIENT_ID and XERO_CLIENT_SECRET (or XERO_CLIENT_SECRET_FILE) of a custom "
    "connection, or run `kantata-sync xero login` to keep a refresh token in XERO_TOKEN_FILE."
)


class _Granted:
    """What the last token answer said (its `scope`), kept by the doctor's token sources."""

    scope: str | None = None


class _DoctorClientCredentials(ClientCredentials):
    granted = _Granted()

    def _grant(self) -> dict[str, Any]:
        body = super()._grant()
        self.granted.scope = _scope_of(body)
        return body


class _DoctorRefreshTokenGrant(RefreshTokenGrant):
    granted = _Granted()

    def _grant(self) -> dict[str, Any]:
        body = super()._grant()
        self.granted.scope = _scope_of(body)
        return body


def _scope_of(body: dict[str, Any]) -> str | None:
    """The scopes granted: the token answer's `scope`, else the access token's own claim (a
    JWT; read, not verified: it only tells the doctor what to check)."""
    scope = body.get("scope")
    if isinstance(scope, str) and scope.strip():
        return scope
    token = str(body.get("access_token") or "")
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    claim = claims.get("scope") if isinstance(claims, dict) else None
    if isinstance(claim, list):
        return " ".join(str(s) for s in claim)
    return claim if isinstance(claim, str) else None


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def check_scopes(settings: Settings, granted: str | None, refresh: bool) -> Check:
    style = settings.xero_scopes
    needed = set(scopes_for(style, offline=False).split())
    if granted is None:
        return (
            True,
            "Xero scopes not stated in the token; the reads below show whether they suffice",
            "",
        )
    have = set(granted.split())
    missing = sorted(needed - have)
    if not missing:
        return True, f"Xero granted the {style} scopes the sync needs", ""
    other = "broad" if style == "granular" else "granular"
    if not (set(scopes_for(other, offline=False).split()) - have):
        return (
            False,
            f"Xero granted the {other} scopes, but XERO_SCOPES is {style} "
            f"(missing: {', '.join(missing)})",
            f"Set XERO_SCOPES={other} (apps made before March 2026 use the broad scopes).",
        )
    how = (
        "run `kantata-sync xero login` again to grant them"
        if refresh
        else "add them to the custom connection in Xero's developer portal"
    )
    return (
        False,
        f"Xero did not grant the scopes {', '.join(missing)}",
        f"Give the app these scopes ({how}).",
    )


def connections(settings: Settings, http: httpx.Client, tokens: TokenSource) -> list[Any]:
    response = http.get(
        settings.xero_connections_url,
        headers={"Authorization": f"Bearer {tokens.access_token()}", "Accept": "application/json"},
    )
    if response.status_code in (401, 403):
        raise AuthError("xero", "connections refused", status=response.status_code)
    if response.status_code != 200:
        raise ApiError(
            "xero", "connections unavailable", status=response.status_code, path="/connections"
        )
    rows = response.json()
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def check_tenant(settings: Settings, connections: list[dict[str, Any]]) -> tuple[Check, str | None]:
    organisations = [
        r for r in connections if str(r.get("tenantType", "ORGANISATION")) == "ORGANISATION"
    ]
    listed = ", ".join(f"{r.get('tenantName')} ({r.get('tenantId')})" for r in organisations)
    wanted = settings.xero_tenant_id
    if wanted is not None:
        match = next((r for r in organisations if str(r.get("tenantId")) == wanted), None)
        if match is None:
            return (
                False,
                f"XERO_TENANT_ID {wanted} is not among the organisations these credentials "
                f"reach ({listed or 'none'})",
                "Set XERO_TENANT_ID to one of them, or connect the app to that organisation.",
            ), None
        return (
            True,
            f"Xero organisation {match.get('tenantName')} connected ({wanted})",
            "",
        ), wanted
    if len(organisations) == 1:
        only = organisations[0]
        tenant = str(only.get("tenantId"))
        return (
            True,
            f"Xero organisation {only.get('tenantName')} connected ({tenant})",
            "",
        ), tenant
    if not organisations:
        return (
            False,
            "these Xero credentials reach no organisation",
            "Connect the app to the organisation (a custom connection is made for one; "
            "`kantata-sync xero login` asks which).",
        ), None
    return (
        False,
        f"these Xero credentials reach {len(organisations)} organisations ({listed}) and "
        "XERO_TENANT_ID is not set",
        "Set XERO_TENANT_ID to the organisation to sync into.",
    ), None


def check_profile_codes(
    profile: Profile, accounts: list[dict[str, Any]], tax_rates: list[dict[str, Any]]
) -> list[Check]:
    """The account codes and tax types the profile's `[xero]` section names exist in the
    organisation and are active."""
    section = xero_section(profile)
    active_codes = {
        str(a.get("Code"))
        for a in accounts
        if a.get("Code") and a.get("Status", "ACTIVE") == "ACTIVE"
    }
    active_types = {
        str(t.get("TaxType"))
        for t in tax_rates
        if t.get("TaxType") and t.get("Status", "ACTIVE") == "ACTIVE"
    }
    named_codes = {section.sales_account: "[xero] sales_account"}
    for kind, code in section.accounts.items():
        named_codes.setdefault(code, f"[xero.accounts] {kind}")
    named_types = {
        section.taxable_tax_type: "[xero] taxable_tax_type",
        section.untaxed_tax_type: "[xero] untaxed_tax_type",
    }
    for rate, tax_type in section.tax_types.items():
        named_types.setdefault(tax_type, f'[xero.tax_types] "{rate}"')
    checks: list[Check] = []
    missing_codes = {c: w for c, w in named_codes.items() if c not in active_codes}
    if missing_codes:
        checks.append(
            (
                False,
                "Xero has no active account "
                + ", ".join(f"{c} (profile {w})" for c, w in sorted(missing_codes.items())),
                "Create the account in Xero (Accounting > Chart of accounts) or map the line "
                "kinds to existing codes in the mapping profile's [xero] section.",
            )
        )
    else:
        checks.append((True, f"Xero accounts exist: {', '.join(sorted(named_codes))}", ""))
    missing_types = {t: w for t, w in named_types.items() if t not in active_types}
    if missing_types:
        checks.append(
            (
                False,
                "Xero has no active tax type "
                + ", ".join(f"{t} (profile {w})" for t, w in sorted(missing_types.items())),
                "Use tax types of this organisation (Accounting > Tax rates) in the mapping "
                "profile's [xero] section.",
            )
        )
    else:
        checks.append((True, f"Xero tax types exist: {', '.join(sorted(named_types))}", ""))
    return checks


def _read_problem(settings: Settings, exc: ApiError, doing: str) -> Check:
    host = _host(settings.xero_base_url)
    if isinstance(exc, AuthError):
        return (
            False,
            f"Xero at {host} refused {doing} (HTTP {exc.status}): {exc.message}",
            "Give the app the scopes the sync needs (accounting.settings, accounting.contacts "
            "and accounting.invoices, or accounting.transactions for older apps) and check "
            "XERO_TENANT_ID.",
        )
    if exc.status == 404:
        return (
            False,
            f"Xero at {host} answered 404 for {exc.path or doing}: XERO_BASE_URL "
            f"({settings.xero_base_url}) is not the Accounting API root",
            "Set XERO_BASE_URL to https://api.xero.com/api.xro/2.0.",
        )
    if exc.status is None:
        return (
            False,
            f"could not reach Xero at {host} {doing}: {exc.message}",
            f"Check XERO_BASE_URL ({settings.xero_base_url}) and that {host} can be reached.",
        )
    return (
        False,
        f"Xero at {host} answered HTTP {exc.status} {doing}: {exc.message}",
        "Try again later; if it lasts, check Xero's status page.",
    )


def check_xero(settings: Settings, profile: Profile | None) -> list[Check]:
    """The Xero checks, in order; each stops the ones that depend on it."""
    granted = _Granted()
    http = httpx.Client(timeout=min(XERO_TIMEOUT, 20.0))
    try:
        try:
            tokens = token_source(
                settings, http, (_DoctorClientCredentials, _DoctorRefreshTokenGrant)
            )
        except ConfigError as exc:
            return [(False, str(exc), CREDENTIALS_FIX)]
        if isinstance(tokens, _DoctorClientCredentials | _DoctorRefreshTokenGrant):
            tokens.granted = granted  # this run's own record, not the class's
        refresh = isinstance(tokens, RefreshTokenGrant)
        if isinstance(tokens, RefreshTokenGrant):
            path = tokens.token_file.path
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                return [
                    (
                        False,
                        f"XERO_TOKEN_FILE {path} is readable by others (mode {mode:o})",
                        f"chmod 600 {path}",
                    )
                ]
        how = "refresh token of `xero login`" if refresh else "client credentials"
        token_host = _host(settings.xero_token_url)
        try:
            tokens.access_token()
        except AuthError as exc:
            fix = (
                "Run `kantata-sync xero login` again."
                if refresh
                else "Check XERO_CLIENT_ID and XERO_CLIENT_SECRET against the app in Xero's "
                "developer portal (a custom connection must be connected to an organisation)."
            )
            return [(False, f"Xero at {token_host} granted no token ({how}): {exc.message}", fix)]
        except ApiError as exc:
            return [
                (
                    False,
                    f"could not get a Xero token from {token_host}: {exc.message}",
                    f"Check XERO_TOKEN_URL ({settings.xero_token_url}) and that {token_host} "
                    "can be reached.",
                )
            ]
        checks: list[Check] = [(True, f"Xero granted a token ({how})", "")]
        checks.append(check_scopes(settings, granted.scope, refresh))
        try:
            reached = connections(settings, http, tokens)
        except (ApiError, ValueError, httpx.HTTPError) as exc:
            detail = exc.message if isinstance(exc, ApiError) else type(exc).__name__
            checks.append(
                (
                    False,
                    f"Xero's connections at {_host(settings.xero_connections_url)} could not be "
                    f"read: {detail}",
                    f"Check XERO_CONNECTIONS_URL ({settings.xero_connections_url}).",
                )
            )
            return checks
        tenant_check, tenant = check_tenant(settings, reached)
        checks.append(tenant_check)
        if tenant is None:
            return checks
        client: XeroClient = build_client(
            settings, ApiStats(), http=http, tokens=tokens, max_attempts=2
        )
        client.tenant_id = tenant
        try:
            organisation = client.organisation()
        except ApiError as exc:
            checks.append(_read_problem(settings, exc, "reading the organisation"))
            return checks
        checks.append(
            (
                True,
                f"Xero organisation {organisation.get('Name')}: short code "
                f"{organisation.get('ShortCode') or '?'}, base currency "
                f"{organisation.get('BaseCurrency') or '?'}",
                "",
            )
        )
        try:
            accounts = client.accounts()
            tax_rates = client.tax_rates()
        except ApiError as exc:
            checks.append(_read_problem(settings, exc, "reading accounts and tax rates"))
            return checks
        if profile is not None:
            checks += check_profile_codes(profile, accounts, tax_rates)
        try:
            client.changed_since(datetime.now(UTC))
        except ApiError as exc:
            checks.append(_read_problem(settings, exc, "listing invoices"))
            return checks
        checks.append((True, "Xero invoices readable", ""))
        return checks
    finally:
        http.close()
