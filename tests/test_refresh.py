"""`uploader status WORK_DIR --refresh`: ask Target about open batches, submit nothing."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import EmulatorFactory
from tests.helpers import read_report, run, write_csv
from tests.test_cli_errors import uploader
from uploader.emulator import Emulator
from uploader.journal import Journal
from uploader.pipeline import RunOutcome
from uploader.states import BatchState

TOKEN = {"TARGET_PROFILE_TOKEN": "s3cret"}


async def _left_unfollowed(
    emulator_factory: EmulatorFactory, tmp_path: Path, rows: int
) -> tuple[Emulator, Path, RunOutcome]:
    """A --no-wait run of ``rows`` rows in batches of 100: every batch accepted, none final."""
    emu = await emulator_factory(apply_rate=5_000, token="s3cret")
    data = [[f"C{i:05d}", "gold"] for i in range(rows)]
    src = write_csv(tmp_path / "export.csv", ["customer_id", "loyaltyTier"], data)
    work = tmp_path / "w"
    outcome = await run(emu, src, work, batch__max_rows=100, status__wait=False, environ=TOKEN)
    return emu, work, outcome


async def test_refresh_turns_incomplete_batches_complete(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu, work, outcome = await _left_unfollowed(emulator_factory, tmp_path, 600)
    assert outcome.exit_code == 3
    before = read_report(work)
    assert before["rows"]["pending"] == 600
    with Journal(work / "journal.sqlite") as journal:
        assert {b.state for b in journal.batches()} == {BatchState.ACCEPTED}
    await emu.wait_applied()
    submits = emu.stats()["batches_accepted"]
    polls = emu.stats()["status_calls"]

    r = await uploader("status", str(work), "--refresh", cwd=tmp_path, env=TOKEN)

    assert r.code == 0, r.stderr
    assert r.lines[0] == (
        f"{work}: asked Target about 6 open batches: 6 complete, 0 stuck, "
        "0 still incomplete, 0 not answered"
    )
    assert "COMPLETE (exit 0)" in r.stdout
    after = read_report(work)
    assert after["status"] == "complete" and after["exit_code"] == 0
    assert after["rows"]["successful"] == 600 and after["rows"]["pending"] == 0
    assert after["requests"]["status_polls"] == before["requests"]["status_polls"] + 6
    assert emu.stats()["batches_accepted"] == submits  # nothing submitted
    assert emu.stats()["status_calls"] == polls + 6
    with Journal(work / "journal.sqlite") as journal:
        assert {b.state for b in journal.batches()} == {BatchState.COMPLETE}
    # Nothing left to ask: a second refresh asks nothing and changes nothing.
    again = await uploader("status", str(work), "--refresh", cwd=tmp_path, env=TOKEN)
    assert again.code == 0 and "asked Target about 0 open batches" in again.lines[0]


async def test_refresh_without_the_token_reports_unanswered(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    _, work, _ = await _left_unfollowed(emulator_factory, tmp_path, 200)
    r = await uploader("status", str(work), "--refresh", cwd=tmp_path)
    assert r.code == 3
    assert (
        "asked Target about 2 open batches: 0 complete, 0 stuck, 0 still incomplete, "
        "2 not answered" in r.stderr
    )
    assert read_report(work)["rows"]["pending"] == 200
