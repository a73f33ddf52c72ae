"""Read a Parquet export: its columns as the header, its records in blocks of text.

Streamed one record batch at a time (``ParquetFile.iter_batches``), so memory
is bounded by a batch, never the file; local files and object-store URLs are
both read with range requests. Values are rendered to text by
``sources.render`` (integers and decimals as written, booleans
``true``/``false``, dates and timestamps ISO 8601, null as empty, nested
values as compact JSON). The "line" of a record is its record number, 1 for
the first record, so ``rejects.csv`` points at the record.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from typing import Any

from uploader.closing import Closing
from uploader.errors import InputError
from uploader.source import BLOCK_ROWS, RecordBlock
from uploader.sources.render import render_value
from uploader.sources.stream import open_input

__all__ = ["ParquetSource"]


class _TypedBlock(RecordBlock):
    """A block of typed records: a rejected record is written back as its values, as CSV."""

    def record_text(self, line: int) -> str:
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(self.rows[self.lines.index(line)])
        return out.getvalue()


def _pyarrow() -> tuple[Any, Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise InputError("reading Parquet needs pyarrow: pip install 'uploader[parquet]'") from exc
    return pa, pc, pq


class ParquetSource(Closing):
    """An open Parquet export, with the same shape as ``CsvSource``."""

    header_line = 0  # no header line: records are numbered from 1

    def __init__(self, name: str, *, storage_options: Mapping[str, Any] | None = None) -> None:
        self._pa, self._pc, pq = _pyarrow()
        self._stream = open_input(name, storage_options=storage_options)
        self.label = self._stream.label
        try:
            if name == "-":
                raise InputError("Parquet cannot be read from standard input: pass the file")
            self._file = pq.ParquetFile(self._stream.data)
        except InputError:
            self.close()
            raise
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError... for a bad file
            self.close()
            raise InputError(f"{self.label}: not a readable Parquet file: {exc}") from exc
        self.header = tuple(self._file.schema_arrow.names)
        if not self.header:
            self.close()
            raise InputError(f"{self.label}: Parquet file has no columns")

    def blocks(self, size: int = BLOCK_ROWS) -> Iterator[RecordBlock]:
        record = 0
        try:
            for batch in self._file.iter_batches(batch_size=max(size, 1024)):
                columns = [self._texts(col) for col in batch.columns]
                rows = [list(r) for r in zip(*columns, strict=True)]
                for start in range(0, len(rows), size):
                    part = rows[start : start + size]
                    lines = list(range(record + start + 1, record + start + 1 + len(part)))
                    yield _TypedBlock(rows=part, lines=lines)
                record += len(rows)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{self.label}: record {record + 1}: cannot read: {exc}") from exc

    def _texts(self, arr: Any) -> list[str]:
        pa, pc = self._pa, self._pc
        kind = arr.type
        if pa.types.is_dictionary(kind):
            return self._texts(arr.dictionary_decode())
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return pc.fill_null(arr, "").to_pylist()  # type: ignore[no-any-return]
        if pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_date(kind):
            # Arrow's own text of these is exactly ours (digits, true/false, YYYY-MM-DD).
            return pc.fill_null(pc.cast(arr, pa.string()), "").to_pylist()  # type: ignore[no-any-return]
        return [render_value(v) for v in arr.to_pylist()]

    def close(self) -> None:
        self._stream.close()
