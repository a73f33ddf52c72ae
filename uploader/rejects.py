"""rejects.csv read back: ``uploader check``, the job summary, the demo and verify.

``chunk.py`` writes each rejected record whole, as one CSV field, so a field
can be longer than the csv module's default limit of 131,072 characters (a
quote that never closes makes one record of the lines after it, a very long
line is one record). Reading it back must not fail on such a record, so the
limit is lifted while rejects.csv is parsed, and put back after.
"""

from __future__ import annotations

import codecs
import csv
import sys
from collections.abc import Iterator
from pathlib import Path

from uploader.source import ESCAPE

__all__ = ["reject_rows"]


def reject_rows(path: Path, encoding: str) -> Iterator[list[str]]:
    """The rows of rejects.csv after its header: ``[line, id, reason, record]``.

    The file is in the input's ``encoding``, without a BOM; bytes not valid in
    it come back as ``source.ESCAPE`` escapes, as the export had them. The
    limit is lifted only while a row is parsed, never while the caller holds
    the generator: other readers in the process keep the default.
    """
    if codecs.lookup(encoding).name == "utf-8":
        encoding = "utf-8"  # rejects.csv is written without a BOM
    with path.open(newline="", encoding=encoding, errors=ESCAPE) as fh:
        reader = csv.reader(fh)
        header = True
        while True:
            before = csv.field_size_limit(sys.maxsize)
            try:
                row = next(reader, None)
            finally:
                csv.field_size_limit(before)
            if row is None:
                return
            if not header:
                yield row
            header = False
