"""The operator's mapping settings (a TOML profile) and their validation.

`parse_profile(text, source)` is pure; `default_profile()` reads the profile shipped inside the
package. An invalid profile raises `ProfileError` naming the file, line and key at fault.
"""

from __future__ import annotations

import re
import string
import tomllib
from importlib import resources
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from mappings.money import MoneyError, exponent_for_code
from mappings.targets.xero_profile import XeroSettings


class ProfileError(ValueError):
    """A mapping profile that cannot be used."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LinesSettings(_Section):
    detail: Literal["itemized", "per_kind", "per_task"] = "itemized"
    include_zero_amount: bool = False


NOKO_BILLING_INCREMENTS = (1, 5, 6, 10, 15, 20, 30, 60)
"""The values Noko's docs accept for a project's `billing_increment`."""


class TimeSettings(_Section):
    mode: Literal["amounts", "entries"] = "amounts"
    billing_increment: int = Field(default=15, ge=1, le=1440)
    """Minutes: the billing increment of the Noko projects the connector books time on, and
    that the projects it creates get (with `mode = "entries"`)."""

    @field_validator("billing_increment")
    @classmethod
    def _noko_accepts(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("mode") == "entries" and value not in NOKO_BILLING_INCREMENTS:
            raise ValueError(
                'with mode = "entries" it must be one Noko accepts for a project: '
                + ", ".join(str(v) for v in NOKO_BILLING_INCREMENTS)
            )
        return value


class CustomerSettings(_Section):
    source: Literal["recipient", "workspace"] = "recipient"
    fallback: str = Field(default="Unknown customer", min_length=1)
    names: dict[str, str] = Field(default_factory=dict)
    """Operator table: Kantata workspace id, recipient email or recipient id -> company name."""

    @field_validator("names")
    @classmethod
    def _names_not_blank(cls, value: dict[str, str]) -> dict[str, str]:
        for key, name in value.items():
            if not key.strip() or not name.strip():
                raise ValueError(f"entry {key!r} = {name!r}: keys and names must not be blank")
        return value


class TaxSettings(_Section):
    name: str = Field(default="Tax {rate}%", min_length=1)

    @field_validator("name")
    @classmethod
    def _name_placeholders(cls, value: str) -> str:
        _check_placeholders(value, {"rate"})
        return value


class NokoSettings(_Section):
    project_name: str = Field(default="{workspace}", min_length=1)
    reference: str = Field(default="KS-{id}", min_length=1)
    company_name: str = Field(default="", max_length=255)
    """The company issuing the invoices (Noko's `company_name`); empty: none is named."""

    @field_validator("company_name")
    @classmethod
    def _company_name_plain(cls, value: str) -> str:
        if value and not value.strip():
            raise ValueError("must not be blank; leave the key out to name no issuing company")
        if any(ch < " " or ch == "\x7f" for ch in value):
            raise ValueError("must be one line of text, without control characters")
        return value.strip()

    @field_validator("reference")
    @classmethod
    def _reference_has_id(cls, value: str) -> str:
        if "id" not in _check_placeholders(value, {"id", "number"}):
            raise ValueError("must contain {id} so that every Kantata invoice gets its own")
        if "[" in value or "]" in value:
            raise ValueError("must not contain [ or ]: they delimit the expense markers")
        return value

    @field_validator("project_name")
    @classmethod
    def _project_placeholders(cls, value: str) -> str:
        _check_placeholders(value, {"workspace", "workspace_id"})
        return value


class CurrencySettings(_Section):
    allowed: tuple[str, ...] = ()

    @field_validator("allowed")
    @classmethod
    def _known_codes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for code in value:
            try:
                exponent_for_code(code)
            except MoneyError:
                raise ValueError(f"unknown ISO 4217 currency {code!r}") from None
        return value


class Profile(_Section):
    lines: LinesSettings = LinesSettings()
    time: TimeSettings = TimeSettings()
    customer: CustomerSettings = CustomerSettings()
    tax: TaxSettings = TaxSettings()
    noko: NokoSettings = NokoSettings()
    currencies: CurrencySettings = CurrencySettings()
    xero: XeroSettings = XeroSettings()

    @field_validator("noko")
    @classmethod
    def _marker_survives_hashtags(cls, value: NokoSettings, info: ValidationInfo) -> NokoSettings:
        time = info.data.get("time")
        if isinstance(time, TimeSettings) and time.mode == "entries" and "#" in value.reference:
            raise ValueError(
                'reference must not contain # with time.mode = "entries": Noko parses '
                "hashtags out of time entry descriptions, which end in the reference's marker"
            )
        return value


def _check_placeholders(template: str, allowed: set[str]) -> set[str]:
    """The placeholders `str.format` will fill in `template` (`{{` and `}}` are literal braces);
    `ValueError` for a malformed template, an unknown name, or a conversion or format spec."""
    try:
        fields = [
            (name, conversion, spec)
            for _, name, spec, conversion in string.Formatter().parse(template)
            if name is not None
        ]
    except ValueError as exc:
        raise ValueError(f"not a valid template ({exc}); write {{{{ and }}}} for braces") from None
    names: set[str] = set()
    for name, conversion, spec in fields:
        if name not in allowed or conversion or spec:
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ValueError(
                f"unknown placeholder {{{shown}}}; allowed: "
                + ", ".join(f"{{{a}}}" for a in sorted(allowed))
            )
        names.add(name)
    return names


def _line_of(text: str, section: str | None, key: str) -> int | None:
    """Line number of `key` inside `[section]` (or the top level), for error messages."""
    current: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.match(r"^\[([^\]]+)\]", stripped)
        if header:
            current = header.group(1).strip()
            if current == (section if section is not None else key) and key == current:
                return number
            continue
        if current == section and re.match(rf"^{re.escape(key)}\s*=", stripped):
            return number
    return None


def _toml_error_place(text: str, message: str) -> str:
    """`line N, key section.key: ` for a TOML syntax error, as far as the line shows it."""
    found = re.search(r"\(at line (\d+), column \d+\)", message)
    if found is None:
        return ""
    line_no = int(found.group(1))
    lines = text.splitlines()
    section: str | None = None
    for line in lines[: line_no - 1]:
        header = re.match(r"^\s*\[+([^\]]+)\]", line)
        if header:
            section = header.group(1).strip()
    key = None
    if line_no <= len(lines):
        assignment = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*=", lines[line_no - 1])
        if assignment:
            key = assignment.group(1)
    if key is None:
        return f"line {line_no}: "
    return f"line {line_no}, key {section + '.' if section else ''}{key}: "


def parse_profile(text: str, source: str = "<profile>") -> Profile:
    """Validate a TOML profile; `ProfileError` names source, line and key on any problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(
            f"{source}: {_toml_error_place(text, str(exc))}not valid TOML: {exc}"
        ) from None
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]
            section = loc[0] if len(loc) > 1 else None
            key = loc[1] if len(loc) > 1 else loc[0] if loc else "?"
            line = _line_of(text, section, key)
            where = f"line {line}, " if line else ""
            dotted = ".".join(loc[:2])
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key"
            problems.append(f"{source}: {where}key {dotted}: {message}")
        raise ProfileError("; ".join(problems)) from None


def default_profile_text() -> str:
    return resources.files("mappings").joinpath("profiles/default.toml").read_text("utf-8")


def default_profile() -> Profile:
    return parse_profile(default_profile_text(), "mappings/profiles/default.toml")
