"""Settings: environment variables over an optional TOML file over defaults, validated at start.

The TOML file has sections `[kantata]`, `[noko]`, `[xero]` and `[sync]`; `[kantata] token = ...` is
the same setting as `KANTATA_TOKEN`, `[sync] database_url` the same as `KANTATA_SYNC_DATABASE_URL`.
Secrets can also come from files (`KANTATA_TOKEN_FILE`, `NOKO_TOKEN_FILE`,
`XERO_CLIENT_SECRET_FILE`), for container secrets.

`KANTATA_SYNC_TARGET` (`[sync] target`) picks the accounting system the invoices go to: `noko`
(the default) or `xero`. Only the chosen one's credentials are required.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from connector.errors import ConfigError
from mappings.profile import Profile, ProfileError, default_profile, parse_profile
from mappings.targets.noko_profile import NokoSettings
from mappings.targets.xero_profile import XeroSettings

SECTION_PREFIX = {
    "kantata": "kantata_",
    "noko": "noko_",
    "xero": "xero_",
    "sync": "kantata_sync_",
}
TARGET_NAMES = {"noko": "Noko", "xero": "Xero"}
"""How reports and messages name each target."""
XERO_WORKERS = 100
"""Workers with Xero as the target: one request takes up to 50 invoices, and a batch is sent
when 50 wait in it (or every worker does). Twice a batch, so that the next batch fills while
the workers of the last one write their references back to Kantata."""
CONFIG_ENV = "KANTATA_SYNC_CONFIG"
_API_URLS = (
    "kantata_base_url",
    "noko_base_url",
    "xero_base_url",
    "xero_token_url",
    "xero_connections_url",
    "xero_authorize_url",
)
"""The settings naming an API's address: each must be an http(s) URL, and https unless it is
on loopback (or KANTATA_SYNC_ALLOW_INSECURE_HTTP)."""
_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


class Settings(BaseSettings):
    """Every setting of the connector; field names are the environment variables, lowercased."""

    # No infinite or NaN number is a setting: `KANTATA_TIMEOUT=inf` would be no timeout at all.
    model_config = SettingsConfigDict(
        extra="forbid", case_sensitive=False, frozen=True, allow_inf_nan=False
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # `load_settings` merges file and environment itself, so that precedence is explicit
        # and tests can pass an environment without the process's own leaking in.
        return (init_settings,)

    kantata_base_url: str = "https://api.mavenlink.com/api/v1"
    kantata_token: SecretStr | None = None
    kantata_token_file: Path | None = None
    kantata_max_requests_per_second: float = Field(default=10.0, gt=0)
    kantata_timeout: float = Field(default=60.0, gt=0)

    noko_base_url: str = "https://api.nokotime.com/v2"
    noko_token: SecretStr | None = None
    noko_token_file: Path | None = None
    noko_max_requests_per_second: float = Field(default=2.0, gt=0)
    noko_burst: int = Field(default=3, ge=1)
    noko_timeout: float = Field(default=60.0, gt=0)

    xero_client_id: str | None = None
    xero_client_secret: SecretStr | None = None
    xero_client_secret_file: Path | None = None
    xero_tenant_id: str | None = None
    xero_base_url: str = "https://api.xero.com/api.xro/2.0"
    xero_token_url: str = "https://identity.xero.com/connect/token"  # noqa: S105 (a URL)
    xero_connections_url: str = "https://api.xero.com/connections"
    xero_authorize_url: str = "https://login.xero.com/identity/connect/authorize"
    xero_max_requests_per_minute: int = Field(default=60, ge=1, le=10_000)
    xero_max_concurrent: int = Field(default=5, ge=1, le=64)
    xero_token_file: Path | None = None
    xero_scopes: Literal["granular", "broad"] = "granular"
    """`granular` for Xero apps created since March 2026, `broad` for older ones."""

    kantata_sync_target: Literal["noko", "xero"] = "noko"
    kantata_sync_database_url: str = "sqlite:///kantata-sync.db"
    kantata_sync_service_name: str = Field(default="noko", min_length=1)
    kantata_sync_retry_initial_delay: float = Field(default=2.0, ge=0)
    kantata_sync_retry_max_delay: float = Field(default=6 * 3600.0, gt=0)
    kantata_sync_http_max_attempts: int = Field(default=6, ge=1)
    kantata_sync_http_max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024)
    kantata_sync_interval: float = Field(default=300.0, gt=0)
    kantata_sync_reconcile_interval: float = Field(default=86400.0, ge=0)
    kantata_sync_workers: int = Field(default=8, ge=1, le=128)
    kantata_sync_lookback_seconds: float = Field(default=300.0, ge=0)
    kantata_sync_clock_skew_seconds: float = Field(default=60.0, ge=0)
    kantata_sync_mapping_profile: Path | None = None
    kantata_sync_allow_insecure_http: bool = False
    kantata_sync_log_format: Literal["auto", "json", "console"] = "auto"
    kantata_sync_log_level: Literal["debug", "info", "warning", "error"] = "info"
    kantata_sync_record_payments: bool = False
    kantata_sync_lock_wait: float = Field(default=30.0, ge=0)
    kantata_sync_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    kantata_sync_metrics_host: str = "127.0.0.1"
    kantata_sync_status_token_file: Path | None = None
    kantata_sync_webhook_url: SecretStr | None = None

    @field_validator(
        "kantata_max_requests_per_second",
        "noko_max_requests_per_second",
        "kantata_sync_retry_initial_delay",
        "kantata_sync_retry_max_delay",
        "kantata_sync_interval",
        "kantata_sync_lookback_seconds",
        "kantata_sync_clock_skew_seconds",
        "kantata_sync_lock_wait",
    )
    @classmethod
    def _finite(cls, value: float) -> float:
        # `inf` and `nan` parse as floats, but no wait, pace or window can be endless.
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number of seconds or requests, got {value}")
        return value

    @field_validator("kantata_sync_database_url")
    @classmethod
    def _persistent_database(cls, value: str) -> str:
        """The state file must outlive the process: an in-memory database forgets every push,
        and the next run would create every invoice in Noko again."""
        parts = urlsplit(value.strip())
        database = parts.path[1:] if parts.path.startswith("/") else parts.path
        query = parts.query.lower()
        if value.strip().lower().startswith("sqlite") and (
            not database
            or database == ":memory:"
            or database.startswith("file::memory:")
            or "mode=memory" in query
        ):
            raise ValueError(
                f"{value!r} is an in-memory database, which cannot persist; give a file, e.g. "
                "sqlite:////var/lib/kantata-sync/kantata-sync.db"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _defaults_of_target(cls, data: Any) -> Any:
        """Defaults that follow the target unless the operator sets them: the references
        written to Kantata are named after it (`KANTATA_SYNC_SERVICE_NAME`: `noko` or `xero`),
        and Xero gets as many workers as two of its requests take invoices (100), so that
        batches fill while the last one's references are written back (`KANTATA_SYNC_WORKERS`)."""
        if not isinstance(data, dict):
            return data
        target = data.get("kantata_sync_target")
        if not (isinstance(target, str) and target.strip().lower() == "xero"):
            return data
        defaults = {"kantata_sync_service_name": "xero", "kantata_sync_workers": XERO_WORKERS}
        return {**defaults, **data}

    @field_validator("kantata_sync_target", mode="before")
    @classmethod
    def _target_name(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("xero_client_id", "xero_tenant_id")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return value.strip()

    @field_validator("xero_tenant_id")
    @classmethod
    def _tenant_shape(cls, value: str | None) -> str | None:
        if value is not None and not _UUID.match(value):
            raise ValueError(
                f"{value!r} is not a Xero tenant id (a UUID, as `kantata-sync doctor` lists them)"
            )
        return value

    @field_validator(*_API_URLS)
    @classmethod
    def _url_shape(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("kantata_sync_webhook_url")
    @classmethod
    def _webhook_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        parts = urlsplit(value.get_secret_value().strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # The URL itself is a secret (a Slack webhook's path is its key): not repeated.
            raise ValueError("must be an http(s) URL")
        return SecretStr(value.get_secret_value().strip())

    def webhook_url(self) -> str | None:
        """Where notifications go (`KANTATA_SYNC_WEBHOOK_URL`), or None."""
        url = self.kantata_sync_webhook_url
        return url.get_secret_value() if url is not None else None

    def status_exposed(self) -> bool:
        """Whether the daemon's endpoint listens beyond loopback."""
        return not _is_loopback(self.kantata_sync_metrics_host)

    @model_validator(mode="after")
    def _https_only(self) -> Settings:
        if self.kantata_sync_allow_insecure_http:
            return self
        webhook = self.webhook_url()
        if webhook is not None:
            parts = urlsplit(webhook)
            if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
                raise ValueError(
                    "KANTATA_SYNC_WEBHOOK_URL uses plain http to a non-loopback host; use https"
                )
        for name in _API_URLS:
            url = getattr(self, name)
            parts = urlsplit(url)
            if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
                raise ValueError(
                    f"{name.upper()} uses plain http to a non-loopback host; use https "
                    "(or set KANTATA_SYNC_ALLOW_INSECURE_HTTP=true if you really mean it)"
                )
        return self

    # ------------------------------------------------------------------ secrets

    def _secret(self, value: SecretStr | None, path: Path | None, name: str) -> str:
        if value is not None and value.get_secret_value().strip():
            return value.get_secret_value().strip()
        if path is not None:
            try:
                text = path.read_text("utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
            if text:
                return text
            raise ConfigError(f"{name}_FILE: {path} is empty")
        raise ConfigError(f"{name} is not set (environment, {name}_FILE, or the config file)")

    def kantata_secret(self) -> str:
        return self._secret(self.kantata_token, self.kantata_token_file, "KANTATA_TOKEN")

    def noko_secret(self) -> str:
        return self._secret(self.noko_token, self.noko_token_file, "NOKO_TOKEN")

    @property
    def target_name(self) -> str:
        """The target as people read it: `Noko` or `Xero`."""
        return TARGET_NAMES[self.kantata_sync_target]

    def target_secret(self) -> str:
        """The secret of the chosen target (Noko's token or Xero's client secret), for the
        log redaction and the daemon's rotation check; '' when Xero runs without a secret."""
        if self.kantata_sync_target == "xero":
            secret = self.xero_secret(required=False)
            return secret.get_secret_value() if secret is not None else ""
        return self.noko_secret()

    def xero_id(self) -> str:
        if self.xero_client_id is None:
            raise ConfigError(
                "XERO_CLIENT_ID is not set (environment or [xero] client_id in the config file)"
            )
        return self.xero_client_id

    def xero_secret(self, *, required: bool = True) -> SecretStr | None:
        """XERO_CLIENT_SECRET (or the file named by XERO_CLIENT_SECRET_FILE). A custom
        connection needs it; `xero login` of a public (PKCE) app does not."""
        value = self.xero_client_secret
        given = value is not None and bool(value.get_secret_value().strip())
        if not required and not given and self.xero_client_secret_file is None:
            return None
        return SecretStr(
            self._secret(
                self.xero_client_secret, self.xero_client_secret_file, "XERO_CLIENT_SECRET"
            )
        )

    def profile(self) -> Profile:
        if self.kantata_sync_mapping_profile is None:
            return default_profile()
        path = self.kantata_sync_mapping_profile
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise ConfigError(
                f"KANTATA_SYNC_MAPPING_PROFILE: cannot read {path}: {exc.strerror}"
            ) from None
        try:
            profile = parse_profile(text, str(path))
            # Each accounting system's section is its own model's to validate; a bad key is
            # refused here, at load time, as the neutral sections' are.
            NokoSettings.from_profile(profile)
            XeroSettings.from_profile(profile)
        except ProfileError as exc:
            raise ConfigError(str(exc)) from None
        return profile


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _flatten_toml(
    data: Mapping[str, Any], source: str, origins: dict[str, str] | None = None
) -> dict[str, Any]:
    """The file's settings by field name; `origins` gets, for each, how the file spells it
    (`[sync] interval`), so that an error names the key the operator wrote."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            prefix = SECTION_PREFIX.get(key)
            if prefix is None:
                known = ", ".join(SECTION_PREFIX)
                raise ConfigError(f"{source}: unknown section [{key}] (known: {known})")
            for inner, inner_value in value.items():
                name = f"{prefix}{inner}".lower()
                out[name] = inner_value
                if origins is not None:
                    origins[name] = f"[{key}] {inner} in {source}"
        else:
            out[key.lower()] = value
            if origins is not None:
                origins[key.lower()] = f"{key} in {source} (outside any section)"
    return out


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    fields = Settings.model_fields
    return {
        key.lower(): value
        for key, value in environ.items()
        if key.lower() in fields and value != ""
    }


def load_settings(
    config_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults < TOML file (`--config` or KANTATA_SYNC_CONFIG) < environment; `ConfigError`
    with one readable line on anything invalid."""
    env = os.environ if environ is None else environ
    path = config_file or (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
    values: dict[str, Any] = {}
    # Where each value came from, as the operator wrote it: the file's `[section] key` or the
    # environment variable. An error names that, not the other source.
    origins: dict[str, str] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text("utf-8"))
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
        values.update(_flatten_toml(data, str(path), origins))
    from_env = _from_environment(env)
    values.update(from_env)
    origins.update({name: f"{name.upper()} (environment)" for name in from_env})
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = ".".join(str(part) for part in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown setting"
            if loc:
                problems.append(f"{origins.get(loc.lower(), loc.upper())}: {message}")
            else:
                # A check of several settings: its message names the setting; say where that
                # one came from.
                named = sorted(
                    (message.find(n.upper()), n) for n in origins if n.upper() in message
                )
                if named:
                    name = named[0][1]
                    message = message.replace(name.upper(), origins[name], 1)
                problems.append(message)
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
