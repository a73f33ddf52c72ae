"""Progress display: log lines off a terminal, bars on one, nothing with 'none'."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EmulatorFactory
from tests.helpers import make_settings, write_csv
from uploader import progress
from uploader.pipeline import run_pipeline

SNAPSHOT: dict[str, Any] = {
    "input_bytes_read": 40_000_000,
    "input_bytes_total": 100_000_000,
    "input_rows_read": 3000,
    "chunk_done": False,
    "rows_known": 2500,
    "rows_sent": 2000,
    "rows_accepted": 1500,
    "batches_accepted": 4,
    "batches_known": 7,
    "batches_sent": 5,
    "batches_final": 3,
    "batches_failed": 1,
    "in_flight": 2,
    "limit": 6,
    "limit_max": 8,
    "limit_waiting": 0,
    "limit_lowered": 1,
    "throttles": 4,
    "throttled": 4,
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
        line.split("] ", 1)[1].startswith(
            "input 40% of 100.0 MB; batches 3 final of 7 known (1 failed); rows 2,000 sent, "
            "1,500 accepted ("
        )
        and " rows/s); in flight 2 (limit 6 of 8, lowered by throttling); throttled (429/503) 4; "
        in line
        for line in lines
    )


async def test_bars_show_counts_and_route_log_records_through_the_console(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: nothing cut short
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
    assert "40% of 100.0 MB" in text
    assert "1,500/7,500 rows" in text  # 3,000 rows in 40% of the bytes: about 7,500 in all
    assert "3/7 known batches" in text
    assert "in flight 2 (limit 6 of 8, lowered by throttling)" in text
    assert "batch 000002 is stuck" in text


async def test_bars_on_an_80_column_terminal_keep_names_and_counts_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    out = io.StringIO()
    display = progress.progress_display("bar", out)
    assert display is not None
    async with display(lambda: SNAPSHOT):
        await asyncio.sleep(0.01)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    assert max(len(line) for line in lines) <= 80
    assert any(line.startswith("accepted  ") and "1,500/7,500 rows " in line for line in lines)
    assert any(line.startswith("final     ") and "3/7 known batches " in line for line in lines)
    assert all(line.endswith(" 0:00:00") for line in lines)  # a long text never hides the time


def test_eta_from_the_measured_rate_and_the_input_share() -> None:
    # 3,000 rows read in 40% of the bytes: 7,500 expected; 6,000 to go at 100 rows/s
    assert progress.rows_total(SNAPSHOT) == 7500
    assert progress.eta_s(SNAPSHOT, 100.0) == 60.0
    assert progress.eta_s(SNAPSHOT, None) is None
    done = {**SNAPSHOT, "chunk_done": True}
    assert progress.rows_total(done) == 2500  # read to the end: the rows of its batches
    assert progress.eta_s(done, 50.0) == 20.0
    piped = {**SNAPSHOT, "input_bytes_total": None}
    assert progress.rows_total(piped) is None  # standard input: no size, no estimate


def test_log_line_after_everything_was_accepted() -> None:
    s = {**SNAPSHOT, "chunk_done": True, "rows_sent": 2500, "rows_accepted": 2500}
    line = progress._line(s, 12.0, 50.0)
    assert line == (
        "[   12.0s] input read; batches 3 final of 7 known (1 failed); rows 2,500 sent, "
        "2,500 accepted (50 rows/s); in flight 2 (limit 6 of 8, lowered by throttling); "
        "throttled (429/503) 4; all accepted; 4 batches to complete"
    )


def accepted(rows: int, batches: int) -> dict[str, Any]:
    return {**SNAPSHOT, "rows_accepted": rows, "batches_accepted": batches}


async def test_rate_is_measured_over_the_last_minute() -> None:
    rate = progress._Rate()
    assert rate.update(0.0, accepted(0, 0)) is None
    assert rate.update(10.0, accepted(1000, 4)) == 100.0
    assert rate.update(70.0, accepted(1600, 6)) == 10.0  # the point at 0 s fell out of the window


async def test_no_rate_until_the_window_can_measure_one() -> None:
    """Under a second, or fewer than two batches accepted in the window: no rate, no ETA."""
    rate = progress._Rate()
    assert rate.update(100.0, accepted(0, 0)) is None
    assert rate.update(100.3, accepted(20_000, 4)) is None  # 4 batches, but in 0.3 s
    assert rate.update(110.0, accepted(20_000, 4)) == 2000.0  # the same 4 over 10 s
    one = progress._Rate()
    one.update(0.0, accepted(0, 0))
    assert one.update(10.0, accepted(500_000, 1)) is None  # one batch: its latency, not a pace
    assert one.update(20.0, accepted(1_000_000, 2)) == 50_000.0
    s = {**accepted(20_000, 4), "chunk_done": True, "rows_known": 40_000}
    assert progress._line(s, 0.3, None) == (
        "[    0.3s] input read; batches 3 final of 7 known (1 failed); rows 2,000 sent, "
        "20,000 accepted (- rows/s); in flight 2 (limit 6 of 8, lowered by throttling); "
        "throttled (429/503) 4; ETA not known yet"
    )


def test_the_limit_is_shown_when_it_holds_submits_back_or_was_lowered() -> None:
    quiet = {**SNAPSHOT, "in_flight": 1, "limit": 5, "limit_lowered": 0, "limit_waiting": 0}
    assert progress._in_flight(quiet) == "in flight 1"  # a run of a few batches: no limit
    held = {**quiet, "in_flight": 5, "limit_waiting": 3}
    assert progress._in_flight(held) == "in flight 5 (limit 5 of 8 reached)"
    full = {**held, "in_flight": 8, "limit": 8}
    assert progress._in_flight(full) == "in flight 8 (limit 8 of 8 reached)"
    lowered = {**quiet, "in_flight": 0, "limit": 3, "limit_lowered": 2}
    assert progress._in_flight(lowered) == "in flight 0 (limit 3 of 8, lowered by throttling)"
    back_up = {**lowered, "limit": 8}  # probed back up to --concurrency: nothing to say
    assert progress._in_flight(back_up) == "in flight 0"


async def test_counters_of_a_real_run_add_up(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """Resends count once; throttled is 429 + 503 in the progress and the report alike."""
    emu = await emulator_factory(
        drop_rate=0.2,
        error_rate=0.2,
        # the limiter starts at 3 in flight: against 1, with submits long enough to overlap
        # even on a loaded machine, its first burst is throttled whatever the timing
        max_inflight=1,
        retry_after_s=0.0,
        latency_ms=(60, 100),
        seed=4,
    )
    rows = [[f"C{i}", "gold"] for i in range(300)]
    src = write_csv(tmp_path / "in.csv", ["id", "tier"], rows)
    seen: list[dict[str, Any]] = []

    @contextlib.asynccontextmanager
    async def display(snapshot: Callable[[], dict[str, Any]]) -> AsyncIterator[None]:
        try:
            yield
        finally:
            seen.append(snapshot())

    settings = make_settings(emu, batch__max_rows=20, submit__concurrency=6)
    outcome = await run_pipeline(
        str(src), settings, tmp_path / "w", job_id="t", progress=display, install_signals=False
    )
    assert outcome.exit_code == 0
    report, last = outcome.report, seen[-1]
    stats = emu.stats()
    assert stats["dropped"] > 0  # accepted, then resent: counted once below
    assert stats["throttled"] > 0 and stats["errors_injected"] > 0
    assert (last["rows_accepted"], last["rows_sent"], last["rows_known"]) == (300, 300, 300)
    assert last["throttled"] == report["requests"]["throttled"]
    assert last["throttled"] == stats["throttled"] + stats["errors_injected"]
    assert (last["batches_final"], last["batches_known"]) == (15, 15)
    assert last["input_bytes_total"] == src.stat().st_size == last["input_bytes_read"]
    assert last["limit_max"] == 6


async def test_the_first_log_line_already_has_a_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rate counts from the start: the first line (10 s in) must not say "-"."""
    monkeypatch.setattr(progress, "LOG_EVERY_S", 3600.0)  # only the final line is printed
    now = {"rows": 0, "batches": 0}
    out = io.StringIO()
    display = progress.progress_display("log", out)
    assert display is not None
    async with display(lambda: accepted(now["rows"], now["batches"])):
        now.update(rows=1500, batches=3)
        await asyncio.sleep(1.1)  # a rate needs a window of a second at least
    (line,) = out.getvalue().splitlines()
    rate = int(line.split("1,500 accepted (", 1)[1].split(" rows/s)", 1)[0].replace(",", ""))
    assert 0 < rate <= 1500 / 1.1
    assert "ETA not known yet" not in line
