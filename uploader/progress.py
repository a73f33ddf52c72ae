"""Progress display of a run: rich bars on a terminal, plain log lines otherwise.

The pipeline hands over a ``snapshot()`` function; this module only reads it
on a timer, so display never slows a stage down. CI logs get one line every
``LOG_EVERY_S`` seconds instead of bars that redraw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TextIO

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

__all__ = ["LOG_EVERY_S", "every", "progress_display"]

Snapshot = Callable[[], dict[str, Any]]
LOG_EVERY_S = 10.0


def progress_display(
    mode: str, stream: TextIO | None = None
) -> Callable[[Snapshot], contextlib.AbstractAsyncContextManager[None]] | None:
    """The display for ``--progress auto|bar|log|none`` (None: show nothing)."""
    stream = stream or sys.stderr
    if mode == "auto":
        mode = "bar" if stream.isatty() else "log"
    if mode == "none":
        return None
    if mode == "bar":
        return lambda snap: _bars(snap, stream)
    return lambda snap: _log_lines(snap, stream)


def _line(s: dict[str, Any], elapsed: float) -> str:
    rate = s["rows_accepted"] / elapsed if elapsed > 0 else 0.0
    chunking = "done" if s["chunk_done"] else "reading"
    return (
        f"[{elapsed:7.1f}s] input {chunking}; batches {s['batches_known']} known, "
        f"{s['batches_sent']} sent, {s['batches_final']} final, "
        f"{s['batches_failed']} failed; rows accepted {s['rows_accepted']:,} "
        f"({rate:,.0f}/s); in flight {s['in_flight']}/{s['limit']}, "
        f"slow-downs (429/503) {s['throttles']}"
    ) + (f"; {s['waiting']}" if s.get("waiting") else "")


@contextlib.asynccontextmanager
async def _every(seconds: float, show: Callable[[], None]) -> AsyncIterator[None]:
    """Call ``show`` every ``seconds`` while the body runs, and once at the end."""

    async def tick() -> None:
        while True:
            await asyncio.sleep(seconds)
            show()

    task = asyncio.create_task(tick())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        show()


every = _every  # other displays (verify) tick the same way


@contextlib.asynccontextmanager
async def _log_lines(snapshot: Snapshot, stream: TextIO) -> AsyncIterator[None]:
    started = time.monotonic()

    def show() -> None:
        print(_line(snapshot(), time.monotonic() - started), file=stream, flush=True)

    async with _every(LOG_EVERY_S, show):
        yield


@contextlib.asynccontextmanager
async def _bars(snapshot: Snapshot, stream: TextIO) -> AsyncIterator[None]:
    bars = Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[extra]}"),
        TimeElapsedColumn(),
        console=Console(file=stream),
        transient=False,
    )
    sent = bars.add_task("sent", total=None, extra="")
    final = bars.add_task("final", total=None, extra="")

    def refresh() -> None:
        s = snapshot()
        known = s["batches_known"] if s["chunk_done"] else None
        bars.update(
            sent,
            completed=s["batches_sent"],
            total=known,
            extra=s.get("waiting")
            or f"rows {s['rows_accepted']:,}  in flight {s['in_flight']}/{s['limit']}",
        )
        bars.update(
            final,
            completed=s["batches_final"],
            total=known,
            extra=f"slow-downs (429/503) {s['throttles']}",
        )

    # Log lines (retries, stuck batches) must go through the live console, or
    # they tear the bars apart.
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [RichHandler(console=bars.console, show_path=False, log_time_format="%X")]
    try:
        with bars:
            refresh()
            async with _every(0.5, refresh):
                yield
    finally:
        root.handlers = saved
