"""What a verify writes: verify.csv, verify-failed.csv, the report section and the summary.

Each output reads the results from the journal (``VerifyStore``), so a
verify continued over several runs writes them whole. The CSV files hold
personal data and are written owner-only and atomically, like every report.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from uploader.report import private_file, write_report
from uploader.verify.compare import CheckOutcome, Estimate, landed_estimate
from uploader.verify.expected import Layout
from uploader.verify.store import VerifyStore

__all__ = [
    "MISMATCH_HEADER",
    "build_section",
    "exit_code",
    "render_summary",
    "update_report",
    "write_failed_rows",
    "write_mismatches",
]

MISMATCH_HEADER = ("id", "attribute", "expected", "found", "modifiedAt", "outcome")
# Outcomes that count as "did not land" (the others are fine, or not known yet).
_BAD = (CheckOutcome.WRONG, CheckOutcome.MISSING)
_LISTED = (*_BAD, CheckOutcome.NOT_YET_APPLIED)


def write_mismatches(path: Path, store: VerifyStore) -> int:
    """verify.csv: one line per attribute that differs; returns the lines written.

    Not-yet-applied differences are listed too (their last column says so).
    The file exists only when it holds a line, so a stale one never misleads.
    """
    count = 0
    with private_file(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(MISMATCH_HEADER)
        for pid, outcome, _, mismatches in store.mismatches(_LISTED):
            for m in mismatches:
                found = "" if m.found is None else m.found
                writer.writerow([pid, m.attribute, m.expected, found, m.modified_at or "", outcome])
                count += 1
    if not count:
        path.unlink(missing_ok=True)
    return count


def write_failed_rows(path: Path, store: VerifyStore, layout: Layout, delimiter: str) -> int:
    """verify-failed.csv: the ids that did not land, one row each, in the input's layout.

    The row holds the expected (folded) values, so ``uploader run`` of this
    file sets exactly what the export should have set. Returns the rows.
    """
    count = 0
    with private_file(path, newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(layout.header)
        for pid, _, attrs, _ in store.mismatches(_BAD):
            writer.writerow([pid, *(attrs.get(name, "") for name in layout.names)])
            count += 1
    if not count:
        path.unlink(missing_ok=True)
    return count


def exit_code(counts: Mapping[str, int], *, unchecked: int, batches_not_final: int = 0) -> int:
    """1 when a checked profile did not land; 3 when something is not settled yet; else 0.

    A run whose batches are not all final is not settled either: their rows
    are not checked, and a verify after the run finishes checks them.
    """
    if any(counts.get(o.value, 0) for o in _BAD):
        return 1
    unsettled = counts.get(CheckOutcome.NOT_YET_APPLIED.value, 0) + counts.get(
        CheckOutcome.FETCH_ERROR.value, 0
    )
    if unsettled or unchecked or batches_not_final:
        return 3
    return 0


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def build_section(
    store: VerifyStore,
    *,
    selection: Mapping[str, Any],
    population: int,
    settle_s: float,
    exit: int,
    outputs: Mapping[str, str | None],
    elapsed_s: float,
    fetched: int,
    fetch_s: float,
    source: str,
) -> dict[str, Any]:
    """The ``verify`` section of report.json."""
    counts = store.outcome_counts()
    checked = sum(counts.values())
    exact = counts[CheckOutcome.EXACT.value]
    settled = exact + sum(counts[o.value] for o in _BAD)
    sampled = selection.get("mode") == "sample"
    estimate: Estimate | None = landed_estimate(exact, settled, population) if sampled else None
    by_attr: Counter[str] = Counter()
    for _, _, _, mismatches in store.mismatches(_BAD):
        by_attr.update(m.attribute for m in mismatches)
    latest = store.latest_final_at(CheckOutcome.NOT_YET_APPLIED)
    return {
        "selection": dict(selection),
        "source": source,
        "population": population,
        "picked": store.picked(),
        "checked": checked,
        "exact": exact,
        "wrong": counts[CheckOutcome.WRONG.value],
        "missing_profile": counts[CheckOutcome.MISSING.value],
        "not_found": counts[CheckOutcome.NOT_FOUND.value],
        "not_yet_applied": counts[CheckOutcome.NOT_YET_APPLIED.value],
        "fetch_errors": counts[CheckOutcome.FETCH_ERROR.value],
        "unchecked": store.unchecked(),
        "wrong_by_attribute": dict(sorted(by_attr.items())),
        "landed": None if estimate is None else _estimate(estimate),
        "settle_s": settle_s,
        "settle_after": _iso(None if latest is None else latest + settle_s),
        "exit_code": exit,
        "outputs": dict(outputs),
        "elapsed_s": round(elapsed_s, 3),
        "fetched": fetched,  # profiles checked by this process (a rerun counts its own)
        "fetch_s": round(fetch_s, 3),
        "profiles_per_s": round(fetched / fetch_s, 1) if fetch_s > 0 else 0.0,
        "finished_at": _iso(datetime.now(UTC).timestamp()),
    }


def _estimate(e: Estimate) -> dict[str, Any]:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(e).items()}


def update_report(path: Path, section: Mapping[str, Any]) -> None:
    """Add (or replace) the ``verify`` section of the run's report.json."""
    report: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            loaded = {}
        if isinstance(loaded, dict):
            report = loaded
    report["verify"] = dict(section)
    write_report(path, report)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def render_summary(section: Mapping[str, Any]) -> str:
    """A few lines for the terminal (the report section has the same figures)."""
    sel = section["selection"]
    how = {
        "all": "every id",
        "sample": f"a random sample of {sel.get('n', 0):,} (seed {sel.get('seed')}; "
        f"repeat with --seed {sel.get('seed')})",
        "ids": f"the ids in {sel.get('ids_file')}",
    }[sel["mode"]]
    lines = [
        f"verify: {section['checked']:,} of {section['picked']:,} picked profiles checked "
        f"({how}) out of {section['population']:,} that ended successful; "
        f"expected values from {section['source']}",
        f"{'':<8}exact {section['exact']:,}  wrong {section['wrong']:,}  missing profile "
        f"{section['missing_profile']:,}  not yet applied {section['not_yet_applied']:,}  "
        f"fetch errors {section['fetch_errors']:,}"
        + (f"  not found (v1) {section['not_found']:,}" if section["not_found"] else ""),
    ]
    if section.get("not_in_load"):
        lines.append(
            f"{'':<8}not checked, not among the ids that ended successful: "
            f"{section['not_in_load']:,} of the ids in {sel.get('ids_file')}"
        )
    if section["wrong_by_attribute"]:
        cells = ", ".join(f"{k} {v:,}" for k, v in section["wrong_by_attribute"].items())
        lines.append(f"{'':<8}differing values by attribute: {cells}")
    landed = section["landed"]
    if landed is not None:
        lines.append(
            f"{'':<8}landed: {_pct(landed['share'])} of the load (95% confidence interval "
            f"{_pct(landed['low'])} to {_pct(landed['high'])}), about "
            f"{landed['profiles']:,} of {landed['population']:,} profiles"
        )
    if section["not_yet_applied"]:
        lines.append(
            f"{'':<8}{section['not_yet_applied']:,} differ in batches completed less than "
            f"{section['settle_s']:g} s ago (Target may apply updates up to 24 h later): "
            f"run verify again after {section['settle_after']} to settle them"
        )
    if section.get("batches_not_final"):
        lines.append(
            f"{'':<8}the run is not finished: {section['batches_not_final']:,} batches are not "
            "final, their rows are not checked; verify again once it is"
        )
    if section["fetch_errors"] or section["unchecked"]:
        lines.append(
            f"{'':<8}not finished: {section['fetch_errors'] + section['unchecked']:,} profiles "
            "still to check; run the same verify again to continue"
        )
    for name, value in section["outputs"].items():
        if value:
            lines.append(f"{'':<8}{name}: {value}")
    lines.append(f"{'':<8}{section['profiles_per_s']:,.1f} profiles/s; exit {section['exit_code']}")
    return "\n".join(lines)
