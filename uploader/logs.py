"""Log output: human-readable lines by default, one JSON object per line for aggregators.

Standard ``logging`` throughout; this module only formats. A log call adds
structured fields with ``extra=`` (``event``, ``batch``, ``attempt``,
``wait_s``, ``error``, ...); the JSON formatter writes every such field next
to ``time``, ``level``, ``logger`` and ``message``, so a log aggregator can
filter on ``event="retry"`` or ``batch=12`` without parsing the message.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["JsonFormatter", "configure_logging", "json_line"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _doc(created: float, level: str, event: str, message: str, fields: dict[str, Any]) -> str:
    doc: dict[str, Any] = {
        "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
        "level": level,
        "event": event,
        "message": message,
    }
    doc.update({k: v for k, v in fields.items() if v is not None})
    return json.dumps(doc, ensure_ascii=False, default=str)


def json_line(level: str, event: str, message: str, **fields: Any) -> str:
    """One JSON log line (for the few lines written outside ``logging``: progress, summary)."""
    return _doc(time.time(), level, event, message, fields)


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
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
