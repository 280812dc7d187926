"""`doctor` with KANTATA_SYNC_TARGET=xero against the sandbox's fake Xero: credentials, tenant,
scopes, the organisation, the profile's account codes and tax types; each failure one line
with its fix, and Noko never asked."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from rich.console import Console

from connector.faces.config import Settings
from connector.faces.demo import demo_settings
from connector.faces.doctor import run_checks
from connector.faces.doctor_xero import _scope_of, check_profile_codes, check_scopes
from connector.state.store import Store
from mappings.profile import parse_profile
from sandbox import Sandbox, generate
from sandbox.xero import Tenant
from tests.e2e import cli_env, run_cli

pytestmark = pytest.mark.e2e  # the connector against the sandbox over HTTP


@pytest.fixture
def box() -> Iterator[Sandbox]:
    with Sandbox(xero_per_minute=10_000) as sandbox:
        generate(sandbox.kantata, seed=91, invoices=3)
        yield sandbox


def _settings(box: Sandbox, tmp_path: Path, **extra: Any) -> Settings:
    settings = demo_settings(box, tmp_path, "xero").model_copy(
        update={"kantata_sync_http_max_attempts": 1, "noko_token": None, **extra}
    )
    Store(settings.kantata_sync_database_url).close()
    return settings


def _doctor(settings: Settings) -> tuple[bool, str]:
    console = Console(record=True, width=400, color_system=None)
    ok = run_checks(settings, console)
    return ok, console.export_text()


def _line(out: str, text: str) -> tuple[str, str]:
    """The line holding `text` and the line after it (its fix, when it failed)."""
    lines = out.splitlines()
    index = next(i for i, line in enumerate(lines) if text in line)
    return lines[index], lines[index + 1] if index + 1 < len(lines) else ""


def test_a_good_xero_setup_passes_and_says_what_it_found(box: Sandbox, tmp_path: Path) -> None:
    ok, out = _doctor(_settings(box, tmp_path))
    assert ok, out
    assert "Xero granted a token (client credentials)" in out
    assert "Xero granted the granular scopes the sync needs" in out
    assert "Xero organisation Sandbox Org 1 connected" in out
    assert "short code !sbx00, base currency USD" in out
    assert "Xero accounts exist: 200" in out
    assert "Xero tax types exist: NONE, OUTPUT" in out
    assert "Xero invoices readable" in out
    assert "Noko" not in out
    assert box.noko.state()["stats"]["requests"] == {}  # Noko is not the target: not asked
    assert box.xero.client_secret not in out


def test_a_profile_naming_codes_xero_lacks_fails_with_the_fix(box: Sandbox, tmp_path: Path) -> None:
    profile = tmp_path / "profile.toml"
    profile.write_text(
        '[xero]\nsales_account = "400"\ntaxable_tax_type = "TAX001"\n'
        '[xero.accounts]\nexpense = "260"\n[xero.tax_types]\n"8.875" = "NYC"\n'
    )
    parse_profile(profile.read_text())  # a valid profile: only Xero lacks the codes
    ok, out = _doctor(_settings(box, tmp_path, kantata_sync_mapping_profile=profile))
    assert not ok
    found, fix = _line(out, "Xero has no active account")
    assert found.startswith("FAIL")
    assert "400 (profile [xero] sales_account)" in found
    assert "260" not in found  # the sandbox has account 260
    assert "fix: Create the account in Xero" in fix
    found, fix = _line(out, "Xero has no active tax type")
    assert 'NYC (profile [xero.tax_types] "8.875")' in found
    assert "TAX001 (profile [xero] taxable_tax_type)" in found
    assert "NONE" not in found
    assert "fix: Use tax types of this organisation" in fix


def test_a_wrong_secret_is_named_with_its_fix(box: Sandbox, tmp_path: Path) -> None:
    ok, out = _doctor(_settings(box, tmp_path, xero_client_secret=SecretStr("wrong-secret")))
    assert not ok
    found, fix = _line(out, "granted no token")
    assert found.startswith("FAIL")
    assert "client credentials" in found and "invalid_client" in found
    assert "fix: Check XERO_CLIENT_ID and XERO_CLIENT_SECRET" in fix
    assert "wrong-secret" not in out


def test_no_xero_credentials_say_which_setting(box: Sandbox, tmp_path: Path) -> None:
    ok, out = _doctor(_settings(box, tmp_path, xero_client_id=None))
    assert not ok
    found, fix = _line(out, "XERO_CLIENT_ID is not set")
    assert found.startswith("FAIL")
    assert "kantata-sync xero login" in fix


def test_several_organisations_need_a_tenant_id(box: Sandbox, tmp_path: Path) -> None:
    second = Tenant("00000000-0000-0000-0000-00000000b001", "Other Org", "!other")
    box.xero.tenants.append(second)
    ok, out = _doctor(_settings(box, tmp_path))
    assert not ok
    found, fix = _line(out, "reach 2 organisations")
    assert "Sandbox Org 1" in found and "Other Org" in found
    assert "fix: Set XERO_TENANT_ID" in fix
    # Naming one of them is enough; naming another organisation is not.
    ok, out = _doctor(_settings(box, tmp_path, xero_tenant_id=second.tenant_id))
    assert ok, out
    assert "short code !other" in out
    ok, out = _doctor(
        _settings(box, tmp_path, xero_tenant_id="00000000-0000-0000-0000-0000000000ff")
    )
    assert not ok
    found, fix = _line(out, "is not among the organisations")
    assert "fix: Set XERO_TENANT_ID to one of them" in fix


def test_the_refresh_token_of_xero_login_is_used_and_a_dead_one_named(
    box: Sandbox, tmp_path: Path
) -> None:
    token_file = tmp_path / "refresh"
    box.xero.refresh_tokens.add("kept-refresh-token")
    token_file.write_text("kept-refresh-token\n")
    token_file.chmod(0o600)
    settings = _settings(box, tmp_path, xero_token_file=token_file)
    ok, out = _doctor(settings)
    assert ok, out
    assert "Xero granted a token (refresh token of `xero login`)" in out
    assert token_file.read_text().strip() in box.xero.refresh_tokens  # rotated and kept
    token_file.chmod(0o644)
    ok, out = _doctor(settings)
    assert not ok
    found, fix = _line(out, "readable by others")
    assert found.startswith("FAIL") and "mode 644" in found
    assert f"fix: chmod 600 {token_file}" in fix
    token_file.chmod(0o600)
    box.xero.revoke_tokens()
    ok, out = _doctor(settings)
    assert not ok
    found, fix = _line(out, "granted no token")
    assert "invalid_grant" in found
    assert "fix: Run `kantata-sync xero login` again." in fix


def test_the_doctor_command_with_xero_from_environment_variables_only(
    box: Sandbox, tmp_path: Path
) -> None:
    env = cli_env(box, tmp_path)
    del env["NOKO_TOKEN"], env["NOKO_BASE_URL"]
    env.update(
        {
            "KANTATA_SYNC_TARGET": "xero",
            "XERO_CLIENT_ID": box.xero.client_id,
            "XERO_CLIENT_SECRET": box.xero.client_secret,
            "XERO_BASE_URL": box.xero_api_url,
            "XERO_TOKEN_URL": box.xero_token_url,
            "XERO_CONNECTIONS_URL": box.xero_connections_url,
        }
    )
    Store(env["KANTATA_SYNC_DATABASE_URL"]).close()
    done = run_cli(["doctor"], env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Xero tax types exist" in done.stdout
    assert box.xero.client_secret not in done.stdout + done.stderr


# --------------------------------------------------------------------------- scopes


def _settings_offline(style: str) -> Settings:
    return Settings(kantata_sync_target="xero", xero_scopes=style)  # type: ignore[arg-type]


def test_scopes_granted_are_compared_with_the_style_set() -> None:
    granular = "accounting.invoices accounting.payments accounting.contacts accounting.settings"
    broad = "accounting.transactions accounting.contacts accounting.settings"
    assert check_scopes(_settings_offline("granular"), granular, False)[0]
    assert check_scopes(_settings_offline("broad"), broad, False)[0]
    ok, found, fix = check_scopes(_settings_offline("granular"), broad, False)
    assert not ok and "XERO_SCOPES is granular" in found and "XERO_SCOPES=broad" in fix
    ok, found, fix = check_scopes(
        _settings_offline("granular"), "accounting.invoices accounting.settings", True
    )
    assert not ok
    assert "accounting.contacts" in found and "accounting.payments" in found
    assert "xero login" in fix
    ok, found, _ = check_scopes(_settings_offline("granular"), None, False)
    assert ok and "not stated" in found


def test_the_scopes_of_a_jwt_access_token_are_read() -> None:
    claims = {"scope": ["accounting.settings", "accounting.contacts"]}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    token = f"eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln"
    assert _scope_of({"access_token": token}) == "accounting.settings accounting.contacts"
    assert _scope_of({"access_token": "opaque", "scope": "a b"}) == "a b"
    assert _scope_of({"access_token": "opaque"}) is None


def test_inactive_accounts_and_tax_types_do_not_count() -> None:
    profile = parse_profile("")
    checks = check_profile_codes(
        profile,
        [{"Code": "200", "Status": "ARCHIVED"}],
        [{"TaxType": "OUTPUT", "Status": "ACTIVE"}, {"TaxType": "NONE", "Status": "DELETED"}],
    )
    assert [ok for ok, _, _ in checks] == [False, False]
    assert "200" in checks[0][1] and "NONE" in checks[1][1]
