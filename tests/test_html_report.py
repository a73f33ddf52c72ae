"""`uploader report WORK_DIR --html FILE`: one offline page, parsed back with html.parser."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import EmulatorFactory
from tests.helpers import run, write_csv
from tests.test_cli_errors import uploader
from uploader import monitor
from uploader.journal import Journal, Sample


class Page(HTMLParser):
    """Tags, attributes, headings and table cells of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.headings: list[str] = []
        self.cells: list[str] = []
        self.title = ""
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        if tag in ("h2", "th", "td", "title"):
            self._in = tag

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "h2":
            self.headings.append(data)
        elif self._in in ("th", "td"):
            self.cells.append(data)
        elif self._in == "title":
            self.title += data


async def test_html_report_of_a_throttled_run(
    emulator_factory: EmulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitor, "SAMPLE_EVERY_S", 0.02)
    # Slow enough to last over a second: a shorter run has no rate to chart (rates.py).
    emu = await emulator_factory(max_inflight=2, retry_after_s=0.0, latency_ms=(100.0, 120.0))
    rows = [[f"C{i:05d}", "gold"] for i in range(2000)]
    src = write_csv(tmp_path / "export.csv", ["customer_id", "loyaltyTier"], rows)
    work = tmp_path / "w"
    outcome = await run(emu, src, work, batch__max_rows=100, submit__concurrency=8)
    assert outcome.exit_code == 0
    with Journal(work / "journal.sqlite") as journal:
        samples = journal.samples()
    assert len(samples) >= 3
    assert samples[-1].rows_accepted == 2000
    assert max(s.throttles for s in samples) == outcome.report["requests"]["throttled"] > 0

    out = tmp_path / "night.html"
    r = await uploader("report", str(work), "--html", str(out), cwd=tmp_path)
    assert r.code == 0, r.stderr
    assert r.stderr.strip() == f"wrote {out}"
    assert out.stat().st_mode & 0o777 == 0o600
    page = Page()
    page.feed(out.read_text(encoding="utf-8"))
    page.close()
    assert page.title == "uploader job test"
    assert page.headings == [
        "Summary",
        "Rows per second",
        "Submits in flight and the adaptive limit",
        "Throttling",
        "Submit latency",
        "Time from submit to final, per batch",
    ]
    assert page.tags.count("svg") == 5
    # Offline: no scripts, no stylesheets or fonts to fetch, no remote images.
    assert "script" not in page.tags and "link" not in page.tags and "img" not in page.tags
    remote = [
        (t, k, v)
        for t, k, v in page.attrs
        if k in ("src", "href", "xlink:href") and not v.startswith("#")
    ]
    assert remote == []
    summary = dict(zip(page.cells[::2], page.cells[1::2], strict=False))
    assert summary["status"] == "complete"
    assert summary["rows successful"] == "2,000"
    assert summary["batches complete"] == "20"
    assert summary["rows accepted per second"] == f"{outcome.report['rows_per_s']:,.1f}"


async def test_report_of_an_empty_journal_says_so(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    with Journal(work / "journal.sqlite") as journal:
        journal.set_meta("job_id", "empty")
    out = tmp_path / "r.html"
    r = await uploader("report", str(work), "--html", str(out), cwd=tmp_path)
    assert r.code == 0, r.stderr
    page = Page()
    page.feed(out.read_text(encoding="utf-8"))
    assert page.tags.count("svg") == 0
    text = out.read_text(encoding="utf-8")
    assert "The journal holds no time series" in text
    assert "No submit was accepted yet." in text and "No batch is final yet." in text


def test_samples_stay_bounded(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        for i in range(1000):
            journal.add_sample(Sample(float(i), i, 1, 2, 0, 0), keep=100)
        kept = journal.samples()
    assert len(kept) <= 100
    assert kept[0].t == 0.0 and kept[-1].t == 999.0  # the whole span survives thinning
    assert [s.t for s in kept] == sorted(s.t for s in kept)
