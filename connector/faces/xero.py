"""Xero from the settings: credentials, the token source, the client, and `xero login`.

The token source is the refresh token kept by `kantata-sync xero login` (XERO_TOKEN_FILE) when
that file holds one, else a custom connection's `client_credentials` (id and secret). Access
tokens live in memory only; the refresh token file is replaced atomically under its lock.
"""

from __future__ import annotations

import webbrowser
from collections.abc import Callable
from typing import Any

import httpx

from connector.errors import ConfigError
from connector.faces.config import Settings
from connector.http import ApiStats
from connector.http.stats import endpoint_template
from connector.targets.xero.auth import (
    ClientCredentials,
    RefreshTokenGrant,
    TokenFile,
    TokenSource,
    XeroCredentials,
    login,
)
from connector.targets.xero.client import XeroClient
from mappings.profile import Profile
from mappings.targets.xero_profile import XeroSettings

XERO_TIMEOUT = 60.0


def xero_section(profile: Profile) -> XeroSettings:
    """The profile's `[xero]` section: `XeroSettings.from_profile` where the profile keeps
    target sections as written, else the profile's own `xero` field."""
    from_profile = getattr(XeroSettings, "from_profile", None)
    if from_profile is not None:
        section: XeroSettings = from_profile(profile)
        return section
    return XeroSettings.model_validate(getattr(profile, "xero", None) or {})


def xero_credentials(settings: Settings, *, secret_required: bool = True) -> XeroCredentials:
    """Id, secret and endpoints from the settings; ConfigError naming what is missing."""
    return XeroCredentials(
        settings.xero_id(),
        settings.xero_secret(required=secret_required),
        token_url=settings.xero_token_url,
        authorize_url=settings.xero_authorize_url,
        scope_style=settings.xero_scopes,
    )


def token_file(settings: Settings) -> TokenFile | None:
    return TokenFile(settings.xero_token_file) if settings.xero_token_file is not None else None


def _has_token(stored: TokenFile) -> bool:
    """Whether `xero login` left a refresh token there (ConfigError if it cannot be read)."""
    try:
        return stored.read() is not None
    except OSError as exc:
        raise ConfigError(
            f"XERO_TOKEN_FILE: cannot read {stored.path}: {exc.strerror or exc}"
        ) from None


def token_source(
    settings: Settings,
    http: httpx.Client,
    source: tuple[type[ClientCredentials], type[RefreshTokenGrant]] = (
        ClientCredentials,
        RefreshTokenGrant,
    ),
) -> TokenSource:
    """The refresh token of `xero login` when there is one, else client credentials."""
    stored = token_file(settings)
    if stored is not None and _has_token(stored):
        # A public (PKCE) app has no secret; a confidential one sends it with each refresh.
        credentials = xero_credentials(settings, secret_required=False)
        return source[1](credentials, stored, http=http)
    try:
        credentials = xero_credentials(settings)
    except ConfigError as exc:
        if stored is not None:
            raise ConfigError(
                f"{exc}; or run `kantata-sync xero login` to keep a refresh token in "
                f"{stored.path} (XERO_TOKEN_FILE)"
            ) from None
        raise
    return source[0](credentials, http=http)


def counting_http(stats: ApiStats, base_url: str) -> httpx.Client:
    """An HTTP client whose every Accounting API request is counted in `stats` (by endpoint,
    the API root left out), for the progress line, the demo and the daemon's metrics. Token
    and connections requests are not Accounting API calls (no organisation's limit): not
    counted."""
    root = httpx.URL(base_url)
    prefix = root.path.rstrip("/")

    def count(request: httpx.Request) -> None:
        path = request.url.path
        if request.url.host != root.host or request.url.port != root.port:
            return
        if not (path == prefix or path.startswith(prefix + "/")):
            return
        stats.record_request(endpoint_template(request.method, path[len(prefix) :] or "/"), 0.0)

    return httpx.Client(timeout=XERO_TIMEOUT, event_hooks={"request": [count]})


def build_client(
    settings: Settings,
    stats: ApiStats,
    *,
    http: httpx.Client | None = None,
    tokens: TokenSource | None = None,
    **options: Any,
) -> XeroClient:
    """The Xero client of the settings (pacing, tenant, token source). ConfigError when the
    credentials are missing."""
    http = http or counting_http(stats, settings.xero_base_url)
    try:
        tokens = tokens or token_source(settings, http)
    except BaseException:
        http.close()
        raise
    return XeroClient(
        tokens,
        base_url=settings.xero_base_url,
        connections_url=settings.xero_connections_url,
        tenant_id=settings.xero_tenant_id,
        per_minute=settings.xero_max_requests_per_minute,
        concurrent=settings.xero_max_concurrent,
        http=http,
        **options,
    )


def run_login(
    settings: Settings,
    *,
    announce: Callable[[str], None] = print,
    open_browser: Callable[[str], Any] = webbrowser.open,
    port: int = 0,
    timeout: float = 300.0,
    http: httpx.Client | None = None,
) -> TokenFile:
    """`kantata-sync xero login`: the authorization-code flow with PKCE on a loopback
    redirect; the refresh token goes to XERO_TOKEN_FILE (0600, replaced atomically under its
    lock). Raises ConfigError when XERO_TOKEN_FILE or XERO_CLIENT_ID is missing."""
    stored = token_file(settings)
    if stored is None:
        raise ConfigError(
            "XERO_TOKEN_FILE is not set: name the file that keeps the refresh token "
            "(environment or [xero] token_file in the config file)"
        )
    credentials = xero_credentials(settings, secret_required=False)
    login(
        credentials,
        stored,
        announce=announce,
        open_browser=open_browser,
        port=port,
        timeout=timeout,
        http=http,
    )
    return stored
