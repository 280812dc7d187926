"""Mapping profiles: the shipped default loads, and every invalid profile is a ProfileError
naming the file, the line and the key."""

from __future__ import annotations

import re

import pytest

from mappings.profile import (
    Profile,
    ProfileError,
    default_profile,
    default_profile_text,
    parse_profile,
)

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
    """The shipped profile parses, and its values are exactly the documented defaults."""
    profile = default_profile()
    assert profile == Profile()
    assert profile.lines.detail == "itemized"
    assert profile.lines.include_zero_amount is False
    assert profile.noko.reference == "KS-{id}"
    assert profile.currencies.allowed == ()


def test_default_profile_text_shows_every_setting() -> None:
    """Every section of the model appears in the shipped file, so operators see all keys."""
    text = default_profile_text()
    for section, model in Profile().model_dump().items():
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
    assert profile.noko.reference == "INV/{number}/{id}"
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
    assert profile.noko.reference.format(id="7", number="") == "KS{7}"


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
    assert ok.noko.company_name == "Northwind Consulting Ltd"
    assert parse_profile("", SOURCE).noko.company_name == ""
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
    assert parse_profile('[noko]\nreference = "INV#{id}"\n', SOURCE).noko.reference == "INV#{id}"
