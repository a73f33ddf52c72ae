"""In-memory state of the emulated Target: accepted batches and visitor profiles.

Synchronous and free of aiohttp, so the row semantics (v1/v2, empty values,
per-row failures) read in one place; the applier in ``app.py`` only decides
*when* :meth:`Store.apply_rows` runs. Memory is kept low on purpose (the
benchmarks push millions of rows): a batch keeps its raw body (in memory or
spilled to a file, ``spool.py``) only until it is applied, parameter names are
shared str objects, and a profile is not an object but a sequence number into
parallel lists of plain ``str -> str`` / ``str -> int`` dicts, ids and
id-space numbers. CPython does not track such dicts in its cycle collector, so
creating millions of profiles creates no tracked object that would trigger
full collections over the store (Profile objects made the applier three to
five times slower at two million profiles).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zlib import crc32

from uploader.emulator.formdata import BatchHeader, decode_windows
from uploader.emulator.spool import QueuedBody
from uploader.states import RemoteStatus

__all__ = ["MAX_PROFILE_BYTES", "Batch", "Store", "iso_ms"]

MAX_PROFILE_BYTES = 64 * 1024  # SPEC: an external profile is limited to 64 KB
_EDGE = "27_0"  # the suffix Target puts on an mboxPC


def iso_ms(ms: int) -> str:
    """Epoch milliseconds -> ``2023-12-01T23:37:28.678Z``."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass(eq=False)
class Batch:
    """One accepted batch and its processing counters (the status call reads these)."""

    batch_id: str
    client: str
    api: str  # "v1" or "v2"
    header: BatchHeader
    body: QueuedBody | None  # the raw value waiting to be applied; released once applied
    size: int
    status: RemoteStatus = RemoteStatus.INCOMPLETE
    consumed: int = 0
    successful: int = 0
    not_found: int = 0
    failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (id, message), v2 details
    lost: int = 0  # rows counted successful but not applied (lose_rate)
    digest: bytes = b""  # sha256 of the body as accepted
    rows: Iterator[list[str]] | None = None  # cursor of the applier (decoded rows)

    def drop_body(self) -> None:
        """Release the queued body and the applier's cursor (applied, or stuck)."""
        if self.body is not None:
            self.body.release()
        self.body = self.rows = None


class Store:
    """Profiles keyed by (client, id type, id), plus every accepted batch by id.

    A profile is its sequence number ``seq``: ``_pids[seq]`` is its id,
    ``_spaces[_space_of[seq]]`` its (client, id type), ``_values[seq]`` maps
    names to values and ``_stamps[seq]`` names to epoch ms, with the profile's
    own modifiedAt under the key ``""`` (no parameter can be named ``""``:
    such a header is refused).
    """

    def __init__(self, *, keep_profiles: bool = True) -> None:
        # keep_profiles False (``--store none``): rows are decoded, checked and counted,
        # but only an order-independent digest of them is kept, so memory does not grow
        # with the profiles; nothing can be fetched back, and v1 finds every id.
        self.keep_profiles = keep_profiles
        self.rows_digest = 0  # sum of crc32 of each applied row, mod 2**64
        self.epoch_ms = int(time.time() * 1000)
        self.batches: dict[str, Batch] = {}
        self._pids: list[str] = []
        self._space_of: list[int] = []
        self._spaces: list[tuple[str, str]] = []  # (client, id type), a handful
        self._values: list[dict[str, str]] = []
        self._stamps: list[dict[str, int]] = []
        self._index: dict[tuple[str, str], dict[str, int]] = {}
        self._mbox_re = re.compile(rf"{self.epoch_ms}-(\d+)\.{re.escape(_EDGE)}")

    def __len__(self) -> int:
        return len(self._pids)

    def _meta(self, seq: int) -> tuple[str, str, str]:
        client, id_type = self._spaces[self._space_of[seq]]
        return client, id_type, self._pids[seq]

    def mbox_pc(self, seq: int) -> str:
        """pcId profiles keep their pcId (it is the mboxPC); others get a generated one."""
        _, id_type, pid = self._meta(seq)
        return pid if id_type == "pcId" else f"{self.epoch_ms}-{seq:06d}.{_EDGE}"

    def find(self, client: str, id_type: str, pid: str) -> int | None:
        return self._index.get((client, id_type), {}).get(pid)

    def find_pc(self, client: str, pc_id: str) -> int | None:
        """Fetch by pcId: a pcId-typed upload, else a generated mboxPC of this client."""
        found = self.find(client, "pcId", pc_id)
        if found is not None:
            return found
        match = self._mbox_re.fullmatch(pc_id)
        if match is None or int(match.group(1)) >= len(self._pids):
            return None
        seq = int(match.group(1))
        return seq if self._meta(seq)[0] == client else None

    def to_json(self, seq: int) -> dict[str, Any]:
        """The fetch API's JSON shape (SPEC section 1)."""
        client, id_type, pid = self._meta(seq)
        stamps = self._stamps[seq]
        doc: dict[str, Any] = {"mboxPC": self.mbox_pc(seq), "client": client}
        if id_type == "thirdPartyId":
            doc["thirdPartyId"] = pid
        doc["modifiedAt"] = iso_ms(stamps[""])
        doc["profileAttributes"] = {
            name: {"value": value, "modifiedAt": iso_ms(stamps[name])}
            for name, value in self._values[seq].items()
        }
        return doc

    def _create(self, client: str, id_type: str, pid: str, now: int) -> int:
        seq = len(self._pids)
        space = (client, id_type)
        if space not in self._spaces:
            self._spaces.append(space)
        self._pids.append(pid)
        self._space_of.append(self._spaces.index(space))
        self._values.append({})
        self._stamps.append({"": now})
        self._index.setdefault((client, id_type), {})[pid] = seq
        return seq

    def apply_rows(
        self, batch: Batch, limit: int, lose: Callable[[str], bool] | None = None
    ) -> int:
        """Apply up to ``limit`` more rows of ``batch``; returns how many were consumed.

        Marks the batch complete (and releases its body) when the rows run out.
        ``lose(id)`` True: the row is counted successful but not applied (the
        silent loss Adobe documents); ``batch.lost`` counts them.
        This is the applier's hot loop, hence the locals and the inlined checks.
        """
        body = batch.body
        if body is None:
            return 0
        if batch.rows is None:
            batch.rows = decode_windows(body.windows())
        header = batch.header
        names, width = header.names, len(header.names) + 1
        third, v1 = header.id_type == "thirdPartyId", batch.api == "v1"
        index = self._index.setdefault((batch.client, header.id_type), {})
        all_values, all_stamps = self._values, self._stamps
        now = int(time.time() * 1000)  # one shared int for the whole slice
        done = successful = digest = 0
        keep = self.keep_profiles
        for fields in batch.rows:
            done += 1
            pid = fields[0]
            if (
                not pid
                or len(fields) > width
                or (third and ("+" in pid or "/" in pid))
                or sum(map(len, fields)) * 4 > MAX_PROFILE_BYTES
            ) and (problem := _row_problem(header.id_type, fields, width)):
                batch.failed += 1
                batch.failures.append((pid, problem))
            elif lose is not None and lose(pid):
                batch.lost += 1
                successful += 1
            elif not keep:
                digest += crc32("\x1f".join(fields).encode())
                successful += 1
            else:
                seq = index.get(pid)
                if seq is None:
                    if v1:
                        batch.not_found += 1
                        continue
                    seq = self._create(batch.client, header.id_type, pid, now)
                values, stamps, changed = all_values[seq], all_stamps[seq], False
                for name, value in zip(names, fields[1:], strict=False):
                    if value:  # empty values never clear a stored value
                        values[name] = value
                        stamps[name] = now
                        changed = True
                if changed:
                    stamps[""] = now
                successful += 1
            if done >= limit:
                break
        else:
            batch.status = RemoteStatus.COMPLETE
            batch.drop_body()
        batch.consumed += done
        batch.successful += successful
        self.rows_digest = (self.rows_digest + digest) & 0xFFFF_FFFF_FFFF_FFFF
        return done


def _row_problem(id_type: str, fields: list[str], width: int) -> str | None:
    """Why one row fails on its own (the batch is still accepted), or None."""
    pid = fields[0]
    if not pid:
        return "Missing id"
    if len(fields) > width:
        return f"Row has {len(fields)} fields, the header has {width}"
    if id_type == "thirdPartyId" and ("+" in pid or "/" in pid):
        return "thirdPartyId must not contain + or /"
    # characters <= UTF-8 bytes <= 4 * characters: the caller encodes only when in doubt
    if sum(len(f.encode()) for f in fields) > MAX_PROFILE_BYTES:
        return "Profile exceeds 64 KB"
    return None
