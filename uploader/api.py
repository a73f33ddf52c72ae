"""The Python API: run an upload from an orchestrator without a subprocess.

Airflow, Dagster or a plain script call the same pipeline as ``uploader run``:

    from uploader.api import load_settings, run

    settings = load_settings("acme.toml", {"target.client": "acme"})
    outcome = run("/data/export.csv.gz", settings)
    if outcome.exit_code not in (0, 1):
        raise RuntimeError(outcome.report["error"])

Settings come from a TOML file and/or dotted keys (the keys of
``config.example.toml``; the token is read from the environment variable named
by ``target.token_env``). ``run`` and ``run_async`` return a ``RunOutcome``:
``exit_code`` (the command line's exit codes), ``report`` (the dict written to
``report.json``) and ``work_dir``. Problems found before anything starts
(bad settings, a missing input, a work dir of another run) raise an
``UploaderError`` whose ``exit_code`` is 2. No signal handlers are installed
and no progress is drawn: the caller owns the process.

The names in ``__all__`` are the public API; everything else in the package
may change between versions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from uploader.errors import InputError, UploaderError
from uploader.pipeline import run_pipeline
from uploader.settings import Settings
from uploader.settings import load_settings as _load_settings
from uploader.workdir import RunOutcome, default_job_id

__all__ = ["RunOutcome", "Settings", "UploaderError", "load_settings", "run", "run_async"]


def load_settings(
    config: str | Path | None = None,
    keys: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Validated settings from a TOML file and dotted ``keys`` (which win over the file).

    ``keys`` are the config file's keys, dotted: ``{"target.client": "acme",
    "submit.concurrency": 4}``. ``environ`` (default ``os.environ``) is where
    the token is looked up.
    """
    return _load_settings(config, keys, environ)


async def run_async(
    input: str | Path,
    settings: Settings,
    *,
    work_dir: str | Path | None = None,
    job_id: str | None = None,
) -> RunOutcome:
    """Chunk, submit and track ``input`` like ``uploader run``; resumable the same way.

    ``work_dir`` defaults to ``settings.run.work_dir``, then to
    ``./uploader-runs/JOB_ID``, so calling it again with the same input and
    settings resumes the same job.
    """
    name = str(input)
    if name == "-":
        raise InputError("the Python API reads files, not standard input")
    job = job_id or default_job_id(name, settings)
    where = Path(work_dir) if work_dir is not None else settings.run.work_dir
    return await run_pipeline(
        name,
        settings,
        where or Path("uploader-runs") / job,
        job_id=job,
        install_signals=False,
    )


def run(
    input: str | Path,
    settings: Settings,
    *,
    work_dir: str | Path | None = None,
    job_id: str | None = None,
) -> RunOutcome:
    """``run_async`` on a fresh event loop, for synchronous callers."""
    return asyncio.run(run_async(input, settings, work_dir=work_dir, job_id=job_id))
