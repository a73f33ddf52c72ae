"""Repeated ids: the fold, the bounded-memory finder, the chunker, the report and failed.csv."""

from __future__ import annotations

import csv
import json
import random
import zlib
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import EmulatorFactory
from tests.helpers import assert_store_matches, expected_profiles, read_report, run, write_csv
from uploader import repeats
from uploader.chunk import Chunker, ChunkSummary, read_batch_rows, read_sent_rows
from uploader.cli import main
from uploader.emulator.config import EmulatorConfig
from uploader.emulator.faults import Faults
from uploader.errors import ConfigError
from uploader.repeats import (
    RepeatFinder,
    RepeatSet,
    count_repeats,
    fold_encoded,
    id_keys,
)
from uploader.settings import BatchSettings, InputSettings

HEADER = ["id", "tier", "value", "note"]


def sequential(rows: list[list[str]], width: int) -> list[str]:
    """The model: apply rows one at a time, the last non-empty value of a column wins."""
    out = [""] * width
    for row in rows:
        for i, value in enumerate(row):
            if value:
                out[i] = value
    return out


def encode(row: list[str]) -> bytes:
    return ",".join(quote(v, safe="") for v in row).rstrip(",").encode()


def decode(data: bytes, width: int) -> list[str]:
    from urllib.parse import unquote

    values = [unquote(v) for v in data.decode().split(",")]
    return values + [""] * (width - len(values))


@given(
    st.lists(
        st.lists(st.sampled_from(["", "a", "b,c", "%", "é", " "]), min_size=1, max_size=4),
        min_size=1,
        max_size=6,
    )
)
def test_fold_equals_applying_the_rows_in_order(rows: list[list[str]]) -> None:
    rows = [["X", *r] for r in rows]
    folded = fold_encoded([encode(r) for r in rows])
    assert decode(folded, 5) == sequential(rows, 5)
    assert not folded.endswith(b",")


def test_fold_of_one_row_is_the_row() -> None:
    assert fold_encoded([b"X,a,,b"]) == b"X,a,,b"
    assert fold_encoded([b"X,a", b"X,,b", b"X,c"]) == b"X,c,b"


@pytest.mark.parametrize("spill", [False, True])
def test_finder_counts_repeats_exactly(monkeypatch: pytest.MonkeyPatch, spill: bool) -> None:
    if spill:  # spill to disk every few thousand keys, as a huge input would
        monkeypatch.setattr(repeats, "SPILL_KEYS", 3000)
        monkeypatch.setattr(repeats, "_FLUSH_KEYS", 1000)
    rng = random.Random(7)
    ids = [f"C{rng.randrange(20_000)}" for _ in range(30_000)]
    finder = RepeatFinder()
    for i in range(0, len(ids), 256):
        finder.add(id_keys(ids[i : i + 256]))
    keys, extra = finder.finish()
    want = {k: n - 1 for k, n in Counter(id_keys(ids)).items() if n > 1}
    assert list(keys) == sorted(want)
    assert list(extra) == [want[k] for k in sorted(want)]


@pytest.mark.parametrize("set_keys", [0, 1 << 18])
def test_repeat_set_both_lookups(monkeypatch: pytest.MonkeyPatch, set_keys: int) -> None:
    monkeypatch.setattr(repeats, "SET_KEYS", set_keys)
    from array import array

    inside = sorted(id_keys([f"R{i}" for i in range(5000)]))
    members = RepeatSet(array("Q", inside))
    outside = id_keys([f"U{i}" for i in range(5000)])
    assert members.flags(inside) == [True] * 5000
    assert members.flags(outside) == [False] * 5000
    assert len(members) == 5000


def test_id_keys_are_deterministic() -> None:
    # CRC-32 and Adler-32 of the UTF-8 bytes: the same in every process (unlike hash()).
    assert id_keys(["C1", "é"]) == [
        zlib.crc32(b"C1") << 32 | zlib.adler32(b"C1"),
        zlib.crc32("é".encode()) << 32 | zlib.adler32("é".encode()),
    ]
    assert len(set(id_keys([f"C{i}" for i in range(100_000)]))) == 100_000


def chunk(src: Path, out: Path, max_rows: int = 3, **kw: object) -> ChunkSummary:
    return Chunker(
        src,
        out,
        InputSettings(**kw),  # type: ignore[arg-type]
        BatchSettings(max_rows=max_rows),
        fsync=False,
    ).run()


def batch_rows(out: Path) -> list[list[list[str]]]:
    return [list(read_batch_rows(p))[1:] for p in sorted((out / "batches").glob("batch-*.txt"))]


ROWS = [
    ["A", "gold", "1", ""],  # 2
    ["B", "silver", "", "x"],  # 3
    ["A", "", "2", "n, %"],  # 4
    ["C", "bronze", "3", ""],  # 5
    ["A", "platinum", "", "", "extra"],  # 6: too many fields: rejected, A keeps rows 2 and 4
    ["B", "", "", ""],  # 7: only empties: changes nothing
    ["D", "", "4", ""],  # 8
    ["A", "", "", "last"],  # 9
]


def test_chunker_folds_each_repeated_id_into_one_row(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", HEADER, ROWS)
    summary = chunk(src, tmp_path / "out")
    batches = batch_rows(tmp_path / "out")
    # Unique ids stream in input order; folded ids come last, in the order of their ids.
    assert batches == [
        [["C", "bronze", "3"], ["D", "", "4"], ["A", "gold", "2", "last"]],
        [["B", "silver", "", "x"]],
    ]
    assert summary.rows_read == 8
    assert summary.rows_rejected == 1
    assert summary.rows_folded == 3  # A: 3 valid rows -> 1, B: 2 -> 1
    assert summary.rows_written == 4
    assert summary.rows_read == summary.rows_rejected + summary.rows_folded + summary.rows_written
    assert summary.repeats is not None
    assert summary.repeats.as_dict() == {
        "handling": "fold",
        "ids": 2,
        "rows": 5,
        "rows_folded": 3,
        "max_rows_per_id": 3,
        "examples": [
            {"id": "A", "rows": 3, "lines": [2, 4, 9]},
            {"id": "B", "rows": 2, "lines": [3, 7]},
        ],
    }
    text = (tmp_path / "out" / "manifest.jsonl").read_text()
    manifest = [json.loads(x) for x in text.splitlines()]
    assert [m.get("folded_ids") for m in manifest] == [1, 1]
    # The originals of each folded row, in input order, next to its batch.
    first = tmp_path / "out" / "batches" / "batch-000001.txt"
    assert list(read_sent_rows(first))[1:] == [
        ["C", "bronze", "3"],
        ["D", "", "4"],
        ["A", "gold", "1"],
        ["A", "", "2", "n, %"],
        ["A", "", "", "last"],
    ]
    assert not (tmp_path / "out" / "repeats.sqlite").exists()


def test_no_two_batches_share_an_id_and_the_fold_is_the_sequential_model(
    tmp_path: Path,
) -> None:
    rng = random.Random(3)
    rows = [
        [f"K{rng.randrange(60)}", rng.choice(["", "a", "b"]), rng.choice(["", "1", "2"]), ""]
        for _ in range(400)
    ]
    src = write_csv(tmp_path / "in.csv", HEADER, rows)
    chunk(src, tmp_path / "out", max_rows=7)
    seen: dict[str, int] = {}
    for n, batch in enumerate(batch_rows(tmp_path / "out")):
        for row in batch:
            assert row[0] not in seen, f"{row[0]} in batches {seen.get(row[0])} and {n}"
            seen[row[0]] = n
            model = sequential([r for r in rows if r[0] == row[0]], 4)
            assert row + [""] * (4 - len(row)) == model


def test_resumed_chunker_writes_byte_identical_batches(tmp_path: Path) -> None:
    rng = random.Random(5)
    rows = [[f"K{rng.randrange(300)}", str(i), "", ""] for i in range(2000)]
    src = write_csv(tmp_path / "in.csv", HEADER, rows)
    first = chunk(src, tmp_path / "a", max_rows=50)
    again = Chunker(
        src,
        tmp_path / "a",
        InputSettings(),
        BatchSettings(max_rows=50),
        skip_through_seq=first.batches - 3,
        fsync=False,
    ).run()
    assert [f.sha256 for f in again.files] == [f.sha256 for f in first.files]
    other = chunk(src, tmp_path / "b", max_rows=50)
    for a, b in zip(first.files, other.files, strict=True):
        assert a.path.read_bytes() == b.path.read_bytes()
        side_a, side_b = a.path.with_suffix(".originals"), b.path.with_suffix(".originals")
        assert side_a.exists() == side_b.exists()
        if side_a.exists():
            assert side_a.read_bytes() == side_b.read_bytes()


def test_a_fold_over_the_profile_limit_rejects_every_row_of_the_id(tmp_path: Path) -> None:
    big = "x" * 40_000
    rows = [["A", big, "", ""], ["B", "ok", "", ""], ["A", "", big, ""]]
    src = write_csv(tmp_path / "in.csv", HEADER, rows)
    summary = chunk(src, tmp_path / "out")
    assert batch_rows(tmp_path / "out") == [[["B", "ok"]]]
    with (tmp_path / "out" / "rejects.csv").open(newline="") as fh:
        rejected = [(r["line"], r["id"], r["reason"]) for r in csv.DictReader(fh)]
    assert rejected == [("2", "A", "profile_too_large"), ("4", "A", "profile_too_large")]
    assert summary.rows_read == summary.rows_rejected + summary.rows_folded + summary.rows_written


def test_unique_ids_setting_sends_rows_as_they_are_and_counts_repeats(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", HEADER, ROWS)
    summary = chunk(src, tmp_path / "out", max_rows=10, unique_ids=True)
    assert [r[0] for r in batch_rows(tmp_path / "out")[0]] == ["A", "B", "A", "C", "B", "D", "A"]
    assert summary.repeats is not None
    assert summary.repeats.as_dict() == {
        "handling": "off",
        "ids": 2,
        "rows": 5,
        "rows_folded": 0,
        "max_rows_per_id": 0,
        "examples": [],
    }
    assert count_repeats(src, InputSettings()) == (2, 5)


def test_split_command_prints_the_repeats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_csv(tmp_path / "in.csv", HEADER, ROWS)
    assert main(["split", str(src), "--out", str(tmp_path / "o")]) == 1
    out = capsys.readouterr().out
    assert "  rows folded               3" in out
    assert "2 ids on more than one row: 3 rows folded into one row per id" in out
    assert main(["split", str(src), "--out", str(tmp_path / "u"), "--unique-ids"]) == 1
    out = capsys.readouterr().out
    assert "sent unfolded: repeated-id handling is off (--unique-ids)" in out


async def test_run_report_and_every_profile_with_random_apply_order(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(apply_order="random", apply_rate=20_000, seed=3)
    rng = random.Random(11)
    rows = [
        [f"P{rng.randrange(150)}", rng.choice(["", "t1", "t2", "t3"]), str(i), ""]
        for i in range(600)
    ]
    src = write_csv(tmp_path / "in.csv", HEADER, rows)
    outcome = await run(emu, src, tmp_path / "w", batch__max_rows=40, submit__concurrency=8)
    assert outcome.exit_code == 0
    report = read_report(tmp_path / "w")
    distinct = len({r[0] for r in rows})
    assert report["rows"]["read"] == 600
    assert report["rows"]["submitted"] == distinct
    assert report["rows"]["folded"] == 600 - distinct
    assert report["rows"]["successful"] == distinct
    rep = report["repeated_ids"]
    counts = Counter(r[0] for r in rows)
    assert rep["handling"] == "fold"
    assert rep["ids"] == sum(1 for n in counts.values() if n > 1)
    assert rep["rows_folded"] == 600 - distinct
    assert rep["max_rows_per_id"] == max(counts.values())
    assert len(rep["examples"]) == 5
    assert report["warnings"] == []
    assert_store_matches(emu, expected_profiles(src))


async def test_failed_csv_lists_every_input_row_of_a_failed_id(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(stuck_rate=1.0)
    src = write_csv(tmp_path / "in.csv", HEADER, ROWS)
    outcome = await run(emu, src, tmp_path / "w", batch__max_rows=3, status__resubmit_stuck=0)
    assert outcome.exit_code == 1
    with (tmp_path / "w" / "failed.csv").open(newline="") as fh:
        failed = list(csv.reader(fh))
    assert failed == [
        HEADER,
        ["C", "bronze", "3", ""],
        ["D", "", "4", ""],
        ["A", "gold", "1", ""],
        ["A", "", "2", "n, %"],
        ["A", "", "", "last"],
        ["B", "silver", "", "x"],
        ["B", "", "", ""],
    ]
    report = read_report(tmp_path / "w")
    assert report["rows"]["failed"] == 4
    assert report["outputs"]["failed_rows"] == str(tmp_path / "w" / "failed.csv")
    # Sending failed.csv again reaches the end state of the valid rows of the export.
    retry = tmp_path / "retry.csv"
    retry.write_bytes((tmp_path / "w" / "failed.csv").read_bytes())
    healthy = await emulator_factory()
    again = await run(healthy, retry, tmp_path / "w2")
    assert again.exit_code == 0
    assert_store_matches(healthy, expected_profiles(src, skip_lines={6}))


async def test_unique_ids_off_warns_in_the_report(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory()
    src = write_csv(tmp_path / "in.csv", HEADER, [r for r in ROWS if len(r) == 4])
    outcome = await run(emu, src, tmp_path / "w", input__unique_ids=True)
    assert outcome.exit_code == 0
    report = read_report(tmp_path / "w")
    assert report["rows"]["folded"] == 0
    assert report["rows"]["submitted"] == 7
    assert report["repeated_ids"]["handling"] == "off"
    assert report["repeated_ids"]["ids"] == 2
    assert report["warnings"] == [
        "2 ids appear on more than one row, but repeated-id handling is off "
        "(input.unique_ids): their rows were sent as they are, and Target may apply an "
        "earlier row after a later one"
    ]


def test_summary_line() -> None:
    from uploader.report import build_report, render_summary, repeats_line

    assert repeats_line({}) == ""
    found = {"handling": "fold", "ids": 4000, "rows": 11000, "rows_folded": 7000}
    report = build_report(
        job_id="j",
        batches=[],
        counters={},
        rows_read=7000,
        rejected_by_reason={},
        chunking_done=True,
        elapsed_s=1.0,
        outputs={},
        interrupted=False,
        rows_folded=7000,
        repeated_ids={**found, "max_rows_per_id": 4},
    )
    assert report["rows"]["folded"] == 7000
    assert report["warnings"] == []
    assert report["repeated_ids"] == {**found, "max_rows_per_id": 4, "examples": []}
    assert (
        "repeats   4,000 ids on more than one row: 7,000 rows folded into one row per id "
        "(at most 4 rows for one id)"
    ) in render_summary(report).splitlines()
    one = {"handling": "fold", "ids": 1, "rows": 2, "rows_folded": 1, "max_rows_per_id": 2}
    assert repeats_line(one) == (
        "1 id on more than one row: 1 row folded into one row per id (at most 2 rows for one id)"
    )


def test_emulator_apply_order_setting() -> None:
    with pytest.raises(ConfigError, match="apply_order must be one of arrival, random"):
        EmulatorConfig(apply_order="lifo")
    assert Faults(EmulatorConfig()).next_batch(5) == 0
    faults = Faults(EmulatorConfig(apply_order="random", seed=1))
    picks = {faults.next_batch(5) for _ in range(200)}
    assert picks == {0, 1, 2, 3, 4}
    assert faults.next_batch(1) == 0


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 2**32))
def test_scan_matches_a_counter_of_ids(seed: int) -> None:
    rng = random.Random(seed)
    ids = [f"Z{rng.randrange(50)}" for _ in range(rng.randrange(1, 120))]
    counts = Counter(ids)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src = write_csv(Path(tmp) / "in.csv", HEADER, [[i, "v", "", ""] for i in ids])
        assert count_repeats(src, InputSettings()) == (
            sum(1 for n in counts.values() if n > 1),
            sum(n for n in counts.values() if n > 1),
        )
