"""Xero OAuth 2.0: access tokens for the client, and the refresh token kept on disk.

- `ClientCredentials`: a custom connection; id and secret give access tokens, nothing is stored.
- `RefreshTokenGrant`: the authorization-code flow's refresh token lives in a file readable by
  its owner only (0600). Every refresh runs under an exclusive `flock` on `<file>.lock`, reads
  the newest refresh token inside the lock, and replaces the file atomically (temp file +
  `os.replace`) before the lock is released: two processes never race a rotating token.
- `login(...)`: authorization code with PKCE (S256) on a loopback redirect; stores the first
  refresh token the same way.

Access tokens live in memory only and are renewed ahead of `expires_in` (a fifth of the
lifetime, at most a minute early). No token, secret or Basic header reaches a log line, an
exception message or a repr.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import secrets
import tempfile
import threading
import time
import webbrowser
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import structlog
from pydantic import SecretStr

from connector.errors import AuthError, TransientApiError
from connector.http import parse_retry_after

log = structlog.get_logger(__name__)

TOKEN_URL = "https://identity.xero.com/connect/token"  # noqa: S105 (a URL)
AUTHORIZE_URL = "https://login.xero.com/identity/connect/authorize"
BROAD_SCOPES = ("accounting.transactions", "accounting.contacts", "accounting.settings")
GRANULAR_SCOPES = (
    "accounting.invoices",
    "accounting.payments",
    "accounting.contacts",
    "accounting.settings",
)


class XeroAuthError(AuthError):
    """Xero refused the credentials or the token (revoked, expired refresh token, wrong
    tenant): the cycle ends; the operator must fix the connection."""

    def __init__(self, message: str, *, status: int | None = None, path: str = "") -> None:
        super().__init__("xero", message, status=status, path=path)


def scopes_for(style: str, *, offline: bool) -> str:
    """The scope string: `granular` for apps made since March 2026, `broad` before."""
    chosen = GRANULAR_SCOPES if style == "granular" else BROAD_SCOPES
    return " ".join((("offline_access",) if offline else ()) + chosen)


@dataclass(frozen=True)
class XeroCredentials:
    client_id: str
    client_secret: SecretStr | None
    token_url: str = TOKEN_URL
    authorize_url: str = AUTHORIZE_URL
    scope_style: str = "granular"

    def auth_headers(self) -> dict[str, str]:
        if self.client_secret is None:
            return {}
        pair = f"{self.client_id}:{self.client_secret.get_secret_value()}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


def _early(expires_in: float) -> float:
    return min(60.0, expires_in / 5)


@dataclass
class _Cached:
    token: str = field(repr=False)
    renew_at: float


class TokenSource:
    """Hands out a live access token; subclasses say how a new one is obtained."""

    def __init__(
        self,
        credentials: XeroCredentials,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.credentials = credentials
        self._http = http or httpx.Client(timeout=30.0)
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: _Cached | None = None
        self.grants = 0
        """How many tokens were fetched (for tests and stats)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(client_id={self.credentials.client_id!r})"

    def access_token(self) -> str:
        with self._lock:
            cached = self._cached
            if cached is None or self._clock() >= cached.renew_at:
                body = self._grant()
                self.grants += 1
                expires_in = float(body.get("expires_in") or 1800)
                cached = _Cached(str(body["access_token"]), self._clock() + expires_in)
                cached.renew_at -= _early(expires_in)
                self._cached = cached
            return cached.token

    def invalidate(self) -> None:
        """Forget the access token (Xero said TokenExpired): the next call gets a new one."""
        with self._lock:
            self._cached = None

    def _grant(self) -> dict[str, Any]:
        raise NotImplementedError

    def _post(self, form: dict[str, str]) -> dict[str, Any]:
        return token_request(self._http, self.credentials, form)


def token_request(
    http: httpx.Client, credentials: XeroCredentials, form: dict[str, str]
) -> dict[str, Any]:
    """POST to the token endpoint; typed errors that never carry the form or the headers."""
    url = credentials.token_url
    path = urlsplit(url).path
    headers = {"Accept": "application/json", **credentials.auth_headers()}
    try:
        response = http.post(url, data=form, headers=headers)
    except httpx.HTTPError as exc:
        raise TransientApiError(
            "xero", f"token endpoint unreachable ({type(exc).__name__})", method="POST", path=path
        ) from None
    if response.status_code >= 500 or response.status_code == 429:
        raise TransientApiError(
            "xero",
            "token endpoint busy",
            status=response.status_code,
            method="POST",
            path=path,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
        error = body.get("error") if isinstance(body, dict) else None
        hint = {
            "invalid_grant": "the refresh token or code is no longer valid: run "
            "`kantata-sync xero login` again",
            "invalid_client": "the client id or secret is wrong",
            "unauthorized_client": "this app may not use that grant",
        }.get(str(error), "the token request was refused")
        raise XeroAuthError(f"{error or 'refused'}: {hint}", status=response.status_code, path=path)
    return body


class ClientCredentials(TokenSource):
    """A custom connection: `grant_type=client_credentials` with id and secret."""

    def _grant(self) -> dict[str, Any]:
        scope = scopes_for(self.credentials.scope_style, offline=False)
        log.info("xero.token", grant="client_credentials")
        return self._post({"grant_type": "client_credentials", "scope": scope})


class TokenFile:
    """The refresh token on disk: 0600, replaced atomically, writes under `<path>.lock`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r})"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def read(self) -> str | None:
        try:
            text = self.path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return text or None

    def write(self, token: str) -> None:
        """Replace the file's content atomically; the new file is 0600 from its first byte."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(token + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class RefreshTokenGrant(TokenSource):
    """Access tokens from the stored refresh token, rotating it under the file lock."""

    def __init__(self, credentials: XeroCredentials, token_file: TokenFile, **kwargs: Any) -> None:
        super().__init__(credentials, **kwargs)
        self.token_file = token_file

    def _grant(self) -> dict[str, Any]:
        with self.token_file.locked():
            refresh = self.token_file.read()
            if refresh is None:
                raise XeroAuthError(
                    f"no refresh token in {self.token_file.path}: run `kantata-sync xero login`"
                )
            form = {"grant_type": "refresh_token", "refresh_token": refresh}
            if self.credentials.client_secret is None:
                form["client_id"] = self.credentials.client_id
            body = self._post(form)
            new = body.get("refresh_token")
            if isinstance(new, str) and new and new != refresh:
                self.token_file.write(new)
            log.info("xero.token", grant="refresh_token", rotated=bool(new and new != refresh))
            return body


def _pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)[:128]
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


class _CallbackHandler(BaseHTTPRequestHandler):
    result: dict[str, str]

    def do_GET(self) -> None:
        query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        type(self).result.update(query)
        ok = "code" in query
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()
        text = (
            "kantata-sync is connected to Xero; you can close this tab."
            if ok
            else ("Xero did not grant access; see the terminal.")
        )
        self.wfile.write(text.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the query holds the one-time code: never logged


def login(
    credentials: XeroCredentials,
    token_file: TokenFile,
    *,
    announce: Callable[[str], None] = print,
    open_browser: Callable[[str], Any] = webbrowser.open,
    port: int = 0,
    timeout: float = 300.0,
    http: httpx.Client | None = None,
) -> None:
    """Authorization code with PKCE on `http://127.0.0.1:<port>/callback`; keeps the refresh
    token in `token_file`. `announce` prints the URL to open (the browser may not start)."""
    verifier, challenge = _pkce_pair()
    state = secrets.token_urlsafe(24)
    result: dict[str, str] = {}
    handler = type("Callback", (_CallbackHandler,), {"result": result})
    server = HTTPServer(("127.0.0.1", port), handler)
    server.timeout = timeout
    redirect = f"http://127.0.0.1:{server.server_address[1]}/callback"
    query = {
        "response_type": "code",
        "client_id": credentials.client_id,
        "redirect_uri": redirect,
        "scope": "openid profile email " + scopes_for(credentials.scope_style, offline=True),
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    url = credentials.authorize_url + "?" + urlencode(query)
    announce(f"Open this address to connect kantata-sync to Xero:\n{url}")
    waiter = threading.Thread(target=server.handle_request, daemon=True)
    waiter.start()
    try:
        open_browser(url)
        waiter.join(timeout)
    finally:
        server.server_close()
    if result.get("state") != state or "code" not in result:
        reason = result.get("error") or ("no answer" if not result else "state mismatch")
        raise XeroAuthError(f"Xero login did not complete: {reason}")
    form = {
        "grant_type": "authorization_code",
        "code": result["code"],
        "redirect_uri": redirect,
        "code_verifier": verifier,
    }
    if credentials.client_secret is None:
        form["client_id"] = credentials.client_id
    client = http or httpx.Client(timeout=30.0)
    try:
        with token_file.locked():
            body = token_request(client, credentials, form)
            refresh = body.get("refresh_token")
            if not isinstance(refresh, str) or not refresh:
                raise XeroAuthError("Xero gave no refresh token: is offline_access granted?")
            token_file.write(refresh)
    finally:
        if http is None:
            client.close()
    announce(f"Connected; the refresh token is kept in {token_file.path} (owner-only).")
