"""Wiring: settings in, a ready engine (clients, store, profile) out. No module-level state."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from connector import __version__
from connector.faces.config import Settings
from connector.faces.logs import register_secret
from connector.http import RetryPolicy
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
    noko: NokoClient
    engine: SyncEngine


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
    noko_token = settings.noko_secret()
    register_secret(kantata_token)
    register_secret(noko_token)
    own_store = store is None
    store = store if store is not None else Store(settings.kantata_sync_database_url, create=create)
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
    # The accounting system the sync writes to: the engine reaches it through `Target`.
    target = NokoTarget(
        noko, NokoSettings.from_profile(profile), reference=profile.ledger.reference
    )
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
    try:
        yield Connector(settings, store, kantata, noko, engine)
    finally:
        kantata.close()
        noko.close()
        if own_store:
            store.close()
