"""Where exports come from and in which format: one seam for the chunker.

``open_source(name, settings)`` returns an open source with the shape the
chunker reads (``label``, ``header``, ``header_line``, ``blocks()`` of
``RecordBlock``, ``close()``), whatever the format:

| format | chosen when the name ends with (or ``input.format``) | reader |
|---|---|---|
| CSV | anything else, ``.csv``, ``.csv.gz`` | ``uploader.source.CsvSource`` |
| Parquet | ``.parquet``, ``.pq`` | ``sources.parquet.ParquetSource`` (extra ``[parquet]``) |
| JSON Lines | ``.jsonl``, ``.ndjson`` (``.gz`` too) | ``sources.jsonl.JsonLinesSource`` |

and wherever the bytes are (``sources.stream``: a local file, ``-`` for
standard input, or an fsspec URL such as ``s3://bucket/export.csv.gz``).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from uploader.settings import InputSettings
from uploader.sources.stream import is_url, object_identity, open_input

if TYPE_CHECKING:
    from uploader.source import RecordBlock

__all__ = ["Source", "detect_format", "is_url", "object_identity", "open_input", "open_source"]


class Source(Protocol):
    """What the chunker reads: a header, then records in blocks with their line numbers."""

    label: str
    header: tuple[str, ...]
    header_line: int

    def blocks(self, size: int = ...) -> Iterator[RecordBlock]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Source: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def detect_format(name: str, declared: str = "auto") -> str:
    """``csv``, ``parquet`` or ``jsonl``: ``input.format`` when set, else from the name."""
    if declared != "auto":
        return declared
    lower = name.lower().split("?", 1)[0].removesuffix(".gz").removesuffix(".gzip")
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if lower.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    return "csv"


def open_source(name: str, settings: InputSettings) -> Source:
    """Open ``name`` in its format; whole-input problems raise ``InputError`` here.

    With ``input.shard``, only the records of that shard come out (``sources.shard``).
    """
    source = _open_format(name, settings)
    if settings.shard_spec is None:
        return source
    from uploader.sources.shard import ShardFilter

    return ShardFilter(source, settings.shard_spec, settings.id_column)


def _open_format(name: str, settings: InputSettings) -> Source:
    fmt = detect_format(name, settings.format)
    options = dict(settings.storage_options)
    if fmt == "parquet":
        from uploader.sources.parquet import ParquetSource

        return ParquetSource(name, storage_options=options)
    if fmt == "jsonl":
        from uploader.sources.jsonl import JsonLinesSource

        return JsonLinesSource(name, storage_options=options)
    from uploader.source import CsvSource  # it reads its bytes through sources.stream

    return CsvSource(
        name, delimiter=settings.delimiter, encoding=settings.encoding, storage_options=options
    )
