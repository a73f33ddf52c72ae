"""End-to-end runs of the real pipeline against the in-process emulator.

Each test checks every profile in the emulator's store against the input,
value for value, the exact row accounting of report.json, and the exit code.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import EmulatorFactory
from tests.helpers import (
    CLIENT,
    assert_store_matches,
    expected_profiles,
    make_settings,
    read_report,
    run,
    stored_profiles,
    write_csv,
)
from uploader.journal import Journal
from uploader.report import render_summary
from uploader.states import BatchState

HEADER = ["customer_id", "loyaltyTier", "lifetimeValue", "note"]
TRICKY = ["a,b", 'say "hi"', "two\nlines", "100%", "a&b=c", "x+y", "Zoë 🎉", "#?/ ~"]


def export(path: Path, rows: int, *, prefix: str = "C") -> Path:
    data = [
        [
            f"{prefix}{i:05d}",
            ("gold", "silver", "")[i % 3],
            f"{i * 1.5:.2f}",
            TRICKY[i % len(TRICKY)],
        ]
        for i in range(rows)
    ]
    return write_csv(path / "export.csv", HEADER, data)


def rows_of(report: dict[str, object]) -> dict[str, int]:
    return report["rows"]  # type: ignore[return-value]


async def test_clean_run_v2_stores_every_value_exactly(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory()
    src = export(tmp_path, 1000)
    outcome = await run(emu, src, tmp_path / "work", batch__max_rows=100)
    assert outcome.exit_code == 0
    report = read_report(tmp_path / "work")
    assert report["status"] == "complete"
    assert rows_of(report) == {
        "read": 1000, "rejected": 0, "folded": 0, "submitted": 1000, "successful": 1000,
        "failed": 0, "not_found": 0, "pending": 0,
    }  # fmt: skip
    assert report["batches"]["total"] == 10
    assert report["batches"]["complete"] == 10
    assert report["requests"]["submits"] == 10
    assert report["requests"]["retries"] == 0
    assert emu.stats()["batches_accepted"] == 10
    assert emu.stats()["duplicate_batches"] == 0
    assert_store_matches(emu, expected_profiles(src))
    assert (tmp_path / "work" / "report.json").stat().st_mode & 0o777 == 0o600


async def test_v1_counts_unknown_ids_as_not_found_and_updates_known(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory()
    known = export(tmp_path, 50)
    assert (await run(emu, known, tmp_path / "w2", target__api="v2")).exit_code == 0
    rows = [[f"C{i:05d}", "platinum", "", ""] for i in range(25, 75)]
    src = write_csv(tmp_path / "v1.csv", HEADER, rows)
    outcome = await run(emu, src, tmp_path / "w1", target__api="v1")
    assert outcome.exit_code == 0  # not_found is a final, expected outcome under v1
    counts = rows_of(read_report(tmp_path / "w1"))
    assert counts["successful"] == 25
    assert counts["not_found"] == 25
    stored = stored_profiles(emu, ["C00025", "C00060"])
    assert stored["C00025"]["loyaltyTier"] == "platinum"
    assert "C00060" not in stored  # v1 never creates a profile


async def test_429_storm_is_absorbed_and_slows_the_pool(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(max_inflight=2, latency_ms=(20, 20), retry_after_s=0.01)
    src = export(tmp_path, 600)
    outcome = await run(
        emu, src, tmp_path / "work", batch__max_rows=20, submit__concurrency=8,
        submit__max_attempts=20,
    )  # fmt: skip
    assert outcome.exit_code == 0
    report = read_report(tmp_path / "work")
    assert report["requests"]["throttled"] == emu.stats()["throttled"]
    assert report["requests"]["throttled"] > 0
    assert emu.stats()["peak_inflight"] <= 3
    assert rows_of(report)["successful"] == 600
    assert_store_matches(emu, expected_profiles(src))


async def test_5xx_errors_are_retried(emulator_factory: EmulatorFactory, tmp_path: Path) -> None:
    emu = await emulator_factory(error_rate=0.1, seed=7)
    src = export(tmp_path, 800)
    outcome = await run(emu, src, tmp_path / "work", batch__max_rows=20, submit__max_attempts=12)
    assert outcome.exit_code == 0
    report = read_report(tmp_path / "work")
    assert report["requests"]["retries"] == emu.stats()["errors_injected"]
    assert report["requests"]["retries"] > 0
    assert rows_of(report)["successful"] == 800
    assert_store_matches(emu, expected_profiles(src))


async def test_dropped_connections_are_resent_and_counted(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(drop_rate=0.1, seed=3)
    src = export(tmp_path, 800)
    outcome = await run(emu, src, tmp_path / "work", batch__max_rows=20, submit__max_attempts=12)
    assert outcome.exit_code == 0
    report = read_report(tmp_path / "work")
    dropped = emu.stats()["dropped"]
    assert dropped > 0
    # at-least-once: every dropped submit was accepted by the server and sent again
    assert report["duplicates"]["outcome_unknown_attempts"] == dropped
    assert emu.stats()["duplicate_batches"] == dropped
    assert report["requests"]["submits"] == 40 + dropped
    assert rows_of(report)["successful"] == 800
    assert_store_matches(emu, expected_profiles(src))


async def test_stuck_batches_are_resubmitted_then_failed(
    emulator_factory: EmulatorFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emu = await emulator_factory(stuck_rate=0.3, seed=11)
    src = export(tmp_path, 400)
    with caplog.at_level(logging.INFO, logger="uploader"):
        outcome = await run(emu, src, tmp_path / "work", batch__max_rows=20)
    report = read_report(tmp_path / "work")
    stuck_total = emu.stats()["stuck"]
    assert stuck_total > 0
    with Journal(tmp_path / "work" / "journal.sqlite") as journal:
        failed = journal.batches(BatchState.FAILED)
        complete = journal.batches(BatchState.COMPLETE)
    assert len(failed) + len(complete) == 20
    # every failed batch was stuck twice: sent, stuck, sent again, stuck again
    assert all(b.submits == 2 for b in failed)
    logged = sorted(r.getMessage() for r in caplog.records if "failed: stuck" in r.getMessage())
    assert logged == [f"batch {b.seq:06d} failed: stuck after 2 submits" for b in failed]
    assert report["batches"]["resubmitted"] == stuck_total - len(failed)
    counts = rows_of(report)
    assert counts["failed"] == 20 * len(failed)
    assert counts["successful"] == 400 - counts["failed"]
    assert outcome.exit_code == (1 if failed else 0)
    if failed:
        with (tmp_path / "work" / "failed.csv").open(newline="") as fh:
            back = list(csv.reader(fh))
        assert back[0] == HEADER
        assert len(back) - 1 == counts["failed"]
    # the batches that completed are stored exactly; the failed ones are not applied
    failed_ids = {row[0] for row in back[1:]} if failed else set()
    expected = {k: v for k, v in expected_profiles(src).items() if k not in failed_ids}
    assert_store_matches(emu, expected)


async def test_status_call_errors_never_lose_a_batch(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(status_error_rate=0.4, seed=5)
    src = export(tmp_path, 300)
    outcome = await run(emu, src, tmp_path / "work", batch__max_rows=30)
    assert outcome.exit_code == 0
    report = read_report(tmp_path / "work")
    assert emu.stats()["status_errors"] > 0
    assert rows_of(report)["successful"] == 300
    assert_store_matches(emu, expected_profiles(src))


async def test_required_token(emulator_factory: EmulatorFactory, tmp_path: Path) -> None:
    emu = await emulator_factory(token="s3cret")
    src = export(tmp_path, 100)
    missing = await run(emu, src, tmp_path / "w1", batch__max_rows=50)
    assert missing.exit_code == 2
    report = read_report(tmp_path / "w1")
    assert report["status"] == "error"
    assert "TARGET_PROFILE_TOKEN" in report["error"]
    assert emu.stats()["batches_accepted"] == 0
    ok = await run(
        emu, src, tmp_path / "w2", batch__max_rows=50, environ={"TARGET_PROFILE_TOKEN": "s3cret"}
    )
    assert ok.exit_code == 0
    assert "s3cret" not in (tmp_path / "w2" / "report.json").read_text()
    assert "s3cret" not in (tmp_path / "w2" / "journal.sqlite").read_bytes().decode("latin-1")
    assert_store_matches(emu, expected_profiles(src))


async def test_submits_refused_by_the_server_are_not_resends(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """Two runs refused with 401, then the right token: nothing was sent twice."""
    emu = await emulator_factory(token="s3cret")
    src = export(tmp_path, 100)
    for token in ("wrong", "wrong"):
        refused = await run(
            emu, src, tmp_path / "w", batch__max_rows=50, environ={"TARGET_PROFILE_TOKEN": token}
        )
        assert refused.exit_code == 2
    ok = await run(
        emu, src, tmp_path / "w", batch__max_rows=50, environ={"TARGET_PROFILE_TOKEN": "s3cret"}
    )
    assert ok.exit_code == 0
    report = read_report(tmp_path / "w")
    assert report["batches"]["resubmitted"] == 0
    assert report["duplicates"]["resent_batches"] == 0
    assert report["duplicates"]["possible_duplicate_rows"] == 0
    assert "more than once" not in render_summary(report)
    assert emu.stats()["duplicate_batches"] == 0
    assert_store_matches(emu, expected_profiles(src))


async def test_junit_of_a_run_with_rejected_rows_fails_input_validation(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory()
    rows = [[f"C{i}", "gold", "1", "n"] for i in range(10)]
    rows[3][0] = ""  # missing_id
    rows[6][0] = "bad+id"  # invalid_id
    src = write_csv(tmp_path / "in.csv", HEADER, rows)
    junit = tmp_path / "junit.xml"
    outcome = await run(emu, src, tmp_path / "work", run__junit=junit, batch__max_rows=4)
    assert outcome.exit_code == 1
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("3", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [
        "input validation", "batch-000001.txt", "batch-000002.txt",
    ]  # fmt: skip
    failure = cases[0].find("failure")
    assert failure is not None
    rejects = tmp_path / "work" / "rejects.csv"
    assert failure.get("message") == f"2 rows rejected; see {rejects}"
    assert failure.text == f"2 of 10 rows rejected (invalid_id 1, missing_id 1): {rejects}"
    assert all(c.find("failure") is None for c in cases[1:])


async def test_info_log_has_every_retry_and_every_batch_outcome(
    emulator_factory: EmulatorFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What ``-v`` shows: each retry with its reason and wait, each batch accepted and final."""
    emu = await emulator_factory(error_rate=0.3, seed=3)
    src = export(tmp_path, 200)
    with caplog.at_level(logging.INFO, logger="uploader"):
        outcome = await run(emu, src, tmp_path / "work", batch__max_rows=20)
    assert outcome.exit_code == 0
    report = read_report(tmp_path / "work")
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    retries = [m for m in messages if re.fullmatch(
        r"batch \d{6}: attempt \d+ failed \(ServerError: .*503.*\); retrying in \d+\.\d\d s", m
    )]  # fmt: skip
    assert report["requests"]["retries"] > 0
    assert len(retries) == report["requests"]["retries"]
    accepted = sorted(m.split()[1] for m in messages if " accepted as " in m)
    complete = sorted(m.split()[1] for m in messages if m.endswith("0 failed, 0 not found"))
    assert accepted == complete == [f"{seq:06d}" for seq in range(1, 11)]


async def test_rejected_rows_are_counted_and_the_rest_loaded(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory()
    rows = [[f"C{i}", "gold", "1", "n"] for i in range(10)]
    rows[3][0] = ""  # missing_id, line 5
    rows[6][0] = "bad+id"  # invalid_id, line 8
    src = write_csv(tmp_path / "in.csv", HEADER, rows)
    outcome = await run(emu, src, tmp_path / "work")
    assert outcome.exit_code == 1
    report = read_report(tmp_path / "work")
    assert report["status"] == "partial"
    assert rows_of(report)["read"] == 10
    assert rows_of(report)["rejected"] == 2
    assert rows_of(report)["successful"] == 8
    assert report["rejected_by_reason"] == {"missing_id": 1, "invalid_id": 1}
    assert_store_matches(emu, expected_profiles(src, skip_lines={5, 8}))


async def test_no_wait_then_resume_never_resends_accepted_batches(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory()
    src = export(tmp_path, 300)
    first = await run(emu, src, tmp_path / "work", batch__max_rows=50, status__wait=False)
    assert first.exit_code == 3
    assert read_report(tmp_path / "work")["status"] == "incomplete"
    assert rows_of(read_report(tmp_path / "work"))["pending"] == 300
    second = await run(emu, src, tmp_path / "work", batch__max_rows=50)
    assert second.exit_code == 0
    assert emu.stats()["batches_accepted"] == 6  # nothing sent twice
    assert rows_of(read_report(tmp_path / "work"))["successful"] == 300
    assert_store_matches(emu, expected_profiles(src))


async def test_other_input_in_same_work_dir_is_refused(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory()
    a = export(tmp_path, 10)
    assert (await run(emu, a, tmp_path / "work")).exit_code == 0
    other = tmp_path / "other"
    other.mkdir()
    b = export(other, 20, prefix="D")
    from uploader.errors import ConfigError

    with pytest.raises(ConfigError, match="use --fresh to start over with this input or another"):
        await run(emu, b, tmp_path / "work")
    fresh = await run(emu, b, tmp_path / "work", run__fresh=True)
    assert fresh.exit_code == 0
    assert rows_of(read_report(tmp_path / "work"))["read"] == 20


async def test_status_timeout_exits_3_and_resume_finishes(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(apply_rate=200.0)
    src = export(tmp_path, 400)
    first = await run(emu, src, tmp_path / "work", batch__max_rows=100, status__timeout_s=0.3)
    assert first.exit_code == 3
    second = await run(emu, src, tmp_path / "work", batch__max_rows=100)
    assert second.exit_code == 0
    assert emu.stats()["batches_accepted"] == 4
    assert_store_matches(emu, expected_profiles(src))
    assert CLIENT == "acme"


async def test_a_work_dir_in_use_is_refused(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    from uploader.errors import ConfigError
    from uploader.workdir import locked

    emu = await emulator_factory()
    src = export(tmp_path, 10)
    with locked(tmp_path / "work"), pytest.raises(ConfigError, match="another uploader run"):
        await run(emu, src, tmp_path / "work")
    assert emu.stats()["submits"] == 0
    assert (await run(emu, src, tmp_path / "work")).exit_code == 0


async def test_server_lost_mid_run_stops_with_exit_3_and_keeps_batches(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(latency_ms=(30, 30))
    src = export(tmp_path, 400)
    settings_overrides = {
        "batch__max_rows": 20,
        "submit__concurrency": 1,
        "submit__max_attempts": 2,
    }
    task = asyncio.create_task(run(emu, src, tmp_path / "work", **settings_overrides))
    while emu.stats()["batches_accepted"] < 3:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    await emu.stop()
    outcome = await task
    assert outcome.exit_code == 3
    report = read_report(tmp_path / "work")
    assert report["status"] == "incomplete"
    assert report["rows"]["failed"] == 0
    accepted = emu.stats()["batches_accepted"]
    with Journal(tmp_path / "work" / "journal.sqlite") as journal:
        states = [b.state for b in journal.batches()]
    assert BatchState.FAILED not in states
    assert states.count(BatchState.WRITTEN) >= 1
    assert len([s for s in states if s in (BatchState.ACCEPTED, BatchState.COMPLETE)]) == accepted


async def test_submit_existing_batch_files(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    from uploader.chunk import Chunker
    from uploader.commands import find_batch_files
    from uploader.pipeline import run_pipeline
    from uploader.settings import BatchSettings, InputSettings

    emu = await emulator_factory()
    src = export(tmp_path, 250)
    Chunker(str(src), tmp_path / "split", InputSettings(), BatchSettings(max_rows=100)).run()
    files = find_batch_files([tmp_path / "split" / "batches"])
    assert [f.name for f in files] == [f"batch-00000{i}.txt" for i in (1, 2, 3)]
    settings = make_settings(emu)
    outcome = await run_pipeline(
        "-", settings, tmp_path / "work", job_id="s", install_signals=False, files=files
    )
    assert outcome.exit_code == 0
    report = read_report(tmp_path / "work")
    assert rows_of(report)["read"] == rows_of(report)["successful"] == 250
    assert report["bytes_submitted"] == sum(f.stat().st_size for f in files)
    assert_store_matches(emu, expected_profiles(src))


async def test_failed_rows_come_back_in_the_input_layout(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(stuck_rate=1.0)
    src = tmp_path / "in.csv"
    src.write_text("tier;cust;note\ngold;A1;x,y\n;A2;\nsilver;A3;z\n", encoding="utf-8")
    outcome = await run(
        emu, src, tmp_path / "work", input__id_column="cust", input__delimiter=";",
        input__rename={"tier": "loyaltyTier"}, status__resubmit_stuck=0,
    )  # fmt: skip
    assert outcome.exit_code == 1
    assert rows_of(read_report(tmp_path / "work"))["failed"] == 3
    # id first, CRM names back, the input's delimiter: ready for `uploader run` again
    assert (tmp_path / "work" / "failed.csv").read_text(encoding="utf-8").splitlines() == [
        "cust;tier;note",
        "A1;gold;x,y",
        "A2;;",
        "A3;silver;z",
    ]
