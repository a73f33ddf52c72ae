"""A one-shot CI job: the Markdown job summary, GitHub annotations, and the composite action."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import EmulatorFactory
from tests.helpers import CLIENT, write_csv
from tests.test_cli_errors import uploader
from uploader.annotations import ANNOTATION_CAP, escape_data, escape_property, workflow_commands
from uploader.jobsummary import RejectLine, render_markdown

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cret-value-of-a-row"  # a row value: must never be printed


def _export(tmp_path: Path) -> tuple[Path, list[int]]:
    """30 valid rows and 14 rejected ones (12 without id, 2 with too many fields)."""
    rows: list[list[str]] = []
    bad_lines: list[int] = []
    for i in range(44):
        line = i + 2  # the header is line 1
        if i % 3 == 1 and len(bad_lines) < 12:
            rows.append(["", "gold", SECRET])
            bad_lines.append(line)
        elif i in (42, 43):
            rows.append([f"X{i}", "gold", SECRET, "extra"])
            bad_lines.append(line)
        else:
            rows.append([f"C{i}", "silver", f"{i}.5"])
    valid = 44 - len(bad_lines)
    assert valid == 30
    return write_csv(tmp_path / "export.csv", ["id", "tier", "ltv"], rows), bad_lines


async def test_github_run_writes_summary_and_capped_annotations(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory()
    src, bad_lines = _export(tmp_path)
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier step\n")
    result = await uploader(
        "run", src.name, "--client", CLIENT, "--base-url", emu.base_url,
        "--work-dir", "w", "--progress", "none",
        cwd=tmp_path,
        env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary),
             "GITHUB_WORKSPACE": str(tmp_path)},
    )  # fmt: skip
    assert result.code == 1, result.stderr
    text = summary.read_text()
    assert text.startswith("earlier step\n## ⚠️ uploader: PARTIAL (exit 1)")  # appended
    assert "| 44 | 14 | 30 | 30 | 0 | 0 | 0 |" in text.splitlines()
    assert "| missing_id | 12 | 3, 6, 9, 12, 15, … |" in text.splitlines()
    assert "| too_many_fields | 2 | 44, 45 |" in text.splitlines()
    assert SECRET not in text and SECRET not in result.stdout

    commands = [line for line in result.stdout.splitlines() if line.startswith("::")]
    warnings = [c for c in commands if c.startswith("::warning ")]
    assert len(warnings) == ANNOTATION_CAP
    lines = [int(re.search(r",line=(\d+),", w).group(1)) for w in warnings]  # type: ignore[union-attr]
    assert lines == bad_lines[:ANNOTATION_CAP]
    assert all(w.startswith("::warning file=export.csv,line=") for w in warnings)
    assert warnings[0].endswith("::missing_id")
    assert commands[ANNOTATION_CAP] == (
        "::notice title=uploader::4 more rejected rows not annotated (14 in all); see rejects.csv"
    )
    assert commands[-1] == (
        "::error title=uploader::PARTIAL (exit 1): 14 rejected, 0 failed, 0 pending of 44 rows read"
    )
    assert len(commands) == ANNOTATION_CAP + 2


async def test_summary_md_anywhere_and_no_annotations_outside_github(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory()
    src = write_csv(tmp_path / "ok.csv", ["id", "tier"], [[f"K{i}", "gold"] for i in range(5)])
    result = await uploader(
        "run", src.name, "--client", CLIENT, "--base-url", emu.base_url, "--work-dir", "w",
        "--summary-md", "out/summary.md", "--progress", "none", cwd=tmp_path,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    text = (tmp_path / "out" / "summary.md").read_text()
    assert text.startswith("## ✅ uploader: COMPLETE (exit 0)\n")
    assert "| 5 | 0 | 5 | 5 | 0 | 0 | 0 |" in text.splitlines()
    assert "- report: `w/report.json`" in text.splitlines()
    assert "::" not in result.stdout


async def test_usage_error_still_summarised(tmp_path: Path) -> None:
    summary = tmp_path / "s.md"
    result = await uploader(
        "run", "missing.csv", "--client", CLIENT, "--work-dir", "w", cwd=tmp_path,
        env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)},
    )  # fmt: skip
    assert result.code == 2
    assert "## ❌ uploader: ERROR (exit 2)" in summary.read_text()
    assert "**Error:** missing.csv: no such file" in summary.read_text()
    assert result.stdout.splitlines() == [
        "::error title=uploader::ERROR (exit 2): missing.csv: no such file"
    ]


def test_escaping_and_cap() -> None:
    assert escape_data("50% off\r\nnext") == "50%25 off%0D%0Anext"
    assert escape_property("dir:a,b%.csv") == "dir%3Aa%2Cb%25.csv"
    rejects = [RejectLine(n, f"id{n}", "invalid_id") for n in range(2, 8)]
    report = {"exit_code": 0, "status": "complete"}
    out = workflow_commands(report, rejects, input_file="in,put.csv", cap=3)
    assert out == [
        "::warning file=in%2Cput.csv,line=2,title=uploader rejected a row::invalid_id (id id2)",
        "::warning file=in%2Cput.csv,line=3,title=uploader rejected a row::invalid_id (id id3)",
        "::warning file=in%2Cput.csv,line=4,title=uploader rejected a row::invalid_id (id id4)",
        "::notice title=uploader::3 more rejected rows not annotated (6 in all); see rejects.csv",
    ]
    assert workflow_commands(report, [], input_file=None) == []


def test_markdown_cells_cannot_break_the_table() -> None:
    report = {
        "status": "partial",
        "exit_code": 1,
        "job_id": "j",
        "rows": {},
        "batches": {},
        "errors": [{"file": "b/batch-000001.txt", "state": "failed", "rows": 3,
                    "lines": [2, 4], "error": "HTTP 400 | <script>"}],
    }  # fmt: skip
    report["repeated_ids"] = {"ids": 2, "rows": 5, "rows_folded": 5}
    text = render_markdown(report, first_rejects={}, report_path="r.json")
    assert "| batch-000001.txt | failed | 3 | 2-4 | HTTP 400 \\| &lt;script&gt; |" in text
    assert "Repeated ids: 2 ids appear on 5 rows; 5 rows were folded into one row per id." in text


def test_action_yml() -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    inputs = action["inputs"]
    assert inputs["input"]["required"] is True
    for name in ("client", "config", "args", "token-env", "upload-personal-data"):
        assert name in inputs, name
    assert inputs["upload-personal-data"]["default"] == "false"
    for name in ("exit-code", "rows-read", "rows-successful", "rows-rejected", "rows-failed"):
        assert "steps.run.outputs" in action["outputs"][name]["value"], name
    assert action["runs"]["using"] == "composite"
    steps = action["runs"]["steps"]
    run = next(s for s in steps if s.get("id") == "run")
    script = run["run"]
    assert "${{" not in script  # inputs reach the script as env variables, never spliced in
    assert 'args=(run "$INPUT_PATH"' in script and 'python -m uploader "${args[@]}"' in script
    assert "--summary-md" in script and "--junit" in script
    uploads = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert len(uploads) == 2
    always, personal = uploads
    assert always["if"] == "always()"
    paths = always["with"]["path"]
    assert all(p in paths for p in ("report.json", "junit.xml", "summary.md"))
    assert not any(p in paths for p in ("rejects.csv", "failed.csv", "batches"))
    assert "inputs.upload-personal-data == 'true'" in personal["if"]
    assert "rejects.csv" in personal["with"]["path"]
    fail = steps[-1]
    assert "steps.run.outputs.exit-code != '0'" in fail["if"]


@pytest.mark.parametrize("code", [0, 1])
async def test_action_run_step_sets_outputs(
    emulator_factory: EmulatorFactory, tmp_path: Path, code: int
) -> None:
    """The action's own script, run by bash as GitHub would, against the emulator."""
    emu = await emulator_factory()
    rows = [[f"K{i}", "gold"] for i in range(4)] + ([["", "x"]] if code else [])
    src = write_csv(tmp_path / "in.csv", ["id", "tier"], rows)
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    run = next(s for s in action["runs"]["steps"] if s.get("id") == "run")
    outputs = tmp_path / "outputs.txt"
    env = {
        "INPUT_PATH": src.name,
        "CLIENT": CLIENT,
        "CONFIG": "",
        "EXTRA_ARGS": f"--base-url {emu.base_url} --progress none",
        "WORK_DIR": "upload",
        "TOKEN_ENV": "TARGET_PROFILE_TOKEN",
        "GITHUB_OUTPUT": str(outputs),
    }
    proc = await asyncio.create_subprocess_exec(
        "bash", "-e", "-c", run["run"], cwd=tmp_path, env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    values = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    assert values == {
        "exit-code": str(code),
        "rows-read": str(4 + code),
        "rows-successful": "4",
        "rows-rejected": str(code),
        "rows-failed": "0",
        "rows-pending": "0",
        "report": "upload/report.json",
    }
    assert (tmp_path / "upload" / "summary.md").exists()
    assert (tmp_path / "upload" / "junit.xml").exists()
