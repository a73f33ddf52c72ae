"""``uploader split INPUT --out DIR``: write batch files and rejects.csv, no network.

A thin shell over ``chunk.Chunker``: run it, print a one-screen summary,
turn the accounting into an exit code (0: every row written, 1: some rows
rejected). Whole-input problems surface as ``InputError`` (exit 2) from the
chunker before anything is written.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from rich import filesize

from uploader.chunk import Chunker, ChunkSummary
from uploader.errors import ConfigError
from uploader.report import repeats_line
from uploader.settings import BatchSettings, InputSettings
from uploader.sources.spool import discard_spool, spool_stdin
from uploader.workdir import check_ours

__all__ = ["render_split_summary", "run_split"]

EXIT_INTERRUPTED = 3  # not finished: run it again (the exit codes of the README)


def render_split_summary(input: str, summary: ChunkSummary) -> str:
    """The human summary printed by ``uploader split``."""
    out = summary.out_dir
    lines = [
        f"split {input}",
        f"  rows read      {summary.rows_read:>12,}",
        f"  rows written   {summary.rows_written:>12,}",
        f"  rows rejected  {summary.rows_rejected:>12,}",
    ]
    for reason, count in sorted(summary.rejected.items()):
        lines.append(f"    {reason.value:<16}{count:>10,}")
    if summary.short_rows:
        lines.append(f"  short rows     {summary.short_rows:>12,}")
    if summary.repeats is not None and (summary.repeats.ids or summary.rows_folded):
        lines.append(f"  rows folded    {summary.rows_folded:>12,}")
        lines.append(f"  repeats        {repeats_line(summary.repeats.as_dict())}")
    lines.append(f"  batches        {summary.batches:>12,}  ({filesize.decimal(summary.bytes)})")
    if summary.files:
        lines.append(f"  batch files    {out / 'batches'}/")
        lines.append(
            f"                 {summary.files[0].path.name} .. {summary.files[-1].path.name}"
        )
    lines.append(f"  manifest       {summary.manifest_path}")
    lines.append(f"  rejects        {summary.rejects_path}")
    lines += [f"  warning        {w}" for w in summary.warnings]
    return "\n".join(lines)


def run_split(
    input: str,
    out_dir: Path,
    input_settings: InputSettings,
    batch_settings: BatchSettings,
    *,
    stdout: TextIO | None = None,
) -> int:
    """Run ``uploader split``; return 0 when nothing was rejected, else 1.

    ``--out`` must be new, empty, or an earlier split's output: files of
    anyone else are never replaced (a run's work dir neither), and an earlier
    split's batch files are removed first. Standard input is spooled into it first
    (the chunker reads a file) and the spool removed at the end.
    """
    out = Path(out_dir)
    check_ours(out, what="output dir", flag="--out")
    if (out / "journal.sqlite").is_file():  # running or not, its batch files are its own
        raise ConfigError(
            f"{out}: the work dir of a run (it holds journal.sqlite): a split there would "
            "replace the batch files that run sends; choose another --out"
        )
    spool = None
    try:
        # A split starts over: batch files of an earlier split must not mix with these.
        for old in (out / "batches").glob("batch-*"):
            old.unlink()
        spool = spool_stdin(out) if input == "-" else None
        source = str(spool.path) if spool else input
        summary = Chunker(source, out, input_settings, batch_settings).run()
    except KeyboardInterrupt:
        written = len(list((out / "batches").glob("batch-*.txt")))
        print(
            f"uploader: interrupted: {out} holds only part of the split ({written} batch "
            "files so far); do not submit them: run the same command again (it starts over)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        if spool is not None:
            discard_spool(spool)
    print(render_split_summary(input, summary), file=stdout or sys.stdout)
    return 1 if summary.rows_rejected else 0
