"""Parquet, JSON Lines and S3 exports through the real pipeline, against the emulator."""

from __future__ import annotations

import asyncio
import csv
import gzip
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import CLIENT, read_report, run, stored_profiles
from tests.s3server import S3Server, s3_server
from tests.test_cli_errors import uploader
from uploader.emulator import Emulator


def _rejects(work_dir: Path) -> list[list[str]]:
    with (work_dir / "rejects.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))[1:]


async def test_parquet_export_lands_value_for_value(emulator: Emulator, tmp_path: Path) -> None:
    n = 1000
    table = pa.table(
        {
            "customerId": pa.array([f"C{i}" if i != 500 else None for i in range(n)]),
            "visits": pa.array(list(range(n)), pa.int32()),
            "ltv": pa.array([Decimal(i) / 4 for i in range(n)], pa.decimal128(12, 2)),
            "vip": pa.array([i % 2 == 0 for i in range(n)]),
            "note": pa.array([None if i % 3 else f"a,b&c%{i}+é" for i in range(n)]),
        }
    )
    src = tmp_path / "export.parquet"
    pq.write_table(table, src, row_group_size=300)
    outcome = await run(emulator, src, tmp_path / "w", batch__max_rows=400)
    assert outcome.exit_code == 1  # one row without an id
    rows = outcome.report["rows"]
    assert (rows["read"], rows["rejected"], rows["successful"]) == (1000, 1, 999)
    assert _rejects(tmp_path / "w") == [["501", "", "missing_id", ",500,125.00,true,"]]
    ids = [f"C{i}" for i in range(n) if i != 500]
    stored = stored_profiles(emulator, ids)
    assert stored["C3"] == {"visits": "3", "ltv": "0.75", "vip": "false", "note": "a,b&c%3+é"}
    assert stored["C4"] == {"visits": "4", "ltv": "1.00", "vip": "true"}
    assert len(stored) == 999


async def test_jsonl_export_with_rejects(emulator: Emulator, tmp_path: Path) -> None:
    lines = [json.dumps({"id": f"C{i}", "tier": f"t{i}", "ltv": i}) for i in range(1, 201)]
    lines[9] = '{"id": "C10", "tier": "gold", "unknown": 1}'
    lines[19] = '{"id": "C20", "tier": '
    lines[29] = '{"tier": "no id"}'
    src = tmp_path / "export.jsonl.gz"
    src.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    outcome = await run(emulator, src, tmp_path / "w", batch__max_rows=64)
    rows = outcome.report["rows"]
    assert (rows["read"], rows["rejected"], rows["successful"]) == (200, 3, 197)
    assert _rejects(tmp_path / "w") == [
        ["10", "C10", "too_many_fields", lines[9]],
        ["20", "", "malformed_record", lines[19]],
        ["30", "", "missing_id", lines[29]],
    ]
    assert stored_profiles(emulator, ["C1", "C200"]) == {
        "C1": {"tier": "t1", "ltv": "1"},
        "C200": {"tier": "t200", "ltv": "200"},
    }


@pytest.fixture
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        server.client().create_bucket(Bucket="exports")
        yield server


async def test_s3_export_runs_and_a_changed_object_is_not_resumed(
    emulator: Emulator, s3: S3Server, tmp_path: Path
) -> None:
    body = "id,tier\n" + "".join(f"C{i},t{i}\n" for i in range(300))
    s3.client().put_object(
        Bucket="exports", Key="d/export.csv.gz", Body=gzip.compress(body.encode())
    )
    config = tmp_path / "acme.toml"
    config.write_text(
        f'[target]\nclient = "{CLIENT}"\nbase_url = "{emulator.base_url}"\n'
        f'[input.storage_options]\nendpoint_url = "{s3.endpoint}"\n'
        "[status]\npoll_initial_s = 0.05\n"
    )
    url = "s3://exports/d/export.csv.gz"
    args = ("run", url, "--config", str(config), "--work-dir", "w", "--max-batch-rows", "100")
    first = await uploader(*args, cwd=tmp_path)
    assert first.code == 0, first.stderr
    assert read_report(tmp_path / "w")["rows"]["successful"] == 300
    assert stored_profiles(emulator, ["C0", "C299"]) == {
        "C0": {"tier": "t0"},
        "C299": {"tier": "t299"},
    }
    submits = emulator.stats()["submits"]
    # The same URL now holds another object: a rerun must not take it for a resume.
    s3.client().put_object(Bucket="exports", Key="d/export.csv.gz", Body=b"id,tier\nX1,new\n")
    again = await uploader(*args, cwd=tmp_path)
    assert again.code == 2, again.stderr
    assert "--fresh" in again.stderr
    assert emulator.stats()["submits"] == submits


@contextmanager
def _file_server(path: Path, route: str) -> Iterator[str]:
    """Serve one file over HTTP (with Range support) from its own thread on 127.0.0.1.

    Its own thread and loop: the run reads the URL synchronously (fsspec) when it
    checks the input's identity, which would block a server on the test's loop.
    """
    from aiohttp import web

    async def serve(_: web.Request) -> web.FileResponse:
        return web.FileResponse(path)

    ready = threading.Event()
    box: dict[str, object] = {}

    async def main() -> None:
        app = web.Application()
        app.router.add_get(route, serve)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        stop = asyncio.Event()
        box.update(port=runner.addresses[0][1], stop=stop, loop=asyncio.get_running_loop())
        ready.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield f"http://127.0.0.1:{box['port']}{route}"
    finally:
        loop = box["loop"]
        assert isinstance(loop, asyncio.AbstractEventLoop)
        loop.call_soon_threadsafe(box["stop"].set)  # type: ignore[attr-defined]
        thread.join(10)


async def test_https_style_url_is_streamed(emulator: Emulator, tmp_path: Path) -> None:
    """An http(s):// export is read through fsspec's HTTP filesystem (here on loopback)."""
    body = "id,tier\n" + "".join(f"H{i},t{i % 3}\n" for i in range(500))
    export = tmp_path / "served.csv.gz"
    export.write_bytes(gzip.compress(body.encode()))
    with _file_server(export, "/exports/profiles.csv.gz") as url:
        outcome = await run(emulator, url, tmp_path / "w", batch__max_rows=200)  # type: ignore[arg-type]
    assert outcome.exit_code == 0, outcome.report["error"]
    assert outcome.report["rows"]["successful"] == 500
    assert outcome.report["batches"]["total"] == 3
    assert stored_profiles(emulator, ["H0", "H499"]) == {
        "H0": {"tier": "t0"},
        "H499": {"tier": "t1"},
    }
