"""GitHub Actions workflow commands: annotations on rejected input lines, and the failure.

``::warning file=INPUT,line=N::reason (id X)`` puts a rejected row's reason
next to its line in the job's annotations; at most ``ANNOTATION_CAP`` are
printed (GitHub itself shows only 10 warnings per step), then one line counts
the rest. A run that does not exit 0 adds one ``::error::``. Only the line,
the id and the reason of a row are ever printed, never its values: they are
personal data. Pure: returns lines, the caller prints them on stdout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from uploader.jobsummary import RejectLine

__all__ = ["ANNOTATION_CAP", "escape_data", "escape_property", "workflow_commands"]

ANNOTATION_CAP = 10


def escape_data(text: str) -> str:
    """The message part of a workflow command (GitHub's escaping: % CR LF)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A property value (``file=``, ``title=``): also ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_commands(
    report: Mapping[str, Any],
    rejects: Iterable[RejectLine],
    *,
    input_file: str | None,
    cap: int = ANNOTATION_CAP,
) -> list[str]:
    """The annotation lines of one run (``input_file`` None: stdin, no file property)."""
    out: list[str] = []
    total = 0
    where = f"file={escape_property(input_file)}," if input_file else ""
    for r in rejects:
        total += 1
        if total <= cap:
            message = f"{r.reason} (id {r.id})" if r.id else r.reason
            out.append(
                f"::warning {where}line={r.line},title=uploader rejected a row::"
                f"{escape_data(message)}"
            )
    if total > cap:
        out.append(
            f"::notice title=uploader::{total - cap:,} more rejected rows not annotated "
            f"({total:,} in all); see rejects.csv"
        )
    code = int(report.get("exit_code", 2))
    if code != 0:
        rows = report.get("rows") or {}
        detail = report.get("error") or (
            f"{rows.get('rejected', 0):,} rejected, {rows.get('failed', 0):,} failed, "
            f"{rows.get('pending', 0):,} pending of {rows.get('read', 0):,} rows read"
        )
        out.append(
            f"::error title=uploader::{escape_data(str(report.get('status', 'error')).upper())} "
            f"(exit {code}): {escape_data(str(detail))}"
        )
    return out
