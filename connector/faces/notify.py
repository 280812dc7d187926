"""Notifications: an optional webhook told when invoices fail or fall into conflict, and again
when they clear.

After a cycle, the invoices now `failed` or in `conflict` are compared with those the webhook
was last told about (the `notifications` table of the state file): only the differences are
sent, in one Slack-compatible message (`{"text": ...}`). A failure that is retried and fails
again is not news, and a restart does not repeat anything. A webhook that cannot be reached is
logged and tried again after the next cycle; it never fails the sync. The text holds invoice
ids, states and error messages, scrubbed of every registered secret; never a token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

from connector.faces.logs import register_secret, scrub_text
from connector.state.store import Store

PROBLEM_STATES = ("failed", "conflict")
MAX_LINES = 20
TIMEOUT_SECONDS = 10.0

Post = Callable[[str, dict[str, Any]], None]


def post_json(url: str, body: dict[str, Any]) -> None:
    """POST `body` as JSON; raises on anything but a 2xx answer. No redirects followed."""
    response = httpx.post(url, json=body, timeout=TIMEOUT_SECONDS, follow_redirects=False)
    if not 200 <= response.status_code < 300:
        raise RuntimeError(f"webhook answered HTTP {response.status_code}")


@dataclass
class Changes:
    """What the webhook has not been told yet."""

    new: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Kantata id -> (failed | conflict, why)"""
    cleared: dict[str, str] = field(default_factory=dict)
    """Kantata id -> its state now (synced, skipped, pending or gone)"""

    def __bool__(self) -> bool:
        return bool(self.new or self.cleared)


def pending_changes(store: Store) -> Changes:
    told = store.notified()
    changes = Changes()
    problems = store.invoices_with_status(*PROBLEM_STATES, limit=1_000_000)
    now = {record.kantata_id: record for record in problems}
    for kantata_id, record in now.items():
        if told.get(kantata_id) != record.status:
            changes.new[kantata_id] = (record.status, record.last_error or record.status)
    for kantata_id in told:
        if kantata_id not in now:
            current = store.get_invoice(kantata_id)
            changes.cleared[kantata_id] = current.status if current is not None else "gone"
    return changes


def message(changes: Changes) -> str:
    lines: list[str] = []
    if changes.new:
        failed = sum(1 for state, _ in changes.new.values() if state == "failed")
        conflicts = len(changes.new) - failed
        parts = [f"{failed} failed"] if failed else []
        parts += [f"{conflicts} in conflict"] if conflicts else []
        lines.append(f"kantata-sync: {' and '.join(parts)} (run `kantata-sync status`)")
        for kantata_id, (state, why) in sorted(changes.new.items(), key=_by_id)[:MAX_LINES]:
            lines.append(f"- Kantata invoice {kantata_id} {state}: {why}")
        if len(changes.new) > MAX_LINES:
            lines.append(f"- and {len(changes.new) - MAX_LINES} more")
    if changes.cleared:
        cleared = sorted(changes.cleared.items(), key=_by_id)
        lines.append(f"kantata-sync: {len(cleared)} cleared")
        for kantata_id, state in cleared[:MAX_LINES]:
            lines.append(f"- Kantata invoice {kantata_id} is {state} now")
        if len(cleared) > MAX_LINES:
            lines.append(f"- and {len(cleared) - MAX_LINES} more")
    return scrub_text("\n".join(lines))


def _by_id(item: tuple[str, Any]) -> tuple[int, str]:
    key = item[0]
    return (int(key), key) if key.isdigit() else (0, key)


def notify(store: Store, url: str | None, *, post: Post = post_json) -> bool:
    """Tell the webhook what changed since it was last told; True when something was sent.
    Never raises: a failure is logged and the same news goes out after the next cycle."""
    if not url:
        return False
    register_secret(url)  # a Slack webhook URL is its own key: never in a log line
    log = structlog.get_logger("kantata_sync.notify")
    try:
        changes = pending_changes(store)
        if not changes:
            return False
        post(url, {"text": message(changes)})
    except Exception as exc:  # noqa: BLE001 - a webhook never fails the sync
        log.warning("webhook not reached; tried again after the next cycle", error=str(exc))
        return False
    store.set_notified(
        {kantata_id: state for kantata_id, (state, _) in changes.new.items()},
        list(changes.cleared),
    )
    log.info("webhook told", new=len(changes.new), cleared=len(changes.cleared))
    return True
