"""Prometheus metrics and JSON logs of a real run against the emulator, parsed back."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import EmulatorFactory
from tests.helpers import make_settings, read_report, write_csv
from uploader import monitor
from uploader.emulator import Emulator
from uploader.metrics import RunMetrics
from uploader.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def fast_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monitor, "SAMPLE_EVERY_S", 0.02)
    monkeypatch.setattr(monitor, "TEXTFILE_EVERY_S", 0.05)


def export(tmp_path: Path, rows: int) -> Path:
    data = [[f"C{i:05d}", ("gold", "silver")[i % 2]] for i in range(rows)]
    return write_csv(tmp_path / "export.csv", ["customer_id", "loyaltyTier"], data)


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels without job_id): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "job_id"))
            out[(s.name, labels)] = s.value
    return out


def value(metrics: dict[Any, float], name: str, **labels: str) -> float:
    return metrics[(name, tuple(sorted(labels.items())))]


async def scrape(session: aiohttp.ClientSession, port: int) -> dict[Any, float]:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        return parse(await resp.text())


async def test_metrics_scraped_during_a_run_exact_at_the_end(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(apply_rate=4_000)  # about a quarter second of work
    src = export(tmp_path, 1000)
    settings = make_settings(emu, batch__max_rows=100)
    scrapes: list[dict[Any, float]] = []
    with RunMetrics("job-m", port=0) as metrics:
        assert metrics.port
        async with aiohttp.ClientSession() as session:
            run = asyncio.create_task(
                run_pipeline(
                    str(src), settings, tmp_path / "w", job_id="job-m", install_signals=False,
                    metrics=metrics,
                )
            )  # fmt: skip
            while not run.done():
                with_state = await scrape(session, metrics.port)
                if with_state:
                    scrapes.append(with_state)
                await asyncio.sleep(0.01)
            outcome = await run
            final = await scrape(session, metrics.port)
    assert outcome.exit_code == 0
    during = [s for s in scrapes if value(s, "uploader_run_finished") == 0]
    assert during, "no scrape saw the run going"
    assert all(value(s, "uploader_run_exit_code") == -1 for s in during)
    assert any(value(s, "uploader_rows", state="successful") < 1000 for s in during)
    report = read_report(tmp_path / "w")
    assert value(final, "uploader_run_finished") == 1
    assert value(final, "uploader_run_exit_code") == 0
    assert value(final, "uploader_rows", state="successful") == 1000
    assert value(final, "uploader_rows", state="read") == 1000
    assert value(final, "uploader_rows", state="pending") == 0
    assert value(final, "uploader_batches", state="complete") == 10
    assert value(final, "uploader_batches", state="accepted") == 0
    assert value(final, "uploader_submits_total") == 10
    assert value(final, "uploader_retries_total") == 0
    assert value(final, "uploader_status_polls_total") == report["requests"]["status_polls"]
    assert value(final, "uploader_bytes_sent_total") == report["bytes_submitted"]
    assert value(final, "uploader_submit_latency_seconds_count") == 10
    assert value(final, "uploader_submit_latency_seconds_bucket", le="+Inf") == 10
    assert value(final, "uploader_submits_in_flight") == 0
    assert value(final, "uploader_last_progress_timestamp_seconds") >= value(
        final, "uploader_run_started_timestamp_seconds"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_textfile_from_settings_parsed_after_a_paused_run(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = export(tmp_path, 500)
    textfile = tmp_path / "prom" / "uploader.prom"
    settings = make_settings(
        emulator,
        batch__max_rows=100,
        pacing__daily_rows=200,
        run__metrics_textfile=str(textfile),
        run__metrics_port=free_port(),
    )
    outcome = await run_pipeline(
        str(src), settings, tmp_path / "w", job_id="job-t", install_signals=False
    )
    assert outcome.exit_code == 3
    text = textfile.read_text()
    final = parse(text)
    assert 'job_id="job-t"' in text
    assert value(final, "uploader_run_finished") == 1
    assert value(final, "uploader_run_exit_code") == 3
    assert value(final, "uploader_rows", state="successful") == 200
    assert value(final, "uploader_rows", state="pending") == 300
    assert value(final, "uploader_batches", state="complete") == 2
    assert value(final, "uploader_batches", state="written") == 3
    assert value(final, "uploader_submits_total") == 2
    assert [p.name for p in textfile.parent.iterdir()] == ["uploader.prom"]  # no temp left
    # The port is closed once the run has ended.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", settings.run.metrics_port or 0), timeout=1).close()


async def test_json_logs_one_object_per_line(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(error_rate=0.3, seed=7)
    src = export(tmp_path, 1000)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uploader", "-v", "run", str(src), "--client", "acme",
        "--base-url", emu.base_url, "--max-batch-rows", "100", "--work-dir", str(tmp_path / "w"),
        "--log-format", "json", "--progress", "log",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert out == b""
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(line) for line in err.decode().splitlines()]
    assert lines and all({"time", "level", "event", "message"} <= set(d) for d in lines)
    retries = [d for d in lines if d["event"] == "retry"]
    report = read_report(tmp_path / "w")
    assert len(retries) == report["requests"]["retries"] > 0
    first = retries[0]
    assert first["level"] == "info" and first["logger"] == "uploader.submit"
    assert isinstance(first["batch"], int) and first["attempt"] >= 1
    assert first["wait_s"] >= 0 and first["error"].startswith("ServerError")
    assert lines[-1]["event"] == "summary"
    assert lines[-1]["exit_code"] == 0 and lines[-1]["rows"]["successful"] == 1000
    assert any(d["event"] == "progress" and d["rows_accepted"] == 1000 for d in lines)


async def test_textfile_rows_add_up_with_folded_repeated_ids(
    emulator: Emulator, tmp_path: Path
) -> None:
    """read = rejected + folded + submitted holds in the metrics as in report.json."""
    rows = [["C1", "gold"], ["C2", "silver"], ["C1", ""], ["", "x"], ["C1", "bronze"]]
    src = write_csv(tmp_path / "export.csv", ["customer_id", "loyaltyTier"], rows)
    textfile = tmp_path / "uploader.prom"
    settings = make_settings(emulator, run__metrics_textfile=str(textfile))
    outcome = await run_pipeline(
        str(src), settings, tmp_path / "w", job_id="job-f", install_signals=False
    )
    assert outcome.exit_code == 1  # the row without an id is rejected
    final = parse(textfile.read_text())
    report = read_report(tmp_path / "w")
    assert report["rows"]["folded"] == 2
    for state, n in report["rows"].items():
        assert value(final, "uploader_rows", state=state) == n
    assert value(final, "uploader_rows", state="read") == 5
    assert value(final, "uploader_rows", state="rejected") == 1
    assert value(final, "uploader_rows", state="folded") == 2
    assert value(final, "uploader_rows", state="submitted") == 2
