"""``edge trend --html``: one offline page with a figure's series, its chart and its table.

Each point of the chart and each run of the table links to that run's report (the
``report.html`` in the run's folder), by a path relative to the page's own folder, so the
page and the runs can move together.

Example::

    page = Path("trend.html")
    page.write_text(render_trend_page(trend(store, target="local", variant="int8"),
                                      page_dir=page.parent))
"""

from __future__ import annotations

import os
from html import escape
from pathlib import Path
from urllib.parse import quote

from toolkit.report.svgplot import trend_plot
from toolkit.results.trend import Trend
from toolkit.safe_text import printable

__all__ = ["render_trend_page"]

_STYLE = """body{font-family:sans-serif;margin:24px;max-width:1100px}
figure{margin:1.5rem 0}
table{border-collapse:collapse}td,th{padding:3px 10px;text-align:left}
td.n{text-align:right}tr.change{background:#fde2e1;font-weight:bold}
p.method{color:#555}"""
#: The columns of the table aligned right: the run number and the figure.
_NUMERIC = (0, 5)
#: The column holding the run, a link to its report.
_RUN = 1


def _run_link(report_dir: str, page_dir: Path) -> str:
    """The URL of the report of the run stored with ``report_dir``, from a page in
    ``page_dir`` ("" for a run stored without a folder).

    edge stores the output folder as it was given, so a relative one is taken from the
    current folder.  Every character a URL path may not hold is quoted, ``:`` included:
    whatever a run folder is named, the link stays a path, never a ``javascript:`` URL.
    """
    if not report_dir:
        return ""
    report = Path(report_dir, "report.html").absolute()
    return "./" + quote(os.path.relpath(report, page_dir.absolute()))


def render_trend_page(found: Trend, *, page_dir: Path) -> str:
    """The page of ``found`` written into ``page_dir``: title, how change points were
    found, chart, table."""
    title = printable(f"{found.metric} of {found.target}/{found.variant} "
                      f"({found.model_name}), {len(found.points)} runs")
    changes = {c.index: c for c in found.changes}
    links = [_run_link(p.report_dir, page_dir) for p in found.points]
    svg = trend_plot(title, [p.value for p in found.points], sorted(changes),
                     plot_id="plot-trend", label=found.shown, caption=found.metric,
                     names=[printable(p.run_id) for p in found.points], links=links)
    said = [f"Changed at run {escape(printable(c.run_id))} (#{c.index + 1}): "
            f"{escape(found.shown(c.before))} &rarr; {escape(found.shown(c.after))} "
            f"({escape(c.change)}; Mann-Whitney p = {c.p_value:.2g})"
            for c in found.changes] or ["No change point found."]
    rows = []
    for index, (point, link) in enumerate(zip(found.points, links, strict=True)):
        change = changes.get(index)
        mark = "" if change is None else f"change {change.change} (p={change.p_value:.2g})"
        cells = [escape(printable(cell)) for cell in (
            str(index + 1), point.run_id, point.created_at, point.sha256[:12],
            point.verdict or "-", found.shown(point.value), mark)]
        if link:
            cells[_RUN] = f'<a href="{escape(link)}">{cells[_RUN]}</a>'
        row = '<tr class="change">' if change else "<tr>"
        rows.append(row + "".join(
            f'<td class="n">{cell}</td>' if i in _NUMERIC else f"<td>{cell}</td>"
            for i, cell in enumerate(cells)) + "</tr>")
    head = "".join(f"<th>{escape(h)}</th>" for h in
                   ("#", "run", "created", "file sha256", "verdict", found.metric, "change"))
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>", *(f"<p>{line}</p>" for line in said),
        f'<p class="method">Change points: {escape(found.method)}.</p>',
        f'<figure id="figure-plot-trend">{svg}</figure>',
        f"<table><thead><tr>{head}</tr></thead><tbody>", *rows, "</tbody></table>",
        "</body></html>", ""])
