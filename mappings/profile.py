"""The operator's mapping settings (a TOML profile) and their validation.

`parse_profile(text, source)` is pure; `default_profile()` reads the profile shipped inside the
package. An invalid profile raises `ProfileError` naming the file, line and key at fault.

The profile validates what is neutral: the line detail, time, the customer, the tax name, the
ledger's own settings (`[ledger]`: the reference, the project lines are grouped on, the issuer)
and the currencies. Each accounting system's section (`[noko]`, `[xero]`) is kept as written, for
that system's settings model to validate (`Profile.target_settings`, called by e.g.
`XeroSettings.from_profile`); this module imports none of them.

Profiles written before `[ledger]` existed hold its keys under `[noko]` (`reference`,
`project_name`, and `company_name` for `issuer_name`): they are read as before, with the same
result and errors naming `noko.<key>`; one setting under both names is refused.
"""

from __future__ import annotations

import copy
import re
import string
import tomllib
from collections.abc import Mapping
from importlib import resources
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from mappings.money import MoneyError, exponent_for_code


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


class LedgerSettings(_Section):
    """`[ledger]`: what the ledger document says whichever accounting system it goes to."""

    reference: str = Field(default="KS-{id}", min_length=1)
    """The invoice's reference in the accounting system: the natural key that makes a retry
    find what it created; {id} is the Kantata invoice id, {number} its user invoice number."""
    project_name: str = Field(default="{workspace}", min_length=1)
    """The project each line is booked on: {workspace} is the Kantata project title,
    {workspace_id} its id."""
    issuer_name: str = Field(default="", max_length=255)
    """The company issuing the invoices; empty: none is named."""

    @field_validator("issuer_name")
    @classmethod
    def _issuer_name_plain(cls, value: str) -> str:
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


TARGET_SECTIONS = ("noko", "xero")
"""The accounting systems' sections: kept as written, validated by each system's own model."""

LEGACY_LEDGER_KEYS = {
    "reference": "reference",
    "project_name": "project_name",
    "company_name": "issuer_name",
}
"""`[noko]` key of profiles written before `[ledger]` existed -> its `[ledger]` key."""


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


class _TargetSections:
    """The accounting systems' sections as the file wrote them, and where they were written
    (for errors naming the line). Equal when the sections are (an empty one as an absent one)."""

    def __init__(
        self,
        sections: Mapping[str, Mapping[str, Any]] | None = None,
        source: str = "<profile>",
        text: str = "",
    ) -> None:
        self.sections = {name: dict(section) for name, section in (sections or {}).items()}
        self.source = source
        self.text = text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _TargetSections):
            return NotImplemented
        return self._written() == other._written()

    def _written(self) -> dict[str, dict[str, Any]]:
        return {name: section for name, section in self.sections.items() if section}

    __hash__ = None  # type: ignore[assignment]


SectionModel = TypeVar("SectionModel", bound=BaseModel)


class Profile(_Section):
    lines: LinesSettings = LinesSettings()
    time: TimeSettings = TimeSettings()
    customer: CustomerSettings = CustomerSettings()
    tax: TaxSettings = TaxSettings()
    ledger: LedgerSettings = LedgerSettings()
    currencies: CurrencySettings = CurrencySettings()
    _targets: _TargetSections = PrivateAttr(default_factory=_TargetSections)

    @field_validator("ledger")
    @classmethod
    def _marker_survives_hashtags(
        cls, value: LedgerSettings, info: ValidationInfo
    ) -> LedgerSettings:
        time = info.data.get("time")
        if isinstance(time, TimeSettings) and time.mode == "entries" and "#" in value.reference:
            raise ValueError(
                'reference must not contain # with time.mode = "entries": Noko parses '
                "hashtags out of time entry descriptions, which end in the reference's marker"
            )
        return value

    def target_section(self, name: str) -> dict[str, Any]:
        """An accounting system's section (`[noko]`, `[xero]`) as written; empty when absent.
        Keys `[ledger]` took over from `[noko]` are not in it."""
        if name not in TARGET_SECTIONS:
            raise ValueError(f"no accounting system section [{name}] in a profile")
        return copy.deepcopy(self._targets.sections.get(name, {}))

    def target_settings(self, name: str, model: type[SectionModel]) -> SectionModel:
        """`model` validated from the section `[name]`; `ProfileError` naming the profile's
        file, the line and `name.key` of every problem."""
        section = self.target_section(name)
        try:
            return model.model_validate(section)
        except ValidationError as exc:
            targets = self._targets
            raise ProfileError(
                "; ".join(_problems(exc, targets.text, targets.source, within=(name,)))
            ) from None


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


def _problems(
    exc: ValidationError,
    text: str,
    source: str,
    *,
    within: tuple[str, ...] = (),
    renamed: Mapping[tuple[str, ...], tuple[str, ...]] | None = None,
) -> list[str]:
    """One `source: line N, key section.key: message` per error of `exc`. `within` is the
    section the validated data came from; `renamed` maps a place in the model to the place in
    the file the value was read from."""
    problems = []
    for error in exc.errors():
        loc = [*within, *(str(part) for part in error["loc"])]
        for size in (2, 1):
            place = (renamed or {}).get(tuple(loc[:size]))
            if place is not None:
                loc = [*place, *loc[size:]]
                break
        section = loc[0] if len(loc) > 1 else None
        key = loc[1] if len(loc) > 1 else loc[0] if loc else "?"
        line = _line_of(text, section, key)
        where = f"line {line}, " if line else ""
        dotted = ".".join(loc[:2])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(f"{source}: {where}key {dotted}: {message}")
    return problems


def _legacy_ledger_keys(
    data: dict[str, Any], noko: dict[str, Any], text: str, source: str
) -> tuple[dict[tuple[str, ...], tuple[str, ...]], list[str]]:
    """Move the `[ledger]` keys an old profile holds under `[noko]` into `data["ledger"]`:
    (model place -> file place of each moved key, the problems of keys set in both)."""
    renamed: dict[tuple[str, ...], tuple[str, ...]] = {}
    problems: list[str] = []
    ledger = data.setdefault("ledger", {})
    if not isinstance(ledger, dict):
        return renamed, problems  # the model names `ledger` as not a table
    for old, new in LEGACY_LEDGER_KEYS.items():
        if old not in noko:
            continue
        value = noko.pop(old)
        if new in ledger:
            line = _line_of(text, "noko", old)
            problems.append(
                f"{source}: {f'line {line}, ' if line else ''}key noko.{old}: also set as "
                f"ledger.{new}; keep only [ledger] {new} ([noko] {old} is its old place)"
            )
            continue
        ledger[new] = value
        renamed[("ledger", new)] = ("noko", old)
        if new == "reference":  # the check of the reference against time.mode
            renamed[("ledger",)] = ("noko",)
    return renamed, problems


def parse_profile(text: str, source: str = "<profile>") -> Profile:
    """Validate a TOML profile; `ProfileError` names source, line and key on any problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(
            f"{source}: {_toml_error_place(text, str(exc))}not valid TOML: {exc}"
        ) from None
    problems: list[str] = []
    targets: dict[str, dict[str, Any]] = {}
    for name in TARGET_SECTIONS:
        if name not in data:
            continue
        section = data.pop(name)
        if isinstance(section, dict):
            targets[name] = section
        else:
            line = _line_of(text, None, name)
            where = f"line {line}, " if line else ""
            problems.append(f"{source}: {where}key {name}: must be a table ([{name}])")
    renamed: dict[tuple[str, ...], tuple[str, ...]] = {}
    if "noko" in targets:
        renamed, moved_problems = _legacy_ledger_keys(data, targets["noko"], text, source)
        problems.extend(moved_problems)
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        problems.extend(_problems(exc, text, source, renamed=renamed))
    if problems:
        raise ProfileError("; ".join(problems))
    profile._targets = _TargetSections(targets, source, text)
    return profile


def default_profile_text() -> str:
    return resources.files("mappings").joinpath("profiles/default.toml").read_text("utf-8")


def default_profile() -> Profile:
    return parse_profile(default_profile_text(), "mappings/profiles/default.toml")
