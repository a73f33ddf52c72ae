"""Resume is checked, not assumed: the input, standard input, and stuck resends.

The state a SIGKILL leaves behind (batch files written and journaled, some
submits on the wire) is made by the real chunker and journal, exactly as the
pipeline records it, and then the same command runs again.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import EmulatorFactory
from tests.helpers import (
    assert_store_matches,
    expected_profiles,
    make_settings,
    read_report,
    run,
    write_csv,
)
from uploader.chunk import BatchFile, Chunker
from uploader.emulator import Emulator
from uploader.errors import ConfigError
from uploader.journal import Journal
from uploader.settings import Settings
from uploader.states import BatchState
from uploader.workdir import fingerprint

ROWS, BATCH_ROWS = 8000, 400  # 20 batches; 200-byte rows: 1.6 MB, the first MiB is ~5,200 rows
NOTE = "n" * 170


def _export(path: Path, *, change_row: int | None = None) -> Path:
    rows = [[f"C{i:05d}", f"t{i % 5}", f"{NOTE}{i:06d}"] for i in range(ROWS)]
    if change_row is not None:
        # Same size, same first MiB: the id is blanked, the note padded by as much.
        pid = rows[change_row][0]
        rows[change_row] = ["", rows[change_row][1], rows[change_row][2] + "x" * len(pid)]
    return write_csv(path, ["id", "tier", "note"], rows)


def _killed_run(src: Path, work: Path, settings: Settings, *, through: int, on_wire: int) -> int:
    """What `kill -9` leaves after the chunker journaled ``through`` batches or a few more
    (it stops between blocks), with batch ``on_wire``'s submit in flight. Returns the
    number of batches journaled."""
    stop = threading.Event()
    with Journal(work / "journal.sqlite") as journal:
        journal.start_run(fingerprint(str(src), settings), fresh=False)

        def on_batch(batch: BatchFile) -> None:
            journal.add_batch(batch)
            if batch.seq == on_wire:
                journal.begin_submit(batch.seq)
            if batch.seq >= through:
                stop.set()

        Chunker(str(src), work, settings.input, settings.batch, on_batch=on_batch, stop=stop).run()
        return journal.max_seq()


async def test_a_changed_input_is_refused_before_anything_is_sent(
    emulator: Emulator, tmp_path: Path
) -> None:
    src, work = _export(tmp_path / "export.csv"), tmp_path / "work"
    settings = make_settings(emulator, batch__max_rows=BATCH_ROWS)
    size = src.stat().st_size
    journaled = _killed_run(src, work, settings, through=16, on_wire=3)
    assert 16 <= journaled < ROWS // BATCH_ROWS
    _export(src, change_row=6000)  # in batch 16 (rows 6000-6399), past the first MiB
    assert src.stat().st_size == size

    outcome = await run(emulator, src, work, batch__max_rows=BATCH_ROWS)
    assert outcome.exit_code == 2
    report = read_report(work)
    assert report["error"] == (
        "the input changed since the last run: batch 000016 (input lines 6002-6401) is not the "
        f"one recorded in {work / 'journal.sqlite'}; nothing was sent by this run; pass --fresh "
        "to start over with this input"
    )
    assert emulator.stats()["submits"] == 0
    with Journal(work / "journal.sqlite") as journal:
        states = {b.seq: b.state for b in journal.batches()}
    assert states == {seq: BatchState.WRITTEN for seq in range(1, journaled + 1)}

    # With --fresh, the new input is sent as it is now: the blanked id is rejected.
    outcome = await run(emulator, src, work, batch__max_rows=BATCH_ROWS, run__fresh=True)
    assert outcome.exit_code == 1
    assert read_report(work)["rows"] == {
        "read": ROWS, "rejected": 1, "folded": 0, "submitted": ROWS - 1, "successful": ROWS - 1,
        "failed": 0, "not_found": 0, "pending": 0,
    }  # fmt: skip


async def test_after_chunking_finished_unsent_batches_are_checked_too(
    emulator: Emulator, tmp_path: Path
) -> None:
    src, work = _export(tmp_path / "export.csv"), tmp_path / "work"
    settings = make_settings(emulator, batch__max_rows=BATCH_ROWS)
    journaled = _killed_run(src, work, settings, through=10**9, on_wire=0)
    assert journaled == ROWS // BATCH_ROWS
    with Journal(work / "journal.sqlite") as journal:  # the killed run had finished chunking
        journal.set_meta("chunk", {"rows_read": ROWS, "rejected": {}, "header": []})
        journal.set_meta("chunk_done", True)
    _export(src, change_row=7999)  # the very last row: the last batch differs

    outcome = await run(emulator, src, work, batch__max_rows=BATCH_ROWS)
    assert outcome.exit_code == 2
    assert read_report(work)["error"].startswith(
        "the input changed since the last run: batch 000020 (input lines 7602-8001) is not "
    )
    assert emulator.stats()["submits"] == 0

    _export(src)  # the input as it was: the same command sends every batch once
    outcome = await run(emulator, src, work, batch__max_rows=BATCH_ROWS)
    assert outcome.exit_code == 0
    assert emulator.stats()["submits"] == ROWS // BATCH_ROWS


async def test_every_batch_sent_then_the_input_changed_is_refused_too(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Nothing is left to send (a --no-wait run sent it all), but a rerun must not
    say COMPLETE for an input whose changed rows were never sent."""
    src, work = _export(tmp_path / "export.csv"), tmp_path / "work"
    outcome = await run(emulator, src, work, batch__max_rows=BATCH_ROWS, status__wait=False)
    assert outcome.exit_code == 3
    assert emulator.stats()["submits"] == ROWS // BATCH_ROWS
    size, mtime_ns = src.stat().st_size, src.stat().st_mtime_ns
    _export(src, change_row=7999)  # same size, same first MiB: the last batch differs
    os.utime(src, ns=(mtime_ns + 10**9, mtime_ns + 10**9))  # as a rewrite moves it
    assert src.stat().st_size == size

    outcome = await run(emulator, src, work, batch__max_rows=BATCH_ROWS)
    assert outcome.exit_code == 2
    assert read_report(work)["error"].startswith(
        "the input changed since the last run: batch 000020 (input lines 7602-8001) is not "
    )
    assert emulator.stats()["submits"] == ROWS // BATCH_ROWS

    _export(src)  # the content it had, rewritten (a new mtime): it is checked and follows
    outcome = await run(emulator, src, work, batch__max_rows=BATCH_ROWS)
    assert outcome.exit_code == 0
    assert read_report(work)["rows"]["successful"] == ROWS
    assert emulator.stats()["submits"] == ROWS // BATCH_ROWS


async def test_a_shorter_input_is_refused_and_recorded_files_stay(
    emulator: Emulator, tmp_path: Path
) -> None:
    src, work = _export(tmp_path / "export.csv"), tmp_path / "work"
    settings = make_settings(emulator, batch__max_rows=BATCH_ROWS)
    journaled = _killed_run(src, work, settings, through=16, on_wire=0)
    size = src.stat().st_size
    lines = src.read_bytes().splitlines(keepends=True)
    src.write_bytes(b"".join(lines[: 1 + 10 * BATCH_ROWS]))  # the first ten batches only

    with pytest.raises(ConfigError) as err:
        await run(emulator, src, work, batch__max_rows=BATCH_ROWS)
    assert str(err.value) == (
        f"work dir {work} holds a run of input {str(src)!r}, but the file changed: "
        f"{src.stat().st_size} bytes now, {size} then; use --fresh to start over with this "
        "input or another --work-dir"
    )
    assert emulator.stats()["submits"] == 0
    batches = sorted(p.name for p in (work / "batches").iterdir())
    assert batches == [f"batch-{seq:06d}.txt" for seq in range(1, journaled + 1)]


async def test_the_same_input_resumes_and_every_row_arrives_once(
    emulator: Emulator, tmp_path: Path
) -> None:
    src, work = _export(tmp_path / "export.csv"), tmp_path / "work"
    settings = make_settings(emulator, batch__max_rows=BATCH_ROWS)
    journaled = _killed_run(src, work, settings, through=5, on_wire=2)

    outcome = await run(emulator, src, work, batch__max_rows=BATCH_ROWS)
    assert outcome.exit_code == 0
    assert emulator.stats()["submits"] == ROWS // BATCH_ROWS
    with Journal(work / "journal.sqlite") as journal:
        submits = {b.seq: b.submits for b in journal.batches()}
    # batch 2 was on the wire when the first run died: sent again, counted
    assert submits == {seq: 2 if seq == 2 else 1 for seq in range(1, ROWS // BATCH_ROWS + 1)}
    assert journaled >= 5
    await emulator.wait_applied()
    assert_store_matches(emulator, expected_profiles(src))


async def test_a_crash_resend_does_not_use_up_the_stuck_resend(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(stuck_rate=1.0)  # every batch Target accepts ends stuck
    src = write_csv(tmp_path / "in.csv", ["id", "tier"], [[f"K{i}", "gold"] for i in range(30)])
    work = tmp_path / "work"
    settings = make_settings(emu, batch__max_rows=10)
    _killed_run(src, work, settings, through=3, on_wire=1)  # batch 1 on the wire at SIGKILL

    outcome = await run(emu, src, work, batch__max_rows=10)
    assert outcome.exit_code == 1
    with Journal(work / "journal.sqlite") as journal:
        batches = {b.seq: (b.state, b.submits, b.stuck_resends) for b in journal.batches()}
    # batch 1: killed submit, the crash resend, then the one resend for `stuck`
    assert batches == {
        1: (BatchState.FAILED, 3, 1),
        2: (BatchState.FAILED, 2, 1),
        3: (BatchState.FAILED, 2, 1),
    }
    assert emu.stats()["submits"] == 6
    assert read_report(work)["errors"][0]["error"] == "stuck after 3 submits"


async def _uploader(*args: str, stdin: bytes, cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uploader", *args,
        stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=cwd,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


def _csv(prefix: str, rows: int) -> bytes:
    return ("id,tier\n" + "".join(f"{prefix}{i},gold\n" for i in range(rows))).encode()


@pytest.mark.timeout(180)
async def test_stdin_twice_never_mixes_two_inputs(emulator: Emulator, tmp_path: Path) -> None:
    cmd = ["run", "-", "--client", "acme", "--base-url", emulator.base_url, "--progress", "none"]
    a, b = _csv("A", 300), _csv("B", 400)

    code, err = await _uploader(*cmd, stdin=a, cwd=tmp_path)
    assert (code, emulator.stats()["rows_accepted"]) == (0, 300)
    code, err = await _uploader(*cmd, stdin=b, cwd=tmp_path)  # other bytes: a new job
    assert (code, emulator.stats()["rows_accepted"]) == (0, 700)
    runs = sorted(p.name for p in (tmp_path / "uploader-runs").iterdir())
    assert len(runs) == 2 and all(name.startswith("stdin-") for name in runs)
    for name in runs:
        spool = tmp_path / "uploader-runs" / name / "stdin.csv"
        assert spool.read_bytes() in (a, b)
        assert spool.stat().st_mode & 0o777 == 0o600
        assert read_report(spool.parent)["rows"]["successful"] in (300, 400)

    code, err = await _uploader(*cmd, stdin=a, cwd=tmp_path)  # the same bytes: said, not hidden
    assert code == 0
    assert "standard input is the input of the run in uploader-runs/stdin-" in err
    assert "resuming it; pass --fresh to send it all again" in err
    assert emulator.stats()["rows_accepted"] == 700
    assert not list((tmp_path / "uploader-runs").glob(".stdin-*"))  # no spool left behind


async def test_stdin_into_a_work_dir_of_other_bytes_is_refused(
    emulator: Emulator, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    cmd = ["run", "-", "--client", "acme", "--base-url", emulator.base_url, "--work-dir", str(work)]
    assert (await _uploader(*cmd, stdin=_csv("A", 50), cwd=tmp_path))[0] == 0
    code, err = await _uploader(*cmd, stdin=_csv("B", 50), cwd=tmp_path)
    assert code == 2
    assert err.startswith(
        f"uploader: error: work dir {work} holds a run of input standard input, but standard "
        "input has other content (sha256 "
    )
    assert err.endswith("use --fresh to start over with this input or another --work-dir\n")
    assert err.count("\n") == 1
    assert emulator.stats()["rows_accepted"] == 50
    assert sorted(p.name for p in work.iterdir() if p.name.startswith(".stdin")) == []
