"""Where the bytes of an export come from: a local file, standard input, or a URL.

Every reader of ``uploader/sources`` opens its input here, so all formats get
the same choices: ``-`` is standard input, a name with a scheme
(``s3://``, ``gs://``, ``az://``, ``abfs://``, ``https://``...) is opened
through fsspec and streamed (never downloaded whole), anything else is a
local path. Gzip is detected from the content (its magic bytes), not the
name. Credentials of object stores come from each library's usual chain
(environment, profile, workload identity); ``storage_options`` carries the
rest (an S3-compatible endpoint, for instance).
"""

from __future__ import annotations

import gzip
import io
import queue
import re
import sys
import threading
from collections.abc import Mapping
from typing import IO, Any, BinaryIO, cast

from uploader.errors import InputError

__all__ = ["InputStream", "is_url", "object_identity", "open_input", "open_url", "stdin_bytes"]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# The pip extra that brings each scheme's filesystem, for the error message.
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure"}
_EXTRAS |= {"abfss": "azure", "adl": "azure", "http": "", "https": ""}


def is_url(name: str) -> bool:
    """True for ``scheme://...`` names (read through fsspec); ``file://`` included."""
    return bool(_URL.match(name))


class InputStream:
    """One open input: a buffered binary stream, gunzipped when the content is gzip.

    ``raw`` is what we opened (closed with us unless it is standard input);
    ``data`` is what readers read.
    """

    def __init__(self, name: str, raw: IO[bytes], *, ours: bool) -> None:
        self.name = name
        self.label = "<stdin>" if name == "-" else name
        # cast: typeshed before mypy 2 types BufferedReader's argument as RawIOBase only
        buffered: Any = raw if hasattr(raw, "peek") else io.BufferedReader(cast(Any, raw))
        self._raw = buffered
        self._ours = ours
        self.compressed = buffered.peek(2)[:2] == b"\x1f\x8b"
        self.data: Any = gzip.GzipFile(fileobj=buffered, mode="rb") if self.compressed else buffered

    def close(self) -> None:
        if self.compressed:
            self.data.close()  # a GzipFile never closes the stream it wraps
        if self._ours:
            self._raw.close()


def stdin_bytes() -> BinaryIO:
    """Standard input as bytes; InputError when the process has none (``<&-``)."""
    if sys.stdin is None:
        raise InputError(
            "-: standard input is closed: nothing to read (pipe the export in, or name a file)"
        )
    return sys.stdin.buffer


def open_input(
    name: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    stdin: BinaryIO | None = None,
) -> InputStream:
    """Open ``name`` for streaming; whole-input problems are one-line ``InputError``."""
    if name == "-":
        return InputStream(name, stdin if stdin is not None else stdin_bytes(), ours=False)
    try:
        if is_url(name):
            return InputStream(name, _open_url(name, storage_options or {}), ours=True)
        return InputStream(name, open(name, "rb"), ours=True)
    except InputError:
        raise
    except IsADirectoryError as exc:
        raise InputError(f"{name}: is a directory") from exc
    except FileNotFoundError as exc:
        raise InputError(f"{name}: no such file") from exc
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror or exc}") from exc


def open_url(name: str, storage_options: Mapping[str, Any] | None = None) -> io.BufferedReader:
    """A buffered binary stream of the object at URL ``name`` (read in ranges, not whole)."""
    try:
        raw: Any = _open_url(name, storage_options or {})
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    return io.BufferedReader(_Prefetch(raw), buffer_size=1 << 20)


class _Prefetch(io.RawIOBase):
    """Reads the next chunks of a remote object in a thread while the caller parses.

    A remote read is a round trip per block; done in line, the parser waits for
    each one. Here a thread keeps up to ``depth`` chunks of ``chunk`` bytes
    ready (memory bounded by ``depth * chunk``), and an error in the thread is
    raised in the reader.
    """

    def __init__(self, raw: IO[bytes], chunk: int = 8 << 20, depth: int = 2) -> None:
        super().__init__()
        self._raw = raw
        self._chunks: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._current = memoryview(b"")
        self._eof = False
        self._thread = threading.Thread(
            target=self._fill, args=(chunk,), name="prefetch", daemon=True
        )
        self._thread.start()

    def _fill(self, chunk: int) -> None:
        try:
            while not self._stop.is_set():
                data = self._raw.read(chunk)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the reader, which raises it
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._chunks.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._current and not self._eof:
            item = self._chunks.get()
            if isinstance(item, OSError):
                raise item
            if isinstance(item, BaseException):  # the storage library's own error
                raise OSError(_describe(item)) from item
            self._current = memoryview(item)
            self._eof = not item
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            self._thread.join(timeout=5)
            self._raw.close()
        super().close()


def _open_url(name: str, storage_options: Mapping[str, Any]) -> IO[bytes]:
    fsspec = _fsspec(name)
    try:
        handle = fsspec.open(name, "rb", **storage_options).open()
    except (ImportError, ValueError) as exc:
        scheme = name.split("://", 1)[0].lower()
        extra = _EXTRAS.get(scheme)
        hint = f" (pip install 'uploader[{extra}]')" if extra else ""
        raise InputError(f"{name}: cannot open {scheme}:// URLs: {exc}{hint}") from exc
    except FileNotFoundError as exc:
        raise InputError(f"{name}: no such object") from exc
    except PermissionError as exc:
        raise InputError(f"{name}: access denied: {exc}") from exc
    except Exception as exc:  # the storage library's own errors (credentials, endpoint...)
        raise InputError(f"{name}: cannot open: {_describe(exc)}") from exc
    return handle  # type: ignore[no-any-return]


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fsspec(name: str) -> Any:
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover - fsspec comes with every storage extra
        raise InputError(
            f"{name}: reading URLs needs fsspec (pip install 'uploader[s3]', [gcs] or [azure])"
        ) from exc
    return fsspec


def object_identity(
    name: str, storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """What identifies one version of an object: its size and version id or ETag.

    None for local files and standard input (they are identified by their
    content). A rerun whose object changed under the same URL is a new input.
    """
    if not is_url(name):
        return None
    try:
        fs, path = _fsspec(name).core.url_to_fs(name, **(storage_options or {}))
        info = fs.info(path)
    except InputError:
        raise
    except FileNotFoundError as exc:
        raise InputError(f"{name}: no such object") from exc
    except Exception as exc:  # the storage library's own errors (credentials, endpoint...)
        raise InputError(f"{name}: cannot read: {_describe(exc)}") from exc
    keys = ("size", "VersionId", "version_id", "ETag", "etag", "generation", "md5Hash", "mtime")
    return {k: str(info[k]) for k in keys if info.get(k) is not None}
