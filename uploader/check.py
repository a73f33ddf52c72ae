"""``uploader check INPUT``: read the whole export, send nothing, show what a run would send.

Beside ``split`` in the flow: it runs the same chunker as ``run`` (same parsing,
checks, repeated-id folding, encoding and batch cutting) into a temporary directory, with every
batch counted and hashed but none written (``skip_through_seq``), so a
check of a large export costs no disk beyond ``rejects.csv``. The examples of
rejects are read back from that ``rejects.csv``, and the first rows are decoded
back from their encoded form the way Target decodes a batch body. No network,
no work directory, nothing left behind.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from uploader.chunk import Chunker, ChunkSummary, decode_row
from uploader.encode import plan_columns
from uploader.rejects import reject_rows
from uploader.report import repeats_line
from uploader.settings import BatchSettings, InputSettings
from uploader.sources import detect_format

__all__ = ["check_input", "render_check", "run_check"]

_ALL_BATCHES = sys.maxsize  # skip_through_seq: count and hash every batch, write none


def check_input(
    input: str, input_settings: InputSettings, batch_settings: BatchSettings, *, show: int = 5
) -> dict[str, Any]:
    """Read ``input`` to the end as ``run`` would; the findings as a JSON-ready dict.

    ``show`` bounds every list of examples (rejects per reason, short rows,
    batches, decoded rows). Whole-input problems raise ``InputError`` /
    ``ConfigError`` as they would for ``run``.
    """
    tmp = Path(tempfile.mkdtemp(prefix="uploader-check-"))
    try:
        summary = Chunker(
            input,
            tmp,
            input_settings,
            batch_settings,
            skip_through_seq=_ALL_BATCHES,
            fsync=False,
            sample_rows=show,
        ).run()
        examples = _reject_examples(summary.rejects_path, input_settings.encoding, show)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _findings(input, input_settings, summary, examples, show)


def _findings(
    input: str,
    inp: InputSettings,
    summary: ChunkSummary,
    examples: dict[str, list[dict[str, Any]]],
    show: int,
) -> dict[str, Any]:
    fmt = detect_format(input, inp.format)
    plan = plan_columns(summary.header, inp, input)
    sent = set(plan.sources)
    files = summary.files
    return {
        "input": input,
        "format": fmt,
        "delimiter": inp.delimiter if fmt == "csv" else None,
        "encoding": inp.encoding if fmt == "csv" else None,
        "columns": {
            "id": {"column": plan.sources[0], "type": plan.names[0]},
            "attributes": [
                {"column": c, "attribute": a}
                for c, a in zip(plan.sources[1:], plan.names[1:], strict=True)
            ],
            "left_out": [c for c in summary.header if c not in sent],
        },
        "rows": {
            "read": summary.rows_read,
            "would_send": summary.rows_written,
            "rejected": summary.rows_rejected,
            "folded": summary.rows_folded,
            "short": summary.short_rows,
        },
        "rejects": {
            reason.value: {"count": count, "first": examples.get(reason.value, [])}
            for reason, count in sorted(summary.rejected.items())
        },
        "short_rows": {
            "count": summary.short_rows,
            "first_lines": list(summary.short_lines[:show]),
        },
        "repeated_ids": summary.repeats.as_dict() if summary.repeats is not None else None,
        "batches": {
            "count": len(files),
            "rows": summary.rows_written,
            "bytes": summary.bytes,
            "largest_bytes": max((f.bytes for f in files), default=0),
            "first": [
                {
                    "seq": f.seq,
                    "rows": f.rows,
                    "bytes": f.bytes,
                    "lines": [f.first_line, f.last_line],
                }
                for f in files[:show]
            ],
        },
        "sample": [
            {"line": line, "values": dict(zip(plan.names, decode_row(data), strict=False))}
            for line, data in summary.sample
        ],
        "limited": summary.limited,
        "warnings": list(summary.warnings),
    }


def _reject_examples(path: Path, encoding: str, show: int) -> dict[str, list[dict[str, Any]]]:
    """The first ``show`` rejects of each reason, read back from rejects.csv."""
    out: dict[str, list[dict[str, Any]]] = {}
    for line, rid, reason, record in reject_rows(path, encoding):
        first = out.setdefault(reason, [])
        if len(first) < show:
            first.append({"line": int(line), "id": rid, "record": record})
    return out


# What the left side of the column mapping is called in each input format.
_COLUMN_WORD = {"csv": "CSV column", "jsonl": "JSON key", "parquet": "Parquet column"}


def render_check(findings: dict[str, Any], *, show: int = 5) -> str:
    """The human-readable report of ``uploader check``."""
    f = findings
    where = f"{f['format']}"
    if f["format"] == "csv":
        where += f", delimiter {f['delimiter']!r}, encoding {f['encoding']}"
    cols, rows, batches = f["columns"], f["rows"], f["batches"]
    source = _COLUMN_WORD.get(f["format"], "input column")
    out = [f"check {f['input']} ({where})", f"columns   {source} -> Target attribute"]
    out.append(f"          {cols['id']['column']} -> {cols['id']['type']}  (the id)")
    out += [f"          {c['column']} -> {c['attribute']}" for c in cols["attributes"]]
    if cols["left_out"]:
        out.append(f"          left out: {', '.join(cols['left_out'])}")
    out.append(
        f"rows      read {rows['read']:,}  would send {rows['would_send']:,}  "
        f"rejected {rows['rejected']:,}  folded {rows['folded']:,}  short {rows['short']:,}"
    )
    for reason, r in f["rejects"].items():
        out.append(f"rejects   {reason} {r['count']:,}: {_lines(r['first'], r['count'])}")
    short = f["short_rows"]
    if short["count"]:
        out.append(
            f"short     {short['count']:,} with fewer fields than the header, at "
            + ("line " if short["count"] == 1 else "lines ")
            + _more(short["first_lines"], short["count"])
        )
    repeated = f["repeated_ids"] or {}
    out.append(f"repeated  {repeats_line(repeated) or 'no id is on more than one row'}")
    for e in repeated.get("examples", [])[:show]:
        out.append(
            f"          id {e['id']!r}: {e['rows']} rows, lines {_more(e['lines'], e['rows'])}"
        )
    out.append(
        f"batches   {batches['count']:,} would be sent: {batches['rows']:,} rows, "
        f"{batches['bytes']:,} bytes (largest {batches['largest_bytes']:,})"
    )
    for b in batches["first"]:
        out.append(
            f"          #{b['seq']}: {b['rows']:,} rows, {b['bytes']:,} bytes, "
            f"input lines {min(b['lines'])}-{max(b['lines'])}"
        )
    if f["sample"]:
        out.append("decoded   the first rows as Target will read them:")
    for s in f["sample"]:
        values = "  ".join(f"{k}={v!r}" for k, v in s["values"].items())
        out.append(f"          line {s['line']}: {values}")
    out += [f"warning   {w}" for w in f["warnings"]]
    return "\n".join(out)


def _lines(first: Sequence[dict[str, Any]], count: int) -> str:
    shown = [f"line {r['line']}" + (f" (id {r['id']!r})" if r["id"] else "") for r in first]
    return ", ".join(shown) + (", ..." if count > len(first) else "")


def _more(lines: Sequence[int], count: int) -> str:
    return ", ".join(map(str, lines)) + (", ..." if count > len(lines) else "")


def run_check(
    input: str,
    input_settings: InputSettings,
    batch_settings: BatchSettings,
    *,
    as_json: bool = False,
    show: int = 5,
    stdout: TextIO | None = None,
) -> int:
    """``uploader check``: print the findings; 0 when no row would be rejected, else 1."""
    findings = check_input(input, input_settings, batch_settings, show=show)
    text = json.dumps(findings, indent=2) if as_json else render_check(findings, show=show)
    print(text, file=stdout or sys.stdout)
    return 1 if findings["rows"]["rejected"] else 0
