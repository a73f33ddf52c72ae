"""``uploader bench`` runs end to end and reports consistent figures (never speeds)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from uploader import bench
from uploader.emulator import Emulator
from uploader.errors import ConfigError


def _run(tmp_path: Path, *args: str) -> tuple[int, dict]:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "bench.json"
    ns = parser.parse_args(["--json", str(out), "--latency-ms", "0", *args])
    code = bench.main(ns)
    return code, json.loads(out.read_text())


def test_bench_reports_documented_fields(tmp_path: Path) -> None:
    code, r = _run(tmp_path, "--rows", "5000", "--max-batch-rows", "1000", "--poll-initial", "0.05")
    assert code == 0
    assert r["rows"] == 5000
    assert r["rows_submitted"] == 5000
    assert r["rows_successful"] == 5000
    assert r["batches"] == r["expected_batches"] == 5
    assert r["batches_accepted"] == 5
    assert r["status"] == "complete"
    assert r["exit_code"] == 0
    assert r["bytes"] > 0
    for key in ("rows_per_s", "mb_per_s", "batches_per_s"):
        assert r["throughput"][key] > 0
    for key in ("submit_latency_s", "submit_stage_s", "complete_latency_s"):
        p = r[key]
        assert p["n"] == 5
        assert 0 <= p["p50"] <= p["p95"] <= p["p99"]
    assert r["submit_latency_source"] == "submitter"
    assert r["requests"]["submits"] == 5
    assert r["requests"]["retries"] == 0
    assert r["requests"]["throttled"] == 0
    assert r["requests"]["status_polls"] >= 5
    assert r["throttled_fraction"] == 0.0
    assert r["peak_rss_mb"] > 0
    assert r["emulator_stats"]["rows_applied"] == 5000
    assert r["emulator_stats"]["batches_accepted"] == 5
    assert r["settings"]["concurrency"] == 8
    assert r["target"]["emulator"] is True
    assert r["machine"]["cpu_count"] >= 1


def test_bench_counts_throttling_and_uneven_batches(tmp_path: Path) -> None:
    code, r = _run(
        tmp_path,
        *("--rows", "5000", "--max-batch-rows", "700", "--no-wait"),
        *("--concurrency", "4", "--max-inflight", "1", "--retry-after", "0"),
    )
    assert r["batches"] == r["expected_batches"] == 8  # ceil(5000 / 700)
    assert r["batches_accepted"] == 8
    assert r["rows_submitted"] == 5000
    s = r["emulator_stats"]
    assert r["requests"]["submits"] == s["submits"] == 8 + s["throttled"]
    assert r["requests"]["throttled"] == s["throttled"]
    assert r["requests"]["retries"] == r["requests"]["throttled"]
    assert r["throttled_fraction"] == round(s["throttled"] / s["submits"], 4)
    assert r["complete_latency_s"]["n"] == 0  # --no-wait: nothing followed to complete
    assert code == 1  # not finished (exit 3 of the run) is not a clean bench


def test_one_batch_gives_no_rate(tmp_path: Path) -> None:
    code, r = _run(tmp_path, "--rows", "5", "--poll-initial", "0.05")
    assert (code, r["batches_accepted"], r["rows_successful"]) == (0, 1, 5)
    assert r["submit_window_s"] > 0  # that batch's own submit, not a rate
    assert r["throughput"] == {"rows_per_s": None, "mb_per_s": None, "batches_per_s": None}
    assert r["submit_latency_s"]["n"] == 1  # the latency is still measured


def test_safe_bench_leaves_the_store_unchanged(tmp_path: Path, threaded_emulator: Emulator) -> None:
    emu = threaded_emulator
    target = ("--base-url", emu.base_url, "--poll-initial", "0.05", "--max-batch-rows", "500")
    code, loaded = _run(tmp_path, "--rows", "1000", *target)  # loopback: v2 writes allowed
    assert (code, loaded["rows_successful"], loaded["settings"]["api"]) == (0, 1000, "v2")
    before = emu.stats()["profiles_stored"], emu.profile("bench", "thirdPartyId", "B7")
    assert before[0] == 1000 and before[1] is not None

    code, r = _run(tmp_path, "--rows", "2000", "--safe", *target)
    assert code == 0
    assert r["settings"]["api"] == "v1"
    assert re.fullmatch(r"uploader-bench-[0-9a-f]{8}-", r["settings"]["id_prefix"])
    assert (r["rows_submitted"], r["rows_not_found"], r["rows_successful"]) == (2000, 2000, 0)
    assert r["batches_accepted"] == 4
    assert (emu.stats()["profiles_stored"], emu.profile("bench", "thirdPartyId", "B7")) == before


def test_non_loopback_target_is_safe_unless_writes_are_allowed() -> None:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    far = ["--base-url", "https://acme.tt.omtrdc.net", "--client", "acme"]
    opts = bench.options_from_args(parser.parse_args(far))
    assert opts.api == "v1" and opts.id_prefix.startswith("uploader-bench-")
    assert bench.writes_notice(opts) is None
    with pytest.raises(ConfigError, match=r"pass --allow-writes to do that on purpose$"):
        bench.options_from_args(parser.parse_args([*far, "--api", "v2"]))
    with pytest.raises(ConfigError, match=r"--api v2 and --id-prefix would create"):
        bench.options_from_args(parser.parse_args([*far, "--id-prefix", "C"]))
    opts = bench.options_from_args(parser.parse_args([*far, "--allow-writes"]))
    assert (opts.api, opts.id_prefix) == ("v2", "B")
    assert bench.writes_notice(opts) == (
        "uploader bench: --allow-writes: 100,000 synthetic profiles (ids B1..) go to "
        "https://acme.tt.omtrdc.net client acme with the v2 API; they create or change "
        "profiles in that account"
    )
    near = bench.options_from_args(parser.parse_args(["--base-url", "http://127.0.0.1:9"]))
    assert (near.api, near.id_prefix) == ("v2", "B")  # loopback: an emulator of ours
