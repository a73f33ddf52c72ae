"""Pacing: the rules alone on a manual clock, then each control end to end vs the emulator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EmulatorFactory
from tests.helpers import make_settings, read_report, write_csv
from uploader.emulator import Emulator
from uploader.errors import ConfigError
from uploader.pacing import Pacer, PacingStop, ScaledClock, parse_window
from uploader.pipeline import RunOutcome, run_pipeline
from uploader.progress import every
from uploader.states import RemoteStatus


def at(text: str) -> float:
    """Epoch seconds of an ISO time in UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class ManualClock:
    """Time moves only when someone sleeps: a night passes in no time."""

    def __init__(self, start: float, real_s: float = 0.0) -> None:
        self.t = start
        self.real_s = real_s  # real time each sleep takes, so a watcher can see it

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(self.real_s)


class Ledger:
    def __init__(self) -> None:
        self.days: dict[str, int] = {}

    def rows_on(self, day: str) -> int:
        return self.days.get(day, 0)

    def add_rows(self, day: str, rows: int) -> None:
        self.days[day] = self.days.get(day, 0) + rows


# -- the rules ---------------------------------------------------------------------------


def test_window_parsing_wrapping_and_next_opening() -> None:
    night = parse_window("22:00-06:00")
    assert str(night) == "22:00-06:00"
    d = datetime(2026, 1, 1, tzinfo=UTC)
    assert night.contains(d.replace(hour=23)) and night.contains(d.replace(hour=5, minute=59))
    assert not night.contains(d.replace(hour=6)) and not night.contains(d.replace(hour=12))
    assert night.next_open(d.replace(hour=12)) == d.replace(hour=22)
    assert night.next_open(d.replace(hour=23)) == datetime(2026, 1, 2, 22, tzinfo=UTC)
    for bad in ("22-06", "22:00", "25:00-06:00", "06:00-06:00", "6:0-7:00"):
        with pytest.raises(ConfigError, match=r"pacing\.window"):
            parse_window(bad)


async def test_rate_cap_spaces_batches_with_a_burst_of_one_batch() -> None:
    clock = ManualClock(at("2026-01-01T00:00:00"))
    pacer = Pacer(max_rows_per_s=1000, clock=clock)
    start = clock.t
    for seq in range(1, 11):
        await pacer.admit(seq, 500)
    # The first batch goes at once (the bucket holds one batch); 9 x 500 rows at 1000/s follow.
    assert clock.t - start == pytest.approx(4.5)
    assert pacer.waited_s["rate"] == pytest.approx(4.5)


async def test_rate_cap_is_shared_by_concurrent_workers() -> None:
    clock = ManualClock(at("2026-01-01T00:00:00"))
    pacer = Pacer(max_rows_per_s=100, clock=clock)
    await asyncio.gather(*(pacer.admit(seq, 50) for seq in range(1, 21)))
    assert clock.t - at("2026-01-01T00:00:00") == pytest.approx(19 * 0.5)


async def test_daily_budget_stops_and_names_the_next_day() -> None:
    clock = ManualClock(at("2026-03-05T18:00:00"))
    ledger = Ledger()
    pacer = Pacer(daily_rows=250, ledger=ledger, clock=clock, timezone=_utc())
    await pacer.admit(1, 100)
    await pacer.admit(2, 100)
    with pytest.raises(PacingStop, match=r"run again after 2026-03-06 00:00 UTC") as stop:
        await pacer.admit(3, 100)
    assert stop.value.resume_at == at("2026-03-06T00:00:00")
    assert ledger.days == {"2026-03-05": 200}
    clock.t = at("2026-03-06T00:00:01")
    await pacer.admit(3, 100)
    assert ledger.days == {"2026-03-05": 200, "2026-03-06": 100}


async def test_backlog_waits_until_a_batch_settles() -> None:
    pacer = Pacer(max_backlog_rows=250)
    await pacer.admit(1, 100)
    await pacer.admit(2, 100)
    third = asyncio.create_task(pacer.admit(3, 100))
    await asyncio.sleep(0.01)
    assert not third.done() and pacer.waiting is not None
    assert pacer.waiting.startswith("waiting for the backlog (200 rows not final")
    pacer.settled(1)
    await asyncio.wait_for(third, 1)
    assert pacer.backlog_rows == 200 and pacer.peak_backlog_rows == 200


def _utc() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo("UTC")


# -- end to end --------------------------------------------------------------------------

HEADER = ["customer_id", "loyaltyTier"]


def export(tmp_path: Path, rows: int) -> Path:
    data = [[f"C{i:05d}", ("gold", "silver")[i % 2]] for i in range(rows)]
    return write_csv(tmp_path / "export.csv", HEADER, data)


def watcher(seen: list[dict[str, Any]]) -> Callable[[Any], Any]:
    """A progress display that records a snapshot every few milliseconds."""

    def display(snapshot: Callable[[], dict[str, Any]]) -> AbstractAsyncContextManager[None]:
        return every(0.003, lambda: seen.append(snapshot()))

    return display


async def run_paced(
    emu: Emulator, src: Path, work: Path, clock: Any, progress: Any = None, **keys: Any
) -> RunOutcome:
    settings = make_settings(emu, batch__max_rows=100, pacing__timezone="UTC", **keys)
    return await run_pipeline(
        str(src),
        settings,
        work,
        job_id="paced",
        install_signals=False,
        clock=clock,
        progress=progress,
    )


async def test_window_closed_then_open_waits_and_shows_it(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = export(tmp_path, 500)
    clock = ManualClock(at("2026-01-01T05:59:00"), real_s=0.05)
    seen: list[dict[str, Any]] = []
    outcome = await run_paced(
        emulator, src, tmp_path / "w", clock, watcher(seen), pacing__window="06:00-07:00"
    )
    assert outcome.exit_code == 0
    report = read_report(tmp_path / "w")
    assert report["rows"]["successful"] == 500
    assert report["pacing"]["window"] == "06:00-07:00"
    assert report["pacing"]["timezone"] == "UTC"
    assert report["pacing"]["waited_s"]["window"] == 60.0
    waits = {s["waiting"] for s in seen if s["waiting"]}
    assert waits == {"waiting for the window (opens 2026-01-01 06:00 UTC)"}
    # Nothing was sent before the window opened: every submit came after the wait.
    assert emulator.stats()["batches_accepted"] == 5


async def test_outside_window_exit_3_then_rerun_inside(emulator: Emulator, tmp_path: Path) -> None:
    src = export(tmp_path, 300)
    keys = {"pacing__window": "22:00-06:00", "pacing__exit_outside_window": True}
    noon = ManualClock(at("2026-01-01T12:00:00"))
    outcome = await run_paced(emulator, src, tmp_path / "w", noon, **keys)
    assert outcome.exit_code == 3
    report = read_report(tmp_path / "w")
    assert report["status"] == "incomplete"
    assert report["pacing"]["stopped"] == (
        "outside the submit window 22:00-06:00 (UTC); run again after 2026-01-01 22:00 UTC"
    )
    assert report["pacing"]["resume_after"] == "2026-01-01T22:00:00+00:00"
    assert emulator.stats()["batches_accepted"] == 0
    night = ManualClock(at("2026-01-01T23:30:00"))
    outcome = await run_paced(emulator, src, tmp_path / "w", night, **keys)
    assert outcome.exit_code == 0
    assert read_report(tmp_path / "w")["rows"]["successful"] == 300
    assert emulator.stats()["batches_accepted"] == 3


async def test_daily_budget_used_then_rerun_next_day(emulator: Emulator, tmp_path: Path) -> None:
    src = export(tmp_path, 700)
    keys = {"pacing__daily_rows": 300}
    day1 = ManualClock(at("2026-01-01T10:00:00"))
    outcome = await run_paced(emulator, src, tmp_path / "w", day1, **keys)
    assert outcome.exit_code == 3
    report = read_report(tmp_path / "w")
    assert report["rows"]["successful"] == 300  # the accepted batches were followed to final
    assert report["pacing"]["rows_today"] == 300
    assert report["pacing"]["stopped"].startswith("daily budget used: 300 of 300 rows")
    assert report["pacing"]["stopped"].endswith("run again after 2026-01-02 00:00 UTC")
    # Later the same day: nothing more is sent.
    later = ManualClock(at("2026-01-01T23:59:00"))
    assert (await run_paced(emulator, src, tmp_path / "w", later, **keys)).exit_code == 3
    assert emulator.stats()["batches_accepted"] == 3
    day2 = ManualClock(at("2026-01-02T00:00:05"))
    assert (await run_paced(emulator, src, tmp_path / "w", day2, **keys)).exit_code == 3
    assert read_report(tmp_path / "w")["rows"]["successful"] == 600
    day3 = ManualClock(at("2026-01-03T08:00:00"))
    assert (await run_paced(emulator, src, tmp_path / "w", day3, **keys)).exit_code == 0
    report = read_report(tmp_path / "w")
    assert report["rows"]["successful"] == 700
    assert report["pacing"]["rows_today"] == 100
    assert emulator.stats()["batches_accepted"] == 7


async def _peak_target_backlog(emu: Emulator, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        pending = sum(
            b.size for b in emu.store.batches.values() if b.status == RemoteStatus.INCOMPLETE
        )
        peak[0] = max(peak[0], pending)
        await asyncio.sleep(0.002)


@pytest.mark.parametrize("cap", [None, 250])
async def test_backlog_cap_respected(
    emulator_factory: EmulatorFactory, tmp_path: Path, cap: int | None
) -> None:
    emu = await emulator_factory(apply_rate=2_000)  # slower than we submit: a backlog builds
    src = export(tmp_path, 1000)
    peak, stop = [0], asyncio.Event()
    watch = asyncio.create_task(_peak_target_backlog(emu, peak, stop))
    clock = ManualClock(at("2026-01-01T00:00:00"))
    keys = {"pacing__max_backlog_rows": cap} if cap else {}
    outcome = await run_paced(emu, src, tmp_path / "w", clock, submit__concurrency=8, **keys)
    stop.set()
    await watch
    assert outcome.exit_code == 0
    report = read_report(tmp_path / "w")
    assert report["rows"]["successful"] == 1000
    if cap is None:
        assert report["pacing"] is None
        assert peak[0] > 250  # without the cap Target holds more than it
    else:
        assert 0 < peak[0] <= 200  # two batches of 100 fit under 250, a third does not
        assert report["pacing"]["peak_backlog_rows"] == 200
        assert report["pacing"]["waited_s"]["backlog"] == 0.0  # manual clock: no time passed


def test_backlog_cap_needs_wait() -> None:
    from uploader.settings import load_settings

    with pytest.raises(ConfigError, match=r"pacing\.max_backlog_rows needs status\.wait"):
        load_settings(
            None,
            {"target.client": "a", "pacing.max_backlog_rows": 10, "status.wait": False},
            {},
        )


async def test_scaled_clock_runs_faster_and_sleeps_consistently() -> None:
    clock = ScaledClock(at("2026-01-01T00:00:00"), speed=1000)
    await clock.sleep(30)  # 30 ms of real time
    assert 30 <= clock.now() - at("2026-01-01T00:00:00") < 30 + 60


async def test_send_for_is_a_time_box_from_the_start_of_the_run() -> None:
    clock = ManualClock(at("2026-01-01T00:00:00"))
    pacer = Pacer(send_for_s=5, max_rows_per_s=100, clock=clock)
    for seq in range(1, 6):  # one 100-row batch a second: at 0, 1, 2, 3 and 4 s
        await pacer.admit(seq, 100)
    with pytest.raises(PacingStop) as stop:
        await pacer.admit(6, 100)  # would go at 5 s: the box is over
    assert str(stop.value) == (
        "sent for 5 s (pacing.send_for_s); run the same command again to continue"
    )
    assert (stop.value.rule, stop.value.resume_at) == ("time", None)
    assert clock.t - at("2026-01-01T00:00:00") == pytest.approx(5.0)
    assert pacer.describe()["send_for_s"] == 5


async def test_send_for_exit_3_then_the_rerun_continues(emulator: Emulator, tmp_path: Path) -> None:
    src = export(tmp_path, 700)
    keys = {"pacing__send_for_s": 3.5, "pacing__max_rows_per_s": 100}
    clock = ManualClock(at("2026-01-01T10:00:00"))
    outcome = await run_paced(emulator, src, tmp_path / "w", clock, **keys)
    assert outcome.exit_code == 3
    report = read_report(tmp_path / "w")
    # Batches at 0, 1, 2 and 3 s went out and were followed to the end; the fifth did not.
    assert report["rows"]["successful"] == 400 and report["status"] == "incomplete"
    assert report["pacing"]["stopped_rule"] == "time"
    assert report["pacing"]["stopped"].startswith("sent for 3.5 s (pacing.send_for_s)")
    assert emulator.stats()["batches_accepted"] == 4
    later = ManualClock(at("2026-01-01T11:00:00"))
    assert (await run_paced(emulator, src, tmp_path / "w", later, **keys)).exit_code == 0
    assert read_report(tmp_path / "w")["rows"]["successful"] == 700
    assert emulator.stats()["batches_accepted"] == 7
