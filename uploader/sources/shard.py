"""Sharded runs: take only the records whose id falls in shard I of N.

``--shard I/N`` (``input.shard``) splits one export between N processes with
no coordinator: each reads the whole export and keeps the records whose id
hashes to its shard, so every id lives in exactly one shard and the
repeated-id rule holds inside each (all rows of an id meet in one process).
The hash is BLAKE2b of the id's UTF-8 bytes, surrounding whitespace removed
(so ``" C1"`` and ``"C1"``, one profile under ``input.strip_ids``, share a
shard): stable across machines, processes and versions of Python. A record
that cannot be parsed has no id; it belongs to shard 0, so it is reported
exactly once. Shards are numbered from 0, like Kubernetes' completion index.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uploader.sources import Source

from uploader.closing import Closing
from uploader.settings import parse_shard
from uploader.source import BLOCK_ROWS, RecordBlock

__all__ = ["ShardFilter", "parse_shard", "shard_of"]


def shard_of(record_id: str, count: int) -> int:
    """The shard (0 to ``count``-1) of one id."""
    key = record_id.strip().encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % count


@dataclass(slots=True)
class _ShardBlock(RecordBlock):
    """A filtered block: records keep their text from the block they were read in."""

    whole: RecordBlock = field(default_factory=RecordBlock)

    def record_text(self, line: int) -> str:
        return self.whole.record_text(line)


class ShardFilter(Closing):
    """A source that yields only the records of one shard; ``skipped`` counts the others."""

    def __init__(self, source: Source, shard: tuple[int, int], id_column: str | None) -> None:
        self.inner = source
        self.index, self.count = shard
        self.label = source.label
        self.header = source.header
        self.header_line = source.header_line
        # The chunker names a missing id column; here any index is as good until then.
        self._id = source.header.index(id_column) if id_column in source.header else 0
        self.skipped = 0

    def blocks(self, size: int = BLOCK_ROWS) -> Iterator[RecordBlock]:
        idx, index, count = self._id, self.index, self.count
        for block in self.inner.blocks(size):
            rows: list[list[str]] = []
            lines: list[int] = []
            for row, line in zip(block.rows, block.lines, strict=True):
                if shard_of(row[idx] if len(row) > idx else "", count) == index:
                    rows.append(row)
                    lines.append(line)
            malformed = block.malformed if index == 0 else []
            self.skipped += len(block.rows) - len(rows) + len(block.malformed) - len(malformed)
            if rows or malformed:
                yield _ShardBlock(rows=rows, lines=lines, malformed=malformed, whole=block)

    def close(self) -> None:
        self.inner.close()
