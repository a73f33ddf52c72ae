"""Rates and the adaptive limit read sensibly on a run of one to three batches.

``rows_per_s`` means rows of the batches Target accepted over a window, and
there is none when the window is under a second or holds fewer than two
batches (``uploader.rates``); the adaptive limit is summarised as the most
submits on the wire and what throttling did to it. Checked on the pure
functions, then on tiny runs of the real command line against the built-in
emulator, reading back report.json, the summary, ``status`` and the JSON log.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EmulatorFactory
from tests.helpers import CLIENT, write_csv
from tests.test_cli_errors import uploader
from tests.test_report import rec, report_for
from uploader.combine import combine, render_combined
from uploader.emulator import Emulator
from uploader.html_report import NO_RATE, build_html
from uploader.jobsummary import render_markdown
from uploader.rates import rate_text, rows_per_s
from uploader.report import render_summary
from uploader.retry import AdaptiveLimiter, Slot
from uploader.states import BatchState as S


def test_a_rate_needs_a_second_and_two_batches() -> None:
    assert rows_per_s(20_000, 0.1, 20) is None  # a fast emulator: 200,000 rows/s of noise
    assert rows_per_s(500_000, 60.0, 1) is None  # one batch: its latency, not a pace
    assert rows_per_s(0, 0.0, 0) is None
    assert rows_per_s(1000, 1.0, 2) == 1000.0
    assert rows_per_s(1000, 4.0, 2) == 250.0
    assert (rate_text(None), rate_text(1234.56), rate_text(1234.56, digits=0)) == (
        "- rows/s",
        "1,234.6 rows/s",
        "1,235 rows/s",
    )


def test_report_counts_the_rows_of_accepted_batches_over_the_run() -> None:
    accepted = rec(1, S.COMPLETE, rows=1000, successful=1000)
    also = rec(2, S.ACCEPTED, rows=600, batch_id="b-2", accepted_at=101.0)
    never = rec(3, S.WRITTEN, rows=400)  # the server never took it: not in the rate
    r = report_for([accepted, also, never], elapsed_s=4.0, interrupted=True)
    assert r["rate_basis"] == {"rows_accepted": 1600, "batches_accepted": 2, "window_s": 4.0}
    assert r["rows_per_s"] == 400.0
    one = report_for([accepted, never], elapsed_s=4.0, interrupted=True)
    assert (one["rows_per_s"], one["rate_basis"]["batches_accepted"]) == (None, 1)
    quick = report_for([accepted, also], elapsed_s=0.25)
    assert quick["rows_per_s"] is None
    assert json.loads(json.dumps(quick))["rows_per_s"] is None  # null in report.json
    assert render_summary(quick).splitlines()[5] == "sent      3.2 kB in 0.2 s, - rows/s"
    assert (
        "Sent 3,200 bytes in 0.2 s: - rows/s."
        in render_markdown(quick, first_rejects={}, report_path="r.json").splitlines()
    )


def test_combined_status_adds_the_bases() -> None:
    first = report_for([rec(1, S.COMPLETE, rows=300)], elapsed_s=3.0)
    second = report_for([rec(1, S.COMPLETE, rows=600)], elapsed_s=2.0)
    both = combine([first, second])
    # Each shard alone has one batch (no rate); together two batches over the longest run.
    assert (first["rows_per_s"], second["rows_per_s"]) == (None, None)
    assert both["rate_basis"] == {"rows_accepted": 900, "batches_accepted": 2, "window_s": 3.0}
    assert both["rows_per_s"] == 300.0
    assert render_combined(both, [first, second]).splitlines()[-1] == (
        "sent      6.4 kB in 3.0 s (longest run), 300.0 rows/s"
    )
    alone = combine([first])
    assert render_combined(alone, [first]).splitlines()[-1].endswith(", - rows/s")


@pytest.mark.parametrize(
    ("limit", "line"),
    [
        (
            {"concurrency": 8, "adaptive": True, "peak_in_flight": 1, "lowered": 0, "lowest": None},
            "in flight at most 1 of --concurrency 8; the limit was never lowered by throttling",
        ),
        (
            {"concurrency": 8, "adaptive": True, "peak_in_flight": 8, "lowered": 1, "lowest": 5},
            "in flight at most 8 of --concurrency 8; throttling lowered the limit once, "
            "to 5 at the lowest",
        ),
        (
            {"concurrency": 8, "adaptive": True, "peak_in_flight": 6, "lowered": 3, "lowest": 2},
            "in flight at most 6 of --concurrency 8; throttling lowered the limit 3 times, "
            "to 2 at the lowest",
        ),
        (
            {
                "concurrency": 4,
                "adaptive": False,
                "peak_in_flight": 4,
                "lowered": 0,
                "lowest": None,
            },
            "in flight at most 4 of --concurrency 4 (a fixed limit: submit.adaptive = false)",
        ),
    ],
)
def test_summary_line_of_the_limit(limit: dict[str, Any], line: str) -> None:
    summary = render_summary(report_for([rec(1, S.COMPLETE)], submit_limit=limit)).splitlines()
    assert summary[6] == f"limit     {line}"


async def test_limiter_counts_only_real_lowerings_and_who_waits() -> None:
    fixed = AdaptiveLimiter(4, initial=4, min_limit=4)  # submit.adaptive = false
    async with fixed.slot() as slot:
        slot.throttled()
    assert (fixed.limit, fixed.throttles, fixed.decreases, fixed.lowest) == (4, 1, 0, None)
    limiter = AdaptiveLimiter(8)  # starts at 4
    async with AsyncExitStack() as stack:
        slots: list[Slot] = [await stack.enter_async_context(limiter.slot()) for _ in range(4)]
        assert (limiter.in_flight, limiter.waiting) == (4, 0)
        slots[3].throttled()
        for slot in slots[:3]:
            slot.succeeded()
    assert (limiter.decreases, limiter.lowest, limiter.limit, limiter.peak_in_flight) == (
        1,
        3,
        3,
        4,
    )


# -- tiny runs of the command line against the built-in emulator ---------------------------


def export(tmp_path: Path, rows: int) -> Path:
    return write_csv(
        tmp_path / "tiny.csv", ["id", "tier"], [[f"T{i}", "gold"] for i in range(rows)]
    )


def summary_lines(stderr: str) -> dict[str, str]:
    """The summary's lines by their label (``sent``, ``limit``...)."""
    return {line[:10].strip(): line[10:] for line in stderr.splitlines() if line[:1] != "["}


async def test_a_one_batch_run_gives_no_rate_and_a_plain_limit(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory()
    src = export(tmp_path, 2)
    args = ("run", src.name, "--client", CLIENT, "--base-url", emu.base_url, "--work-dir", "w")
    r = await uploader(*args, "--progress", "log", cwd=tmp_path)
    assert r.code == 0, r.stderr
    report = json.loads((tmp_path / "w" / "report.json").read_text())
    assert report["rows_per_s"] is None
    assert report["rate_basis"]["rows_accepted"] == 2
    assert report["rate_basis"]["batches_accepted"] == 1
    assert report["rate_basis"]["window_s"] == report["elapsed_s"]
    assert report["submit_limit"] == {
        "concurrency": 8,
        "adaptive": True,
        "peak_in_flight": 1,
        "lowered": 0,
        "lowest": None,
    }
    progress = [line for line in r.lines if line.startswith("[")]
    assert progress[-1].split("] ", 1)[1] == (
        "input read; batches 1 final of 1 known (0 failed); rows 2 sent, 2 accepted "
        "(- rows/s); in flight 0; throttled (429/503) 0; all final"
    )
    lines = summary_lines(r.stderr)
    assert lines["sent"].endswith("s, - rows/s")
    assert lines["limit"] == (
        "in flight at most 1 of --concurrency 8; the limit was never lowered by throttling"
    )
    status = await uploader("status", "w", cwd=tmp_path)
    assert status.code == 0
    again = summary_lines(status.stdout)
    assert (again["sent"], again["limit"]) == (lines["sent"], lines["limit"])
    page = build_html(tmp_path / "w")
    assert NO_RATE in page and "Rows accepted per second (over" not in page
    assert "rows accepted per second</th><td>-</td>" in page
    as_json = json.loads((await uploader("status", "w", "--json", cwd=tmp_path)).stdout)
    assert (as_json["rows_per_s"], as_json["submit_limit"]) == (None, report["submit_limit"])
    # The JSON log's summary leaves it out, as it does every null field, and says why.
    logged = await uploader(*args, "--log-format", "json", "--progress", "none", cwd=tmp_path)
    event = json.loads(logged.lines[-1])
    assert (event["event"], "rows_per_s" in event) == ("summary", False)
    assert event["rate_basis"]["batches_accepted"] == 1
    assert event["submit_limit"] == report["submit_limit"]


async def three_batches(emu: Emulator, tmp_path: Path, concurrency: int) -> tuple[str, Any]:
    """30 rows in batches of 10 with ``--concurrency``: the summary and report.json."""
    src = export(tmp_path, 30)
    r = await uploader(
        "run", src.name, "--client", CLIENT, "--base-url", emu.base_url, "--work-dir", "w",
        "--max-batch-rows", "10", "--concurrency", str(concurrency), "--progress", "none",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.code == 0, r.stderr
    return r.stderr, json.loads((tmp_path / "w" / "report.json").read_text())


async def test_three_batches_over_a_second_give_a_rate(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(latency_ms=(400, 400))
    stderr, report = await three_batches(emu, tmp_path, concurrency=1)
    basis = report["rate_basis"]
    assert (basis["rows_accepted"], basis["batches_accepted"]) == (30, 3)
    assert basis["window_s"] >= 1.2  # three submits of 400 ms, one at a time
    assert report["rows_per_s"] == round(30 / basis["window_s"], 1)
    assert summary_lines(stderr)["sent"].endswith(f"s, {report['rows_per_s']:,.1f} rows/s")
    assert report["submit_limit"]["peak_in_flight"] == 1


async def test_a_throttled_run_says_how_far_the_limit_went_down(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory(max_inflight=1, retry_after_s=0.0, latency_ms=(50, 50))
    stderr, report = await three_batches(emu, tmp_path, concurrency=4)
    limit = report["submit_limit"]
    assert report["requests"]["throttled"] >= 1
    assert (limit["concurrency"], limit["lowest"]) == (4, 1)  # the server takes one at a time
    assert 1 <= limit["lowered"] <= report["requests"]["throttled"]
    assert 2 <= limit["peak_in_flight"] <= 4  # it starts at 2: one of them was throttled
    times = "once" if limit["lowered"] == 1 else f"{limit['lowered']} times"
    assert summary_lines(stderr)["limit"] == (
        f"in flight at most {limit['peak_in_flight']} of --concurrency 4; "
        f"throttling lowered the limit {times}, to 1 at the lowest"
    )
