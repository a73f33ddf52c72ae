"""Synthetic CRM export generator for the demo, the benchmarks and the tests.

The exports look like what a CRM or point-of-sale system really produces, and
deliberately contain everything that breaks a naive uploader: store names with
commas, notes with quotes, line breaks, ``%``, ``&``, ``+``, ``=``, non-ASCII
text and emoji. Optionally every N-th record is invalid in a known way, and
``GenInfo`` says at which input line each one sits, so tests can check the
exact line numbers reported in ``rejects.csv``.

Output is deterministic for a given ``seed`` (the gzip header carries no
timestamp), and generation is fast enough for millions of rows: values are
drawn from small precomputed pools and written with ``csv.writer``.
"""

from __future__ import annotations

import csv
import gzip as gzip_module
import hashlib
import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from uploader.states import RejectReason

__all__ = ["HEADER", "GenInfo", "generate_export"]

HEADER = (
    "customerId",
    "emailSha256",
    "loyaltyTier",
    "lifetimeValue",
    "lastPurchase",
    "favoriteStore",
    "visits",
    "optIn",
    "notes",
)

_TIERS = ("bronze", "silver", "gold", "platinum", "")
_STORES = (
    "Main St, Springfield",
    "Harbour Mall",
    "Gare du Nord, Paris",
    "Zürich HB",
    "München Marienplatz",
    "Online",
    "Outlet, Unit 4, Leeds",
    "São Paulo — Paulista",
    "東京 銀座",
    "",
)
_NOTES = (
    "",
    "",
    "",
    "prefers e-mail",
    'said "call me later"',
    "50% off coupon used",
    "Tom & Jerry's account",
    "a+b=c promo",
    "first line\nsecond line",
    "VIP 🎉 since 2019",
    "naïve café owner, très sympa",
    "key=value&other=1",
    "question? #hashtag ~tilde",
    "multi\nline\nnote, with comma",
    "   spaces around   ",
)
_OPT_IN = ("true", "false")
_INVALID_KINDS = (
    RejectReason.MISSING_ID,
    RejectReason.INVALID_ID,
    RejectReason.TOO_MANY_FIELDS,
)


@dataclass(frozen=True)
class GenInfo:
    """What ``generate_export`` wrote.

    ``rows`` counts data records (not physical lines: notes may span lines);
    ``rejects`` maps the first input line of each deliberately invalid record
    to the reason the chunker must report for it.
    """

    path: Path
    rows: int
    header: tuple[str, ...]
    rejects: dict[int, RejectReason]
    lines: int

    @property
    def valid_rows(self) -> int:
        """Records the chunker should write to batch files."""
        return self.rows - len(self.rejects)


def _amounts(rng: random.Random) -> list[str]:
    return [f"{rng.randrange(0, 500_000) / 100:.2f}" for _ in range(997)]


def _dates(rng: random.Random) -> list[str]:
    return [
        f"20{rng.randrange(15, 25)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
        for _ in range(1009)
    ]


def _records(
    rows: int, rng: random.Random, id_prefix: str, invalid_every: int
) -> Iterator[tuple[list[str], RejectReason | None]]:
    """Yield (fields, expected reject reason or None) for every record."""
    amounts, dates = _amounts(rng), _dates(rng)
    visits = [str(v) for v in range(200)]
    rand = rng.random
    n_invalid = 0
    for i in range(1, rows + 1):
        r = int(rand() * 1_000_000_007)
        email = hashlib.sha256(f"user{i}@example.com".encode()).hexdigest()
        fields = [
            f"{id_prefix}{i}",
            email,
            _TIERS[r % 5],
            amounts[r % 997],
            dates[r % 1009],
            _STORES[(r >> 3) % 10],
            visits[(r >> 5) % 200],
            _OPT_IN[(r >> 9) & 1],
            _NOTES[(r >> 11) % 15],
        ]
        reason: RejectReason | None = None
        if invalid_every and i % invalid_every == 0:
            reason = _INVALID_KINDS[n_invalid % len(_INVALID_KINDS)]
            n_invalid += 1
            if reason is RejectReason.MISSING_ID:
                fields[0] = ""
            elif reason is RejectReason.INVALID_ID:
                fields[0] = f"{id_prefix}{i}+x/y"
            else:
                fields.append("extra")
        yield fields, reason


def generate_export(
    path: Path,
    rows: int,
    *,
    seed: int = 0,
    id_prefix: str = "C",
    invalid_every: int = 0,
    gzip: bool = False,
) -> GenInfo:
    """Write a CSV export of ``rows`` records (plus header) to ``path``.

    ``invalid_every=N`` makes every N-th record invalid, cycling through
    missing id, an id containing ``+`` and ``/``, and one field too many.
    ``gzip=True`` compresses the output (level 1: speed over size).
    """
    rng = random.Random(seed)
    rejects: dict[int, RejectReason] = {}
    line = 2  # line 1 is the header
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw:
        binary: IO[bytes] | gzip_module.GzipFile = raw
        if gzip:
            binary = gzip_module.GzipFile(
                filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0
            )
        with io.TextIOWrapper(binary, encoding="utf-8", newline="", write_through=False) as text:
            writer = csv.writer(text, lineterminator="\r\n")
            writer.writerow(HEADER)
            for fields, reason in _records(rows, rng, id_prefix, invalid_every):
                writer.writerow(fields)
                if reason is not None:
                    rejects[line] = reason
                # Only the notes hold line breaks (bare "\n"): each adds a physical line.
                line += 1 + fields[8].count("\n")
    return GenInfo(path=path, rows=rows, header=HEADER, rejects=rejects, lines=line - 1)
