"""``uploader status WORK_DIR --refresh``: ask Target where the open batches stand now.

The morning after a run that ended before Target was done (``--no-wait``, a
status timeout, a window that closed), this asks the status URL of every
accepted batch that is not final yet, once, with the run's own target and
token rules (the run's ``TargetClient``, so the same host checks), records
what Target says in the journal, and rewrites the run's outputs. It submits
nothing: a stuck batch stays stuck until the next ``uploader run`` resends it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uploader.client import TargetClient
from uploader.errors import InputError, UnusableURLError, UploaderError
from uploader.journal import BatchRecord, Journal
from uploader.settings import Settings
from uploader.states import BatchState, RemoteStatus
from uploader.verify.command import verify_settings
from uploader.workdir import locked, write_outputs

__all__ = ["RefreshResult", "refresh_work_dir"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefreshResult:
    """What one refresh asked and learnt."""

    asked: int
    complete: int
    stuck: int
    incomplete: int
    errors: int


async def refresh_work_dir(
    work_dir: Path,
    *,
    config: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> RefreshResult:
    """Ask Target for every open batch of ``work_dir``; update the journal and the report."""
    path = work_dir / "journal.sqlite"
    if not path.exists():
        raise InputError(f"{work_dir}: no journal here (expected {path})")
    with locked(work_dir), Journal(path) as journal:
        fingerprint = journal.get_meta("fingerprint")
        if not fingerprint:
            raise InputError(f"{path}: the journal records no run")
        settings = verify_settings(fingerprint, config=config, flags=flags or {}, environ=environ)
        # Every accepted batch, also one whose status URL we refuse to call: it is
        # reported as a status error, as the run reports it.
        open_batches = journal.batches(BatchState.ACCEPTED)
        counts = {"complete": 0, "stuck": 0, "incomplete": 0, "errors": 0}
        if open_batches:
            connections = settings.status.max_inflight
            async with TargetClient.for_settings(settings, connections=connections) as client:
                calls = asyncio.Semaphore(settings.status.max_inflight)
                results = await asyncio.gather(
                    *(_ask(client, journal, b, calls) for b in open_batches)
                )
            for result in results:
                counts[result] += 1
        _write(journal, settings, work_dir)
    return RefreshResult(asked=len(open_batches), **counts)


async def _ask(
    client: TargetClient, journal: Journal, batch: BatchRecord, calls: asyncio.Semaphore
) -> str:
    """One status call; the journal records a final answer. Returns what it learnt."""
    async with calls:
        try:
            status = await client.status(batch.status_url or "", details=True)
        except UploaderError as exc:
            if not isinstance(exc, UnusableURLError):  # that one was never called
                journal.bump("status_errors")
            log.warning(
                "status of batch %06d: %s",
                batch.seq,
                exc,
                extra={"event": "status_error", "batch": batch.seq, "error": str(exc)},
            )
            return "errors"
    journal.bump("status_polls")
    if status.status == RemoteStatus.INCOMPLETE:
        return "incomplete"
    journal.record_status(batch.seq, status, redact=client.redact)
    return "stuck" if status.status == RemoteStatus.STUCK else "complete"


def _write(journal: Journal, settings: Settings, work_dir: Path) -> None:
    """Rewrite report.json (and failed.csv); a run with nothing left open is done."""
    batches = journal.batches()
    settled = bool(journal.get_meta("chunk_done")) and all(b.is_final for b in batches)
    outcome = "done" if settled else journal.get_meta("last_outcome") or "killed"
    journal.set_meta("last_outcome", outcome)
    # What ended the run (an input error found part-way...) still stands until it is done.
    ended = journal.get_meta("last_exit") or {}
    write_outputs(
        journal,
        settings,
        work_dir,
        str(journal.get_meta("job_id", work_dir.name)),
        time.time(),  # adds no running time
        outcome,
        None if settled else ended.get("error"),
        error_exit=int(ended.get("exit_code") or 2),
        pacing=journal.get_meta("pacing"),
    )
