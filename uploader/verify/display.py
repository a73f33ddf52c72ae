"""Progress of a verify: a bar with an ETA on a terminal, a log line every 10 s otherwise."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from uploader.progress import LOG_EVERY_S, every
from uploader.verify.fetch import CheckStats

__all__ = ["verify_display"]

Display = Callable[[CheckStats], contextlib.AbstractAsyncContextManager[None]]


def verify_display(mode: str, stream: TextIO | None = None) -> Display | None:
    """The display for ``--progress auto|bar|log|none`` (None: show nothing)."""
    out = stream or sys.stderr
    if mode == "auto":
        mode = "bar" if out.isatty() else "log"
    if mode == "none":
        return None
    return (lambda s: _bar(s, out)) if mode == "bar" else (lambda s: _log(s, out))


def _outcomes(stats: CheckStats) -> str:
    o = stats.outcomes
    bad = o["wrong"] + o["missing"]
    return f"exact {o['exact']:,}, not landed {bad:,}, errors {o['fetch_error']:,}"


def line(stats: CheckStats) -> str:
    elapsed = time.monotonic() - stats.started
    rate = stats.done / elapsed if elapsed > 0 else 0.0
    left = stats.total - stats.done
    eta = f"{left / rate:,.0f} s" if rate > 0 else "unknown"
    return (
        f"[{elapsed:7.1f}s] verified {stats.done:,} of {stats.total:,} profiles "
        f"({rate:,.0f}/s, ETA {eta}); {_outcomes(stats)}"
    )


@contextlib.asynccontextmanager
async def _log(stats: CheckStats, stream: TextIO) -> AsyncIterator[None]:
    async with every(LOG_EVERY_S, lambda: print(line(stats), file=stream, flush=True)):
        yield


@contextlib.asynccontextmanager
async def _bar(stats: CheckStats, stream: TextIO) -> AsyncIterator[None]:
    bars = Progress(
        TextColumn("verify"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[extra]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(file=stream),
    )
    task = bars.add_task("verify", total=stats.total, extra="")

    def refresh() -> None:
        bars.update(task, completed=stats.done, total=stats.total, extra=_outcomes(stats))

    with bars:
        async with every(0.5, refresh):
            yield
