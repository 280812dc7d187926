"""Text from outside (API error bodies) is made safe in one place, `connector.http.text.clean`:
secrets removed before anything is cut, terminal escapes neutralised."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import respx
import structlog

from connector.errors import ApiError
from connector.faces.logs import configure_logging
from connector.http import ApiTransport, RetryPolicy
from connector.http.text import FRAGMENT, clean, neutralise, redact
from sandbox import FaultConfig, Sandbox, generate
from tests.e2e import cli_env, run_cli

pytestmark = pytest.mark.e2e  # the CLI in a subprocess against the sandbox

TOKEN = "tok_9f8e7d6c5b4a39281706f5e4d3c2b1a0"  # 36 characters
# Random-looking tokens (32 characters), so that no fragment matches ordinary text by chance.
KANTATA_SECRET = "Kq7Zp2Lx9Wv4Ns8Rt3Bm6Yc1Hd5Gf0Je"
NOKO_SECRET = "Nz4Tq8Xw2Pk6Lm0Rv9Cs3Bd7Hf1Gj5Ya"


def _leaks(text: str, token: str = TOKEN) -> list[str]:
    return [
        token[i : i + FRAGMENT]
        for i in range(len(token) - FRAGMENT + 1)
        if token[i : i + FRAGMENT] in text
    ]


@pytest.mark.parametrize("offset", range(0, 251))
def test_clean_removes_a_token_wherever_the_cut_falls(offset: int) -> None:
    body = "x" * offset + TOKEN + " and more text after it"
    assert _leaks(clean(body, 200, secrets=[TOKEN])) == []


def test_fragments_of_a_token_are_removed_too() -> None:
    assert _leaks(redact(f"echo {TOKEN[3:14]} / {TOKEN[-9:]}", [TOKEN])) == []
    assert redact("nothing to see", [TOKEN]) == "nothing to see"


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url="https://api.example.test", assert_all_called=False) as mock:
        yield mock


def _transport() -> ApiTransport:
    return ApiTransport(
        "noko",
        "https://api.example.test",
        {"X-NokoToken": TOKEN, "User-Agent": "t"},
        rate=1000,
        burst=10,
        timeout=5.0,
        retry=RetryPolicy(max_attempts=1, initial_delay=0),
        sleep=lambda _s: None,
    )


def test_error_bodies_echoing_the_token_at_any_offset(router: respx.MockRouter) -> None:
    """Offsets 0 to 250, JSON and plain bodies: no fragment of 8 characters in the error."""
    transport = _transport()
    try:
        for offset in range(0, 251):
            text = "y" * offset + TOKEN + " rest"
            router.get("/json").respond(422, json={"message": text})
            router.get("/plain").respond(422, text=text)
            for path in ("/json", "/plain"):
                with pytest.raises(ApiError) as info:
                    transport.request_json("GET", path)
                assert _leaks(str(info.value)) == [], (offset, path)
    finally:
        transport.close()


def test_terminal_escapes_are_neutralised(router: respx.MockRouter) -> None:
    evil = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\x9b1m\rline\u202eevil"
    out = clean(evil)
    assert not any(ch in out for ch in "\x1b\x07\x9b\r\u202e")
    assert "\\x1b" in out
    assert "\n" in neutralise("a\nb", newlines=True)
    router.get("/e").respond(400, json={"message": evil})
    transport = _transport()
    try:
        with pytest.raises(ApiError) as info:
            transport.request_json("GET", "/e")
    finally:
        transport.close()
    assert "\x1b" not in str(info.value) and "\x07" not in str(info.value)


def test_console_logs_carry_no_raw_escape(capsys: pytest.CaptureFixture[str]) -> None:
    saved = structlog.get_config()
    try:
        configure_logging("console", "info")
        structlog.get_logger("t").warning("api said", error="\x1b[2Jcleared\x1b]0;title\x07")
    finally:
        structlog.configure(**saved)  # later tests must not write to this capture
    err = capsys.readouterr().err
    assert "cleared" in err
    assert "\x1b[2J" not in err and "\x07" not in err


def test_stored_escapes_never_reach_status_or_show(tmp_path: Path) -> None:
    """A state file written before (or by anything) holding escapes: `status` and `show`
    print them neutralised."""
    with Sandbox() as box:
        generate(box.kantata, seed=61, invoices=3, draft_rate=0, cancelled_rate=0)
        env = cli_env(box, tmp_path)
        assert run_cli(["sync"], env, tmp_path).returncode == 0
        kantata_id = str(box.kantata.state()["invoices"][0]["id"])
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute(
            "UPDATE invoices SET status='failed', error_kind='permanent', last_error=? "
            "WHERE kantata_id=?",
            ("Noko said \x1b]0;owned\x07\x1b[2J gone", kantata_id),
        )
        db.execute(
            "INSERT INTO invoice_events (kantata_id, run_id, at, event, detail) "
            "VALUES (?, 'r', '2026-01-01 00:00:00', 'failed', ?)",
            (kantata_id, "\x1b[31mred\x1b[0m"),
        )
    for args in (["status"], ["status", "--json"], ["show", kantata_id]):
        done = run_cli(args, env, tmp_path)
        assert "owned" in done.stdout or "red" in done.stdout, args
        assert "\x1b" not in done.stdout and "\x07" not in done.stdout, args


@pytest.mark.parametrize("offset", [0, 120, 185, 195, 199, 230, 250])
def test_no_token_fragment_anywhere_after_echoing_errors(tmp_path: Path, offset: int) -> None:
    """Noko refuses every invoice with a message echoing its token: the state file, the logs,
    the report (table and JSON) and Kantata's references hold no fragment of either token."""
    with Sandbox() as box:
        box.kantata.add_token(KANTATA_SECRET)
        box.noko.token = NOKO_SECRET
        env = cli_env(box, tmp_path, KANTATA_TOKEN=KANTATA_SECRET, NOKO_TOKEN=NOKO_SECRET)
        # A first sync with nothing to do: the state file is not new when the invoices come,
        # so the create itself (not the look-up a new state file makes first) meets the echo.
        assert run_cli(["sync"], env, tmp_path).returncode == 0
        generate(box.kantata, seed=62, invoices=3, draft_rate=0, cancelled_rate=0)
        box.kantata.touch([int(inv["id"]) for inv in box.kantata.state()["invoices"]])
        box.noko.set_faults(FaultConfig(echo_token_offset=offset, only_paths=("/v2/invoices",)))
        done = run_cli(["sync"], env, tmp_path)
        assert done.returncode == 1, done.stdout + done.stderr
        table = run_cli(["status"], env, tmp_path)
        as_json = run_cli(["status", "--json"], env, tmp_path)
        report = json.loads(as_json.stdout)
        assert report["counts"]["failed"] == 3
        kantata = json.dumps(box.kantata.state(), default=str)
    failed_refs = kantata.count('"failed"')
    assert failed_refs >= 1
    database = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    places = {
        "sync output": done.stdout + done.stderr,
        "status": table.stdout + table.stderr,
        "status --json": as_json.stdout,
        "state file": database.decode("latin-1"),
        "Kantata": kantata,
    }
    for where, text in places.items():
        for token in (NOKO_SECRET, KANTATA_SECRET):
            assert _leaks(text, token) == [], (where, offset)


@pytest.mark.parametrize("spaces", [65536 - 20, 65536 - 9, 65536 - 4, 200_000])
def test_a_huge_body_is_cut_first_and_still_leaks_nothing(spaces: int) -> None:
    """Whitespace collapses, so a token far into a body can land inside the shown text: the
    early cut of a huge body never leaves a fragment behind."""
    out = clean(" " * spaces + TOKEN + " tail", 200, secrets=[TOKEN])
    assert _leaks(out) == []
