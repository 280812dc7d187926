"""Only a total Kantata agrees with goes to Noko, and a wrong total never stays there.

Against the sandbox, in process: non-billable time is not billed; an invoice whose
`balance_in_cents` differs from its lines is not pushed and fails naming both figures; a create
whose Noko totals differ from the ledger is removed from Noko again before it fails.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connector.faces.app import open_connector
from sandbox import Sandbox, generate
from tests.e2e import check_books, settings_for


def _invoice(box: Sandbox, **extra: Any) -> int:
    workspace = box.kantata.add_workspace("Harbour redesign", currency="USD")
    fields: dict[str, Any] = {
        "workspace_ids": [workspace],
        "currency": "USD",
        "tax_rate": "10",
        "lines": [
            {"kind": "time_entry", "time_in_minutes": 90, "rate_in_cents": 15000, "taxable": True},
            {"kind": "expense", "amount_in_cents": 4250, "notes": "Train", "taxable": False},
        ],
    }
    fields.update(extra)
    return box.kantata.add_invoice(**fields)


def _noko(box: Sandbox, kid: int) -> list[dict[str, Any]]:
    return [i for i in box.noko.state()["invoices"] if i["reference"] == f"KS-{kid}"]


def test_non_billable_time_is_not_billed(box: Sandbox, tmp_path: Path) -> None:
    """A non-billable entry at a real rate is no line: Noko's total is Kantata's balance."""
    kid = _invoice(
        box,
        lines=[
            {"kind": "time_entry", "time_in_minutes": 60, "rate_in_cents": 12000, "taxable": True},
            {
                "kind": "time_entry",
                "time_in_minutes": 120,
                "rate_in_cents": 12000,
                "taxable": True,
                "billable": False,
                "notes": "Internal review",
            },
        ],
    )
    assert box.kantata.invoice_state(kid)["balance_in_cents"] == 13200  # 120.00 + 10 % tax
    with open_connector(settings_for(box, tmp_path)) as c:
        assert c.engine.run_cycle().failed == {}
    (noko,) = _noko(box, kid)
    assert Decimal(str(noko["total_amount"])) == Decimal("132.00")
    assert noko["expenses"] == 1
    assert not any("Internal review" in e["description"] for e in box.noko.state()["expenses"])


def test_balance_one_minor_unit_off_is_not_pushed_and_names_both(
    box: Sandbox, tmp_path: Path
) -> None:
    """Kantata's balance one cent above its lines: nothing in Noko, a mapping failure naming
    both figures with the currency, in the report's failures; the others sync."""
    good = _invoice(box)
    off = _invoice(box)
    total = box.kantata.invoice_totals(off)["total"]
    box.kantata.update_invoice(off, balance_in_cents=total + 1)
    with open_connector(settings_for(box, tmp_path)) as c:
        result = c.engine.run_cycle()
        assert set(result.failed) == {str(off)}
        record = c.store.get_invoice(str(off))
        assert record is not None
        assert (record.status, record.error_kind) == ("failed", "mapping")
        assert record.target_id is None
        message = record.last_error or ""
        assert "Kantata states 290.01 USD (balance_in_cents)" in message
        assert "but its lines add up to 290.00 USD (with 22.50 USD tax at 10%)" in message
        # Nothing changed in Kantata: the next cycle does not push it either.
        c.engine.run_cycle()
    assert _noko(box, off) == []
    assert len(_noko(box, good)) == 1
    (reference,) = [r for r in box.kantata.external_references(off) if r["service_name"] == "noko"]
    assert reference["status"] == "failed"
    assert "290.01 USD" in reference["external_message"]


def test_generated_balance_off_fails_alone(box: Sandbox, tmp_path: Path) -> None:
    """`generate(balance_off=1)`: that one invoice fails naming both figures; every other
    eligible invoice (non-billable entries included) is in Noko with Kantata's total."""
    generate(box.kantata, seed=23, invoices=40, balance_off=1)
    state = box.kantata.state()["invoices"]
    off = [str(i["id"]) for i in state if i["balance_in_cents"] != i["totals"]["total"]]
    assert len(off) == 1
    assert any(
        line["kind"] == "time_entry" and line["billable"] is False and line["rate_in_cents"] > 0
        for i in state
        for line in i["lines"]
    ), "the generated data has non-billable time at a real rate"
    with open_connector(settings_for(box, tmp_path)) as c:
        result = c.engine.run_cycle()
    assert sorted(result.failed) == off
    assert "(balance_in_cents) but its lines add up to" in result.failed[off[0]]
    books = check_books(box)
    assert [p for p in books.problems if not p.startswith(f"{off[0]}:")] == []
    assert _noko(box, int(off[0])) == []


def test_external_link_is_the_share_url(box: Sandbox, tmp_path: Path) -> None:
    """The Kantata reference links to the page a person can open (`share_url`), never to
    Noko's token-protected API `url`."""
    kid = _invoice(box)
    with open_connector(settings_for(box, tmp_path)) as c:
        assert c.engine.run_cycle().failed == {}
        record = c.store.get_invoice(str(kid))
    (noko,) = _noko(box, kid)
    assert noko["share_url"] != noko["url"]
    (reference,) = [r for r in box.kantata.external_references(kid) if r["service_name"] == "noko"]
    assert reference["external_link"] == noko["share_url"]
    assert record is not None and record.target_link == noko["share_url"]


def test_a_create_answer_without_share_url_gets_its_link_from_the_listing(
    box: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Noko's create answer without `share_url`: the reference gets no link at first (not the
    API address), and the same cycle's read of Noko's changes fills in the share_url."""
    from connector.targets.noko.client import NokoClient

    real = NokoClient.create_invoice

    def without_share_url(self: NokoClient, payload: Any) -> dict[str, Any]:
        answer = real(self, payload)
        answer.pop("share_url", None)
        return answer

    monkeypatch.setattr(NokoClient, "create_invoice", without_share_url)
    kid = _invoice(box)
    written: list[Any] = []
    with open_connector(settings_for(box, tmp_path)) as c:
        original = c.engine.kantata.write_external_reference

        def spy(kantata_id: str, reference: Any, **kwargs: Any) -> Any:
            written.append(reference.external_link)
            return original(kantata_id, reference, **kwargs)

        monkeypatch.setattr(c.engine.kantata, "write_external_reference", spy)
        assert c.engine.run_cycle().failed == {}
    (noko,) = _noko(box, kid)
    assert written == [None, noko["share_url"]]
    (reference,) = [r for r in box.kantata.external_references(kid) if r["service_name"] == "noko"]
    assert reference["external_link"] == noko["share_url"]


def test_issuer_in_company_name_and_customer_in_recipient_details(
    box: Sandbox, tmp_path: Path
) -> None:
    """Noko's `company_name` is the issuer (the profile's), the customer goes to
    `recipient_details` with the recipient's email."""
    client = box.kantata.add_user("Jane Lead", "jane@harbour.example")
    kid = _invoice(box, recipient_id=client)
    profile = tmp_path / "profile.toml"
    profile.write_text('[noko]\ncompany_name = "Northwind Consulting Ltd"\n')
    settings = settings_for(box, tmp_path, kantata_sync_mapping_profile=str(profile))
    with open_connector(settings) as c:
        assert c.engine.run_cycle().failed == {}
    (noko,) = _noko(box, kid)
    assert noko["company_name"] == "Northwind Consulting Ltd"
    assert noko["recipient_details"] == "Jane Lead\njane@harbour.example"


def test_a_create_with_a_wrong_noko_total_is_removed_again(box: Sandbox, tmp_path: Path) -> None:
    """Noko computing one cent more than Kantata: the invoice just created is deleted again
    with the expenses made for it, and the failure names both figures; no wrong total stays
    in the books, and nothing is pushed again until Kantata changes or an operator retries."""
    kid = _invoice(box)
    other = _invoice(box)
    box.noko.skew_totals(1, [f"KS-{kid}"])
    with open_connector(settings_for(box, tmp_path)) as c:
        result = c.engine.run_cycle()
        assert set(result.failed) == {str(kid)}
        record = c.store.get_invoice(str(kid))
        assert record is not None
        assert (record.status, record.error_kind) == ("failed", "verify")
        assert record.target_id is None
        message = record.last_error or ""
        assert "Noko's total_amount is 290.01 USD but Kantata's total is 290.00 USD" in message
        assert "were deleted again" in message
        writes = len(box.noko.state()["stats"]["writes"])
        c.engine.run_cycle()
        assert len(box.noko.state()["stats"]["writes"]) == writes
    assert _noko(box, kid) == []
    assert len(_noko(box, other)) == 1
    leftovers = [e for e in box.noko.state()["expenses"] if f"[KS-{kid}/" in e["description"]]
    assert leftovers == []
    (reference,) = [r for r in box.kantata.external_references(kid) if r["service_name"] == "noko"]
    assert reference["status"] == "failed"
    assert "290.01 USD" in reference["external_message"]
    assert "290.00 USD" in reference["external_message"]


def _entries_settings(box: Sandbox, tmp_path: Path, increment: int) -> Any:
    profile = tmp_path / "entries.toml"
    profile.write_text(f'[time]\nmode = "entries"\nbilling_increment = {increment}\n')
    return settings_for(box, tmp_path, kantata_sync_mapping_profile=str(profile))


def _time_invoice(box: Sandbox, project: str, minutes: tuple[int, ...], note: str = "") -> int:
    workspace = box.kantata.add_workspace(project, currency="USD")
    return box.kantata.add_invoice(
        workspace_ids=[workspace],
        currency="USD",
        tax_rate="10",
        lines=[
            {
                "kind": "time_entry",
                "time_in_minutes": m,
                "rate_in_cents": 13333,
                "taxable": True,
                "notes": note,
            }
            for m in minutes
        ],
    )


def test_projects_created_for_time_entries_get_the_profile_increment(
    box: Sandbox, tmp_path: Path
) -> None:
    """With time entries, a project the connector creates gets the profile's billing
    increment (30), not the account's default (15): the entries keep their minutes."""
    kid = _time_invoice(box, "Atlas build", (30, 90))
    with open_connector(_entries_settings(box, tmp_path, 30)) as c:
        assert c.engine.run_cycle().failed == {}
    (project,) = [p for p in box.noko.state()["projects"] if p["name"] == "Atlas build"]
    assert project["billing_increment"] == 30
    (noko,) = _noko(box, kid)
    assert noko["entries"] == 2
    total = Decimal(box.kantata.invoice_state(kid)["balance_in_cents"]) / 100
    assert Decimal(str(noko["total_amount"])) == total


def test_an_existing_project_with_another_increment_is_not_used_for_entries(
    box: Sandbox, tmp_path: Path
) -> None:
    """A Noko project that rounds to 60 minutes would turn a 90-minute entry into 120: the
    invoice fails before anything is created, naming the project and both increments."""
    box.noko.add_project("Hourly client", billing_increment=60)
    kid = _time_invoice(box, "Hourly client", (90,))
    with open_connector(_entries_settings(box, tmp_path, 15)) as c:
        result = c.engine.run_cycle()
    assert set(result.failed) == {str(kid)}
    message = result.failed[str(kid)]
    assert "'Hourly client' rounds time up to multiples of 60 minutes" in message
    assert "time.billing_increment is 15" in message
    state = box.noko.state()
    assert _noko(box, kid) == []
    assert [e for e in state["entries"] if f"[KS-{kid}/" in e["description"]] == []
    assert [e for e in state["expenses"] if f"[KS-{kid}/" in e["description"]] == []


def test_entry_descriptions_survive_hashtag_parsing(box: Sandbox, tmp_path: Path) -> None:
    """Kantata notes with hashtags: Noko parses "#tags" out of entry descriptions, so the
    connector sends none; its entries match their plan, and an update keeps them."""
    kid = _time_invoice(box, "Tagged work", (60, 30), note="Fix #123 for #design review")
    with open_connector(_entries_settings(box, tmp_path, 15)) as c:
        assert c.engine.run_cycle().failed == {}
        entries = [e for e in box.noko.state()["entries"] if f"[KS-{kid}/" in e["description"]]
        assert len(entries) == 2
        assert all(e["tags"] == [] for e in entries)
        assert all("\uff03123" in e["description"] for e in entries)
        before = sorted(e["id"] for e in entries)
        box.kantata.update_invoice(kid, message="Revised")
        result = c.engine.run_cycle()
        assert result.failed == {}
        assert result.counts["updated"] == 1
    after = sorted(
        e["id"] for e in box.noko.state()["entries"] if f"[KS-{kid}/" in e["description"]
    )
    assert after == before
    (noko,) = _noko(box, kid)
    assert noko["entries"] == 2


def test_a_create_answer_without_totals_is_checked_by_one_read_not_deleted(
    box: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer that leaves the totals out proves nothing wrong: the invoice is read once and
    verified from that, and stays."""
    from connector.targets.noko.client import NokoClient

    real = NokoClient.create_invoice

    def without_totals(self: NokoClient, payload: Any) -> dict[str, Any]:
        answer = real(self, payload)
        answer.pop("total_amount", None)
        answer.pop("tax_total_amount", None)
        return answer

    monkeypatch.setattr(NokoClient, "create_invoice", without_totals)
    kid = _invoice(box)
    with open_connector(settings_for(box, tmp_path)) as c:
        assert c.engine.run_cycle().failed == {}
        record = c.store.get_invoice(str(kid))
        assert record is not None and record.status == "synced"
    assert len(_noko(box, kid)) == 1


def test_entries_pushed_with_hashtags_by_an_earlier_release_are_kept(
    box: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries an earlier release sent with a "#" (which Noko parsed away) still match their
    plan: an update after the upgrade keeps them instead of replacing them."""
    import mappings.targets.noko as to_noko

    kid = _time_invoice(box, "Legacy tags", (60,), note="Sprint #12")
    with open_connector(_entries_settings(box, tmp_path, 15)) as c:
        monkeypatch.setattr(to_noko, "_no_hashtags", lambda text: text)  # the earlier release
        assert c.engine.run_cycle().failed == {}
        (before,) = [e for e in box.noko.state()["entries"] if f"[KS-{kid}/" in e["description"]]
        assert before["description"].startswith("Time 1:00 h at 133.33/h: Sprint 12 ")
        monkeypatch.undo()
        box.kantata.update_invoice(kid, message="Revised")
        result = c.engine.run_cycle()
        assert result.failed == {}
    (after,) = [e for e in box.noko.state()["entries"] if f"[KS-{kid}/" in e["description"]]
    assert after["id"] == before["id"]
