"""Kill the real command line at chosen moments, run it again, and lose nothing.

The emulator runs in its own process (it must outlive the killed uploader);
the uploader is killed with SIGKILL when its journal shows the phase we want:
while chunking, with submits in flight, and while polling. Then the same
command runs again to the end, and every profile is checked.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers import (
    CLIENT,
    expected_profiles,
    fetched_profiles,
    read_report,
    spawned_emulator,
    write_csv,
)

pytestmark = pytest.mark.timeout(180)

ROWS, BATCH_ROWS = 3000, 100


@pytest.fixture
async def emulator_process() -> AsyncIterator[str]:
    flags = ("--latency-ms", "40-80", "--apply-rate", "3000", "--seed", "1")
    async with spawned_emulator(*flags) as base_url:
        yield base_url


def _export(tmp_path: Path) -> Path:
    rows = [[f"K{i:05d}", f"tier{i % 7}", f"{i}.5", f"note, {i} %&+"] for i in range(ROWS)]
    return write_csv(tmp_path / "export.csv", ["id", "tier", "value", "note"], rows)


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "uploader.toml"
    path.write_text(
        "[status]\npoll_initial_s = 0.1\npoll_max_s = 0.3\n"
        "[submit]\nbackoff_initial_s = 0.01\nbackoff_max_s = 0.1\n"
        "[batch]\nmax_waiting = 4\n"
    )
    return path


def _command(src: Path, base_url: str, work: Path, config: Path) -> list[str]:
    return [
        sys.executable, "-m", "uploader", "run", str(src), "--client", CLIENT,
        "--base-url", base_url, "--work-dir", str(work), "--config", str(config),
        "--max-batch-rows", str(BATCH_ROWS), "--concurrency", "2", "--progress", "none",
    ]  # fmt: skip


def _journal_states(work: Path) -> tuple[dict[int, tuple[str, int]], bool]:
    """seq -> (state, submits), and whether chunking finished, read from another process."""
    path = work / "journal.sqlite"
    if not path.exists():
        return {}, False
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute("SELECT seq, state, submits FROM batches").fetchall()
            done = db.execute("SELECT value FROM meta WHERE key = 'chunk_done'").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return {}, False
    return {seq: (state, submits) for seq, state, submits in rows}, done is not None


async def _kill_when(cmd: list[str], work: Path, phase: str) -> None:
    proc = await asyncio.create_subprocess_exec(*cmd, stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(3000):
            states, chunk_done = _journal_states(work)
            values = [s for s, _ in states.values()]
            if (
                (phase == "chunking" and values and not chunk_done)
                or (phase == "submitting" and "submitting" in values)
                or (phase == "polling" and chunk_done and "accepted" in values)
            ):
                break
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.01)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()


async def _interrupted_once_accepted(
    cmd: list[str], work: Path, *, stderr: int
) -> asyncio.subprocess.Process:
    """Start the command and send it SIGINT once its journal has a batch accepted."""
    proc = await asyncio.create_subprocess_exec(*cmd, stderr=stderr)
    for _ in range(3000):
        states, _ = _journal_states(work)
        if any(s == "accepted" for s, _ in states.values()):
            break
        await asyncio.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    return proc


async def test_sigkill_at_any_phase_loses_nothing(emulator_process: str, tmp_path: Path) -> None:
    src, config, work = _export(tmp_path), _config(tmp_path), tmp_path / "work"
    cmd = _command(src, emulator_process, work, config)
    complete_submits: dict[int, int] = {}
    for phase in ("chunking", "submitting", "polling", "submitting"):
        await _kill_when(cmd, work, phase)
        states, _ = _journal_states(work)
        for seq, (state, submits) in states.items():
            if state == "complete":
                complete_submits.setdefault(seq, submits)
    proc = await asyncio.create_subprocess_exec(*cmd, stderr=asyncio.subprocess.DEVNULL)
    assert await asyncio.wait_for(proc.wait(), 120) == 0

    states, chunk_done = _journal_states(work)
    assert chunk_done
    assert len(states) == ROWS // BATCH_ROWS
    assert {s for s, _ in states.values()} == {"complete"}
    # a batch once recorded complete was never sent again
    assert {seq: states[seq][1] for seq in complete_submits} == complete_submits

    report = read_report(work)
    assert report["status"] == "complete"
    assert report["rows"]["read"] == ROWS
    assert report["rows"]["successful"] == ROWS
    assert report["rows"]["pending"] == 0

    expected = expected_profiles(src)
    assert await fetched_profiles(emulator_process, sorted(expected)) == expected


async def test_a_second_sigint_while_stopping_still_writes_the_report(
    emulator_process: str, tmp_path: Path
) -> None:
    """Ctrl-C pressed twice: the run still winds down, writes its report and exits 3.

    The second comes while submits on the wire (40-80 ms each) get their grace.
    """
    src, config, work = _export(tmp_path), _config(tmp_path), tmp_path / "work"
    cmd = _command(src, emulator_process, work, config)
    proc = await _interrupted_once_accepted(cmd, work, stderr=asyncio.subprocess.PIPE)
    await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 3, err.decode()
    stopped = read_report(work)
    assert (stopped["exit_code"], stopped["stopped_by"]) == (3, "signal")
    assert "uploader job " in err.decode()  # the summary


async def test_sigint_exits_3_and_the_same_command_finishes(
    emulator_process: str, tmp_path: Path
) -> None:
    src, config, work = _export(tmp_path), _config(tmp_path), tmp_path / "work"
    cmd = _command(src, emulator_process, work, config)
    proc = await _interrupted_once_accepted(cmd, work, stderr=asyncio.subprocess.DEVNULL)
    assert await asyncio.wait_for(proc.wait(), 30) == 3
    stopped = read_report(work)
    assert (stopped["status"], stopped["stopped_by"]) == ("incomplete", "signal")
    again = await asyncio.create_subprocess_exec(*cmd, stderr=asyncio.subprocess.DEVNULL)
    assert await asyncio.wait_for(again.wait(), 120) == 0
    report = read_report(work)
    assert report["rows"]["successful"] == ROWS
