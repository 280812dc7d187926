"""Xero OAuth: PKCE login against the fake, the refresh token file (0600, atomic, locked),
access tokens renewed ahead of expiry, TokenExpired handled once, no secret anywhere."""

from __future__ import annotations

import base64
import os
import stat
import threading
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import structlog

from connector.targets.xero.auth import RefreshTokenGrant, TokenFile, XeroAuthError, login
from connector.targets.xero.client import PauseGate, XeroClient
from sandbox._core import Request, Response
from sandbox.xero import FakeXero
from tests.xero_support import BASE, FakeClock, FakeTransport, credentials_for, make_client


def logged_in(tmp_path: Path, fake: FakeXero) -> tuple[TokenFile, httpx.Client, list[str]]:
    http = httpx.Client(transport=FakeTransport(fake))
    token_file = TokenFile(tmp_path / "xero" / "refresh-token")
    printed: list[str] = []

    def browser(url: str) -> None:
        consent = http.get(url)  # the fake's authorize page grants at once
        assert consent.status_code == 302
        callback = httpx.get(consent.headers["Location"])  # the loopback server, for real
        assert callback.status_code == 200

    login(
        credentials_for(fake),
        token_file,
        announce=printed.append,
        open_browser=browser,
        http=http,
        timeout=10,
    )
    return token_file, http, printed


def test_pkce_login_keeps_the_refresh_token_owner_only(tmp_path: Path) -> None:
    fake = FakeXero()
    token_file, _http, printed = logged_in(tmp_path, fake)
    assert "code_challenge_method=S256" in printed[0]
    assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A" in printed[0]
    stored = token_file.read()
    assert stored in fake.refresh_tokens
    assert stat.S_IMODE(token_file.path.stat().st_mode) == 0o600
    assert not any(stored in line for line in printed)


def test_a_refresh_rotates_the_token_file_atomically(tmp_path: Path) -> None:
    fake = FakeXero()
    token_file, http, _ = logged_in(tmp_path, fake)
    first = token_file.read()
    inode = token_file.path.stat().st_ino
    grant = RefreshTokenGrant(credentials_for(fake), token_file, http=http)
    assert grant.access_token()
    second = token_file.read()
    assert second != first and first not in fake.refresh_tokens
    assert second in fake.refresh_tokens
    assert token_file.path.stat().st_ino != inode  # replaced, not rewritten in place
    assert stat.S_IMODE(token_file.path.stat().st_mode) == 0o600
    assert sorted(p.name for p in token_file.path.parent.iterdir()) == [
        "refresh-token",
        "refresh-token.lock",
    ]


def test_two_processes_refreshing_one_token_never_race(tmp_path: Path) -> None:
    fake = FakeXero()
    token_file, http, _ = logged_in(tmp_path, fake)
    grants = [
        RefreshTokenGrant(credentials_for(fake), TokenFile(token_file.path), http=http)
        for _ in range(2)
    ]
    errors: list[Exception] = []

    def spin(grant: RefreshTokenGrant) -> None:
        try:
            for _ in range(10):
                grant.invalidate()
                grant.access_token()
        except Exception as exc:  # noqa: BLE001 - any failure is the one being tested for
            errors.append(exc)

    threads = [threading.Thread(target=spin, args=(g,)) for g in grants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert fake.refresh_tokens == {token_file.read()}


def test_access_tokens_are_renewed_ahead_of_expires_in() -> None:
    client, fake, _t, clock = make_client(FakeXero(token_lifetime=10), per_minute=0)
    client.accounts()
    assert client.tokens.grants == 1
    clock.now += 7.9
    fake.advance_clock(7)
    client.accounts()
    assert client.tokens.grants == 1
    clock.now += 0.2  # 8.1 s of 10: inside the last fifth, renewed before Xero refuses it
    client.accounts()
    assert client.tokens.grants == 2
    assert fake.stats.statuses.get("401") is None


def test_token_expired_gets_a_new_token_and_repeats_once() -> None:
    client, fake, _t, _c = make_client()
    client.accounts()
    for token in fake.access_tokens:
        fake.access_tokens[token] = fake.clock.now() - timedelta(seconds=1)
    assert client.accounts()
    assert client.tokens.grants == 2
    assert fake.stats.statuses["401"] == 1


def test_a_fresh_token_refused_is_an_auth_error() -> None:
    client, fake, _t, _c = make_client()
    client.accounts()
    original = fake.check_request

    def refuse_every_token(request: Request) -> Response | None:
        if request.path.startswith("/connect/"):
            return original(request)
        return fake._unauthorized("TokenExpired: token expired at 12/01/2026 09:00:00")

    fake.check_request = refuse_every_token  # type: ignore[method-assign]
    with pytest.raises(XeroAuthError, match="refused the access token"):
        client.accounts()
    assert client.tokens.grants == 2  # renewed once, then gave up
    assert fake.stats.statuses["401"] == 2


def test_no_secret_token_or_basic_header_in_logs_errors_or_reprs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeXero()
    with structlog.testing.capture_logs() as logs:
        token_file, http, printed = logged_in(tmp_path, fake)
        grant = RefreshTokenGrant(credentials_for(fake), token_file, http=http)
        clock = FakeClock(fake)
        client = XeroClient(
            grant,
            base_url=BASE + "/api.xro/2.0",
            connections_url=BASE + "/connections",
            http=http,
            gate=PauseGate(clock, clock.sleep),
            clock=clock,
            sleep=clock.sleep,
        )
        client.accounts()
        refresh = token_file.read()
        access = list(fake.access_tokens)
        fake.revoke_tokens()
        grant.invalidate()
        with pytest.raises(XeroAuthError) as refused:
            client.accounts()
        fake.client_secret = "rotated-by-the-admin"
        with pytest.raises(XeroAuthError) as wrong_secret:
            RefreshTokenGrant(credentials_for(FakeXero()), token_file, http=http).access_token()
    basic = base64.b64encode(f"{fake.client_id}:sandbox-xero-secret".encode()).decode()
    secrets = ["sandbox-xero-secret", basic, str(refresh), *access]
    text = "\n".join(
        [
            capsys.readouterr().out,
            repr(logs),
            *printed,
            str(refused.value),
            str(wrong_secret.value),
            repr(grant),
            repr(client),
            repr(token_file),
            repr(grant.credentials),
        ]
    )
    assert "invalid_grant" in str(refused.value)
    for secret in secrets:
        assert secret not in text
    assert oct(os.stat(token_file.path).st_mode & 0o777) == "0o600"
