"""Tell the CI a run happened in: the Markdown job summary and GitHub annotations.

Called once by ``commands`` when a run or submit ends, whatever its exit
code. Reads ``GITHUB_STEP_SUMMARY`` and ``GITHUB_ACTIONS`` from the
environment it is given (the caller's), writes the summary where asked, and
prints workflow commands on stdout inside GitHub Actions. A summary that
cannot be written is a warning, never a changed exit code: the run itself
is what the exit code speaks for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from uploader.annotations import workflow_commands
from uploader.jobsummary import LINES_PER_REASON, read_rejects, render_markdown, write_summary
from uploader.settings import Settings

__all__ = ["publish"]

log = logging.getLogger(__name__)


def _first_lines(path: Path, encoding: str) -> dict[str, list[int]]:
    first: dict[str, list[int]] = {}
    for r in read_rejects(path, encoding):
        lines = first.setdefault(r.reason, [])
        if len(lines) < LINES_PER_REASON:
            lines.append(r.line)
    return first


def _annotated_file(input_name: str | None, workspace: str | None) -> str | None:
    """The input as GitHub links it: relative to the workspace when inside it."""
    if not input_name or input_name == "-" or "://" in input_name:
        return None
    if workspace:
        try:
            return str(Path(input_name).resolve().relative_to(Path(workspace).resolve()))
        except ValueError:
            pass
    return input_name


def publish(
    report: Mapping[str, Any],
    *,
    settings: Settings,
    input_name: str | None,
    work_dir: Path,
    stdout: TextIO,
    environ: Mapping[str, str] | None = None,
    make_dirs: bool = True,
) -> None:
    """Write the job summary (``--summary-md``, ``GITHUB_STEP_SUMMARY``) and annotations.

    ``make_dirs=False`` (a run that stopped before it started): ``--summary-md``
    is written only into a directory that exists, so that such a run creates none.
    """
    env = os.environ if environ is None else environ
    on_github = env.get("GITHUB_ACTIONS") == "true"
    targets: list[tuple[Path, bool]] = []
    summary_md = settings.run.summary_md
    if summary_md is not None and (make_dirs or summary_md.parent.is_dir()):
        targets.append((summary_md, False))
    if env.get("GITHUB_STEP_SUMMARY"):
        targets.append((Path(env["GITHUB_STEP_SUMMARY"]), True))
    if not targets and not on_github:
        return
    rejects = work_dir / "rejects.csv"
    encoding = settings.input.encoding
    if targets:
        report_path = settings.run.report or work_dir / "report.json"
        text = render_markdown(
            report,
            first_rejects=_first_lines(rejects, encoding),
            report_path=str(report_path),
            input_label=input_name,
        )
        for path, append in targets:
            try:
                write_summary(path, text, append=append)
            except OSError as exc:
                log.warning("cannot write the job summary %s: %s", path, exc.strerror or exc)
    if on_github:
        lines = workflow_commands(
            report,
            read_rejects(rejects, encoding),
            input_file=_annotated_file(input_name, env.get("GITHUB_WORKSPACE")),
        )
        for line in lines:
            print(line, file=stdout)
        stdout.flush()
