"""Progress display of a run: rich bars on a terminal, plain log lines otherwise.

The pipeline hands over a ``snapshot()`` function; this module only reads it
on a timer, so display never slows a stage down. CI logs get one line every
``LOG_EVERY_S`` seconds instead of bars that redraw. Each figure means one thing:

- input: share of the input file's bytes read while chunking (bytes read for a pipe);
- batches: final (complete, failed, or stuck for good) of those known so far, failed ones;
- rows sent: rows of batches whose body reached the server, once however often resent;
- rows accepted: rows of batches the server accepted, once however often resent, and
  their rate over the last minute, which gives the ETA (until every row is accepted);
  no rate ("-") while that window is under a second or holds fewer than two batches;
- in flight: submits on the wire now; with the adaptive limit (the most submits
  allowed on the wire: half of ``--concurrency`` at the start, one more per
  accepted submit up to ``--concurrency``, lowered by throttling) only when it
  holds submits back or throttling lowered it, so a run of a few batches shows none;
- throttled: HTTP 429 and 503 answers, counted as ``requests.throttled`` in the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, TextIO

from rich.console import Console
from rich.filesize import decimal
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column

from uploader.logs import json_line
from uploader.rates import rate_text, rows_per_s

__all__ = ["LOG_EVERY_S", "eta_s", "every", "progress_display", "rows_total"]

Snapshot = Callable[[], dict[str, Any]]
LOG_EVERY_S = 10.0


def progress_display(
    mode: str, stream: TextIO | None = None, *, log_format: str = "text"
) -> Callable[[Snapshot], contextlib.AbstractAsyncContextManager[None]] | None:
    """The display for ``--progress auto|bar|log|none`` (None: show nothing).

    Under ``--log-format json`` there are no bars, and each log line is a JSON
    object (``event: "progress"``) carrying the figures as fields.
    """
    stream = stream or sys.stderr
    if mode == "auto":
        mode = "bar" if stream.isatty() and log_format == "text" else "log"
    if log_format == "json" and mode != "none":
        return lambda snap: _log_lines(snap, stream, as_json=True)
    if mode == "none":
        return None
    if mode == "bar":
        return lambda snap: _bars(snap, stream)
    return lambda snap: _log_lines(snap, stream)


RATE_WINDOW_S = 60.0  # the rate behind the ETA: rows accepted over the last minute


class _Rate:
    """Rows accepted per second, measured over the last ``RATE_WINDOW_S``.

    None while that window is too short to measure (``rates.rows_per_s``): under
    a second, or fewer than two batches accepted in it.
    """

    def __init__(self) -> None:
        self._points: deque[tuple[float, int, int]] = deque()

    def update(self, now: float, s: dict[str, Any]) -> float | None:
        points = self._points
        points.append((now, int(s["rows_accepted"]), int(s["batches_accepted"])))
        while len(points) > 2 and now - points[1][0] >= RATE_WINDOW_S:
            points.popleft()
        (t0, r0, b0), (t1, r1, b1) = points[0], points[-1]
        return rows_per_s(r1 - r0, t1 - t0, b1 - b0)


def rows_total(s: dict[str, Any]) -> int | None:
    """All rows to send: known once the input is read, estimated from its bytes before."""
    if s["chunk_done"]:
        return int(s["rows_known"])
    read, total, rows = (
        s.get("input_bytes_read"),
        s.get("input_bytes_total"),
        s.get("input_rows_read"),
    )
    if read and total and rows:
        return max(int(rows * total // read), int(s["rows_known"]))
    return None


def eta_s(s: dict[str, Any], rate: float | None) -> float | None:
    """Seconds until every row is accepted, at the measured rate (None: not known yet)."""
    total = rows_total(s)
    if total is None or not rate or rate <= 0:
        return None
    return max(0, total - int(s["rows_accepted"])) / rate


def _input(s: dict[str, Any]) -> str:
    read, total = s.get("input_bytes_read"), s.get("input_bytes_total")
    if s["chunk_done"]:
        return "input read"
    if read is not None and total:
        return f"input {100 * read / total:.0f}% of {decimal(total)}"
    if read is not None:
        return f"input {decimal(read)} read"
    return "input reading"


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s" if m else f"{s}s"


def _in_flight(s: dict[str, Any]) -> str:
    """Submits on the wire; the limit only when it holds some back or throttling lowered it."""
    text = f"in flight {s['in_flight']}"
    limit, ceiling = s["limit"], s["limit_max"]
    if s.get("limit_lowered") and limit < ceiling:
        return text + f" (limit {limit} of {ceiling}, lowered by throttling)"
    if s.get("limit_waiting"):
        return text + f" (limit {limit} of {ceiling} reached)"
    return text


def _eta_text(s: dict[str, Any], rate: float | None) -> str:
    eta = eta_s(s, rate)
    if s["chunk_done"] and s["rows_accepted"] >= s["rows_known"]:
        waiting = int(s["batches_known"]) - int(s["batches_final"])
        plural = "batch" if waiting == 1 else "batches"
        return f"all accepted; {waiting} {plural} to complete" if waiting else "all final"
    return f"ETA {_duration(eta)} to all accepted" if eta is not None else "ETA not known yet"


def _line(s: dict[str, Any], elapsed: float, rate: float | None) -> str:
    text = (
        f"[{elapsed:7.1f}s] {_input(s)}; batches {s['batches_final']} final of "
        f"{s['batches_known']} known ({s['batches_failed']} failed); rows {s['rows_sent']:,} "
        f"sent, {s['rows_accepted']:,} accepted ({rate_text(rate, digits=0)}); {_in_flight(s)}; "
        f"throttled (429/503) {s['throttled']}; {_eta_text(s, rate)}"
    )
    return text + (f"; {s['waiting']}" if s.get("waiting") else "")


@contextlib.asynccontextmanager
async def every(seconds: float, show: Callable[[], None]) -> AsyncIterator[None]:
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


@contextlib.asynccontextmanager
async def _log_lines(
    snapshot: Snapshot, stream: TextIO, *, as_json: bool = False
) -> AsyncIterator[None]:
    started = time.monotonic()
    rate = _Rate()
    # The first point is the start: the first line, 10 s in, already has a rate.
    rate.update(started, snapshot())

    def show() -> None:
        s, now = snapshot(), time.monotonic()
        line = _line(s, now - started, rate.update(now, s))
        if as_json:
            line = json_line("info", "progress", line, elapsed_s=round(now - started, 3), **s)
        print(line, file=stream, flush=True)

    async with every(LOG_EVERY_S, show):
        yield


@contextlib.asynccontextmanager
async def _bars(snapshot: Snapshot, stream: TextIO) -> AsyncIterator[None]:
    # On a narrow terminal (80 columns) only the free text gives way, cut with an
    # ellipsis: names, bars, counts and the time stay whole. Its width is capped,
    # or a long text would make rich shrink every column, names included.
    console = Console(file=stream)
    others = 9 + 16 + 19 + 7 + 4  # name, bar, count, elapsed, the spaces between
    bars = Progress(
        TextColumn("{task.description:<9}", table_column=Column(no_wrap=True, min_width=9)),
        BarColumn(bar_width=16),
        TextColumn("{task.fields[count]}", table_column=Column(no_wrap=True, min_width=19)),
        TextColumn(
            "{task.fields[extra]}",
            table_column=Column(
                no_wrap=True,
                overflow="ellipsis",
                ratio=1,
                min_width=10,
                max_width=max(10, console.width - others),
            ),
        ),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    read = bars.add_task("input", total=None, count="", extra="")
    accepted = bars.add_task("accepted", total=None, count="", extra="")
    final = bars.add_task("final", total=None, count="", extra="")
    rate = _Rate()

    def refresh() -> None:
        s = snapshot()
        now_rate = rate.update(time.monotonic(), s)
        size, done = s.get("input_bytes_total"), s["chunk_done"]
        got = size if done and size else (s.get("input_bytes_read") or 0)
        bars.update(
            read,
            completed=got,
            total=size or None,
            count=_input(s).removeprefix("input "),
            extra="",
        )
        total = rows_total(s)
        bars.update(
            accepted,
            completed=s["rows_accepted"],
            total=total,
            count=f"{s['rows_accepted']:,}/{total:,} rows"
            if total
            else f"{s['rows_accepted']:,} rows",
            extra=s.get("waiting")
            or f"{s['rows_sent']:,} sent, {rate_text(now_rate, digits=0)}; "
            f"{_eta_text(s, now_rate)}",
        )
        bars.update(
            final,
            completed=s["batches_final"],
            total=s["batches_known"] or None,
            count=f"{s['batches_final']}/{s['batches_known']} known batches",
            extra=f"{s['batches_failed']} failed; {_in_flight(s)}; "
            f"throttled (429/503) {s['throttled']}",
        )

    # Log lines (retries, stuck batches) must go through the live console, or
    # they tear the bars apart.
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [RichHandler(console=bars.console, show_path=False, log_time_format="%X")]
    try:
        with bars:
            refresh()
            async with every(0.5, refresh):
                yield
    finally:
        root.handlers = saved
