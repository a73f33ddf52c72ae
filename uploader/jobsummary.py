"""The Markdown job summary of a run, for the CI job page (GitHub, GitLab, any CI).

Written to the file named by ``GITHUB_STEP_SUMMARY`` (appended, as GitHub
expects: several steps share it) and to ``--summary-md FILE`` (replaced).
Rendering is pure: it reads the report and the first rejects (line, id,
reason), never a row's values, which are personal data.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uploader.rates import rate_text
from uploader.rejects import reject_rows
from uploader.report import exit_code, private_file

__all__ = ["RejectLine", "read_rejects", "render_markdown", "write_summary"]

TOP_REASONS = 5  # reject reasons shown, most frequent first
LINES_PER_REASON = 5  # first input lines shown per reason
FAILED_BATCHES = 10  # failed or stuck batches listed

_ROW_KEYS = ("read", "rejected", "submitted", "successful", "failed", "not_found", "pending")
_BATCH_KEYS = ("total", "complete", "incomplete", "stuck", "failed", "resubmitted")
_ICON = {"complete": "✅", "partial": "⚠️", "incomplete": "⏳", "error": "❌"}


@dataclass(frozen=True)
class RejectLine:
    """One line of rejects.csv without its record (the record holds the row's values)."""

    line: int
    id: str
    reason: str


def read_rejects(path: Path | None, encoding: str = "utf-8") -> Iterator[RejectLine]:
    """The rejects of a run, in input order; nothing when there is no file."""
    if path is None or not path.exists():
        return
    for row in reject_rows(path, encoding):
        if len(row) >= 3 and row[0].isdigit():
            yield RejectLine(int(row[0]), row[1], row[2])


def _cell(text: object) -> str:
    """Text safe inside a Markdown table cell and free of HTML."""
    out = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("`", "'")
    out = out.replace("<", "&lt;").replace(">", "&gt;")
    return " ".join(out.split())


def _table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---:" if i else "---" for i in range(len(head))) + "|",
        *("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows),
    ]


def _n(value: Any) -> str:
    return f"{int(value or 0):,}"


def render_markdown(
    report: Mapping[str, Any],
    *,
    first_rejects: Mapping[str, Sequence[int]],
    report_path: str | None,
    input_label: str | None = None,
) -> str:
    """The summary: status, rows, batches, throughput, rejects, failures, repeats, where."""
    status = str(report.get("status", "error"))
    code = report.get("exit_code", exit_code(report))
    lines = [
        f"## {_ICON.get(status, '')} uploader: {status.upper()} (exit {code})".replace("  ", " "),
        "",
    ]
    if input_label:
        lines += [f"Input `{_cell(input_label)}`, job `{_cell(report.get('job_id', ''))}`.", ""]
    if report.get("error"):
        lines += [f"**Error:** {_cell(report['error'])}", ""]
    rows, batches = report.get("rows", {}), report.get("batches", {})
    elapsed, rate = float(report.get("elapsed_s") or 0), report.get("rows_per_s")
    lines += ["### Rows", ""]
    lines += _table(
        [k.replace("_", " ") for k in _ROW_KEYS], [[_n(rows.get(k)) for k in _ROW_KEYS]]
    )
    lines += ["", "### Batches", ""]
    lines += _table(list(_BATCH_KEYS), [[_n(batches.get(k)) for k in _BATCH_KEYS]])
    lines += [
        "",
        f"Sent {_n(report.get('bytes_submitted'))} bytes in {elapsed:,.1f} s: {rate_text(rate)}.",
        "",
    ]
    lines += _rejects(report, first_rejects)
    lines += _failed(report)
    lines += _repeats(report)
    lines += _where(report, report_path)
    return "\n".join(lines).rstrip("\n") + "\n"


def _rejects(report: Mapping[str, Any], first: Mapping[str, Sequence[int]]) -> list[str]:
    by_reason: Mapping[str, int] = report.get("rejected_by_reason") or {}
    if not by_reason:
        return []
    top = sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_REASONS]
    rows = []
    for reason, count in top:
        shown = list(first.get(reason, ()))[:LINES_PER_REASON]
        more = ", …" if count > len(shown) else ""
        rows.append([reason, _n(count), ", ".join(map(str, shown)) + more])
    out = ["### Rejected rows", "", *_table(["reason", "rows", "first input lines"], rows)]
    hidden = len(by_reason) - len(top)
    if hidden:
        out.append(f"\n{hidden} more reasons in `rejects.csv`.")
    return [*out, ""]


def _failed(report: Mapping[str, Any]) -> list[str]:
    errors: Sequence[Mapping[str, Any]] = report.get("errors") or []
    if not errors:
        return []
    rows = [
        [
            Path(str(e.get("file", ""))).name,
            e.get("state", ""),
            _n(e.get("rows")),
            "-".join(map(str, e.get("lines") or [])),
            str(e.get("error", ""))[:200],
        ]
        for e in errors[:FAILED_BATCHES]
    ]
    head = ["batch", "state", "rows", "input lines", "error"]
    out = ["### Failed batches", "", *_table(head, rows)]
    if len(errors) > FAILED_BATCHES:
        out.append(f"\n{len(errors) - FAILED_BATCHES} more in `report.json` (`errors`).")
    return [*out, ""]


def _repeats(report: Mapping[str, Any]) -> list[str]:
    out = []
    repeated = report.get("repeated_ids") or {}
    if repeated.get("ids"):
        folded = repeated.get("rows_folded")
        out.append(
            f"Repeated ids: {_n(repeated['ids'])} ids appear on {_n(repeated.get('rows'))} rows"
            + (f"; {_n(folded)} rows were folded into one row per id." if folded else ".")
        )
    dup = report.get("duplicates") or {}
    if dup.get("possible_duplicate_rows"):
        out.append(
            f"{_n(dup['possible_duplicate_rows'])} rows were sent more than once "
            "(at-least-once delivery)."
        )
    return [*out, ""] if out else []


def _where(report: Mapping[str, Any], report_path: str | None) -> list[str]:
    outputs = report.get("outputs") or {}
    items = [("report", report_path)] + [
        (k, v) for k, v in outputs.items() if v and k not in ("journal", "work_dir")
    ]
    shown = [f"- {name}: `{_cell(value)}`" for name, value in items if value]
    return ["### Files", "", *shown, ""] if shown else []


def write_summary(path: Path, text: str, *, append: bool) -> None:
    """Append to (GitHub's step summary) or replace (``--summary-md``) a summary file.

    Owner-only like every other output of a run: the summary names the input
    and the ids of rejected rows. A replaced file is written by
    ``private_file`` (atomically, or through a link or to a device such as
    ``/dev/stderr``); a file appended to keeps the mode it has (the CI runner
    made it), and is created 0o600 when it does not exist yet.
    """
    if not append:
        with private_file(path) as fh:
            fh.write(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(fd, "a", encoding="utf-8") as fh:
        fh.write(text)
