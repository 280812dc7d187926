"""The daemon's cycle: the connector in use, new clients when a token file changes, health and
notifications around each cycle.

Token files (`KANTATA_TOKEN_FILE`, `NOKO_TOKEN_FILE`) are read again before every cycle and at
once on SIGHUP (when a cycle is running, as soon as it ends). When a token changed, new clients
for the APIs take over from the next request on; the state file stays open. A token file that
cannot be read leaves the token in use in place, with an error in the log. Tokens given as
variables (`KANTATA_TOKEN`) cannot change while the process runs.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import structlog

from connector.errors import ApiError, ConfigError, LockHeldError, StateFileError
from connector.faces.app import Connector, open_connector
from connector.faces.config import Settings
from connector.faces.logs import register_secret
from connector.faces.notify import notify
from connector.faces.observe import DaemonHealth, Metrics, StatsBook
from connector.state.store import Store
from connector.sync.engine import CycleResult
from connector.sync.reconcile import reconcile_if_due

Opener = Callable[..., AbstractContextManager[Connector]]


class Daemon:
    """What `kantata-sync run` keeps between cycles."""

    def __init__(
        self,
        settings: Settings,
        *,
        stop: threading.Event,
        health: DaemonHealth,
        metrics: Metrics | None = None,
        opener: Opener = open_connector,
    ) -> None:
        self.settings = settings
        self.stop = stop
        self.health = health
        self.metrics = metrics
        self._opener = opener
        self._log = structlog.get_logger("kantata_sync.daemon")
        self._lock = threading.Lock()  # held by a cycle, and while clients are replaced
        self._tokens = self._read_tokens()
        self.store = Store(settings.kantata_sync_database_url)
        self._stack = contextlib.ExitStack()
        try:
            self.connector = self._open(self._stack)
        except BaseException:
            self.store.close()
            raise
        self.stats = StatsBook(self._stats_of(self.connector))
        url = settings.webhook_url()
        if url:
            register_secret(url)  # a Slack webhook URL is its own key

    # ------------------------------------------------------------------ clients

    def _read_tokens(self) -> tuple[str, str]:
        return self.settings.kantata_secret(), self.settings.target_secret()

    @staticmethod
    def _stats_of(connector: Connector) -> dict[str, Any]:
        target = connector.settings.kantata_sync_target
        return {"kantata": connector.kantata.stats, target: connector.target_stats}

    def _open(self, stack: contextlib.ExitStack) -> Connector:
        connector = stack.enter_context(
            self._opener(self.settings, stop=self.stop, store=self.store)
        )
        connector.engine.on_progress = self.health.progress
        if self.metrics is not None:
            for api, stats in self._stats_of(connector).items():
                stats.observer = self.metrics.observer(api, self.health)
        return connector

    def reload_tokens(self, trigger: str) -> list[str]:
        """Read the token files again; replace the clients when a token changed. Returns the
        APIs whose token changed. Waits for a running cycle to end."""
        with self._lock:
            return self._reload(trigger)

    def reload_in_background(self) -> None:
        """For the SIGHUP handler, which must not wait for a running cycle."""
        threading.Thread(
            target=self.reload_tokens, args=("SIGHUP",), name="reload", daemon=True
        ).start()

    def _reload(self, trigger: str) -> list[str]:
        try:
            tokens = self._read_tokens()
        except ConfigError as exc:
            self._log.error(
                "token file could not be read; the tokens in use stay",
                error=str(exc),
                trigger=trigger,
            )
            return []
        changed = [
            api
            for api, old, new in zip(
                ("kantata", self.settings.kantata_sync_target), self._tokens, tokens, strict=True
            )
            if old != new
        ]
        if not changed:
            if trigger == "SIGHUP":
                files = [
                    name
                    for name, path in (
                        ("KANTATA_TOKEN_FILE", self.settings.kantata_token_file),
                        ("NOKO_TOKEN_FILE", self.settings.noko_token_file),
                        ("XERO_CLIENT_SECRET_FILE", self.settings.xero_client_secret_file),
                    )
                    if path is not None
                ]
                if files:
                    self._log.info("token files read again; unchanged", files=files)
                else:
                    self._log.info("no token file to read again: the tokens come from variables")
            return []
        stack = contextlib.ExitStack()
        try:
            connector = self._open(stack)
        except ConfigError as exc:
            stack.close()
            self._log.error("new token not taken into use", error=str(exc), trigger=trigger)
            return []
        old, self._stack = self._stack, stack
        self.connector = connector
        self._tokens = tokens
        self.stats.replace(self._stats_of(connector))
        old.close()
        self._log.info("token changed; new clients in use", apis=changed, trigger=trigger)
        return changed

    # ------------------------------------------------------------------ cycles

    def cycle(self) -> CycleResult | None:
        """One cycle of the daemon: tokens read again, the cycle, its health, the webhook."""
        with self._lock:
            self._reload("cycle")
            connector = self.connector
            self.health.cycle_started()
            result = None
            try:
                with connector.store.writer(wait=0):
                    connector.store.close_stale_runs()
                    result = connector.engine.run_cycle(kind="sync")
                    if (
                        result.outcome == "ok"
                        and result.limit_reached is None
                        and not self.stop.is_set()
                    ):
                        self._scheduled_reconcile(connector)
                    notify(connector.store, self.settings.webhook_url())
            except LockHeldError as exc:
                self._log.warning("cycle skipped", reason=str(exc))
            except StateFileError as exc:  # a full disk, say: the next cycle tries again
                self._log.error("cycle stopped by the state file", reason=str(exc))
                self.health.record("aborted", 0.0, str(exc))
                return None
            finally:
                if result is not None:
                    self.health.record(result.final_outcome, result.duration, result.error)
                else:
                    self.health.cycle_ended()
            return result

    def _scheduled_reconcile(self, connector: Connector) -> None:
        """The daemon's reconcile, once per KANTATA_SYNC_RECONCILE_INTERVAL: Noko invoices
        deleted by hand become conflicts in `status`; Kantata invoices deleted after their push
        lose their Noko invoice as for a cancellation. A failure is logged, and it runs again
        next cycle."""
        try:
            outcome = reconcile_if_due(
                connector.engine, self.settings.kantata_sync_reconcile_interval
            )
        except ApiError as exc:
            self._log.warning("scheduled reconcile failed; tried again next cycle", error=str(exc))
            return
        if outcome is not None:
            self._log.info(
                "scheduled reconcile",
                differences=len(outcome.differences),
                repaired=len(outcome.repaired),
                still_failing=len(outcome.still_failing),
            )

    def close(self) -> None:
        with self._lock:
            try:
                self._stack.close()
            finally:
                self.store.close()
