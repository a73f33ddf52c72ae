"""In-memory state of the emulated Target: accepted batches and visitor profiles.

Synchronous and free of aiohttp, so the row semantics (v1/v2, empty values,
per-row failures) read in one place; the applier in ``app.py`` only decides
*when* :meth:`Store.apply_rows` runs. Memory is kept low on purpose (the
benchmarks push millions of rows): a batch drops its raw body once applied,
parameter names are shared str objects, and a profile holds two small dicts
whose timestamps are shared ints (one per applied slice).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from uploader.emulator.formdata import BatchScan, iter_decoded_rows
from uploader.states import RemoteStatus

__all__ = ["MAX_PROFILE_BYTES", "Batch", "Profile", "Store", "iso_ms"]

MAX_PROFILE_BYTES = 64 * 1024  # SPEC: an external profile is limited to 64 KB
_EDGE = "27_0"  # the suffix Target puts on an mboxPC


def iso_ms(ms: int) -> str:
    """Epoch milliseconds -> ``2023-12-01T23:37:28.678Z``."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass(slots=True, eq=False)
class Profile:
    """One visitor profile: attribute values and when each was last set."""

    seq: int  # index in Store._profiles; also encoded in the generated mboxPC
    client: str
    id_type: str  # "pcId" or "thirdPartyId"
    pid: str  # the id it was created with
    modified: int  # epoch ms of the last change
    values: dict[str, str] = field(default_factory=dict)
    stamps: dict[str, int] = field(default_factory=dict)


@dataclass(eq=False)
class Batch:
    """One accepted batch and its processing counters (the status call reads these)."""

    batch_id: str
    client: str
    api: str  # "v1" or "v2"
    scan: BatchScan | None  # dropped once applied, to free the body
    size: int
    status: RemoteStatus = RemoteStatus.INCOMPLETE
    consumed: int = 0
    successful: int = 0
    not_found: int = 0
    failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (id, message), v2 details
    rows: Iterator[list[str]] | None = None  # cursor of the applier (decoded rows)


class Store:
    """Profiles keyed by (client, id type, id), plus every accepted batch by id."""

    def __init__(self) -> None:
        self.epoch_ms = int(time.time() * 1000)
        self.batches: dict[str, Batch] = {}
        self._profiles: list[Profile] = []
        self._index: dict[tuple[str, str], dict[str, Profile]] = {}
        self._mbox_re = re.compile(rf"{self.epoch_ms}-(\d+)\.{re.escape(_EDGE)}")

    def __len__(self) -> int:
        return len(self._profiles)

    def mbox_pc(self, profile: Profile) -> str:
        """pcId profiles keep their pcId (it is the mboxPC); others get a generated one."""
        if profile.id_type == "pcId":
            return profile.pid
        return f"{self.epoch_ms}-{profile.seq:06d}.{_EDGE}"

    def get(self, client: str, id_type: str, pid: str) -> Profile | None:
        return self._index.get((client, id_type), {}).get(pid)

    def find_pc(self, client: str, pc_id: str) -> Profile | None:
        """Fetch by pcId: a pcId-typed upload, else a generated mboxPC of this client."""
        found = self.get(client, "pcId", pc_id)
        if found is not None:
            return found
        match = self._mbox_re.fullmatch(pc_id)
        if match is None or int(match.group(1)) >= len(self._profiles):
            return None
        profile = self._profiles[int(match.group(1))]
        return profile if profile.client == client else None

    def to_json(self, profile: Profile) -> dict[str, Any]:
        """The fetch API's JSON shape (SPEC section 1)."""
        doc: dict[str, Any] = {"mboxPC": self.mbox_pc(profile), "client": profile.client}
        if profile.id_type == "thirdPartyId":
            doc["thirdPartyId"] = profile.pid
        doc["modifiedAt"] = iso_ms(profile.modified)
        doc["profileAttributes"] = {
            name: {"value": value, "modifiedAt": iso_ms(profile.stamps[name])}
            for name, value in profile.values.items()
        }
        return doc

    def _create(self, client: str, id_type: str, pid: str, now: int) -> Profile:
        profile = Profile(len(self._profiles), client, id_type, pid, now)
        self._profiles.append(profile)
        self._index.setdefault((client, id_type), {})[pid] = profile
        return profile

    def apply_rows(self, batch: Batch, limit: int) -> int:
        """Apply up to ``limit`` more rows of ``batch``; returns how many were consumed.

        Marks the batch complete (and frees its body) when the rows run out.
        This is the applier's hot loop, hence the locals and the inlined checks.
        """
        scan = batch.scan
        if scan is None:
            return 0
        if batch.rows is None:
            batch.rows = iter_decoded_rows(scan.value)
        header = scan.header
        names, width = header.names, len(header.names) + 1
        third, v1 = header.id_type == "thirdPartyId", batch.api == "v1"
        index = self._index.setdefault((batch.client, header.id_type), {})
        now = int(time.time() * 1000)  # one shared int for the whole slice
        done = successful = 0
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
            else:
                profile = index.get(pid)
                if profile is None:
                    if v1:
                        batch.not_found += 1
                        continue
                    profile = self._create(batch.client, header.id_type, pid, now)
                _update(profile, names, fields, now)
                successful += 1
            if done >= limit:
                break
        else:
            batch.status = RemoteStatus.COMPLETE
            batch.scan = batch.rows = None
        batch.consumed += done
        batch.successful += successful
        return done


def _update(profile: Profile, names: tuple[str, ...], fields: list[str], now: int) -> None:
    """Set the non-empty values: empty values never clear a stored value."""
    values, stamps, changed = profile.values, profile.stamps, False
    for name, value in zip(names, fields[1:], strict=False):
        if value:
            values[name] = value
            stamps[name] = now
            changed = True
    if changed:
        profile.modified = now


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
