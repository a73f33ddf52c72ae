"""``uploader bench`` runs end to end and reports consistent figures (never speeds)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from uploader import bench


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
