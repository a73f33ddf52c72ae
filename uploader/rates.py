"""What a rate means wherever one is shown: rows Target accepted over a window, or none.

Every rows-per-second figure of a run (``rows_per_s`` in ``report.json``,
the summary, ``uploader status``, the job summary, the HTML report, the
progress line) is computed here, so that it means one thing: the rows of
the batches Target accepted in a window, divided by that window's length.
Only the window differs, and each caller names its own (a run's active time,
the last minute of progress).

A window too short to measure gives no rate (``None``: ``null`` in JSON,
``-`` in text) rather than a number that only reflects timing noise: one
batch accepted 0.1 s after the start would read as hundreds of thousands of
rows per second. So a rate needs a window of at least ``MIN_WINDOW_S`` and
at least ``MIN_BATCHES`` batches accepted in it (a single batch measures its
own latency, not a pace that holds).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["MIN_BATCHES", "MIN_WINDOW_S", "basis_rate", "rate_basis", "rate_text", "rows_per_s"]

MIN_WINDOW_S = 1.0
MIN_BATCHES = 2


def rows_per_s(rows: int, window_s: float, batches: int) -> float | None:
    """``rows`` accepted in ``batches`` batches over ``window_s``; None when too short."""
    if window_s < MIN_WINDOW_S or batches < MIN_BATCHES:
        return None
    return rows / window_s


def rate_text(rate: float | None, *, digits: int = 1) -> str:
    """``1,234.5 rows/s``, or ``- rows/s`` when there is no rate."""
    return "- rows/s" if rate is None else f"{rate:,.{digits}f} rows/s"


def rate_basis(rows_accepted: int, batches_accepted: int, window_s: float) -> dict[str, Any]:
    """What a report's ``rows_per_s`` is computed from (``report.json`` ``rate_basis``).

    Kept next to the figure so that it can be checked, and so that reports can
    be combined (``uploader status`` of several shards) by adding their bases.
    """
    return {
        "rows_accepted": int(rows_accepted),
        "batches_accepted": int(batches_accepted),
        "window_s": round(float(window_s), 3),
    }


def basis_rate(basis: Mapping[str, Any]) -> float | None:
    """The ``rows_per_s`` of a ``rate_basis``, rounded to 0.1 (None: too short a window)."""
    rate = rows_per_s(
        int(basis["rows_accepted"]), float(basis["window_s"]), int(basis["batches_accepted"])
    )
    return None if rate is None else round(rate, 1)
