"""Benchmark where exports come from: S3 against a local file, Parquet against CSV, shards.

Run: ``python -m benchmarks.bench_sources [--rows N] [--quick]``.

Every case is ``uploader split`` in a fresh process (the way a user runs it),
timed from start to exit, median of ``--repeat`` runs:

- the same CSV export read from a local file and from ``s3://`` on a loopback
  S3 server (moto's server mode in its own process, so it does not share the
  measured process's interpreter): goal, S3 at least 0.8x the local speed;
- the same rows as a Parquet file (written by pyarrow, snappy) next to the CSV;
- four ``--shard i/4`` processes at once against one process for the whole
  export. Each shard reads and parses the whole file and keeps a quarter of it,
  so on a 2-core machine four shards cost more CPU in total than one process;
  the figure says how much of the chunking work parallelises here.
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import Result, command_line, finish, out_dir, parser
from uploader.gen import generate_export

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never look for instance credentials
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _split(args: Sequence[str], out: Path, env: dict[str, str]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "uploader", "split", *args, "--out", str(out)]
    subprocess.run(cmd, check=False, env=env, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if not (out / "manifest.jsonl").exists():
        raise RuntimeError(f"split failed: {' '.join(cmd)}")
    return elapsed


def _shards(src: Path, tmp: Path, env: dict[str, str], n: int) -> float:
    start = time.perf_counter()
    procs = []
    for i in range(n):
        out = tmp / f"shard-{i}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "uploader", "split", str(src), "--out", str(out)]
        procs.append(
            subprocess.Popen([*cmd, "--shard", f"{i}/{n}"], env=env, stdout=subprocess.DEVNULL)
        )
    codes = [p.wait() for p in procs]
    elapsed = time.perf_counter() - start
    if any(c not in (0, 1) for c in codes):
        raise RuntimeError(f"a shard failed: exit codes {codes}")
    return elapsed


def _median(runs: list[float]) -> float:
    return statistics.median(runs)


def _case(name: str, rows: int, size_mb: float | None, runs: list[float]) -> dict[str, object]:
    med = _median(runs)
    return {
        "case": name,
        "median_s": round(med, 2),
        "rows_per_s": round(rows / med),
        "MB_per_s": round(size_mb / med, 1) if size_mb else None,
        "runs_s": [round(r, 2) for r in runs],
    }


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=None, help="rows (default 1,000,000; quick 100,000)")
    p.add_argument("--repeat", type=int, default=3, help="runs per case (default %(default)s)")
    ns = p.parse_args(argv)
    rows = ns.rows or (100_000 if ns.quick else 1_000_000)
    import boto3
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    result = Result(
        "sources",
        "exports from S3, Parquet, shards",
        command_line("benchmarks.bench_sources", argv),
        params={"rows": rows, "repeat": ns.repeat},
    )
    began = time.perf_counter()
    os.environ.update(S3_ENV)  # this process and its children talk to the loopback S3 only
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="bench-sources-") as tmp_name:
        tmp = Path(tmp_name)
        src = generate_export(tmp / "export.csv", rows, seed=0).path
        size_mb = src.stat().st_size / 1e6
        pq_path = tmp / "export.parquet"
        with src.open(newline="", encoding="utf-8") as fh:
            names = next(csv.reader(fh))
        table = pacsv.read_csv(
            src,
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())),
        )  # every column as text: the same values as the CSV
        pq.write_table(table, pq_path)
        del table
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            endpoint = f"http://127.0.0.1:{port}"
            s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
            for _ in range(100):
                try:
                    s3.create_bucket(Bucket="exports")
                    break
                except Exception:
                    time.sleep(0.1)
            s3.upload_file(str(src), "exports", "export.csv")
            config = tmp / "s3.toml"
            config.write_text(f'[input.storage_options]\nendpoint_url = "{endpoint}"\n')
            local, remote, parquet, shards = [], [], [], []
            out = tmp / "out"
            for _ in range(ns.repeat):
                local.append(_split([str(src)], out, env))
                remote.append(
                    _split(["s3://exports/export.csv", "--config", str(config)], out, env)
                )
                parquet.append(_split([str(pq_path)], out, env))
                shards.append(_shards(src, tmp, env, 4))
        finally:
            server.terminate()
            server.wait(10)
    t_local, t_s3, t_pq, t_shards = map(_median, (local, remote, parquet, shards))
    result.cases = [
        _case("CSV, local file", rows, size_mb, local),
        _case("CSV, s3:// (loopback)", rows, size_mb, remote),
        _case("Parquet, local file", rows, None, parquet),
        _case("CSV, 4 shards at once", rows, size_mb, shards),
    ]
    result.add("s3:// split speed / local file", round(t_local / t_s3, 3), "x", ">=", 0.8)
    result.add("Parquet split rows/s", round(rows / t_pq), "rows/s")
    result.add("CSV split rows/s (same rows)", round(rows / t_local), "rows/s")
    result.add("4 shards (4 processes) total time / 1 process", round(t_shards / t_local, 2), "x")
    load = os.getloadavg()[1]
    result.params["load_average_5min_at_end"] = round(load, 2)
    result.notes = [
        f"5-minute load average {load:.1f} on {os.cpu_count()} cores when the runs ended "
        "(other work on the machine slows every case, the S3 server's process most)",
        f"{rows:,} rows, {size_mb:.1f} MB of CSV; each case is `uploader split` in a fresh "
        f"process, median of {ns.repeat} runs (interpreter start included).",
        "Each shard parses the whole export and keeps a quarter: 4 shards do 4x the parsing "
        f"on {os.cpu_count()} cores, so their total time is not 1/4 of one process. Shards pay "
        "off where submission, not parsing, is the limit, on several machines.",
    ]
    result.elapsed_s = time.perf_counter() - began
    finish(result, out_dir(ns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
