"""``uploader bench`` sweeps: one row per point, the documented recommendation, files that parse."""

from __future__ import annotations

import argparse
import csv
import json
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from uploader import bench, sweep
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
    for row, point in zip(rows, points, strict=True):
        assert {k: float(v) if v else None for k, v in row.items()} == {
            k: None if point[k] is None else float(point[k]) for k in sweep.COLUMNS
        }

    page = _Page()
    page.feed(out["s.html"].read_text(encoding="utf-8"))
    assert page.svgs == 5  # rows/s, throttled share, submit p50, p95, p99
    assert page.scripts == page.links == 0  # offline: nothing fetched
    assert page.headings == [
        "uploader bench sweep",
        "Throughput",
        "Throttled share",
        "Submit latency p50",
        "Submit latency p95",
        "Submit latency p99",
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
    assert "row budget of 2,500 reached: 2 points skipped" in err


def test_recommendation_rule() -> None:
    def row(c: int, rps: float, p95: float, share: float = 0.0, errors: int = 0) -> dict:
        return {
            "concurrency": c,
            "batch_rows": 1000,
            "rows_per_s": rps,
            "submit_p95_s": p95,
            "throttled_share": share,
            "errors": errors,
        }

    fast_but_throttled = row(8, 900.0, 0.1, share=0.06)
    slow_p95 = row(4, 800.0, 0.21)
    assert sweep.recommend(
        [
            row(1, 100.0, 0.1),
            row(2, 500.0, 0.2),
            slow_p95,
            fast_but_throttled,
            row(16, 950.0, 0.1, errors=1),
        ]
    ) == row(2, 500.0, 0.2)
    assert sweep.recommend([fast_but_throttled]) is None
    assert sweep.parse_int_list("1, 2,16") == [1, 2, 16]
    with pytest.raises(ValueError, match="at least 1"):
        sweep.parse_int_list("0,2")
