"""What ``uploader run``, ``submit`` and ``status`` do, once the flags are parsed.

Kept apart from ``cli.py`` (parsing) and ``pipeline.py`` (the stages): this
is where a work directory is chosen, progress is shown, the pipeline runs on
the right event loop, and the human summary is printed. A report is written
whatever happens, including errors that stop a run before it starts.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from uploader import report as reporting
from uploader.combine import combine, render_combined
from uploader.errors import InputError, UploaderError
from uploader.journal import Journal
from uploader.logs import json_line
from uploader.pipeline import run_pipeline
from uploader.progress import progress_display
from uploader.report import EXIT_CODES
from uploader.settings import Settings
from uploader.sources.spool import Spool, discard_spool, spool_stdin
from uploader.workdir import RunOutcome, check_ours, default_job_id, journal_facts, running_pid

__all__ = ["find_batch_files", "run_command", "status_command", "submit_command"]


def run_command(input_name: str, settings: Settings) -> int:
    """``uploader run INPUT``: chunk, submit, track; print the summary; return the exit code.

    Standard input is spooled first (into the work dir, or ``uploader-runs/``
    until its content names the job): see ``sources.spool``.
    """
    if input_name != "-":
        job_id = default_job_id(input_name, settings)
        work_dir = settings.run.work_dir or Path("uploader-runs") / job_id
        return _execute(input_name, settings, job_id, work_dir, files=None)
    if settings.run.work_dir is not None:
        check_ours(settings.run.work_dir)
    spool = spool_stdin(settings.run.work_dir or Path("uploader-runs"))
    try:
        job_id = default_job_id("-", settings, stdin_sha256=spool.sha256)
        work_dir = settings.run.work_dir or Path("uploader-runs") / job_id
        return _execute("-", settings, job_id, work_dir, files=None, stdin=spool)
    finally:
        discard_spool(spool)


def submit_command(paths: list[Path], settings: Settings) -> int:
    """``uploader submit FILE|DIR...``: send existing batch files and track them."""
    files = find_batch_files(paths)
    key = ";".join(str(f.resolve()) for f in files)
    job_id = default_job_id(f"submit-{len(files)}", settings) + "-" + _short_hash(key)
    work_dir = settings.run.work_dir or Path("uploader-runs") / job_id
    return _execute("-", settings, job_id, work_dir, files=files)


def status_command(work_dirs: Sequence[Path], *, as_json: bool = False) -> int:
    """``uploader status WORK_DIR...``: the report as each journal stands now.

    A run still going is said to be running, with its pid (exit 3); a run that
    ended shows the error it stored and exits with the code it ended with.
    Several work dirs (the shards of one load) also get their combined
    accounting and one exit code for the whole (``report.combine``).
    """
    reports = [status_report(work_dir) for work_dir in work_dirs]
    if len(reports) == 1:
        report = reports[0]
        print(json.dumps(report, indent=2) if as_json else reporting.render_summary(report))
        return int(report["exit_code"])
    combined = combine(reports)
    if as_json:
        print(json.dumps({"combined": combined, "runs": reports}, indent=2))
    else:
        print(render_combined(combined, reports))
    return int(combined["exit_code"])


def status_report(work_dir: Path) -> dict[str, Any]:
    """The report of one work dir from its journal, as ``uploader status`` shows it."""
    path = work_dir / "journal.sqlite"
    if not path.exists():
        raise InputError(f"{work_dir}: no journal here (expected {path})")
    pid = running_pid(work_dir)
    with Journal(path) as journal:
        chunk = journal.get_meta("chunk") or {}
        batches = journal.batches()
        ended = None if pid else journal.get_meta("last_exit")
        rejected = chunk.get("rejected", {})
        target = (journal.get_meta("fingerprint") or {}).get("target") or {}
        report = reporting.build_report(
            job_id=journal.get_meta("job_id", work_dir.name),
            **journal_facts(journal, chunk, batches),
            elapsed_s=_elapsed(journal, running=pid is not None),
            outputs=(ended or {}).get("outputs")
            or {
                "rejects": str(work_dir / "rejects.csv") if sum(rejected.values()) else None,
                "failed_rows": _existing(work_dir / "failed.csv"),
                "journal": str(path),
                "work_dir": str(work_dir),
            },
            interrupted=pid is not None or journal.get_meta("last_outcome") != "done",
            error=ended.get("error") if ended else None,
            error_exit=int(ended["exit_code"]) if ended else 2,
            settings_summary={k: target.get(k) for k in ("client", "api", "base_url")},
            pacing=journal.get_meta("pacing"),
            outcome="running" if pid is not None else journal.get_meta("last_outcome") or "killed",
        )
    if pid is not None:
        report["running_pid"] = pid
    if ended:
        report["exit_code"] = int(ended["exit_code"])
    # When it ended, as its own report says; a run still going (or killed) has no end yet.
    report["finished_at"] = (ended or {}).get("finished_at")
    return report


def find_batch_files(paths: list[Path]) -> list[Path]:
    """Batch files named on the command line; a directory gives its ``*.txt`` in name order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.txt") if p.is_file())
            if not found:
                raise InputError(f"{path}: directory holds no batch files (*.txt)")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or directory")
    return files


def _execute(
    input_name: str,
    settings: Settings,
    job_id: str,
    work_dir: Path,
    *,
    files: list[Path] | None,
    stdin: Spool | None = None,
) -> int:
    from uploader.cli import run_async

    display = progress_display(settings.run.progress, log_format=settings.run.log_format)
    try:
        outcome: RunOutcome = run_async(
            run_pipeline(
                input_name,
                settings,
                work_dir,
                job_id=job_id,
                progress=display,
                files=files,
                stdin=stdin,
            ),
            settings.run.loop,
        )
    except UploaderError as exc:
        if exc.exit_code == 2:
            report = _error_report(job_id, settings, str(exc))
            _publish(report, settings, input_name, work_dir, files, started=False)
        raise
    _publish(outcome.report, settings, input_name, work_dir, files)
    error = outcome.report.get("error")
    if error and outcome.exit_code != EXIT_CODES["incomplete"]:
        # Nothing more was sent (2) or a bug (4): one line says why; report.json has the rest.
        print(_error_line(str(error)), file=sys.stderr)
        return outcome.exit_code
    print(_summary(outcome.report, settings.run.log_format), file=sys.stderr)
    if error:  # stopped part-way (3): the summary, then why
        print(_error_line(str(error)), file=sys.stderr)
    return outcome.exit_code


def _error_line(error: str) -> str:
    if error.startswith("internal error"):
        return f"uploader: {error}"
    return f"uploader: error: {error}"


def _summary(report: dict[str, Any], log_format: str) -> str:
    """The end-of-run summary: the text block, or one JSON log line with its figures."""
    if log_format != "json":
        return reporting.render_summary(report)
    keys = ("job_id", "status", "exit_code", "rows", "batches", "requests", "bytes_submitted")
    more = ("elapsed_s", "rows_per_s", "rate_basis", "submit_limit", "pacing", "outputs")
    headline = f"uploader job {report['job_id']}: {str(report['status']).upper()}"
    return json_line("info", "summary", headline, **{k: report.get(k) for k in keys + more})


def _publish(
    report: dict[str, Any],
    settings: Settings,
    input_name: str,
    work_dir: Path,
    files: list[Path] | None,
    *,
    started: bool = True,
) -> None:
    """The job summary and annotations for the CI the run is in (see ``ci.py``).

    A run that stopped before it started creates no directory for its summary.
    """
    from uploader import ci

    ci.publish(
        report,
        settings=settings,
        input_name=None if files is not None else input_name,
        work_dir=work_dir,
        stdout=sys.stdout,
        make_dirs=started,
    )


def _error_report(job_id: str, settings: Settings, message: str) -> dict[str, Any]:
    """The report of a run that stopped with exit 2 before it started; returns it.

    Written only at ``--report PATH``, and only into a directory that exists:
    such a run (an input that does not open, batch files that are not ones,
    a work dir in use or not ours) creates nothing, and a work dir that holds
    a journal keeps the report of its own run.
    """
    report = reporting.build_report(
        job_id=job_id,
        batches=[],
        counters={},
        rows_read=0,
        rejected_by_reason={},
        chunking_done=False,
        elapsed_s=0.0,
        outputs={"journal": None},
        interrupted=False,
        error=message,
    )
    target = settings.run.report
    if target is not None and target.parent.is_dir():
        with contextlib.suppress(OSError):  # the one-line error still says why (a full disk?)
            reporting.write_report(target, report)
    return report


def _elapsed(journal: Journal, *, running: bool) -> float:
    """Time spent running, summed over the runs, as a run's report counts it.

    Runs that ended added theirs to ``active_s``; the one going now adds its
    time so far, and one that was killed its time until its last sample.
    """
    active = float(journal.get_meta("active_s", 0.0))
    if journal.get_meta("last_exit"):
        return active
    start = journal.get_meta("run_started_at") or journal.get_meta("started_at")
    if start is None:
        return active
    if running:
        return active + max(0.0, time.time() - float(start))
    samples = journal.samples()
    last = samples[-1].t if samples else float(start)
    return active + max(0.0, last - float(start))


def _existing(path: Path) -> str | None:
    return str(path) if path.exists() and path.stat().st_size > 0 else None


def _short_hash(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:8]
