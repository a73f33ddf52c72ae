"""Several runs as one: the shards of a load, combined for ``uploader status DIR...``.

Reads reports (as ``report.py`` builds them from each journal) and adds them
up; nothing here touches a journal or the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from uploader.rates import basis_rate, rate_basis
from uploader.summary_lines import counts_line, sent_line

__all__ = ["combine", "render_combined", "shard_section"]


def shard_section(chunk: Mapping[str, Any]) -> dict[str, Any] | None:
    """The report's ``shard`` section from the chunker's journal record (None: not sharded)."""
    spec = chunk.get("shard")
    if not spec:
        return None
    index, _, count = str(spec).partition("/")
    return {
        "index": int(index),
        "count": int(count),
        "rows_in_other_shards": int(chunk.get("rows_other_shards", 0)),
    }


# Which exit code speaks for several runs: the one that needs attention first.
_COMBINED_PRECEDENCE = (4, 2, 3, 1, 0)
_COMBINED_STATUS = {0: "complete", 1: "partial", 3: "incomplete"}


def combine(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One accounting for several runs (the shards of one load).

    Counts are summed; ``elapsed_s`` is the longest run (shards run side by
    side) and ``rows_per_s`` the rows accepted over it (``rates``: their
    ``rate_basis`` added up). The exit code is the most urgent of the runs'
    (4, then 2, 3, 1, 0). Shards of one ``N`` that are missing from the list
    are named in ``warnings``.
    """
    codes = [int(r["exit_code"]) for r in reports]
    code = next(c for c in (*_COMBINED_PRECEDENCE, *codes) if c in codes)
    elapsed = max((float(r.get("elapsed_s") or 0.0) for r in reports), default=0.0)
    rows = _sum_section(reports, "rows")
    accepted = _sum_section(reports, "rate_basis")
    basis = rate_basis(
        accepted.get("rows_accepted", 0), accepted.get("batches_accepted", 0), elapsed
    )
    warnings: list[str] = []
    shards = [r["shard"] for r in reports if r.get("shard")]
    for count in sorted({s["count"] for s in shards}):
        seen = sorted(s["index"] for s in shards if s["count"] == count)
        missing = sorted(set(range(count)) - set(seen))
        if missing:
            warnings.append(f"shards {', '.join(f'{i}/{count}' for i in missing)} not listed")
        if len(seen) != len(set(seen)):
            warnings.append(f"a shard of {count} is listed more than once")
    return {
        "status": _COMBINED_STATUS.get(code, "error"),
        "exit_code": code,
        "runs": len(reports),
        "rows": rows,
        "batches": _sum_section(reports, "batches"),
        "requests": _sum_section(reports, "requests"),
        "bytes_submitted": sum(int(r.get("bytes_submitted") or 0) for r in reports),
        "elapsed_s": round(elapsed, 3),
        "rows_per_s": basis_rate(basis),
        "rate_basis": basis,
        "warnings": warnings,
    }


def _sum_section(reports: Sequence[Mapping[str, Any]], key: str) -> dict[str, int]:
    total: dict[str, int] = {}
    for report in reports:
        for name, value in (report.get(key) or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                total[name] = total.get(name, 0) + int(value)
    return total


def render_combined(combined: Mapping[str, Any], reports: Sequence[Mapping[str, Any]]) -> str:
    """``uploader status DIR...``: a line per run, then the combined accounting."""
    lines = []
    labels = [
        f"shard {r['shard']['index']}/{r['shard']['count']}" if r.get("shard") else r["job_id"]
        for r in reports
    ]
    width = max(14, *(len(label) + 2 for label in labels))  # job ids are of any length
    for label, r in zip(labels, reports, strict=True):
        state = f"RUNNING (pid {r['running_pid']})" if r.get("running_pid") else r["status"]
        lines.append(
            f"{label:<{width}}{state:<12} exit {r['exit_code']}  "
            f"read {r['rows']['read']:,}  successful {r['rows']['successful']:,}  "
            f"failed {r['rows']['failed']:,}  pending {r['rows']['pending']:,}  "
            f"({(r.get('outputs') or {}).get('work_dir') or r['job_id']})"
        )
    rows, batches = combined["rows"], combined["batches"]
    lines += [
        f"combined: {combined['status'].upper()} (exit {combined['exit_code']}), "
        f"{combined['runs']} runs",
        counts_line("rows", rows, ("read", "rejected", "submitted")),
        counts_line("", rows, ("successful", "failed", "not_found", "pending")),
        counts_line("batches", batches, tuple(batches)),
        sent_line(
            combined["bytes_submitted"],
            combined["elapsed_s"],
            combined["rows_per_s"],
            " (longest run)",
        ),
    ]
    lines += [f"{'warning':<10}{w}" for w in combined["warnings"]]
    return "\n".join(lines)
