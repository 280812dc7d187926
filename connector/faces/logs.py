"""Logging: structlog to stderr, readable on a terminal and JSON lines everywhere else.

Every line of a cycle carries `run_id`; lines about one invoice carry `kantata_invoice_id` and,
once it exists, `noko_invoice_id` (bound with `structlog.contextvars`). A last processor removes
anything that looks like a credential, whatever a caller passed in (every fragment of a
registered secret, `connector.http.text`), and writes control characters out visibly.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO, cast

import msgspec
import structlog
from rich.console import Console
from rich.text import Text

from connector.http import text

_SECRET_KEYS = re.compile(r"(token|secret|password|authorization|x-nokotoken)", re.IGNORECASE)


def register_secret(value: str) -> None:
    """Make sure this value, and any fragment of it, never reaches a log line."""
    text.register_secret(value)


def scrub_text(text: str) -> str:
    """`text` with every registered secret replaced (for text that leaves the process)."""
    return str(_scrub(None, text))


def _redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Runs last before rendering: the exception, already text or a dict, is scrubbed too."""
    for key in list(event_dict):
        event_dict[key] = _scrub(key, event_dict[key])
    return event_dict


def _scrub(key: Any, value: Any) -> Any:
    """`value` with every registered secret replaced; anything under a key that names a
    credential replaced whole. Into nested dicts and lists (a traceback's frames)."""
    if isinstance(key, str) and _SECRET_KEYS.search(key):
        return "[redacted]"
    if isinstance(value, bytes | bytearray):
        value = repr(value)  # as text, so that a secret in it is found (JSON has no bytes)
    if isinstance(value, str):
        # Every fragment of a secret removed; control characters (terminal escapes from an
        # API's answer) written out visibly. Newlines stay: a traceback on a console.
        return text.neutralise(text.redact(value), newlines=True)
    if isinstance(value, dict):
        return {k: _scrub(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(None, v) for v in value]
    return value


def _log_value(value: Any) -> Any:
    """A value JSON has no form for, as structlog's own fallback writes it."""
    describe = getattr(value, "__structlog__", None)
    return describe() if callable(describe) else repr(value)


_LOG_ENCODER = msgspec.json.Encoder(enc_hook=_log_value)


def _dumps(event_dict: Any, **kwargs: Any) -> str:
    """One JSON line, by msgspec (in C); what it cannot write (keys that are not text, say)
    goes through the standard library as before."""
    try:
        return _LOG_ENCODER.encode(event_dict).decode()
    except (TypeError, ValueError, msgspec.EncodeError):
        return json.dumps(event_dict, **kwargs)


_stderr_console: Console | None = None


def stderr_console() -> Console:
    """The one rich console on stderr: the progress bar draws on it and, on a terminal, log
    lines print through it, so that a log line lands above a live bar instead of after it."""
    global _stderr_console
    if _stderr_console is None:
        _stderr_console = Console(stderr=True)
    return _stderr_console


class ConsoleFile:
    """A file for structlog's printer that hands each complete line to a rich console (which
    clears and redraws a live progress bar around it)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._partial += text
            *lines, self._partial = self._partial.split("\n")
            for line in lines:
                self.console.print(Text.from_ansi(line), soft_wrap=True, highlight=False)
        return len(text)

    def flush(self) -> None:
        """Lines are handed over whole as they end; nothing is held back."""


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto",
    level: str = "info",
    *,
    console: Console | None = None,
) -> None:
    """Configure structlog once per process; logs go to stderr so stdout stays for output.

    On a terminal (or with `console` given), lines go through the shared rich console."""
    if console is None and sys.stderr.isatty():
        console = stderr_console()
    terminal = console.is_terminal if console is not None else sys.stderr.isatty()
    use_console = fmt == "console" or (fmt == "auto" and terminal)
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=terminal)
        if use_console
        else structlog.processors.JSONRenderer(serializer=_dumps)
    )
    # Exceptions become data (JSON) or text (console) before the secrets are scrubbed, and
    # without the frames' local variables: a frame holding request headers would otherwise
    # print a token.
    exceptions: Any = (
        structlog.processors.format_exc_info
        if use_console
        else structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
    )
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        stamp,
        exceptions,
        _redact,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(
            file=cast(TextIO, ConsoleFile(console)) if console is not None else sys.stderr
        ),
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(renderer, [stamp, exceptions, _redact], use_console)


class _StandardHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler this module puts on the root logger (replaced on reconfiguration)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # the stderr of now (tests swap it), as structlog's lines
        super().emit(record)


def _route_standard_logging(renderer: Any, chain: list[Any], use_console: bool) -> None:
    """Libraries that use the standard logging module (APScheduler, httpx): warnings and up,
    rendered by the same structlog processors, so that a JSON stream holds only JSON lines and
    their secrets are scrubbed the same way. The logger's name goes in `logger`."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.stdlib.ExtraAdder(),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *chain,
            renderer,
        ],
    )
    handler = _StandardHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StandardHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
