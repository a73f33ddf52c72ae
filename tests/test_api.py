"""The Python API (``uploader.api``): the same pipeline as ``uploader run``, called from code."""

from __future__ import annotations

from pathlib import Path

import pytest

import uploader.api as api
from tests.helpers import CLIENT, FAST, assert_store_matches, expected_profiles, write_csv
from uploader.emulator import Emulator

ROWS = [[f"C{i}", f"tier{i % 3}", str(i)] for i in range(1, 301)]


def _keys(emu: Emulator, **more: object) -> dict[str, object]:
    return {"target.client": CLIENT, "target.base_url": emu.base_url, **FAST, **more}


def test_public_names() -> None:
    assert api.__all__ == [
        "RunOutcome",
        "Settings",
        "UploaderError",
        "load_settings",
        "run",
        "run_async",
    ]


async def test_run_async_uploads_and_reports(emulator: Emulator, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "export.csv", ["id", "tier", "ltv"], ROWS)
    settings = api.load_settings(None, _keys(emulator, **{"batch.max_rows": 100}), {})
    outcome = await api.run_async(src, settings, work_dir=tmp_path / "w")
    assert outcome.exit_code == 0
    assert outcome.work_dir == tmp_path / "w"
    assert outcome.report["status"] == "complete"
    assert outcome.report["rows"]["read"] == 300
    assert outcome.report["rows"]["successful"] == 300
    assert outcome.report["batches"]["total"] == 3
    assert (tmp_path / "w" / "report.json").is_file()
    assert_store_matches(emulator, expected_profiles(src))


async def test_run_async_settings_from_toml(emulator: Emulator, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "export.csv", ["id", "tier", "ltv"], ROWS[:10])
    config = tmp_path / "acme.toml"
    config.write_text(f'[target]\nclient = "{CLIENT}"\nbase_url = "{emulator.base_url}"\n')
    settings = api.load_settings(config, {"status.poll_initial_s": 0.02}, {})
    assert settings.target.client == CLIENT
    outcome = await api.run_async(src, settings, work_dir=tmp_path / "w")
    assert (outcome.exit_code, outcome.report["rows"]["successful"]) == (0, 10)


async def test_problems_before_start_raise(emulator: Emulator, tmp_path: Path) -> None:
    with pytest.raises(api.UploaderError) as bad_key:
        api.load_settings(None, {"target.client": CLIENT, "submit.concurrency": 0}, {})
    assert bad_key.value.exit_code == 2
    settings = api.load_settings(None, _keys(emulator), {})
    with pytest.raises(api.UploaderError) as stdin:
        await api.run_async("-", settings, work_dir=tmp_path / "w")
    assert stdin.value.exit_code == 2


async def test_missing_input_raises(emulator: Emulator, tmp_path: Path) -> None:
    settings = api.load_settings(None, _keys(emulator), {})
    with pytest.raises(api.UploaderError, match=r"nope\.csv: no such file") as missing:
        await api.run_async(tmp_path / "nope.csv", settings, work_dir=tmp_path / "w")
    assert missing.value.exit_code == 2
    assert emulator.stats()["submits"] == 0


def test_run_sync_resumes_same_job(threaded_emulator: Emulator, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "export.csv", ["id", "tier", "ltv"], ROWS[:50])
    settings = api.load_settings(None, _keys(threaded_emulator, **{"batch.max_rows": 20}), {})
    first = api.run(src, settings, work_dir=tmp_path / "w")
    assert (first.exit_code, first.report["rows"]["successful"]) == (0, 50)
    submits = threaded_emulator.stats()["submits"]
    assert submits == 3
    again = api.run(src, settings, work_dir=tmp_path / "w")
    assert (again.exit_code, again.report["rows"]["successful"]) == (0, 50)
    assert threaded_emulator.stats()["submits"] == submits  # complete batches are not resent
