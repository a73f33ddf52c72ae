"""``uploader verify`` against the real emulator: lost rows, samples, changes, resends, kills."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EmulatorFactory
from tests.helpers import (
    CLIENT,
    expected_profiles,
    make_settings,
    read_report,
    run,
    stored_profiles,
    write_csv,
)
from uploader.client import TargetClient
from uploader.emulator import Emulator
from uploader.errors import AuthError, InputError
from uploader.pipeline import run_pipeline
from uploader.settings import TargetSettings
from uploader.sources.shard import shard_of
from uploader.sources.spool import SPOOL_NAME, spool_stdin
from uploader.verify import VerifyOptions, VerifyOutcome, run_verify
from uploader.verify.compare import Mismatch, compare, landed_estimate
from uploader.verify.display import line
from uploader.verify.fetch import CheckStats
from uploader.verify.store import FLUSH_ROWS

HEADER = ["custId", "tier", "ltv", "note"]


def _rows(n: int) -> list[list[str]]:
    rows = [[f"C{i:05d}", ["gold", "silver", ""][i % 3], f"{i}.5", f"n, {i} %&+"] for i in range(n)]
    # Repeated ids: the last non-empty value wins per attribute, empty never clears.
    rows += [["C00003", "platinum", "", ""], ["C00004", "", "9.9", ""], ["bad+id", "x", "", ""]]
    return rows


def _export(tmp_path: Path, n: int) -> Path:
    return write_csv(tmp_path / "export.csv", HEADER, _rows(n))


async def _verify(work: Path, **kw: Any) -> tuple[VerifyOutcome, str]:
    environ = kw.pop("environ", {})
    kw.setdefault("rows_per_s", 0.0)
    kw.setdefault("settle_s", 0.0)
    kw.setdefault("progress", "none")
    out = io.StringIO()
    outcome = await run_verify(
        VerifyOptions(work_dir=work, **kw), environ=environ, install_signals=False, out=out
    )
    return outcome, out.getvalue()


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _not_landed(emu: Emulator, src: Path) -> set[str]:
    expected = expected_profiles(src)
    del expected["bad+id"]  # rejected, never sent
    stored = stored_profiles(emu, list(expected))
    return {pid for pid, attrs in expected.items() if stored.get(pid) != attrs}


async def test_all_finds_exactly_the_lost_ids(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(lose_rate=0.05, seed=3)
    src, work = _export(tmp_path, 1000), tmp_path / "w"
    outcome = await run(emu, src, work, batch__max_rows=150)
    assert outcome.report["rows"]["successful"] == 1000  # 2 rows folded into their id's row
    lost = _not_landed(emu, src)
    assert emu.stats()["rows_lost"] > 0 and len(lost) > 10

    result, text = await _verify(work, mode="all")
    assert result.exit_code == 1
    section = read_report(work)["verify"]
    assert section["checked"] == section["population"] == section["picked"] == 1000
    assert section["exact"] == 1000 - len(lost)
    assert section["wrong"] + section["missing_profile"] == len(lost)
    assert section["fetch_errors"] == section["not_yet_applied"] == section["unchecked"] == 0
    assert section["landed"] is None  # every id checked: nothing to estimate
    mismatches = _csv(work / "verify.csv")
    assert {r["id"] for r in mismatches} == lost
    assert {r["outcome"] for r in mismatches} <= {"wrong", "missing"}
    failed = _csv(work / "verify-failed.csv")
    assert list(failed[0]) == HEADER
    assert {r["custId"] for r in failed} == lost
    assert emu.stats()["fetch_calls"] == 1000
    assert "exact" in text and "exit 1" in text


async def test_sample_interval_holds_the_true_share(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(lose_rate=0.1, seed=5)
    src, work = _export(tmp_path, 1500), tmp_path / "w"
    await run(emu, src, work, batch__max_rows=500)
    truth = 1 - len(_not_landed(emu, src)) / 1500
    seen = set()
    for seed in (1, 2, 3, 4):
        result, text = await _verify(work, mode="sample", sample=300, seed=seed)
        landed = result.section["landed"]
        assert result.section["checked"] == 300
        assert landed["population"] == 1500
        assert landed["low"] <= truth <= landed["high"], (seed, landed, truth)
        assert landed["high"] - landed["low"] < 0.08
        assert f"seed {seed}" in text
        seen.add(landed["share"])
    assert len(seen) > 1  # different seeds, different samples


async def test_a_value_changed_after_the_load_is_wrong(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory()
    src, work = _export(tmp_path, 50), tmp_path / "w"
    await run(emu, src, work)
    (tmp_path / "change.txt").write_bytes(b"batch=thirdPartyId,tier\nC00007,bronze")
    async with TargetClient(TargetSettings(client=CLIENT, base_url=emu.base_url)) as client:
        await client.submit(tmp_path / "change.txt")
    await emu.wait_applied(10)

    result, _ = await _verify(work, mode="all")
    assert result.exit_code == 1
    assert result.section["wrong"] == 1 and result.section["exact"] == 49
    assert result.section["wrong_by_attribute"] == {"tier": 1}
    [row] = _csv(work / "verify.csv")
    assert row["id"] == "C00007" and row["attribute"] == "tier"
    assert (row["expected"], row["found"], row["outcome"]) == ("silver", "bronze", "wrong")
    assert row["modifiedAt"].endswith("Z")
    [again] = _csv(work / "verify-failed.csv")
    assert again == {"custId": "C00007", "tier": "silver", "ltv": "7.5", "note": "n, 7 %&+"}

    # The same difference in a batch that completed a moment ago is not judged yet.
    soon, text = await _verify(work, mode="all", settle_s=3600.0, fresh=True)
    assert soon.exit_code == 3
    assert soon.section["not_yet_applied"] == 1 and soon.section["wrong"] == 0
    assert "run verify again after" in text
    assert not (work / "verify-failed.csv").exists()
    assert _csv(work / "verify.csv")[0]["outcome"] == "not_yet_applied"


async def test_repeated_ids_expect_the_last_non_empty_value(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory()
    src, work = _export(tmp_path, 20), tmp_path / "w"
    # One submit at a time: batches apply in input order whatever the pipeline's ordering.
    await run(emu, src, work, batch__max_rows=7, submit__concurrency=1)
    result, _ = await _verify(work, mode="all")
    assert result.exit_code == 0 and result.section["exact"] == 20
    # C00003 then "platinum" (a later batch): the fold expects what Target holds.
    assert stored_profiles(emu, ["C00003"])["C00003"]["tier"] == "platinum"
    assert stored_profiles(emu, ["C00004"])["C00004"] == {
        "tier": "silver",
        "ltv": "9.9",
        "note": "n, 4 %&+",
    }


async def test_resending_verify_failed_makes_verify_pass(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    # Each batch rolls its own losses: with this seed the first load loses rows and the
    # re-sent batch loses none (checked below), as a re-send of a few rows usually does.
    emu = await emulator_factory(lose_rate=0.03, seed=5)
    src, work = _export(tmp_path, 600), tmp_path / "w"
    await run(emu, src, work, batch__max_rows=200)
    first, _ = await _verify(work, mode="all")
    assert first.exit_code == 1
    bad = first.section["wrong"] + first.section["missing_profile"]
    assert bad > 5
    resend = tmp_path / "resend.csv"
    resend.write_bytes((work / "verify-failed.csv").read_bytes())
    lost_before = emu.stats()["rows_lost"]
    again = await run(emu, resend, tmp_path / "w2")
    assert again.exit_code == 0 and again.report["rows"]["successful"] == bad
    assert emu.stats()["rows_lost"] == lost_before

    fetched = emu.stats()["fetch_calls"]
    second, _ = await _verify(work, mode="all")  # keeps the exact ones, checks the rest again
    assert second.exit_code == 0
    assert second.section["exact"] == 600
    assert emu.stats()["fetch_calls"] - fetched == bad
    assert not (work / "verify.csv").exists() and not (work / "verify-failed.csv").exists()


async def test_ids_file_and_token(emulator_factory: EmulatorFactory, tmp_path: Path) -> None:
    emu = await emulator_factory(token="s3cret")
    src, work = _export(tmp_path, 30), tmp_path / "w"
    await run(emu, src, work, environ={"TARGET_PROFILE_TOKEN": "s3cret"})
    ids = tmp_path / "ids.txt"
    ids.write_text("C00001\n\nC00002\nnobody\n")
    with pytest.raises(AuthError):
        await _verify(work, mode="ids", ids_file=ids, environ={"TARGET_PROFILE_TOKEN": "wrong"})
    result, text = await _verify(
        work, mode="ids", ids_file=ids, environ={"TARGET_PROFILE_TOKEN": "s3cret"}
    )
    assert result.exit_code == 0
    assert (result.section["checked"], result.section["not_in_load"]) == (2, 1)
    assert (
        f"        not checked, not among the ids that ended successful: 1 of the ids in {ids}"
        in text.splitlines()
    )
    assert "s3cret" not in text and "s3cret" not in (work / "report.json").read_text()


async def test_sigkill_during_verify_then_rerun_checks_each_id_once(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(fetch_latency_ms=(5.0, 5.0))
    src, work = _export(tmp_path, 800), tmp_path / "w"
    await run(emu, src, work)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uploader", "verify", str(work), "--all", "--rate", "400",
        "--concurrency", "4", "--settle", "0", "--progress", "none",
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    done_before = 0
    for _ in range(600):
        await asyncio.sleep(0.05)
        done_before = _checks(work)
        if done_before >= 100:
            break
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    done_before = _checks(work)
    assert 100 <= done_before < 800

    result, _ = await _verify(work, mode="all")
    assert result.exit_code == 0 and result.section["exact"] == 800
    assert result.section["fetched"] == 800 - done_before  # each id checked once
    # Made twice: only the fetches on the wire when the first process died, and the
    # results it had not committed yet (at most one group of FLUSH_ROWS).
    assert 800 <= emu.stats()["fetch_calls"] <= 800 + 4 + FLUSH_ROWS


def _checks(work: Path) -> int:
    path = work / "journal.sqlite"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return int(db.execute("SELECT count(*) FROM verify_checks").fetchone()[0])
    except sqlite3.OperationalError:  # the table is not there yet
        return 0
    finally:
        db.close()


def test_compare_and_estimate() -> None:
    profile = {
        "modifiedAt": "T0",
        "profileAttributes": {"a": {"value": "1", "modifiedAt": "T1"}, "x": {"value": "y"}},
    }
    assert compare({"a": "1"}, profile) == []
    assert compare({"a": "2", "b": "3"}, profile) == [
        Mismatch("a", "2", "1", "T1"),
        Mismatch("b", "3", None, "T0"),
    ]
    assert compare({"a": "1"}, None) == [Mismatch("a", "1", None, None)]
    whole = landed_estimate(90, 100, 100)
    assert whole is not None and whole.low == whole.high == whole.share == 0.9
    part = landed_estimate(90, 100, 1_000_000)
    assert part is not None and 0.82 < part.low < 0.83 and 0.94 < part.high < 0.95
    smaller = landed_estimate(90, 100, 200)
    assert smaller is not None and part.low < smaller.low and smaller.high < part.high
    assert landed_estimate(0, 0, 10) is None


async def test_a_changed_input_is_refused(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory()
    src, work = _export(tmp_path, 10), tmp_path / "w"
    await run(emu, src, work)
    moved = tmp_path / "moved.csv"
    src.rename(moved)
    with pytest.raises(InputError, match="--input PATH"):
        await _verify(work, mode="all")
    result, _ = await _verify(work, mode="all", input_path=str(moved))
    assert result.exit_code == 0 and result.section["exact"] == 10
    moved.write_text(moved.read_text().replace("gold", "GOLD"))
    with pytest.raises(InputError, match="not the input the run read"):
        await _verify(work, mode="all", input_path=str(moved), fresh=True)


async def test_json_lines_input_and_a_lost_row(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(lose_rate=0.2, seed=2)
    src = tmp_path / "export.jsonl"
    records = [{"id": f"J{i}", "tier": f"t{i % 4}", "ltv": 10 + i} for i in range(40)]
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    work = tmp_path / "w"
    await run(emu, src, work)
    stored = stored_profiles(emu, [r["id"] for r in records])
    lost = {r["id"] for r in records if r["id"] not in stored}
    assert lost

    result, _ = await _verify(work, mode="all")
    assert result.exit_code == 1
    assert result.section["missing_profile"] == len(lost)
    assert result.section["exact"] == 40 - len(lost)
    failed = _csv(work / "verify-failed.csv")
    assert [r["id"] for r in failed] == sorted(lost)
    assert {r["id"]: (r["tier"], r["ltv"]) for r in failed} == {
        r["id"]: (r["tier"], str(r["ltv"])) for r in records if r["id"] in lost
    }


def test_progress_line_gives_an_eta() -> None:
    stats = CheckStats(total=1000, done=250)
    stats.started -= 10.0
    stats.outcomes.update({"exact": 240, "wrong": 6, "missing": 4})
    text = line(stats)
    assert "verified 250 of 1,000 profiles (25/s, ETA 30 s)" in text
    assert text.endswith("exact 240, not landed 10, errors 0")


async def test_v1_unknown_ids_are_not_found_not_missing(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory()
    first = write_csv(tmp_path / "a.csv", ["id", "tier"], [["K1", "gold"], ["K2", "gold"]])
    await run(emu, first, tmp_path / "w1")  # v2 creates K1 and K2
    src = write_csv(
        tmp_path / "b.csv", ["id", "tier"], [["K1", "silver"], ["K2", "bronze"], ["K9", "x"]]
    )
    work = tmp_path / "w2"
    outcome = await run(emu, src, work, target__api="v1")
    assert outcome.report["rows"]["not_found"] == 1
    result, text = await _verify(work, mode="all")
    assert result.exit_code == 0
    assert (result.section["exact"], result.section["not_found"]) == (2, 1)
    assert "not found (v1) 1" in text


async def test_pcid_runs_fetch_by_pcid(emulator_factory: EmulatorFactory, tmp_path: Path) -> None:
    emu = await emulator_factory()
    rows = [[f"17{i:05d}-1.27_0", "gold"] for i in range(5)]
    src = write_csv(tmp_path / "pc.csv", ["mboxPC", "tier"], rows)
    work = tmp_path / "w"
    await run(emu, src, work, input__id_type="pcId")
    result, _ = await _verify(work, mode="all")
    assert result.exit_code == 0 and result.section["exact"] == 5


async def test_submit_runs_and_shards_are_verified(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(lose_rate=0.1, seed=9)
    src = _export(tmp_path, 200)
    # A shard reads only its ids: the others belong to another run.
    shard = tmp_path / "shard"
    await run(emu, src, shard, input__shard="1/2")
    result, _ = await _verify(shard, mode="all")
    in_shard = {pid for pid in expected_profiles(src) if pid != "bad+id" and shard_of(pid, 2) == 1}
    assert result.section["population"] == len(in_shard)
    lost = _not_landed(emu, src) & in_shard
    assert result.section["exact"] == len(in_shard) - len(lost)
    # `uploader submit` of batch files: the batch files are the expected values.
    settings = make_settings(emu)
    files = sorted((shard / "batches").glob("*.txt"))
    sub = tmp_path / "sub"
    await run_pipeline("-", settings, sub, job_id="sub", files=files, install_signals=False)
    result, _ = await _verify(sub, mode="all")
    assert result.section["source"] == "batch files"
    assert result.section["population"] == len(in_shard)


async def test_a_run_not_finished_then_resumed_is_verified_again(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(apply_rate=20.0)  # about 2 s to apply the 32 rows
    src, work = _export(tmp_path, 30), tmp_path / "w"
    first = await run(emu, src, work, status__wait=False)
    assert first.exit_code == 3
    early, text = await _verify(work, mode="all")
    assert early.exit_code == 3
    assert early.section["population"] == 0 and early.section["batches_not_final"] == 1
    assert "the run is not finished" in text
    resumed = await run(emu, src, work)
    assert resumed.exit_code == 1  # the rejected row
    late, _ = await _verify(work, mode="all")  # the same command: built again, all checked
    assert late.exit_code == 0
    assert late.section["population"] == late.section["exact"] == 30


async def test_a_run_of_standard_input_is_read_from_its_spool(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(lose_rate=0.1, seed=3)
    rows = [[f"S{i}", f"t{i % 3}"] for i in range(60)]  # no repeated id: read from the spool
    src, work = write_csv(tmp_path / "in.csv", ["id", "tier"], rows), tmp_path / "w"
    with src.open("rb") as fh:
        spool = spool_stdin(tmp_path / "spools", stdin=fh)
    settings = make_settings(emu)
    await run_pipeline("-", settings, work, job_id="t", install_signals=False, stdin=spool)
    assert (work / SPOOL_NAME).exists()
    result, _ = await _verify(work, mode="all")
    assert result.section["source"] == str(work / SPOOL_NAME)
    assert result.section["population"] == 60
    stored = stored_profiles(emu, [r[0] for r in rows])
    landed = sum(stored.get(pid) == {"tier": tier} for pid, tier in rows)
    assert 0 < landed < 60 and result.section["exact"] == landed
