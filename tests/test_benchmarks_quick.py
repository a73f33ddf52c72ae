"""``--quick`` benchmark runs write to a scratch directory and leave nothing else behind."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import benchmarks.__main__ as suite
from benchmarks.common import RESULTS_DIR, out_dir, parser, quick_dir

ROOT = Path(__file__).resolve().parent.parent


def committed() -> dict[str, str]:
    files = [*RESULTS_DIR.glob("*.json"), ROOT / "benchmarks" / "RESULTS.md"]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.exists()}


def test_quick_output_goes_to_the_scratch_dir_unless_out_is_given(tmp_path: Path) -> None:
    p = parser("x")
    assert out_dir(p.parse_args([])) == RESULTS_DIR
    assert out_dir(p.parse_args(["--quick"])) == quick_dir()
    assert out_dir(p.parse_args(["--quick", "--out", str(tmp_path)])) == tmp_path
    for name in suite.ORDER:
        argv = suite._argv(name, True, False, quick_dir())
        assert argv[:2] == ["--out", str(quick_dir())], name
        assert "--quick" in argv, name  # every program has a smoke size


def test_quick_split_writes_elsewhere_and_cleans_up(tmp_path: Path) -> None:
    before = committed()
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    args = ["-m", "benchmarks.bench_split", "--quick", "--rows", "2000", "--repeat", "1"]
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert committed() == before
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == ["uploader-bench-quick", "uploader-bench-quick/split.json"]
    result = json.loads((tmp_path / "uploader-bench-quick" / "split.json").read_text())
    assert (result["rows"], result["repeat"], result["rows_written"]) == (2000, 1, 2000)


def test_quick_suite_writes_its_results_md_beside_its_json(tmp_path: Path) -> None:
    ns = argparse.Namespace(quick=True, out=None)
    assert out_dir(ns) == quick_dir()
    (tmp_path / "split.json").write_text(json.dumps({"rows": 10, "ratio": 2.0}))
    before = committed()
    suite.write_results_md("python -m benchmarks --quick", 60.0, tmp_path, tmp_path / "RESULTS.md")
    assert committed() == before
    text = (tmp_path / "RESULTS.md").read_text()
    assert (
        "| Chunking (10 rows; benchmarks/bench_split.py) | split time / csv.reader pass |" in text
    )
