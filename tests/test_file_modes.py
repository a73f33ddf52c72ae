"""Every file a run writes is owner-only (0o600), whatever the umask; directories 0o700.

The one exception is the metrics textfile (counts and the job id, read by
node_exporter as another user), which keeps the mode the umask gives.
"""

from __future__ import annotations

import csv
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EmulatorFactory
from tests.helpers import CLIENT, write_csv
from tests.test_cli_errors import uploader


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which a plain ``open(..., "w")`` makes 0o644."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in sorted(root.rglob("*"))
    }


@pytest.mark.usefixtures("umask_022")
async def test_every_output_of_a_run_is_owner_only(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(stuck_rate=1.0)  # every batch stuck: failed.csv is written
    rows = [[f"C{i}", "gold"] for i in range(6)] + [["", "silver"]]  # one reject
    src = write_csv(tmp_path / "export.csv", ["id", "tier"], rows)
    step = tmp_path / "ci" / "step-summary.md"  # the runner's file, not there yet
    result = await uploader(
        "run", src.name, "--client", CLIENT, "--base-url", emu.base_url,
        "--work-dir", "w", "--progress", "none", "--max-batch-rows", "3",
        "--report", "out/report.json", "--junit", "out/junit.xml",
        "--summary-md", "out/summary.md", cwd=tmp_path,
        env={"GITHUB_STEP_SUMMARY": str(step)},
    )  # fmt: skip
    assert result.code == 1, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["rows"]["rejected"], report["batches"]["failed"]) == (1, 2)  # stuck twice
    with (tmp_path / "w" / "failed.csv").open(newline="") as fh:
        assert len(list(csv.reader(fh))) == 1 + 6  # header + the rows of the stuck batches

    work = _modes(tmp_path / "w")
    assert {"failed.csv", "rejects.csv", "report.json", "journal.sqlite"} <= set(work)
    assert work["batches"] == 0o700
    assert {name: mode for name, mode in work.items() if name != "batches"} == {
        name: 0o600 for name in work if name != "batches"
    }
    assert _modes(tmp_path / "out") == {
        "junit.xml": 0o600,
        "report.json": 0o600,
        "summary.md": 0o600,
    }
    assert _modes(tmp_path / "ci") == {"step-summary.md": 0o600}
    assert (tmp_path / "out" / "summary.md").read_text().startswith("## ⚠️ uploader: PARTIAL")


@pytest.mark.usefixtures("umask_022")
async def test_a_summary_file_we_append_to_keeps_its_mode(tmp_path: Path) -> None:
    step = tmp_path / "step-summary.md"
    step.write_text("earlier step\n")
    step.chmod(0o644)
    summary = tmp_path / "summary.md"
    summary.write_text("an older summary\n")
    summary.chmod(0o644)
    result = await uploader(
        "run", "missing.csv", "--client", CLIENT, "--work-dir", "w",
        "--summary-md", "summary.md", cwd=tmp_path, env={"GITHUB_STEP_SUMMARY": str(step)},
    )  # fmt: skip
    assert result.code == 2, result.stderr
    assert step.read_text().startswith("earlier step\n## ❌ uploader: ERROR (exit 2)")
    assert stat.S_IMODE(step.stat().st_mode) == 0o644  # GitHub's file: appended, mode kept
    assert summary.read_text().startswith("## ❌ uploader: ERROR (exit 2)")  # replaced
    assert stat.S_IMODE(summary.stat().st_mode) == 0o600


@pytest.mark.usefixtures("umask_022")
async def test_outputs_at_a_link_are_written_through_it(tmp_path: Path) -> None:
    """A link (``/dev/stdout`` is one) is written through, never replaced by a file."""
    (tmp_path / "real").mkdir()
    for name in ("summary.md", "report.json"):
        (tmp_path / name).symlink_to(tmp_path / "real" / name)
    result = await uploader(
        "run", "missing.csv", "--client", CLIENT, "--work-dir", "w",
        "--summary-md", "summary.md", "--report", "report.json", cwd=tmp_path,
    )  # fmt: skip
    assert result.code == 2, result.stderr
    assert (tmp_path / "summary.md").is_symlink() and (tmp_path / "report.json").is_symlink()
    summary, report = tmp_path / "real" / "summary.md", tmp_path / "real" / "report.json"
    assert summary.read_text().startswith("## ❌ uploader: ERROR (exit 2)")
    assert json.loads(report.read_text())["status"] == "error"
    assert _modes(tmp_path / "real") == {"report.json": 0o600, "summary.md": 0o600}
