"""The engine reaches the accounting system through `connector.targets.base.Target`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connector.faces.app import open_connector
from connector.sync.engine import SyncEngine
from connector.targets.base import Target
from connector.targets.noko.target import NokoTarget
from sandbox import Sandbox, generate
from tests.e2e import settings_for


class _Client:
    """Records what NokoTarget asks of Noko's client."""

    def __init__(self) -> None:
        self.listed: list[dict[str, Any]] = []

    def list_invoices(
        self,
        params: Mapping[str, Any],
        *,
        on_server_time: Callable[[datetime | None], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        self.listed.append(dict(params))
        return iter([{"id": 1, "reference": "KS-1"}])

    def get_invoice(self, invoice_id: int) -> dict[str, Any] | None:
        return {"id": invoice_id} if invoice_id == 7 else None


def _target() -> tuple[NokoTarget, _Client]:
    client = _Client()
    return NokoTarget(client), client  # type: ignore[arg-type]


def test_noko_target_reads_through_the_client() -> None:
    target, client = _target()
    as_target: Target = target
    # Answers in the neutral form: the id as text, `paid` from Noko's state.
    assert list(as_target.find("KS-")) == [{"id": "1", "reference": "KS-1", "paid": False}]
    list(as_target.find(""))
    list(as_target.changes_since(None))
    list(as_target.changes_since(datetime(2024, 3, 1, 10, 0, 5, 900_000, tzinfo=UTC)))
    # Noko's reference filter narrows the listing; no filter at all without a prefix; the
    # changes' lower bound is whole seconds in UTC, the fraction dropped (the window widens).
    assert client.listed == [
        {"reference": "KS-"},
        {},
        {},
        {"updated_from": "2024-03-01T10:00:05Z"},
    ]
    assert as_target.get("7") == {"id": "7", "paid": False}
    assert as_target.get("8") is None
    assert as_target.get("not-a-noko-id") is None
    with pytest.raises(ValueError, match="timezone-aware"):
        list(as_target.changes_since(datetime(2024, 3, 1)))


def test_noko_target_link_is_the_share_url_never_the_api_url() -> None:
    target, _ = _target()
    assert target.link({"share_url": "https://x.example/s/1", "url": "https://api/1"}) == (
        "https://x.example/s/1"
    )
    assert target.link({"url": "https://api.example/invoices/1"}) is None
    assert target.link({"share_url": "javascript:alert(1)"}) is None


def test_engine_reads_changes_and_lists_through_the_target(box: Sandbox, tmp_path: Path) -> None:
    """The engine built by the wiring holds the target; its reads go through the interface."""
    generate(box.kantata, seed=5, invoices=3)
    with open_connector(settings_for(box, tmp_path)) as c:
        assert isinstance(c.engine.target, NokoTarget)
        # No Noko pusher beside the target: every write goes through the interface.
        assert not hasattr(c.engine, "pusher")
        calls: list[tuple[str, Any]] = []
        real = c.engine.target

        class Spy:
            def find(self, prefix: str) -> Iterator[dict[str, Any]]:
                calls.append(("find", prefix))
                return real.find(prefix)

            def changes_since(
                self,
                since: datetime | None,
                *,
                on_server_time: Callable[[datetime | None], None] | None = None,
            ) -> Iterator[dict[str, Any]]:
                calls.append(("changes", since))
                return real.changes_since(since, on_server_time=on_server_time)

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        engine = SyncEngine(
            kantata=c.kantata,
            target=Spy(),  # type: ignore[arg-type]
            store=c.store,
            profile=c.engine.profile,
            settings=c.engine.settings,
        )
        assert engine.run_cycle().exit_code == 0
        # A new state file: the connector's invoices are listed once by the reference's
        # prefix before anything is created; then the changes are read from the start.
        assert calls == [("find", "KS-"), ("changes", None)]
        calls.clear()
        assert engine.run_cycle().exit_code == 0
        ((kind, since),) = calls
        assert kind == "changes"
        assert isinstance(since, datetime)


def test_noko_target_owner_marker_and_line_drift() -> None:
    target, _ = _target()
    ours = {"reference": "KS-5", "footer": "Thanks\n[KS-5/invoice]"}
    assert target.carries_marker(ours, "KS-5")
    assert not target.carries_marker({"reference": "KS-5", "footer": "Thanks"}, "KS-5")
    assert not target.carries_marker(ours, "KS-6")
    pushed = ["KS-5/1", "KS-5/2", "entry:KS-5/3"]
    assert target.line_drift({"expenses": 2, "entries": 1}, pushed) == []
    assert target.line_drift({}, pushed) == []  # an answer without counts shows no drift
    assert target.line_drift({"expenses": 3, "entries": 0}, pushed) == [
        "3 expenses, pushed 2",
        "0 time entries, pushed 1",
    ]
