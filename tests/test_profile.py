"""Mapping profiles: the shipped default loads, and every invalid profile is a ProfileError
naming the file, the line and the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mappings.profile import (
    LEGACY_LEDGER_KEYS,
    Profile,
    ProfileError,
    default_profile,
    default_profile_text,
    parse_profile,
)
from mappings.targets.noko_profile import NokoSettings
from mappings.targets.xero_profile import XeroSettings

SOURCE = "ops/profile.toml"


def _error(text: str) -> str:
    """The message of the ProfileError that parsing `text` raises."""
    with pytest.raises(ProfileError) as caught:
        parse_profile(text, SOURCE)
    message = str(caught.value)
    assert message.startswith(f"{SOURCE}: ")
    return message


def _assert_names(message: str, line: int, key: str) -> None:
    assert re.search(rf"\bline {line}\b", message), message
    assert f"key {key}" in message, message


def test_default_profile_loads() -> None:
    """The shipped profile parses, and its values are exactly the documented defaults, those
    of each accounting system's section too."""
    profile = default_profile()
    assert profile.model_dump() == Profile().model_dump()
    assert profile.lines.detail == "itemized"
    assert profile.lines.include_zero_amount is False
    assert profile.ledger.reference == "KS-{id}"
    assert profile.currencies.allowed == ()
    assert NokoSettings.from_profile(profile) == NokoSettings()
    assert XeroSettings.from_profile(profile) == XeroSettings()


def test_default_profile_text_shows_every_setting() -> None:
    """Every section of the model appears in the shipped file, so operators see all keys."""
    text = default_profile_text()
    sections = Profile().model_dump()
    sections["noko"] = NokoSettings().model_dump()
    sections["xero"] = XeroSettings().model_dump()
    for section, model in sections.items():
        assert f"[{section}]" in text
        for key in model:
            shown = re.search(rf"^{key}\s*=", text, re.MULTILINE) or f"[{section}.{key}]" in text
            assert shown, key


def test_custom_profile_parses() -> None:
    """A profile overriding some keys keeps the defaults of the others."""
    profile = parse_profile(
        '[lines]\ndetail = "per_task"\n[noko]\nreference = "INV/{number}/{id}"\n'
        '[currencies]\nallowed = ["USD", "JPY", "KWD"]\n',
        SOURCE,
    )
    assert profile.lines.detail == "per_task"
    assert profile.ledger.reference == "INV/{number}/{id}"
    assert profile.currencies.allowed == ("USD", "JPY", "KWD")
    assert profile.tax == Profile().tax


def test_invalid_toml_names_line_and_key() -> None:
    """A TOML syntax error names its line and the key being assigned there."""
    message = _error("[lines]\ninclude_zero_amount = true\ndetail = itemized\n")
    _assert_names(message, 3, "lines.detail")
    assert "not valid TOML" in message


def test_invalid_toml_without_a_key_names_the_line() -> None:
    """A broken table header is reported with its line number."""
    message = _error('[lines]\ndetail = "itemized"\n\n[noko\n')
    assert re.search(r"\bline 4\b", message), message


def test_unknown_key_names_line_and_key() -> None:
    """A key the model does not know is refused with its line."""
    message = _error('[lines]\ndetail = "itemized"\nzero_lines = true\n')
    _assert_names(message, 3, "lines.zero_lines")
    assert "unknown key" in message


def test_unknown_section_names_line_and_key() -> None:
    """An unknown table is refused with the line of its header."""
    message = _error('[lines]\ndetail = "itemized"\n\n[taxes]\nname = "VAT"\n')
    _assert_names(message, 4, "taxes")
    assert "unknown key" in message


def test_bad_detail_value_names_line_and_key() -> None:
    """detail must be itemized, per_kind or per_task."""
    message = _error('# comment\n[lines]\ndetail = "summary"\n')
    _assert_names(message, 3, "lines.detail")
    assert "per_kind" in message


def test_reference_without_id_names_line_and_key() -> None:
    """A reference template without {id} would give invoices the same reference."""
    message = _error('[noko]\nproject_name = "{workspace}"\nreference = "KS-{number}"\n')
    _assert_names(message, 3, "noko.reference")
    assert "{id}" in message


@pytest.mark.parametrize("reference", ["KS-{{id}}", "KS-id", "KS-{id:.1}", "KS-{id!r}"])
def test_reference_that_does_not_really_use_id_is_refused(reference: str) -> None:
    """Escaped braces, or {id} altered by a conversion or format spec, are not a real {id}."""
    message = _error(f'[noko]\nreference = "{reference}"\n')
    _assert_names(message, 2, "noko.reference")


@pytest.mark.parametrize("reference", ["KS-{id}}", "KS-{id", "KS-{id}-{"])
def test_reference_with_unbalanced_braces_is_refused(reference: str) -> None:
    """A template str.format cannot fill is refused at load time, not at the first sync."""
    message = _error(f'[noko]\nreference = "{reference}"\n')
    _assert_names(message, 2, "noko.reference")


def test_reference_with_brackets_is_refused() -> None:
    """Brackets delimit expense markers, so a reference may not contain them."""
    message = _error('[noko]\nreference = "[KS-{id}]"\n')
    _assert_names(message, 2, "noko.reference")


def test_reference_with_escaped_braces_around_id_is_accepted() -> None:
    """Literal braces are fine when {id} is also a real placeholder."""
    profile = parse_profile('[noko]\nreference = "KS{{{id}}}"\n', SOURCE)
    assert profile.ledger.reference.format(id="7", number="") == "KS{7}"


def test_unknown_placeholder_in_project_name_names_line_and_key() -> None:
    """project_name accepts only {workspace} and {workspace_id}."""
    message = _error('[noko]\nproject_name = "{client}"\n')
    _assert_names(message, 2, "noko.project_name")
    assert "{client}" in message


def test_unknown_placeholder_in_tax_name_names_line_and_key() -> None:
    """The tax name accepts only {rate}."""
    message = _error('[tax]\nname = "VAT {percent}%"\n')
    _assert_names(message, 2, "tax.name")
    assert "{percent}" in message


def test_unknown_currency_in_allowed_names_line_and_key() -> None:
    """An allowed currency that is not ISO 4217 is refused, naming the code."""
    message = _error('[currencies]\nallowed = ["USD", "XXX"]\n')
    _assert_names(message, 2, "currencies.allowed")
    assert "XXX" in message


def test_every_problem_is_reported_at_once() -> None:
    """Several invalid keys give one error listing each with its own line."""
    message = _error('[lines]\ndetail = "all"\n[customer]\nsource = "crm"\n')
    _assert_names(message, 2, "lines.detail")
    _assert_names(message, 4, "customer.source")


def test_customer_table_names_the_company() -> None:
    """The operator's customer table wins over the recipient and the workspace title."""
    from datetime import UTC, date, datetime
    from decimal import Decimal

    from mappings.kantata import KantataInvoice, KantataUser, KantataWorkspace
    from mappings.to_ledger import to_ledger

    invoice = KantataInvoice(
        id="7",
        created_at=None,
        updated_at=datetime(2024, 1, 1, tzinfo=UTC),
        invoice_date=date(2024, 1, 1),
        due_date=None,
        payment_schedule=30,
        draft=False,
        status="new",
        title="Invoice #7",
        user_invoice_number="7",
        user_invoice_title="",
        purchase_order="",
        project_code="",
        message="",
        tax_rate=Decimal(0),
        balance_in_cents=None,
        currency="USD",
        exponent=2,
        currency_symbol="$",
        recipient=KantataUser("9", "Jane Lead", "jane@client.example"),
        workspaces=(KantataWorkspace("53", "Harbour"),),
        lines=(),
        external_references=(),
        source_fingerprint="x",
    )
    by_email = parse_profile('[customer.names]\n"jane@client.example" = "Client Co"\n', SOURCE)
    by_workspace = parse_profile('[customer.names]\n"53" = "Harbour Ltd"\n', SOURCE)
    assert to_ledger(invoice, by_email).customer_name == "Client Co"
    assert to_ledger(invoice, by_workspace).customer_name == "Harbour Ltd"
    assert to_ledger(invoice, parse_profile("", SOURCE)).customer_name == "Jane Lead"


def test_issuing_company_is_validated() -> None:
    """`[noko] company_name`: one line, not blank, at most 255 characters; trimmed."""
    ok = parse_profile('[noko]\ncompany_name = "  Northwind Consulting Ltd "\n', SOURCE)
    assert ok.ledger.issuer_name == "Northwind Consulting Ltd"
    assert parse_profile("", SOURCE).ledger.issuer_name == ""
    for bad, why in (
        ('"   "', "must not be blank"),
        ('"Northwind\\nLtd"', "one line of text"),
        ('"' + "N" * 256 + '"', "at most 255 characters"),
    ):
        with pytest.raises(ProfileError) as caught:
            parse_profile(f"[noko]\ncompany_name = {bad}\n", SOURCE)
        assert "line 2, key noko.company_name" in str(caught.value)
        assert why in str(caught.value)


def test_time_entries_need_an_increment_noko_accepts_and_no_hash_in_the_reference() -> None:
    """With time entries, the billing increment is one Noko's docs accept for a project (the
    connector creates projects with it), and the reference has no "#" (Noko parses hashtags
    out of entry descriptions, which end in the marker); amounts mode is unaffected."""
    entries = '[time]\nmode = "entries"\n'
    assert parse_profile(entries + "billing_increment = 6\n", SOURCE).time.billing_increment == 6
    with pytest.raises(ProfileError) as caught:
        parse_profile(entries + "billing_increment = 45\n", SOURCE)
    assert "line 3, key time.billing_increment" in str(caught.value)
    assert "1, 5, 6, 10, 15, 20, 30, 60" in str(caught.value)
    assert parse_profile("[time]\nbilling_increment = 45\n", SOURCE).time.billing_increment == 45
    with pytest.raises(ProfileError) as caught:
        parse_profile(entries + '[noko]\nreference = "INV#{id}"\n', SOURCE)
    assert "key noko: reference must not contain #" in str(caught.value)
    assert parse_profile('[noko]\nreference = "INV#{id}"\n', SOURCE).ledger.reference == "INV#{id}"


OLD_NOKO = (
    '[noko]\nreference = "INV/{number}/{id}"\nproject_name = "{workspace_id}"\n'
    'company_name = "Northwind Consulting Ltd"\n'
)
NEW_LEDGER = (
    '[ledger]\nreference = "INV/{number}/{id}"\nproject_name = "{workspace_id}"\n'
    'issuer_name = "Northwind Consulting Ltd"\n'
)


def test_ledger_section_holds_reference_project_and_issuer() -> None:
    """`[ledger]` holds the reference, the project name and the issuer; a profile that holds
    them under `[noko]` (written before `[ledger]` existed) gives the same profile, and the
    moved keys are not left in the Noko section."""
    new = parse_profile(NEW_LEDGER, SOURCE)
    old = parse_profile(OLD_NOKO, SOURCE)
    assert new.ledger.reference == "INV/{number}/{id}"
    assert new.ledger.project_name == "{workspace_id}"
    assert new.ledger.issuer_name == "Northwind Consulting Ltd"
    assert old == new
    assert old.target_section("noko") == {}
    assert NokoSettings.from_profile(old) == NokoSettings()
    assert set(LEGACY_LEDGER_KEYS) == {"reference", "project_name", "company_name"}


def test_ledger_errors_name_the_ledger_keys() -> None:
    """The checks the `[noko]` keys had hold for `[ledger]`, named as written."""
    message = _error('[ledger]\nproject_name = "{workspace}"\nreference = "KS-{number}"\n')
    _assert_names(message, 3, "ledger.reference")
    assert "{id}" in message
    _assert_names(_error('[ledger]\nproject_name = "{client}"\n'), 2, "ledger.project_name")
    message = _error('[ledger]\nissuer_name = "  "\n')
    _assert_names(message, 2, "ledger.issuer_name")
    assert "must not be blank" in message
    message = _error('[time]\nmode = "entries"\n[ledger]\nreference = "INV#{id}"\n')
    assert "key ledger: reference must not contain #" in message


def test_a_setting_under_both_its_names_is_refused() -> None:
    """`[noko] reference` and `[ledger] reference` together: which one wins would be a guess."""
    message = _error('[ledger]\nreference = "KS-{id}"\n[noko]\nreference = "INV-{id}"\n')
    _assert_names(message, 4, "noko.reference")
    assert "also set as ledger.reference" in message
    message = _error('[ledger]\nissuer_name = "A"\n[noko]\ncompany_name = "B"\n')
    _assert_names(message, 4, "noko.company_name")


def test_accounting_system_sections_are_validated_by_their_own_models() -> None:
    """The profile keeps `[noko]` and `[xero]` as written; each system's settings model
    refuses a bad key, naming the file, the line and the key."""
    profile = parse_profile('[lines]\ndetail = "itemized"\n[xero]\nsales_account = "!!"\n', SOURCE)
    assert profile.target_section("xero") == {"sales_account": "!!"}
    with pytest.raises(ProfileError) as caught:
        XeroSettings.from_profile(profile)
    message = str(caught.value)
    assert message.startswith(f"{SOURCE}: ")
    _assert_names(message, 4, "xero.sales_account")
    profile = parse_profile('[noko]\nreference = "KS-{id}"\nburst = 3\n', SOURCE)
    with pytest.raises(ProfileError) as caught:
        NokoSettings.from_profile(profile)
    _assert_names(str(caught.value), 3, "noko.burst")
    assert "unknown key" in str(caught.value)
    _assert_names(_error('noko = "yes"\n'), 1, "noko")
    with pytest.raises(ValueError, match="no accounting system section"):
        profile.target_section("ledger")


def test_loading_the_settings_refuses_a_bad_key_of_an_accounting_system_section(
    tmp_path: Path,
) -> None:
    """The connector's settings load the profile and have each accounting system's model
    check its section then, so a bad `[xero]` or `[noko]` key stops the start, named."""
    from connector.errors import ConfigError
    from connector.faces.config import load_settings

    path = tmp_path / "profile.toml"
    for text, line, key in (
        (
            '[ledger]\nreference = "KS-{id}"\n[xero]\nsales_account = "!!"\n',
            4,
            "xero.sales_account",
        ),
        ('[noko]\nreference = "KS-{id}"\nrefrence = "KS-{id}"\n', 3, "noko.refrence"),
    ):
        path.write_text(text)
        settings = load_settings(None, environ={"KANTATA_SYNC_MAPPING_PROFILE": str(path)})
        with pytest.raises(ConfigError) as caught:
            settings.profile()
        assert str(caught.value).startswith(f"{path}: ")
        _assert_names(str(caught.value), line, key)
    path.write_text(OLD_NOKO)
    settings = load_settings(None, environ={"KANTATA_SYNC_MAPPING_PROFILE": str(path)})
    assert settings.profile() == parse_profile(NEW_LEDGER)
