"""Log lines: JSON or console, exceptions included, and never a secret in either."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from connector.faces.logs import configure_logging, register_secret

TOKEN = "noko-LOGS-secret-token-77"


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def _fail_holding_the_token() -> None:
    headers = {"X-NokoToken": TOKEN, "User-Agent": "kantata-sync"}  # noqa: F841 - a local
    token_copy = f"token={TOKEN}"  # noqa: F841 - a local
    raise ValueError(f"request failed with {TOKEN}")


def _log_failure() -> None:
    log = structlog.get_logger("test").bind(run_id="r1")
    try:
        _fail_holding_the_token()
    except ValueError:
        log.exception(
            "unexpected error on one invoice",
            detail={"sent": [f"X-NokoToken: {TOKEN}"], "authorization": "Token abc"},
        )


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_an_exception_logs_no_secret_and_no_locals(
    fmt: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    register_secret(TOKEN)
    configure_logging(fmt, "info")
    _log_failure()
    err = capsys.readouterr().err
    assert "ValueError" in err
    assert "_fail_holding_the_token" in err  # the traceback is there
    assert TOKEN not in err
    assert "token_copy" not in err  # ... without the frames' local variables
    assert "Token abc" not in err
    assert "[redacted]" in err


def test_json_exception_is_data(capsys: pytest.CaptureFixture[str]) -> None:
    register_secret(TOKEN)
    configure_logging("json", "info")
    _log_failure()
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "unexpected error on one invoice"
    assert line["run_id"] == "r1"
    assert line["level"] == "error"
    (error,) = line["exception"]
    assert error["exc_type"] == "ValueError"
    assert error["exc_value"] == "request failed with [redacted]"
    assert all("locals" not in frame or not frame["locals"] for frame in error["frames"])
    assert line["detail"] == {"sent": ["X-NokoToken: [redacted]"], "authorization": "[redacted]"}


def test_json_values_without_a_json_form(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info")
    register_secret(TOKEN)
    structlog.get_logger("test").info(
        "odd values",
        error=KeyError("k"),
        keys={(1, 2): "x"},
        raw=f"X-NokoToken: {TOKEN}".encode(),
    )
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["error"] == "KeyError('k')"
    assert line["keys"] == {"(1, 2)": "x"}
    assert line["raw"] == "b'X-NokoToken: [redacted]'"
