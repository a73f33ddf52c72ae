"""The lines the plain-text summaries share: counts, bytes sent, durations.

``report.py`` renders one run's summary and ``combine.py`` several runs'
(``uploader status DIR...``); both build these lines here, so the two read
alike (a label in 10 columns, then the figures).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich import filesize

from uploader.rates import rate_text

__all__ = ["counts_line", "human_duration", "sent_line"]


def counts_line(label: str, values: Mapping[str, Any], keys: Sequence[str]) -> str:
    """``rows      read 1,000  rejected 2``: each key's count, a missing key as 0."""
    cells = "  ".join(f"{k.replace('_', ' ')} {int(values.get(k, 0)):,}" for k in keys)
    return f"{label:<10}{cells}"


def sent_line(
    bytes_submitted: int, elapsed_s: float, rows_per_s: float | None, note: str = ""
) -> str:
    """``sent      1.2 MB in 3.4 s, 560.0 rows/s``, with ``note`` after the duration."""
    return (
        f"{'sent':<10}{filesize.decimal(bytes_submitted)} in "
        f"{human_duration(elapsed_s)}{note}, {rate_text(rows_per_s)}"
    )


def human_duration(seconds: float) -> str:
    """``4.2 s`` under a minute, else ``3m 05s`` or ``1h 02m 03s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"
