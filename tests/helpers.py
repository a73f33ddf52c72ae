"""Shared test helpers: run the real pipeline in-process and check the emulator's store."""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from uploader.client import TargetClient
from uploader.emulator import Emulator
from uploader.pipeline import RunOutcome, run_pipeline
from uploader.settings import Settings, TargetSettings, load_settings

CLIENT = "acme"

# Fast timings so tests never wait on real-world intervals.
FAST = {
    "status.poll_initial_s": 0.02,
    "status.poll_max_s": 0.1,
    "submit.backoff_initial_s": 0.005,
    "submit.backoff_max_s": 0.05,
}


def make_settings(emu: Emulator, **overrides: Any) -> Settings:
    keys: dict[str, Any] = {"target.client": CLIENT, "target.base_url": emu.base_url, **FAST}
    environ = overrides.pop("environ", {})
    keys.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load_settings(None, keys, environ)


async def run(emu: Emulator, input_path: Path, work_dir: Path, **overrides: Any) -> RunOutcome:
    settings = make_settings(emu, **overrides)
    return await run_pipeline(
        str(input_path), settings, work_dir, job_id="test", install_signals=False
    )


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def expected_profiles(
    path: Path,
    *,
    skip_lines: set[int] = frozenset(),  # type: ignore[assignment]
) -> dict[str, dict[str, str]]:
    """id -> non-empty attributes, as Target should store them (empty never clears)."""
    out: dict[str, dict[str, str]] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        start = reader.line_num + 1
        for row in reader:
            line, start = start, reader.line_num + 1
            if line in skip_lines:
                continue
            attrs = {k: v for k, v in zip(header[1:], row[1:], strict=False) if v != ""}
            out.setdefault(row[0], {}).update(attrs)
    return out


def stored_profiles(emu: Emulator, ids: list[str], id_type: str = "thirdPartyId") -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pid in ids:
        profile = emu.profile(CLIENT, id_type, pid)
        if profile is not None:
            found[pid] = {k: v["value"] for k, v in profile["profileAttributes"].items()}
    return found


async def fetched_profiles(base_url: str, ids: list[str]) -> dict[str, dict[str, str]]:
    """id -> attribute values, fetched back over HTTP (an emulator in another process)."""
    settings = TargetSettings(client=CLIENT, base_url=base_url)
    async with TargetClient(settings) as client:
        fetched = await asyncio.gather(*(client.fetch_profile(pid) for pid in ids))
    return {
        pid: {k: v["value"] for k, v in (p or {}).get("profileAttributes", {}).items()}
        for pid, p in zip(ids, fetched, strict=True)
    }


@asynccontextmanager
async def spawned_emulator(*flags: str) -> AsyncIterator[str]:
    """The emulator command in its own process on a free port (it outlives a killed
    uploader); yields its base URL and terminates it on exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uploader", "emulator", "--port", "0", *flags,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    base_url = line.split()[3] if "listening on" in line else ""
    assert base_url.startswith("http://127.0.0.1:"), line
    try:
        yield base_url
    finally:
        proc.terminate()
        await proc.wait()


def assert_store_matches(emu: Emulator, expected: dict[str, dict[str, str]]) -> None:
    stored = stored_profiles(emu, list(expected))
    assert set(stored) == set(expected)
    mismatched = [pid for pid in expected if stored[pid] != expected[pid]]
    assert mismatched == []


def read_report(work_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((work_dir / "report.json").read_text())
    return data
