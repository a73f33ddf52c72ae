"""Sharded runs: N processes with ``--shard i/N`` load one export together, each id once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.helpers import CLIENT, FAST, assert_store_matches, expected_profiles, write_csv
from tests.test_cli_errors import uploader
from uploader.chunk import read_batch_rows
from uploader.emulator import Emulator
from uploader.errors import ConfigError
from uploader.settings import load_settings, parse_shard
from uploader.sources.shard import shard_of


def test_parse_shard() -> None:
    assert parse_shard("0/1") == (0, 1)
    assert parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "-1/4", "1", "a/b", "0/0", "1/ 2x"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    with pytest.raises(ConfigError, match=r"input\.shard: shard index must be 0 to N-1"):
        load_settings(None, {"target.client": "acme", "input.shard": "5/4"}, {})


def test_shard_of_is_stable_and_spread() -> None:
    # Fixed values: the hash must never change between versions, or a resumed
    # shard would take other rows than its first run.
    assert [shard_of(f"C{i}", 4) for i in range(8)] == [1, 1, 0, 2, 3, 2, 1, 3]
    assert shard_of(" C1 ", 4) == shard_of("C1", 4)
    counts = [0] * 4
    for i in range(4000):
        counts[shard_of(f"C{i}", 4)] += 1
    assert all(900 < c < 1100 for c in counts), counts


async def test_four_shards_load_the_whole_export_once(emulator: Emulator, tmp_path: Path) -> None:
    rows = [[f"C{i}", f"t{i % 7}", str(i)] for i in range(2000)]
    rows[777] = ["", "no id", "1"]  # rejected by whichever shard takes the empty id
    src = write_csv(tmp_path / "export.csv", ["id", "tier", "ltv"], rows)
    config = tmp_path / "acme.toml"
    config.write_text(
        f'[target]\nclient = "{CLIENT}"\nbase_url = "{emulator.base_url}"\n'
        f"[status]\npoll_initial_s = {FAST['status.poll_initial_s']}\n"
        f"poll_max_s = {FAST['status.poll_max_s']}\n"
    )
    runs = [
        uploader(
            "run", str(src), "--config", str(config), "--shard", f"{i}/4",
            "--concurrency", "2", "--max-batch-rows", "150", "--work-dir", f"shard-{i}",
            cwd=tmp_path,
        )
        for i in range(4)
    ]  # fmt: skip
    results = await asyncio.gather(*runs)
    assert [r.code for r in results].count(1) == 1  # the shard with the rejected row
    assert all(r.code in (0, 1) for r in results), [r.stderr for r in results]

    seen: dict[str, int] = {}
    for i in range(4):
        for batch in sorted((tmp_path / f"shard-{i}" / "batches").glob("batch-*.txt")):
            for row in list(read_batch_rows(batch))[1:]:
                assert row[0] not in seen, f"{row[0]} sent by shards {seen[row[0]]} and {i}"
                seen[row[0]] = i
                assert shard_of(row[0], 4) == i
    valid = {r[0] for r in rows if r[0]}
    assert set(seen) == valid
    assert_store_matches(emulator, expected_profiles(src, skip_lines={779}))

    status = await uploader("status", *(f"shard-{i}" for i in range(4)), "--json", cwd=tmp_path)
    assert status.code == 1, status.stderr
    data = json.loads(status.stdout)
    combined = data["combined"]
    assert combined["rows"]["read"] == 2000
    assert combined["rows"]["rejected"] == 1
    assert combined["rows"]["successful"] == 1999
    assert combined["rows"]["pending"] == combined["rows"]["failed"] == 0
    assert combined["warnings"] == []
    assert sorted(r["shard"]["index"] for r in data["runs"]) == [0, 1, 2, 3]
    for run in data["runs"]:
        assert run["rows"]["read"] + run["shard"]["rows_in_other_shards"] == 2000

    partial = await uploader("status", "shard-0", "shard-2", cwd=tmp_path)
    assert "shards 1/4, 3/4 not listed" in partial.stdout
