"""Where the bodies of accepted batches wait to be applied: memory, then files.

The submit handler in ``app.py`` hands every accepted batch value to
:meth:`Spool.hold`; the applier reads it back a window of whole lines at a
time (:meth:`QueuedBody.windows`, decoded by ``formdata.decode_windows``) and
releases it once the batch is complete or stuck. Bodies are kept in memory
while the queued bytes in memory stay within the budget; a body that would
pass it is written to a file of a private temporary directory instead and
read back from there, so an emulator whose applier falls behind (a slow
``apply_rate`` under a fast client) holds at most the budget in memory
however many batches wait. Files are owner-only (they hold personal data) and
removed once applied, and the directory when the spool closes.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from uploader.emulator.formdata import WINDOW, Raw, iter_windows

__all__ = ["FileBody", "MemoryBody", "QueuedBody", "Spool"]


class QueuedBody:
    """One queued batch value (the raw body after ``batch=``), in memory or in a file."""

    size: int

    def windows(self) -> Iterator[Raw]:
        """The value as windows of whole lines, without their final newline."""
        raise NotImplementedError

    def release(self) -> None:
        """Forget the value (idempotent): once applied, or when the batch goes stuck."""
        raise NotImplementedError


class MemoryBody(QueuedBody):
    def __init__(self, value: Raw, spool: Spool | None = None) -> None:
        self.size = len(value)
        self._value: Raw | None = value
        self._spool = spool

    def windows(self) -> Iterator[Raw]:
        if self._value is None:
            raise ValueError("queued body already released")
        return iter_windows(self._value)

    def release(self) -> None:
        if self._value is not None and self._spool is not None:
            self._spool.memory_bytes -= self.size
        self._value = None


class FileBody(QueuedBody):
    """A value spilled to a file, read back one window at a time.

    The file is opened for each window, never held open between them: with
    ``apply_order = "random"`` every queued batch may be part read at once.
    """

    def __init__(self, path: Path, size: int, spool: Spool) -> None:
        self.size = size
        self.path: Path | None = path
        self._spool = spool
        self._generation = spool.generation

    def windows(self) -> Iterator[Raw]:
        pos = 0
        while pos < self.size:
            window = self._read_window(pos)
            pos += len(window) + 1  # the newline the window ends before
            yield window

    def _read_window(self, pos: int) -> bytes:
        if self.path is None:
            raise ValueError("queued body already released")
        with self.path.open("rb") as file:
            file.seek(pos)
            block = file.read(WINDOW)
            while pos + len(block) < self.size:
                cut = block.rfind(b"\n")
                if cut >= 0:
                    return block[:cut]
                more = file.read(WINDOW)  # one line longer than a window
                if not more:
                    raise OSError(f"queued body {self.path} is shorter than {self.size} bytes")
                block += more
            return block

    def release(self) -> None:
        if self.path is not None and self._generation == self._spool.generation:
            self.path.unlink(missing_ok=True)
            self._spool.disk_bytes -= self.size
        self.path = None  # after close(), its file is gone and no longer counted


class Spool:
    """Queued batch values: in memory up to ``budget`` bytes, beyond it in files.

    ``directory`` is where the spool's own temporary directory is made (the
    system's temporary directory when None), on the first body that spills.
    """

    def __init__(self, budget: int, directory: str | None = None) -> None:
        self.budget = budget
        self.memory_bytes = 0  # queued bytes held in memory now (never above budget)
        self.disk_bytes = 0  # queued bytes in files now
        self.peak_memory_bytes = 0
        self.spilled = 0  # bodies written to a file so far
        self.generation = 0  # one more at each close(), which removes every file
        self._parent = directory
        self._dir: Path | None = None
        self._names = itertools.count(1)

    def hold(self, value: Raw) -> QueuedBody:
        """Keep ``value`` until released; raises OSError when it cannot be spilled."""
        if self.memory_bytes + len(value) <= self.budget:
            self.memory_bytes += len(value)
            self.peak_memory_bytes = max(self.peak_memory_bytes, self.memory_bytes)
            return MemoryBody(value, self)
        path = self._directory() / f"body-{next(self._names):08d}"
        try:
            # O_EXCL: never write through a file or link someone else put there
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(fd, "wb") as file:
                file.write(value)
        except OSError:
            path.unlink(missing_ok=True)
            raise
        self.disk_bytes += len(value)
        self.spilled += 1
        return FileBody(path, len(value), self)

    @property
    def directory(self) -> Path | None:
        """The spool's temporary directory, once a body has spilled."""
        return self._dir

    def _directory(self) -> Path:
        if self._dir is None:
            # mkdtemp: a new directory only the owner may enter
            self._dir = Path(tempfile.mkdtemp(prefix="uploader-emulator-", dir=self._parent))
        return self._dir

    def close(self) -> None:
        """Remove the spool's directory and every file left in it (the spool stays usable)."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self.disk_bytes = 0
        self.generation += 1
