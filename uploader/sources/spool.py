"""Standard input, spooled to an owner-only file before anything reads it.

Sits in front of the flow (``stdin -> spool -> source -> ...``). A pipe can
be read once, but a run must be resumable and the chunker may read its input
twice, so ``uploader run -`` first copies standard input to a file, hashing
it on the way. The content's sha256 names the job (``workdir.default_job_id``)
and is part of the run's fingerprint: the same bytes piped again resume their
run, other bytes are a new job, and an explicit ``--work-dir`` holding a run
of other bytes is refused. The pipeline keeps the spool as
``WORK_DIR/stdin.csv`` and the chunker reads that path like any file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from uploader.errors import InputError, StorageError, storage_error
from uploader.sources.stream import stdin_bytes

__all__ = ["SPOOL_NAME", "Spool", "discard_spool", "keep_spool", "spool_stdin"]

log = logging.getLogger(__name__)

SPOOL_NAME = "stdin.csv"  # the spool's name in the work dir
_BLOCK = 1 << 20


@dataclass(frozen=True)
class Spool:
    """A copy of standard input on disk."""

    path: Path  # a temporary file until ``keep_spool`` moves it into the work dir
    sha256: str
    bytes: int


def spool_stdin(directory: Path, *, stdin: BinaryIO | None = None) -> Spool:
    """Copy all of standard input into a new owner-only file in ``directory``."""
    source = stdin if stdin is not None else stdin_bytes()  # before anything is created
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, name = tempfile.mkstemp(prefix=".stdin-", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise _write_error(exc, directory) from exc
    path = Path(name)
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            while True:
                try:
                    block = source.read(_BLOCK)
                except OSError as exc:
                    raise InputError(f"<stdin>: cannot read: {exc.strerror or exc}") from exc
                if not block:
                    break
                digest.update(block)
                size += len(block)
                try:
                    out.write(block)
                except OSError as exc:
                    raise _write_error(exc, path) from exc
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as exc:
                raise _write_error(exc, path) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return Spool(path, digest.hexdigest(), size)


def keep_spool(spool: Spool, work_dir: Path, *, resuming: bool) -> Path:
    """Move the spool into the work dir (once the run's identity is checked)."""
    final = work_dir / SPOOL_NAME
    if resuming:
        log.warning(
            "standard input is the input of the run in %s (same sha256 %s): resuming it; "
            "pass --fresh to send it all again",
            work_dir,
            spool.sha256[:12],
        )
    try:
        os.replace(spool.path, final)
    except OSError as exc:
        raise _write_error(exc, final) from exc
    return final


def discard_spool(spool: Spool) -> None:
    """Remove the temporary spool when it was not kept (a refused or failed run)."""
    with contextlib.suppress(OSError):
        spool.path.unlink()


def _write_error(exc: OSError, path: Path) -> StorageError | InputError:
    return storage_error(exc, path) or InputError(
        f"{path}: cannot spool standard input: {exc.strerror or exc}"
    )
