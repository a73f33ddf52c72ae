"""The repeated-id rule end to end: every profile ends as the export applied row by row.

A hypothesis property over random exports with repeats, random batch sizes
and concurrency, and an emulator with faults (503s, dropped connections,
stuck batches, random apply order); and the real command line at
concurrency 8 against an emulator process with latency jitter, 503s and
dropped connections, killed with SIGKILL in the middle and resumed.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import EmulatorFactory
from tests.helpers import (
    CLIENT,
    FAST,
    fetched_profiles,
    read_report,
    spawned_emulator,
    stored_profiles,
    write_csv,
)
from uploader.emulator import Emulator, EmulatorConfig
from uploader.pipeline import run_pipeline
from uploader.settings import load_settings

HEADER = ["id", "tier", "score", "note"]
VALUE = st.sampled_from(["", "", "gold", "silver", "a,b", "50%", "x&y=z", "é +"])


def sequential_model(rows: list[list[str]]) -> dict[str, dict[str, str]]:
    """Apply the valid rows one at a time in input order: the last non-empty value wins."""
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        if "+" in row[0] or len(row) > len(HEADER):  # rejected as invalid_id / too_many_fields
            continue
        attrs = out.setdefault(row[0], {})
        attrs.update({k: v for k, v in zip(HEADER[1:], row[1:], strict=False) if v})
    return out


@st.composite
def exports(draw: st.DrawFn) -> list[list[str]]:
    ids = draw(st.lists(st.sampled_from([f"K{i}" for i in range(12)] + ["bad+id"]), min_size=1))
    rows = []
    for pid in ids:
        row = [pid, draw(VALUE), draw(VALUE), draw(VALUE)]
        if draw(st.integers(0, 30)) == 0:
            row.append("one too many")
        rows.append(row)
    return rows


async def _scenario(rows: list[list[str]], tmp: Path, max_rows: int, concurrency: int, seed: int):
    config = EmulatorConfig(
        apply_rate=5_000.0,
        apply_order="random",
        latency_ms=(0.0, 4.0),
        error_rate=0.15,
        drop_rate=0.15,
        stuck_rate=0.15,
        seed=seed,
    )
    src = write_csv(tmp / "in.csv", HEADER, rows)
    async with Emulator(config) as emu:
        overrides = {
            "target.client": CLIENT,
            "target.base_url": emu.base_url,
            **FAST,
            "batch.max_rows": max_rows,
            "submit.concurrency": concurrency,
            "submit.max_attempts": 30,
            "status.resubmit_stuck": 30,
        }
        outcome = await run_pipeline(
            str(src),
            load_settings(None, overrides, {}),
            tmp / "w",
            job_id="p",
            install_signals=False,
        )
        await emu.wait_applied(30)
        expected = sequential_model(rows)
        return outcome, expected, stored_profiles(emu, list(expected))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    rows=exports(),
    max_rows=st.integers(1, 6),
    concurrency=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_final_store_equals_the_sequential_model(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[list[str]],
    max_rows: int,
    concurrency: int,
    seed: int,
) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    outcome, expected, stored = asyncio.run(_scenario(rows, tmp, max_rows, concurrency, seed))
    rows_report = outcome.report["rows"]
    assert rows_report["pending"] == 0 and rows_report["failed"] == 0
    assert rows_report["read"] == (
        rows_report["rejected"] + rows_report["folded"] + rows_report["submitted"]
    )
    assert rows_report["submitted"] == len(expected)
    assert stored == expected


# -- the command line, killed and resumed --------------------------------------------------

ROWS, BATCH_ROWS = 2400, 60


@pytest.fixture
async def faulty_emulator():  # type: ignore[no-untyped-def]
    async with spawned_emulator(
        "--latency-ms", "5-120", "--error-rate", "0.1", "--drop-rate", "0.1",
        "--apply-order", "random", "--apply-rate", "4000", "--seed", "9",
    ) as base_url:  # fmt: skip
        yield base_url


def _export(tmp_path: Path) -> tuple[Path, list[list[str]]]:
    """Half the rows unique, half on 400 ids with 3 rows each far apart, values changing."""
    rows = []
    for i in range(ROWS):
        pid = f"U{i:05d}" if i % 2 else f"C{(i // 2 * 7919) % 400:04d}"
        rows.append([pid, ["gold", "", "silver", "bronze"][i % 4], f"{i}", f"n{i}, %&+" * (i % 2)])
    return write_csv(tmp_path / "export.csv", HEADER, rows), rows


def _accepted(work: Path) -> int:
    path = work / "journal.sqlite"
    if not path.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute(
                "SELECT COUNT(*) FROM batches WHERE state IN ('accepted', 'complete')"
            ).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return 0
    return int(row[0])


@pytest.mark.timeout(240)
async def test_concurrency_8_faults_sigkill_and_resume_every_profile_exact(
    faulty_emulator: str, tmp_path: Path
) -> None:
    src, rows = _export(tmp_path)
    work = tmp_path / "work"
    config = tmp_path / "u.toml"
    config.write_text(
        "[status]\npoll_initial_s = 0.1\npoll_max_s = 0.3\n"
        "[submit]\nbackoff_initial_s = 0.01\nbackoff_max_s = 0.1\nmax_attempts = 20\n"
    )
    cmd = [
        sys.executable, "-m", "uploader", "run", str(src), "--client", CLIENT,
        "--base-url", faulty_emulator, "--work-dir", str(work), "--config", str(config),
        "--max-batch-rows", str(BATCH_ROWS), "--concurrency", "8", "--progress", "none",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(*cmd, stderr=asyncio.subprocess.DEVNULL)
    for _ in range(6000):
        if _accepted(work) >= 4 or proc.returncode is not None:
            break
        await asyncio.sleep(0.01)
    assert proc.returncode is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    again = await asyncio.create_subprocess_exec(*cmd, stderr=asyncio.subprocess.DEVNULL)
    assert await asyncio.wait_for(again.wait(), 200) == 0

    report = read_report(work)
    distinct = len({r[0] for r in rows})
    assert report["rows"]["read"] == ROWS
    assert report["rows"]["folded"] == ROWS - distinct
    assert report["rows"]["submitted"] == report["rows"]["successful"] == distinct
    assert report["repeated_ids"]["ids"] == 400
    assert report["repeated_ids"]["max_rows_per_id"] == 3

    expected = sequential_model(rows)
    assert await fetched_profiles(faulty_emulator, sorted(expected)) == expected


async def test_standard_input_is_folded_too(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(apply_order="random")
    rows = [[f"S{i % 7}", ["a", "", "b"][i % 3], str(i), ""] for i in range(40)]
    src = write_csv(tmp_path / "in.csv", HEADER, rows)
    work = tmp_path / "w"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uploader", "run", "-", "--client", CLIENT,
        "--base-url", emu.base_url, "--work-dir", str(work), "--max-batch-rows", "2",
        "--progress", "none", stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate(src.read_bytes())
    assert proc.returncode == 0, err.decode()
    assert "7 ids on more than one row: 33 rows folded into one row per id" in err.decode()
    report = read_report(work)
    assert report["repeated_ids"]["handling"] == "fold"
    assert report["rows"]["folded"] == 33 and report["rows"]["submitted"] == 7
    await emu.wait_applied(10)
    expected = sequential_model(rows)
    assert stored_profiles(emu, list(expected)) == expected
