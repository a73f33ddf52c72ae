"""``uploader bench`` sweeps: one row per point, the documented recommendation, files that parse."""

from __future__ import annotations

import argparse
import csv
import json
import tomllib
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.hostile import HostileServer
from tests.test_cli_errors import uploader
from uploader import bench, sweep
from uploader.emulator import Emulator
from uploader.settings import load_settings


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.svgs = self.scripts = self.links = 0
        self.headings: list[str] = []
        self.text = ""
        self._heading = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.svgs += tag == "svg"
        self.scripts += tag == "script"
        self.links += tag == "link"
        self._heading = tag in ("h1", "h2")

    def handle_endtag(self, tag: str) -> None:
        self._heading = False

    def handle_data(self, data: str) -> None:
        self.text += data
        if self._heading:
            self.headings.append(data)


def _bench(*args: str) -> int:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return bench.main(parser.parse_args(list(args)))


def test_sweep_recommends_the_server_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = {name: tmp_path / name for name in ("s.json", "s.csv", "rec.toml", "s.html")}
    code = _bench(
        *("--rows", "4000", "--batch-rows", "100", "--concurrency", "1,2,4,8,16"),
        *("--max-inflight", "4", "--latency-ms", "50", "--retry-after", "0.05"),
        *("--poll-initial", "0.05", "--json", str(out["s.json"]), "--csv", str(out["s.csv"])),
        *("--recommend-to", str(out["rec.toml"]), "--html", str(out["s.html"])),
    )
    assert code == 0
    doc = json.loads(out["s.json"].read_text())
    points = doc["points"]
    assert [(p["concurrency"], p["batch_rows"], p["rows"]) for p in points] == [
        (c, 100, 4000) for c in (1, 2, 4, 8, 16)
    ]
    for p in points:  # the distributions behind the percentiles: every 5th, 0 to 100
        submit, complete = p["latency_cdf_s"]["submit"], p["latency_cdf_s"]["complete"]
        assert len(submit) == len(complete) == 21
        assert submit == sorted(submit) and complete == sorted(complete)
        assert (submit[10], submit[19]) == (p["submit_p50_s"], p["submit_p95_s"])
        assert (complete[10], complete[19]) == (p["complete_p50_s"], p["complete_p95_s"])
    shares = [p["throttled_share"] for p in points]
    # 429 only above 4 in flight: none up to 4, more than the rule's 5% above it.
    assert shares[:3] == [0.0, 0.0, 0.0]
    assert min(shares[3:]) > sweep.MAX_THROTTLED_SHARE
    assert all(p["errors"] == 0 for p in points)
    # The rule: most rows/s among unthrottled points -> 4, the server's limit, here.
    assert doc["recommended"] == points[2]
    assert tomllib.loads(out["rec.toml"].read_text()) == {
        "submit": {"concurrency": 4},
        "batch": {"max_rows": 100},
    }
    settings = load_settings(out["rec.toml"], {"target.client": "acme"}, environ={})
    assert (settings.submit.concurrency, settings.batch.max_rows) == (4, 100)

    with out["s.csv"].open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [list(r) for r in rows] == [list(sweep.COLUMNS)] * 5
    numeric = [k for k in sweep.COLUMNS if k != "stopped"]
    for row, point in zip(rows, points, strict=True):
        assert {k: float(row[k]) if row[k] else None for k in numeric} == {
            k: None if point[k] is None else float(point[k]) for k in numeric
        }
        assert row["stopped"] == point["stopped"] == ""

    page = _Page()
    page.feed(out["s.html"].read_text(encoding="utf-8"))
    # rows/s, throttled share, submit p50, p95, p99; the two distributions of the one size
    assert page.svgs == 7
    assert page.scripts == page.links == 0  # offline: nothing fetched
    assert page.headings == [
        "uploader bench sweep",
        "Throughput",
        "Throttled share",
        "Submit latency p50",
        "Submit latency p95",
        "Submit latency p99",
        "Submit latency distribution, 100 rows per batch",
        "Submit to complete distribution, 100 rows per batch",
        "Points",
    ]
    assert "recommended: submit.concurrency = 4, batch.max_rows = 100" in page.text

    printed = capsys.readouterr().out.splitlines()
    assert printed[1:6] == sweep.render_sweep(points, points[2]).splitlines()[1:6]
    for line, point in zip(printed[1:6], points, strict=True):
        cells = line.split()
        assert cells[:2] == [str(point["concurrency"]), f"{point['batch_rows']:,}"]
        assert cells[2] == f"{point['rows_per_s']:,.0f}"
        assert cells[4:7] == [
            f"{point[k]:.3f}" for k in ("submit_p50_s", "submit_p95_s", "submit_p99_s")
        ]
        assert cells[9] == f"{point['throttled_share']:.1%}"
    assert printed[-4:] == ["  [submit]", "  concurrency = 4", "  [batch]", "  max_rows = 100"]


def test_sweep_keeps_to_the_row_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.json"
    code = _bench(
        *("--rows", "1000", "--batch-rows", "500,1000", "--concurrency", "1,2"),
        *("--max-rows", "2500", "--latency-ms", "0", "--poll-initial", "0.05"),
        *("--json", str(out)),
    )
    assert code == 0
    points = json.loads(out.read_text())["points"]
    assert [(p["concurrency"], p["batch_rows"]) for p in points] == [(1, 500), (2, 500)]
    err = capsys.readouterr().err
    assert "point 2/4: concurrency 2, batch rows 500, sweep ETA" in err
    assert "row budget of 2,500 (--max-rows) reached: 2 points skipped" in err
    assert (
        "batch rows 1,000 gives 1 batch per point: rates over fewer than 10 batches are "
        "rough; pass --rows 10,000 or more" in err
    )


def test_recommendation_rule() -> None:
    def row(c: int, rps: float, p95: float, **kw: object) -> dict:
        base = {"concurrency": c, "batch_rows": 1000, "rows_per_s": rps, "submit_p95_s": p95}
        return base | {"throttled_share": 0.0, "errors": 0, "stopped": ""} | kw

    fast_but_throttled = row(8, 900.0, 0.1, throttled_share=0.06)
    slow_p95 = row(4, 800.0, 0.21)
    assert sweep.recommend(
        [
            row(1, 100.0, 0.1),
            row(2, 500.0, 0.2),
            slow_p95,
            fast_but_throttled,
            row(16, 950.0, 0.1, errors=1),
            row(32, 990.0, 0.1, stopped="errors"),
        ]
    ) == row(2, 500.0, 0.2)
    assert sweep.recommend([fast_but_throttled]) is None
    # Within 5% of the best rows/s: the lower concurrency, then the smaller batches.
    assert sweep.recommend([row(2, 960.0, 0.1), row(4, 1000.0, 0.1), row(8, 1100.0, 0.1)]) == (
        row(8, 1100.0, 0.1)
    )
    assert sweep.recommend([row(2, 1046.0, 0.1), row(4, 1100.0, 0.1)]) == row(2, 1046.0, 0.1)
    assert sweep.recommend(
        [row(2, 1000.0, 0.1, batch_rows=5000), row(2, 1000.0, 0.1), row(1, 960.0, 0.1)]
    ) == row(1, 960.0, 0.1)
    # p95 is compared within a batch size: big bodies take longer to send, and that
    # alone does not rule them out.
    big = row(4, 5000.0, 1.0, batch_rows=100_000)
    assert sweep.recommend([row(1, 900.0, 0.1), row(4, 1000.0, 0.1), big]) == big
    assert sweep.recommend([row(4, 1000.0, 0.1), big, row(8, 6000.0, 2.1, batch_rows=100_000)]) == (
        big
    )
    assert sweep.parse_int_list("1, 2,16") == [1, 2, 16]
    with pytest.raises(ValueError, match="at least 1"):
        sweep.parse_int_list("0,2")


async def test_sweep_stops_a_point_on_a_run_of_errors(tmp_path: Path) -> None:
    server = HostileServer("error500")
    await server.start()
    try:
        r = await uploader(
            *("bench", "--base-url", server.base_url, "--rows", "200"),
            *("--batch-rows", "100,200", "--concurrency", "1,2", "--stop-after-errors", "3"),
            *("--json", "s.json", "--csv", "s.csv", "--recommend-to", "rec.toml"),
            cwd=tmp_path,
        )
    finally:
        await server.close()
    assert "Traceback" not in r.stderr and r.code == 1, r.stderr
    doc = json.loads((tmp_path / "s.json").read_text())
    points = doc["points"]
    assert [(p["concurrency"], p["batch_rows"], p["stopped"]) for p in points] == [
        (1, 100, "errors"),
        (1, 200, "errors"),
    ]
    # Only the batch on the wire counts as sent: the next one never left.
    assert [(p["rows_per_s"], p["rows"], p["errors"], p["throttled_share"]) for p in points] == [
        (None, 100, 100, 0.0),
        (None, 200, 200, 0.0),
    ]
    assert doc["recommended"] is None and doc["stop_after_errors"] == 3
    # Every point stops after 3 answers (concurrency 1: one at a time), so 6 in all.
    assert server.seen.submits == 6
    assert not (tmp_path / "rec.toml").exists()
    with (tmp_path / "s.csv").open(newline="") as fh:
        assert [(row["concurrency"], row["stopped"]) for row in csv.DictReader(fh)] == [
            ("1", "errors"),
            ("1", "errors"),
        ]
    err = r.stderr
    assert (
        "point 1 ended early: stopped: 3 submit attempts in a row failed "
        "(submit.stop_after_errors = 3; the last: ServerError:" in err
    )
    assert (
        "point 2/4 skipped: concurrency 2, batch rows 100 (concurrency 1 ended on a run "
        "of errors)" in err
    )
    assert "point 3/4: concurrency 1, batch rows 200" in err
    assert "point 4/4 skipped: concurrency 2, batch rows 200" in err
    table = r.stdout.splitlines()
    assert [line.endswith("  stopped: a run of submit errors") for line in table[1:3]] == [
        True,
        True,
    ]
    assert table[-1] == "no recommendation: every point was throttled, slow or had errors"


def test_sweep_keeps_to_the_pacing_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pacing.toml"
    config.write_text("[pacing]\nmax_rows_per_s = 1000\ndaily_rows = 2500\n")
    out = tmp_path / "s.json"
    code = _bench(
        *("--rows", "1000", "--batch-rows", "100", "--concurrency", "1,2,4"),
        *("--config", str(config), "--max-rows-per-s", "4000"),  # the flag wins
        *("--latency-ms", "0", "--poll-initial", "0.05", "--json", str(out)),
    )
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["pacing"]["max_rows_per_s"] == 4000.0 and doc["pacing"]["daily_rows"] == 2500
    points = doc["points"]
    # The daily budget is the sweep's: 2 points of 1,000 rows fit in 2,500, a third does not.
    assert [(p["concurrency"], p["rows"], p["errors"]) for p in points] == [
        (1, 1000, 0),
        (2, 1000, 0),
    ]
    for p in points:
        # 9 of the 10 batches wait for the bucket: at least 900 rows / 4,000 rows/s.
        assert p["paced_s"] > 0 and p["stopped"] == ""
        assert p["rows_per_s"] <= 1000 / (900 / 4000)
    err = capsys.readouterr().err
    assert (
        "pacing applies to every point: at most 4,000 rows/s, 2,500 rows for the whole sweep" in err
    )
    assert "row budget of 2,500 (pacing.daily_rows) reached: 1 points skipped" in err


def test_sweep_ends_outside_the_submit_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    start, end = now + timedelta(hours=2), now + timedelta(hours=3)
    out = tmp_path / "s.json"
    code = _bench(
        *("--rows", "300", "--batch-rows", "100", "--concurrency", "1,2"),
        *("--window", f"{start:%H:%M}-{end:%H:%M}", "--timezone", "UTC"),
        *("--exit-outside-window", "--latency-ms", "0", "--json", str(out)),
    )
    assert code == 1
    points = json.loads(out.read_text())["points"]
    assert [(p["concurrency"], p["stopped"], p["rows_per_s"]) for p in points] == [
        (1, "pacing", None)
    ]
    err = capsys.readouterr().err
    assert (
        f"sweep ended at point 1: outside the submit window {start:%H:%M}-{end:%H:%M} (UTC)" in err
    )


def test_safe_sweep_leaves_the_store_unchanged(
    tmp_path: Path, threaded_emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    emu = threaded_emulator
    target = ("--base-url", emu.base_url, "--poll-initial", "0.05")
    assert _bench("--rows", "300", "--batch-rows", "100", *target) == 0  # v2: writes B1..B300
    before = emu.stats()["profiles_stored"], emu.profile("bench", "thirdPartyId", "B7")
    assert before[0] == 300 and before[1] is not None

    out = tmp_path / "s.json"
    code = _bench(
        *("--rows", "400", "--batch-rows", "100,200", "--concurrency", "1,2", "--safe"),
        *target,
        *("--json", str(out)),
    )
    assert code == 0
    doc = json.loads(out.read_text())
    assert [(p["concurrency"], p["batch_rows"], p["rows"], p["errors"]) for p in doc["points"]] == [
        (1, 100, 400, 0),
        (2, 100, 400, 0),
        (1, 200, 400, 0),
        (2, 200, 400, 0),
    ]
    assert doc["recommended"] is not None
    assert (emu.stats()["profiles_stored"], emu.profile("bench", "thirdPartyId", "B7")) == before


def test_sweep_points_of_a_fixed_duration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s.json"
    code = _bench(
        *("--rows", "50000", "--batch-rows", "100", "--concurrency", "1,2", "--send-for", "0.5"),
        *("--latency-ms", "50", "--poll-initial", "0.05", "--json", str(out)),
    )
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["pacing"]["send_for_s"] == 0.5
    points = doc["points"]
    assert [(p["concurrency"], p["stopped"], p["errors"]) for p in points] == [
        (1, "", 0),
        (2, "", 0),
    ]
    for p in points:  # time ran out long before 50,000 rows (500 batches of 50 ms) were sent
        assert 0 < p["rows"] < 50_000 and p["rows"] % 100 == 0
    assert doc["recommended"] is not None
    err = capsys.readouterr().err
    assert "pacing applies to every point: each point sends for at most 0.5 s" in err
