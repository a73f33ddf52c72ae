"""Log output: human-readable lines by default, one JSON object per line for aggregators.

Standard ``logging`` throughout; this module only formats. A log call adds
structured fields with ``extra=`` (``event``, ``batch``, ``attempt``,
``wait_s``, ``error``, ...); the JSON formatter writes every such field next
to ``time``, ``level``, ``logger`` and ``message``, so a log aggregator can
filter on ``event="retry"`` or ``batch=12`` without parsing the message.

Everything this process prints through here is redacted (``redact.py``):
messages, their fields and tracebacks, chained exceptions included (an
aiohttp exception may quote a request header or a URL). ``protect`` adds the
token of every settings tree loaded (``settings.load_settings`` calls it), the
one piece of process state here, like the logging configuration itself;
``print_exception`` is how a command prints a traceback (``--debug``), and
uncaught exceptions in the main thread, other threads and ``__del__`` go the
same way once ``configure_logging`` ran (unless a host had set its own hooks).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

from uploader.redact import Redactor

__all__ = [
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "format_exception",
    "json_line",
    "print_exception",
    "protect",
    "redact",
]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


# Token -> its redactor; the first one also removes any Bearer/Authorization credential.
_redactors: dict[str, Redactor] = {"": Redactor(None)}


def protect(token: str | None) -> None:
    """From now on, no piece of ``token`` is in anything printed through this module."""
    if token and token not in _redactors:
        _redactors[token] = Redactor(token)


def redact(text: str) -> str:
    """``text`` without any credential or piece of a protected token."""
    for redactor in list(_redactors.values()):
        text = redactor(text)
    return text


def format_exception(exc: BaseException) -> str:
    """The traceback of ``exc`` and of every exception chained to it, redacted."""
    return redact("".join(traceback.format_exception(exc)))


def print_exception(exc: BaseException, file: TextIO | None = None) -> None:
    """Print the redacted traceback of ``exc`` (stderr by default)."""
    print(format_exception(exc), end="", file=file or sys.stderr, flush=True)


def _doc(created: float, level: str, event: str, message: str, fields: dict[str, Any]) -> str:
    doc: dict[str, Any] = {
        "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
        "level": level,
        "event": event,
        "message": redact(message),
    }
    doc.update({k: _clean(v) for k, v in fields.items() if v is not None})
    return json.dumps(doc, ensure_ascii=False, default=lambda v: redact(str(v)))


def _clean(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


def json_line(level: str, event: str, message: str, **fields: Any) -> str:
    """One JSON log line (for the few lines written outside ``logging``: progress, summary)."""
    return _doc(time.time(), level, event, message, fields)


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` lines, redacted whole (message, traceback and stack)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "event", "message", ...extra fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        event = str(fields.pop("event", "log"))
        fields["logger"] = record.name
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return _doc(record.created, record.levelname.lower(), event, record.getMessage(), fields)


def configure_logging(level: int, log_format: str = "text", stream: TextIO | None = None) -> None:
    """Route the root logger to ``stream`` (stderr) as text or JSON lines, replacing handlers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Only in place of Python's own hooks: a host (pytest, an embedding program) keeps its.
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _excepthook
    # threading.__excepthook__ (3.10+) is missing from the stubs of older mypy releases
    if threading.excepthook is getattr(threading, "__excepthook__", None):
        threading.excepthook = _thread_excepthook
    if sys.unraisablehook is sys.__unraisablehook__:
        sys.unraisablehook = _unraisablehook


def _excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    print_exception(exc.with_traceback(tb))


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or isinstance(args.exc_value, SystemExit):
        return
    name = args.thread.name if args.thread is not None else "?"
    print(f"Exception in thread {name}:", file=sys.stderr)
    print_exception(args.exc_value)


def _unraisablehook(args: Any) -> None:
    where = f"{args.err_msg or 'Exception ignored in'}: {args.object!r}"
    print(redact(where), file=sys.stderr)
    if args.exc_value is not None:
        print_exception(args.exc_value)
