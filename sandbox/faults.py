"""Fault injection for the fake APIs: configuration and a seeded, thread-safe injector.

Every request that a `FaultConfig` covers draws the same fixed number of random numbers from
one `random.Random(seed)`, whatever the outcome, so a client that sends the same sequence of
requests sees the same sequence of faults on every run.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from decimal import Decimal
from typing import Any

__all__ = ["Fault", "FaultConfig", "FaultInjector", "RateLimiter"]


@dataclass
class FaultConfig:
    """What goes wrong, and how often, on one fake server (all rates are fractions 0..1)."""

    seed: int = 0
    rate_429: float = 0.0
    rate_5xx: float = 0.0
    latency_ms: float = 0.0
    timeout_rate: float = 0.0
    timeout_sleep_s: float = 5.0
    timeout_after_commit: bool = False  # writes: apply, then sleep (default: sleep, then apply)
    drop_after_commit_rate: float = 0.0
    retry_after: bool = True
    only_paths: tuple[str, ...] = field(default=())
    auth_fail_after: int = -1
    """After this many requests (counted from when the faults were set), every request answers
    401 as for a revoked token, until the faults change (-1: never)."""
    echo_token_offset: int = -1
    """Every request answers 422 with an error message that repeats the request's token after
    this many characters of text, as a careless server might (-1: never)."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> FaultConfig:
        """Build from a JSON object (unknown keys are a ValueError, missing ones default)."""
        if not data:
            return cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key == "only_paths":
                if isinstance(value, str):
                    value = (value,)
                if not isinstance(value, list | tuple) or not all(
                    isinstance(p, str) for p in value
                ):
                    raise ValueError("only_paths must be a list of path prefixes")
                values[key] = tuple(value)
            elif key in ("retry_after", "timeout_after_commit"):
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false")
                values[key] = value
            elif key in ("seed", "auth_fail_after", "echo_token_offset"):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"{key} must be an integer")
                values[key] = value
            else:
                if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
                    raise ValueError(f"{key} must be a number")
                number = float(value)
                is_rate = key.startswith("rate_") or key.endswith("_rate")
                if number < 0 or (is_rate and number > 1):
                    raise ValueError(f"{key} out of range: {value}")
                values[key] = number
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        data = asdict(self)
        data["only_paths"] = list(self.only_paths)
        return data

    @property
    def active(self) -> bool:
        """True when this configuration can change any response."""
        return any(
            (
                self.rate_429 > 0,
                self.rate_5xx > 0,
                self.latency_ms > 0,
                self.timeout_rate > 0,
                self.drop_after_commit_rate > 0,
                self.auth_fail_after >= 0,
                self.echo_token_offset >= 0,
            )
        )


@dataclass(frozen=True)
class Fault:
    """What the injector decided for one request."""

    delay_s: float = 0.0
    sleep_after_s: float = 0.0
    status: int | None = None
    retry_after: bool = False
    drop_after_commit: bool = False
    timeout: bool = False
    echo_token_offset: int | None = None
    """Answer 422 with the request's token in the message, after this many characters."""

    @property
    def kind(self) -> str | None:
        """A short name for stats: 429, 500, 502, 503, timeout, drop, or None."""
        if self.status is not None:
            return str(self.status)
        if self.echo_token_offset is not None:
            return "echo-token"
        if self.drop_after_commit:
            return "drop"
        if self.timeout:
            return "timeout"
        return None


NO_FAULT = Fault()
_STATUSES_5XX = (500, 502, 503)


class FaultInjector:
    """Decides, per request, which fault (if any) to inject; safe to call from many threads."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = config or FaultConfig()
        self._rng = random.Random(self._config.seed)
        self._counted = 0

    @property
    def config(self) -> FaultConfig:
        """The configuration in force."""
        return self._config

    def set_config(self, config: FaultConfig | None) -> None:
        """Replace the configuration and restart its random sequence from the seed."""
        with self._lock:
            self._config = config or FaultConfig()
            self._rng = random.Random(self._config.seed)
            self._counted = 0

    def applies_to(self, *paths: str) -> bool:
        """Whether the `only_paths` prefixes cover the request path (any of its spellings)."""
        prefixes = self._config.only_paths
        return not prefixes or any(path.startswith(prefixes) for path in paths)

    def decide(self, path: str, *, creating: bool, full_path: str | None = None) -> Fault:
        """Draw the fault for one request; `creating` marks writes that may be dropped.

        `path` is relative to the API's base path (`/invoices`); `only_paths` may name it that
        way or by `full_path` (`/v2/invoices`).
        """
        config = self._config
        if not config.active or not self.applies_to(path, full_path or path):
            return NO_FAULT
        if config.echo_token_offset >= 0:
            return Fault(echo_token_offset=config.echo_token_offset)
        if config.auth_fail_after >= 0:
            with self._lock:
                self._counted += 1
                counted = self._counted
            if counted > config.auth_fail_after:
                return Fault(status=401)
        with self._lock:
            rng = self._rng
            r_timeout, r_429, r_5xx, r_kind, r_retry, r_drop = (rng.random() for _ in range(6))
        delay = config.latency_ms / 1000.0
        timeout = r_timeout < config.timeout_rate
        if timeout:
            delay += config.timeout_sleep_s
        if r_429 < config.rate_429:
            return Fault(
                delay_s=delay,
                status=429,
                retry_after=config.retry_after and r_retry < 0.5,
                timeout=timeout,
            )
        if r_5xx < config.rate_5xx:
            status = _STATUSES_5XX[min(int(r_kind * 3), 2)]
            return Fault(delay_s=delay, status=status, timeout=timeout)
        drop = creating and r_drop < config.drop_after_commit_rate
        if not (delay or drop or timeout):
            return NO_FAULT
        if timeout and creating and config.timeout_after_commit:
            # The write is applied at once; only its answer comes too late.
            return Fault(
                delay_s=delay - config.timeout_sleep_s,
                sleep_after_s=config.timeout_sleep_s,
                drop_after_commit=drop,
                timeout=timeout,
            )
        return Fault(delay_s=delay, drop_after_commit=drop, timeout=timeout)


class RateLimiter:
    """Noko's published limit: `rate` requests a second per client, `burst` more slowed down.

    A generic cell-rate algorithm per client key: a request that would have to wait no more than
    `burst` intervals is delayed until its slot; one that would wait longer is refused (429)
    without taking a slot.
    """

    def __init__(self, rate: float, burst: int = 5) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(0, burst)
        self._interval = 1.0 / rate
        self._tat: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, now: float) -> float | None:
        """Seconds to wait before serving this request, or None when it must get a 429."""
        with self._lock:
            tat = max(self._tat.get(key, now), now)
            wait = tat - now
            if wait > self.burst * self._interval + 1e-9:
                return None
            self._tat[key] = tat + self._interval
            return wait
