"""No silent hangs: an unexpected exception in any stage ends the run within seconds.

Each test injects an exception into one stage of the real pipeline (submit
workers, the poller, the chunker thread, a callback between stages, a journal
write) while the default status timeout is a day, and checks the run ends
promptly with exit 4, one error line in report.json, and a journal that the
same command then finishes from, every profile stored.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EmulatorFactory
from tests.helpers import assert_store_matches, expected_profiles, read_report, run, write_csv
from uploader import chunk, pipeline
from uploader.client import TargetClient
from uploader.journal import Journal, JournalError

ROWS, BATCH_ROWS = 600, 50  # three blocks of the chunker, twelve batches
PROMPT_S = 20  # far below the default status timeout (86,400 s): "within seconds"


def _export(tmp_path: Path) -> Path:
    rows = [[f"S{i:04d}", f"tier{i % 3}", f"{i}.25"] for i in range(ROWS)]
    return write_csv(tmp_path / "export.csv", ["id", "tier", "value"], rows)


def _boom(*_: Any, **__: Any) -> Any:
    raise RuntimeError("injected")


async def _aboom(*_: Any, **__: Any) -> Any:
    raise RuntimeError("injected")


def _after(n: int, real: Callable[..., Any]) -> Callable[..., Any]:
    """``real`` for the first ``n`` calls, then an injected exception."""
    calls = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > n:
            raise RuntimeError("injected")
        return real(*args, **kwargs)

    return wrapper


STAGES: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "submit worker": lambda mp: mp.setattr(TargetClient, "submit", _aboom),
    "poller": lambda mp: mp.setattr(TargetClient, "status", _aboom),
    "chunker thread": lambda mp: mp.setattr(chunk, "encode_rows", _after(1, chunk.encode_rows)),
    "chunker -> submit callback": lambda mp: mp.setattr(
        pipeline._Run, "_enqueue_new", _after(2, pipeline._Run._enqueue_new)
    ),
    "submit -> poll callback": lambda mp: mp.setattr(pipeline._Run, "accepted", _boom),
    "poll -> report callback": lambda mp: mp.setattr(pipeline._Run, "final", _boom),
    "journal write": lambda mp: mp.setattr(
        Journal, "record_accepted", _after(1, Journal.record_accepted)
    ),
}


@pytest.mark.parametrize("stage", list(STAGES))
async def test_an_exception_in_any_stage_ends_the_run_promptly(
    stage: str,
    emulator_factory: EmulatorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emu = await emulator_factory()
    src, work = _export(tmp_path), tmp_path / "work"
    with monkeypatch.context() as mp:
        STAGES[stage](mp)
        outcome = await asyncio.wait_for(
            run(emu, src, work, batch__max_rows=BATCH_ROWS, batch__max_waiting=2), PROMPT_S
        )
    assert outcome.exit_code == 4
    report = read_report(work)
    assert report["status"] == "error"
    assert report["exit_code"] == 4
    assert report["error"].startswith("internal error: RuntimeError: injected; the journal is")
    assert "\n" not in report["error"]
    with sqlite3.connect(work / "journal.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    again = await asyncio.wait_for(run(emu, src, work, batch__max_rows=BATCH_ROWS), 60)
    assert again.exit_code == 0
    assert read_report(work)["rows"]["successful"] == ROWS
    assert_store_matches(emu, expected_profiles(src))


async def test_journal_refusing_a_move_is_an_internal_error(
    emulator_factory: EmulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Journal, seq: int, *_: Any, **__: Any) -> None:
        raise JournalError(f"batch {seq}: refusing to move from accepted to accepted")

    emu = await emulator_factory()
    src, work = _export(tmp_path), tmp_path / "work"
    monkeypatch.setattr(Journal, "record_status_steps", refuse)  # what the poller calls
    outcome = await asyncio.wait_for(run(emu, src, work, batch__max_rows=BATCH_ROWS), PROMPT_S)
    assert outcome.exit_code == 4
    assert re.fullmatch(
        r"internal error: JournalError: batch \d+: refusing to move from accepted to accepted; "
        r"the journal is intact: run the same command again after fixing the cause "
        r"\(--debug shows the traceback\)",
        read_report(work)["error"],
    )
