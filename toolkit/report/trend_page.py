"""``edge trend --html``: one offline page with a figure's series, its chart and its table.

Example::

    Path("trend.html").write_text(render_trend_page(trend(store, target="local",
                                                           variant="int8")))
"""

from __future__ import annotations

from html import escape

from toolkit.report.svgplot import trend_plot
from toolkit.results.trend import Trend
from toolkit.safe_text import printable

__all__ = ["render_trend_page"]

_STYLE = """body{font-family:sans-serif;margin:24px;max-width:1100px}
table{border-collapse:collapse}td,th{padding:3px 10px;text-align:left}
td.n{text-align:right}tr.change{background:#fde2e1;font-weight:bold}
p.method{color:#555}"""
#: The columns of the table aligned right: the run number and the figure.
_NUMERIC = (0, 5)


def render_trend_page(found: Trend) -> str:
    """The page of ``found``: title, how change points were found, chart, table."""
    title = printable(f"{found.metric} of {found.target}/{found.variant} "
                      f"({found.model_name}), {len(found.points)} runs")
    changes = {c.index: c for c in found.changes}
    svg = trend_plot(title, [p.value for p in found.points], sorted(changes),
                     plot_id="plot-trend", label=found.shown, caption=found.metric,
                     names=[printable(p.run_id) for p in found.points])
    said = [f"Changed at run {escape(printable(c.run_id))} (#{c.index + 1}): "
            f"{escape(found.shown(c.before))} &rarr; {escape(found.shown(c.after))} "
            f"({escape(c.change)}; Mann-Whitney p = {c.p_value:.2g})"
            for c in found.changes] or ["No change point found."]
    rows = []
    for index, point in enumerate(found.points):
        change = changes.get(index)
        mark = "" if change is None else f"change {change.change} (p={change.p_value:.2g})"
        cells = [str(index + 1), point.run_id, point.created_at, point.sha256[:12],
                 point.verdict or "-", found.shown(point.value), mark]
        row = '<tr class="change">' if change else "<tr>"
        rows.append(row + "".join(
            f'<td class="n">{escape(printable(cell))}</td>' if i in _NUMERIC
            else f"<td>{escape(printable(cell))}</td>" for i, cell in enumerate(cells))
            + "</tr>")
    head = "".join(f"<th>{escape(h)}</th>" for h in
                   ("#", "run", "created", "file sha256", "verdict", found.metric, "change"))
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>", *(f"<p>{line}</p>" for line in said),
        f'<p class="method">Change points: {escape(found.method)}.</p>', svg,
        f"<table><thead><tr>{head}</tr></thead><tbody>", *rows, "</tbody></table>",
        "</body></html>", ""])
