"""Progress display: log lines off a terminal, bars on one, nothing with 'none'."""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

import pytest

from uploader import progress

SNAPSHOT: dict[str, Any] = {
    "rows_accepted": 1500,
    "batches_known": 7,
    "batches_sent": 5,
    "batches_final": 3,
    "batches_failed": 1,
    "in_flight": 2,
    "limit": 6,
    "throttles": 4,
    "chunk_done": True,
}


def test_auto_picks_log_lines_off_a_terminal_and_none_shows_nothing() -> None:
    assert progress.progress_display("none", io.StringIO()) is None
    assert progress.progress_display("auto", io.StringIO()) is not None


async def test_log_lines_repeat_and_end_with_a_final_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.01)
    out = io.StringIO()
    display = progress.progress_display("log", out)
    assert display is not None
    async with display(lambda: SNAPSHOT):
        await asyncio.sleep(0.05)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2
    assert all(
        "input done; batches 7 known, 5 sent, 3 final, 1 failed; rows accepted 1,500" in line
        and "in flight 2/6, slow-downs (429/503) 4" in line
        for line in lines
    )


async def test_bars_show_counts_and_route_log_records_through_the_console() -> None:
    out = io.StringIO()
    display = progress.progress_display("bar", out)
    assert display is not None
    root = logging.getLogger()
    before = root.handlers[:]
    async with display(lambda: SNAPSHOT):
        logging.getLogger("uploader.test").warning("batch 000002 is stuck")
        await asyncio.sleep(0.01)
    assert root.handlers == before
    text = out.getvalue()
    assert "5/7" in text and "3/7" in text
    assert "batch 000002 is stuck" in text
