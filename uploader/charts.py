"""Charts as inline SVG, and self-contained HTML pages that hold them.

For any page that shows figures offline: the run report (:mod:`uploader.html_report`)
and benchmark pages. Each chart function takes plain numbers and returns an
``<svg>`` string drawn by matplotlib (the optional extra ``uploader[html]``)
with text turned into paths, so a page needs no fonts, scripts or styles from
the network. :func:`html_page` puts headings, tables and charts into one file.

Usage::

    from uploader import charts
    svg = charts.line_chart("Throughput", "minutes", "rows/s", {"run": (xs, ys)})
    html = charts.html_page("Sweep", [charts.Section("Throughput", svg)])
"""

from __future__ import annotations

import html
import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from uploader.errors import ConfigError

__all__ = [
    "Section",
    "bar_chart",
    "html_page",
    "line_chart",
    "table",
    "time_axis",
]

Series = tuple[Sequence[float], Sequence[float]]  # (x values, y values)

_WIDTH_IN, _HEIGHT_IN = 9.0, 3.2


def _pyplot() -> Any:
    # Older matplotlib calls deprecated pyparsing names while it sets itself up;
    # that is its business, not a warning for our users (or an error in tests).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import matplotlib
        except ImportError:
            raise ConfigError(
                "the HTML report needs matplotlib: pip install 'uploader[html]'"
            ) from None
        matplotlib.use("Agg")  # no display; we only write SVG
        import matplotlib.pyplot as plt

        plt.rcParams.update({"svg.fonttype": "path", "svg.hashsalt": "uploader"})
    return plt


def _svg(fig: Any) -> str:
    plt = _pyplot()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE: inline in HTML


def _axes(title: str, x_label: str, y_label: str) -> tuple[Any, Any]:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(_WIDTH_IN, _HEIGHT_IN))
    ax.set_title(title, loc="left")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(True, alpha=0.3)
    return fig, ax


def line_chart(
    title: str,
    x_label: str,
    y_label: str,
    series: Mapping[str, Series],
    *,
    step: bool = False,
    shade: Sequence[tuple[float, float]] = (),
    shade_label: str = "",
) -> str:
    """Lines (or steps) sharing one x axis; ``shade`` marks x spans (e.g. waiting)."""
    fig, ax = _axes(title, x_label, y_label)
    for name, (xs, ys) in series.items():
        if step:
            ax.step(xs, ys, where="post", label=name)
        else:
            ax.plot(xs, ys, label=name)
    for i, (x0, x1) in enumerate(shade):
        ax.axvspan(x0, x1, color="orange", alpha=0.15, label=shade_label if i == 0 else None)
    if len(series) > 1 or shade:
        ax.legend(loc="best")
    ax.set_ylim(bottom=0)
    return _svg(fig)


def bar_chart(
    title: str,
    x_label: str,
    y_label: str,
    labels: Sequence[str] | Sequence[float],
    values: Sequence[float],
    *,
    width: float | None = None,
) -> str:
    """Bars at categorical ``labels`` (strings) or numeric positions (numbers)."""
    fig, ax = _axes(title, x_label, y_label)
    positions: Sequence[Any] = labels
    if labels and isinstance(labels[0], str):
        positions = range(len(labels))
        ax.set_xticks(list(positions), [str(x) for x in labels], rotation=45, ha="right")
    ax.bar(positions, values, width=width if width is not None else 0.8)
    ax.set_ylim(bottom=0, top=None if any(values) else 1)
    return _svg(fig)


def time_axis(seconds: Sequence[float]) -> tuple[list[float], str]:
    """Seconds since a start -> values in a readable unit, and the axis label."""
    span = max(seconds, default=0.0)
    if span >= 3 * 3600:
        return [s / 3600 for s in seconds], "hours since start"
    if span >= 180:
        return [s / 60 for s in seconds], "minutes since start"
    return list(seconds), "seconds since start"


@dataclass(frozen=True)
class Section:
    """A heading, an optional note, and HTML (a chart or a table)."""

    title: str
    body: str
    note: str = ""


def table(rows: Sequence[tuple[str, Any]]) -> str:
    """A two-column table of label and value, escaped."""
    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{cells}</table>"


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 62em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; } th, td { padding: .2em .8em; border-bottom: 1px solid #ddd; }
th { text-align: left; font-weight: 600; }
td { text-align: right; font-variant-numeric: tabular-nums; }
p.note { color: #555; } svg { max-width: 100%; height: auto; }
"""


def html_page(title: str, sections: Sequence[Section], *, subtitle: str = "") -> str:
    """One self-contained HTML document: inline CSS and SVG, nothing fetched."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if subtitle:
        parts.append(f'<p class="note">{html.escape(subtitle)}</p>')
    for s in sections:
        parts.append(f"<section><h2>{html.escape(s.title)}</h2>")
        if s.note:
            parts.append(f'<p class="note">{html.escape(s.note)}</p>')
        parts.append(s.body)
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
