"""Wiring: settings in, a ready engine (clients, store, profile) out. No module-level state."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from connector import __version__
from connector.faces.config import Settings
from connector.faces.logs import register_secret
from connector.http import ApiStats, RetryPolicy
from connector.kantata.client import KantataClient
from connector.state.store import Store
from connector.sync.engine import EngineSettings, SyncEngine
from connector.targets.noko.client import NokoClient
from connector.targets.noko.target import NokoTarget
from mappings.targets.noko_profile import NokoSettings

USER_AGENT = f"kantata-sync/{__version__} (+https://github.com/kantata-sync/kantata-sync)"


@dataclass
class Connector:
    settings: Settings
    store: Store
    kantata: KantataClient
    noko: NokoClient | None
    """Noko's client when Noko is the target (KANTATA_SYNC_TARGET=noko), else None."""
    engine: SyncEngine
    target_stats: ApiStats = field(default_factory=ApiStats)
    """The target's request counters (Noko's or Xero's)."""
    xero: Any = None
    """Xero's client (`XeroClient`) when Xero is the target, else None."""

    @property
    def target_name(self) -> str:
        return self.settings.target_name


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.kantata_sync_http_max_attempts,
        initial_delay=settings.kantata_sync_retry_initial_delay,
    )


@contextmanager
def open_connector(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    store: Store | None = None,
    create: bool = True,
) -> Iterator[Connector]:
    """Everything a sync needs, closed again on exit. Raises ConfigError on missing secrets;
    without `create`, StateFileError when there is no state file (nothing is created).
    With `store`, that store is used and left open (the daemon keeps one across new clients)."""
    profile = settings.profile()
    kantata_token = settings.kantata_secret()
    register_secret(kantata_token)
    noko_token = settings.noko_secret() if settings.kantata_sync_target == "noko" else None
    with contextlib.ExitStack() as closing:
        retry = retry_policy(settings)
        kantata = KantataClient(
            settings.kantata_base_url,
            kantata_token,
            rate=settings.kantata_max_requests_per_second,
            retry=retry,
            timeout=settings.kantata_timeout,
            user_agent=USER_AGENT,
            stop=stop,
            max_body=settings.kantata_sync_http_max_body_bytes,
        )
        closing.callback(kantata.close)
        noko: NokoClient | None = None
        xero: Any = None
        target: Any
        if settings.kantata_sync_target == "xero":
            # Imported here: a Noko run never loads the Xero package.
            from connector.faces.xero import build_client, counting_http
            from mappings.targets.xero_profile import XeroSettings

            stats = ApiStats()
            http = counting_http(stats, settings.xero_base_url)
            closing.callback(http.close)
            secret = settings.xero_secret(required=False)
            if secret is not None:
                register_secret(secret.get_secret_value())
            xero = build_client(settings, stats, http=http)  # ConfigError: a setting missing
            from connector.targets.xero.target import XeroTarget

            target = XeroTarget(xero, XeroSettings.from_profile(profile))
        else:
            assert noko_token is not None
            register_secret(noko_token)
            noko = NokoClient(
                settings.noko_base_url,
                noko_token,
                rate=settings.noko_max_requests_per_second,
                burst=settings.noko_burst,
                retry=retry,
                timeout=settings.noko_timeout,
                user_agent=USER_AGENT,
                stop=stop,
                max_body=settings.kantata_sync_http_max_body_bytes,
            )
            closing.callback(noko.close)
            stats = noko.stats
            target = NokoTarget(
                noko, NokoSettings.from_profile(profile), reference=profile.ledger.reference
            )
        # The state file is opened once every credential is known to be there: a missing
        # one creates no state file.
        if store is None:
            store = Store(settings.kantata_sync_database_url, create=create)
            closing.callback(store.close)
        # The accounting system the sync writes to: the engine reaches it through `Target`.
        engine = SyncEngine(
            kantata=kantata,
            target=target,
            store=store,
            profile=profile,
            settings=EngineSettings(
                service_name=settings.kantata_sync_service_name,
                workers=settings.kantata_sync_workers,
                lookback=timedelta(seconds=settings.kantata_sync_lookback_seconds),
                clock_skew=timedelta(seconds=settings.kantata_sync_clock_skew_seconds),
                retry_initial_delay=settings.kantata_sync_retry_initial_delay,
                retry_max_delay=settings.kantata_sync_retry_max_delay,
                noko_base_url=settings.noko_base_url,
                record_payments=settings.kantata_sync_record_payments,
            ),
            stop=stop,
        )
        yield Connector(settings, store, kantata, noko, engine, stats, xero)
