"""``uploader verify WORK_DIR``: read profiles back from Target and compare them with the load.

The order of a verify: open the run's journal (holding the work dir's lock,
so no run or other verify shares it), rebuild the run's settings from its
fingerprint, fold the successful rows of the input into expected values
(once per selection; a rerun reuses them), pick the ids (all, a seeded
sample, or a list), fetch and compare each one not yet settled, then write
verify.csv, verify-failed.csv, the ``verify`` section of report.json and a
summary. The exit code says whether everything checked landed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import secrets
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from uploader.client import TargetClient
from uploader.errors import ConfigError, InputError, TransportError
from uploader.journal import BatchRecord, Journal
from uploader.retry import Sleep
from uploader.settings import Settings, load_settings
from uploader.states import BatchState
from uploader.verify import outputs
from uploader.verify.display import verify_display
from uploader.verify.expected import Layout, sent_rows
from uploader.verify.fetch import Checker
from uploader.verify.store import VerifyStore
from uploader.workdir import locked

__all__ = ["VerifyOptions", "VerifyOutcome", "add_arguments", "main", "run_verify"]

DEFAULT_SAMPLE = 1000
DEFAULT_RATE = 50.0
DEFAULT_SETTLE_S = 3600.0
_INPUT_KEYS = (
    "id_column",
    "id_type",
    "delimiter",
    "encoding",
    "format",
    "shard",
    "columns",
    "rename",
)


@dataclass(frozen=True)
class VerifyOptions:
    """What to check and how fast (validated here, once)."""

    work_dir: Path
    mode: str = "sample"  # all | sample | ids
    sample: int = DEFAULT_SAMPLE
    seed: int | None = None  # None: the previous verify's seed, or a new random one
    ids_file: Path | None = None
    concurrency: int = 8
    rows_per_s: float = DEFAULT_RATE  # 0: no cap
    settle_s: float = DEFAULT_SETTLE_S
    input_path: str | None = None
    fresh: bool = False
    progress: str = "auto"

    def __post_init__(self) -> None:
        if self.mode not in ("all", "sample", "ids"):
            raise ConfigError(f"verify: unknown mode {self.mode!r}")
        if self.sample < 1:
            raise ConfigError(f"--sample must be at least 1, got {self.sample}")
        if self.concurrency < 1:
            raise ConfigError(f"--concurrency must be at least 1, got {self.concurrency}")
        if self.rows_per_s < 0 or self.settle_s < 0:
            raise ConfigError("--rate and --settle must be 0 or more")
        if self.mode == "ids" and self.ids_file is None:
            raise ConfigError("verify: --ids FILE is required for mode ids")


@dataclass(frozen=True)
class VerifyOutcome:
    section: dict[str, Any]
    exit_code: int


# -- command line -------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("work_dir", metavar="WORK_DIR", help="the work dir of a run")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument(
        "--sample",
        type=int,
        metavar="N",
        help=f"check a uniform random sample of N ids (default: {DEFAULT_SAMPLE})",
    )
    pick.add_argument("--all", action="store_true", help="check every id that ended successful")
    pick.add_argument("--ids", metavar="FILE", help="check the ids listed in FILE, one a line")
    p.add_argument(
        "--seed", type=int, metavar="S", help="seed of the sample (default: the last one, or new)"
    )
    p.add_argument(
        "--concurrency", type=int, default=8, metavar="N", help="fetches in flight (default: 8)"
    )
    p.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_RATE,
        metavar="R",
        help=f"at most R profiles per second; 0 = no cap (default: {DEFAULT_RATE:g})",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=DEFAULT_SETTLE_S,
        metavar="S",
        help="a difference in a batch completed less than S seconds ago is 'not yet applied' "
        f"(default: {DEFAULT_SETTLE_S:g})",
    )
    p.add_argument(
        "--input", metavar="PATH", help="the run's input, if it moved (default: where it was)"
    )
    p.add_argument("--fresh", action="store_true", help="forget earlier verify results")
    p.add_argument("--config", metavar="PATH", help="TOML config (token_env, token_hosts, retries)")
    p.add_argument("--token-env", metavar="NAME", help="variable holding the Bearer token")
    p.add_argument(
        "--allow-http", action="store_true", default=None, help="allow plain http:// (see run)"
    )
    p.add_argument(
        "--progress",
        choices=("auto", "bar", "log", "none"),
        default="auto",
        help="progress display (default: auto)",
    )


def main(ns: argparse.Namespace) -> int:
    from uploader.cli import run_async

    mode = "all" if ns.all else "ids" if ns.ids else "sample"
    opts = VerifyOptions(
        work_dir=Path(ns.work_dir),
        mode=mode,
        sample=ns.sample if ns.sample is not None else DEFAULT_SAMPLE,
        seed=ns.seed,
        ids_file=Path(ns.ids) if ns.ids else None,
        concurrency=ns.concurrency,
        rows_per_s=ns.rate,
        settle_s=ns.settle,
        input_path=ns.input,
        fresh=ns.fresh,
        progress=ns.progress,
    )
    flags = {"target.token_env": ns.token_env, "target.allow_http": ns.allow_http}
    outcome = run_async(run_verify(opts, config=ns.config, flags=flags))
    return outcome.exit_code


# -- the verify ---------------------------------------------------------------------------


def verify_settings(
    fingerprint: Mapping[str, Any],
    *,
    config: str | Path | None,
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None,
) -> Settings:
    """The run's target and input settings (from its journal), plus this command's flags."""
    target, inp = fingerprint.get("target", {}), fingerprint.get("input", {})
    overrides: dict[str, Any] = {
        f"target.{k}": target.get(k) for k in ("base_url", "client", "api")
    }
    overrides.update({f"input.{k}": inp.get(k) for k in _INPUT_KEYS})
    overrides.update(flags)
    return load_settings(config, overrides, environ)


def _selection(opts: VerifyOptions, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    if opts.mode == "all":
        return {"mode": "all"}
    if opts.mode == "ids":
        assert opts.ids_file is not None
        try:
            digest = hashlib.sha256(opts.ids_file.read_bytes()).hexdigest()
        except OSError as exc:
            raise InputError(f"{opts.ids_file}: cannot read: {exc.strerror}") from exc
        return {"mode": "ids", "ids_file": str(opts.ids_file), "sha256": digest}
    seed = opts.seed
    if seed is None:
        old = (previous or {}).get("selection", {})
        same = old.get("mode") == "sample" and old.get("n") == opts.sample
        seed = int(old["seed"]) if same else secrets.randbelow(2**31)
    return {"mode": "sample", "n": opts.sample, "seed": seed}


def _read_ids(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as fh:
        for raw in fh:
            pid = raw.strip()
            if pid:
                yield pid


def _folded_id_column(journal: Journal, settings: Settings) -> str | None:
    """The input's id column when the run folded rows of repeated ids, else None."""
    chunk = journal.get_meta("chunk") or {}
    if not chunk.get("folded"):
        return None
    header = chunk.get("header") or [""]
    return settings.input.id_column or str(header[0])


def _outcome_key(
    batches: Sequence[BatchRecord], profile_errors: Sequence[tuple[int, str, str, str | None]]
) -> str:
    """A digest of where the run's rows ended: it changes when a resumed run moves on."""
    facts = [[b.seq, b.state.value, b.final_at] for b in batches]
    text = json.dumps([facts, len(profile_errors)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _prepare(
    opts: VerifyOptions,
    journal: Journal,
    store: VerifyStore,
    settings: Settings,
    selection: dict[str, Any],
    fingerprint: Mapping[str, Any],
) -> dict[str, Any]:
    """Build expected values and pick ids, unless this selection is already built.

    A build belongs to the run as it stood: when batches have ended since
    (the run was resumed), the expected values are built again from scratch.
    """
    previous = journal.get_meta("verify") or {}
    batches = journal.batches()
    outcome = _outcome_key(batches, journal.profile_errors())
    same = previous.get("selection") == selection and previous.get("outcome") == outcome
    if not opts.fresh and same and previous.get("built"):
        return dict(previous)
    journal.set_meta("verify", {"selection": selection, "built": False})
    store.reset()
    layout, blocks, source = sent_rows(
        fingerprint,
        opts.work_dir,
        batches,
        journal.profile_errors(),
        settings.input,
        input_path=opts.input_path,
        folded_id_column=_folded_id_column(journal, settings),
    )
    seed = int(selection.get("seed", 0))
    started = time.monotonic()
    for block in blocks:
        store.add_rows(seed, block)
    empty = store.drop_empty()
    not_in_load = 0
    if selection["mode"] == "all":
        store.pick_all()
    elif selection["mode"] == "sample":
        store.pick_sample(int(selection["n"]))
    else:
        assert opts.ids_file is not None
        not_in_load = store.pick_ids(_read_ids(opts.ids_file))
    meta = {
        "selection": selection,
        "outcome": outcome,
        "built": True,
        "layout": asdict(layout),
        "source": source,
        "nothing_to_check": empty,
        "not_in_load": not_in_load,
        "build_s": round(time.monotonic() - started, 3),
    }
    journal.set_meta("verify", meta)
    return meta


async def run_verify(
    opts: VerifyOptions,
    *,
    config: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    sleep: Sleep | None = None,
    install_signals: bool = True,
    out: TextIO | None = None,
) -> VerifyOutcome:
    """Verify a run's load; prints the summary on ``out`` (stdout by default)."""
    work_dir = opts.work_dir
    path = work_dir / "journal.sqlite"
    if not path.exists():
        raise InputError(f"{work_dir}: no journal here (expected {path}); is it a run's work dir?")
    started = time.monotonic()
    with locked(work_dir), Journal(path) as journal, VerifyStore(path) as store:
        fingerprint = journal.get_meta("fingerprint")
        if not fingerprint:
            raise InputError(f"{path}: the journal records no run")
        settings = verify_settings(fingerprint, config=config, flags=flags or {}, environ=environ)
        selection = _selection(opts, journal.get_meta("verify"))
        meta = _prepare(opts, journal, store, settings, selection, fingerprint)
        checker = await _check(opts, settings, store, sleep, install_signals)
        return _finish(opts, settings, journal, store, meta, checker, started, out or sys.stdout)


async def _check(
    opts: VerifyOptions,
    settings: Settings,
    store: VerifyStore,
    sleep: Sleep | None,
    install_signals: bool,
) -> Checker:
    async with TargetClient.for_settings(settings, connections=opts.concurrency) as client:
        checker = Checker(
            client,
            store,
            settings.submit,
            concurrency=opts.concurrency,
            rows_per_s=opts.rows_per_s,
            settle_s=opts.settle_s,
            api=settings.target.api,
            id_type=settings.input.id_type,
            sleep=sleep,
        )
        checker.stats.total = store.remaining()
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, checker.stop)
        display = verify_display(opts.progress)
        try:
            if display is None:
                await checker.run(store.to_check())
            else:
                async with display(checker.stats):
                    await checker.run(store.to_check())
        finally:
            if install_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
    return checker


def _finish(
    opts: VerifyOptions,
    settings: Settings,
    journal: Journal,
    store: VerifyStore,
    meta: Mapping[str, Any],
    checker: Checker,
    started: float,
    out: TextIO,
) -> VerifyOutcome:
    work_dir = opts.work_dir
    fatal = checker.fatal
    if fatal is not None and not isinstance(fatal, TransportError):
        raise fatal  # a refused token or client code: exit 2, nothing recorded for it
    layout = Layout(**{k: tuple(v) for k, v in meta["layout"].items()})
    mismatch_path, failed_path = work_dir / "verify.csv", work_dir / "verify-failed.csv"
    n_mismatch = outputs.write_mismatches(mismatch_path, store)
    n_failed = outputs.write_failed_rows(failed_path, store, layout, settings.input.delimiter)
    counts = store.outcome_counts()
    not_final = sum(1 for b in journal.batches() if not b.is_final)
    code = outputs.exit_code(counts, unchecked=store.unchecked(), batches_not_final=not_final)
    section = outputs.build_section(
        store,
        selection=meta["selection"],
        population=store.population(),
        settle_s=opts.settle_s,
        exit=code,
        outputs={
            "mismatches": str(mismatch_path) if n_mismatch else None,
            "failed_rows": str(failed_path) if n_failed else None,
        },
        elapsed_s=time.monotonic() - started,
        fetched=checker.stats.done,
        fetch_s=checker.stats.fetch_s,
        source=str(meta.get("source")),
    )
    section["nothing_to_check"] = meta.get("nothing_to_check", 0)
    section["not_in_load"] = meta.get("not_in_load", 0)
    section["expected_build_s"] = meta.get("build_s")  # folding the input, when it was done
    section["batches_not_final"] = not_final
    section["batches_complete"] = len(journal.batches(BatchState.COMPLETE))
    if fatal is not None:
        section["error"] = f"stopped: {fatal}"
    outputs.update_report(work_dir / "report.json", section)
    print(outputs.render_summary(section), file=out, flush=True)
    if fatal is not None:
        print(f"uploader: verify stopped: {fatal}; run it again to continue", file=sys.stderr)
    return VerifyOutcome(section, code)
