"""Stage 7: a stored run as a report people read: one offline HTML file, short Markdown, JSON.

The HTML report is a single file with its charts drawn inline as SVG
(:mod:`toolkit.svgplot`): latency distribution per variant, accuracy against
latency with size as the marker and the Pareto front, energy per inference,
peak memory, and a cross-board comparison when the run spans boards.  The
Markdown report fits a pull-request comment: a table per target, with deltas
against a baseline run when one is given.

Optional measurements (``power``, ``thermal``, ``verdict`` in a record) are
shown when present and simply left out when a board could not measure them.

Example::

    paths = write_report(run, out_dir)             # report.md and report.html
    text = render(run, "md", baseline=main_run)    # with deltas
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from . import svgplot
from .errors import UsageError
from .results import ResultRecord
from .store import StoredRun, export_json
from .units import format_duration

FORMATS = ("html", "md", "json")

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("toolkit", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class ReportRow:
    """One target x variant line, with every figure already formatted."""

    target: str
    variant: str
    status: str
    size: str
    size_ratio: str
    accuracy: str
    p50: str
    p90: str
    p99: str
    peak_memory: str
    energy: str
    runtime: str
    note: str
    delta: str  # against the baseline, "" without one


@dataclass(frozen=True)
class Plot:
    """One chart of the HTML report."""

    plot_id: str
    title: str
    svg: str
    caption: str


def report_rows(run: StoredRun, baseline: StoredRun | None = None) -> list[ReportRow]:
    # The fp32 recipe is the reference whatever its name in results (fp32-t1 in a sweep).
    baseline_size = {r.target: r.size_bytes for r in run.results
                     if r.recipe == "fp32" and r.size_bytes is not None}
    before = {r.key: r for r in (baseline.results if baseline else []) if r.ok}
    rows = []
    for result in run.results:
        base = baseline_size.get(result.target)
        size = result.size_bytes  # a variant that failed to build has no file
        rows.append(ReportRow(
            target=result.target,
            variant=result.variant,
            status=result.status.value,
            size=f"{size / 1024:.1f} KiB" if size is not None else "",
            size_ratio=f"{size / base:.2f}x" if base and size is not None else "",
            accuracy=_percent(result.accuracy),
            p50=_ms(result.latency("p50")),
            p90=_ms(result.latency("p90")),
            p99=_ms(result.latency("p99")),
            peak_memory=_mib(result.peak_rss_bytes),
            energy=_mj(result.energy_per_inference_mj),
            runtime=result.runtime,
            note="; ".join(filter(None, [result.chosen or "", result.error or "",
                                         _conditions(result), _shared_machine(result)])),
            delta=_delta(before.get(result.key), result),
        ))
    return rows


def _shared_machine(result: ResultRecord) -> str:
    """Boards on one machine measured at once compete for its CPUs: the reader must know."""
    others = result.measured_beside
    return (f"measured at the same time as {', '.join(others)} on the same machine "
            "(same kernel boot id): latencies interfere") if others else ""


def render(run: StoredRun, fmt: str, *, baseline: StoredRun | None = None) -> str:
    """The report of ``run`` in ``fmt`` (``html``, ``md`` or ``json``)."""
    if fmt == "html":
        return render_html(run, baseline=baseline)
    if fmt == "md":
        return render_markdown(run, baseline=baseline)
    if fmt == "json":
        return export_json(run)
    raise UsageError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")


def render_markdown(run: StoredRun, *, baseline: StoredRun | None = None) -> str:
    rows = report_rows(run, baseline)
    return _TEMPLATES.get_template("report.md.j2").render(
        run=run, baseline=baseline, by_target=_by_target(rows), boards=_boards(run),
        has_energy=any(r.energy for r in rows))


def render_html(run: StoredRun, *, baseline: StoredRun | None = None) -> str:
    rows = report_rows(run, baseline)
    return _TEMPLATES.get_template("report.html.j2").render(
        run=run, baseline=baseline, rows=rows, boards=_boards(run), plots=report_plots(run),
        has_energy=any(r.energy for r in rows), cross_board=_cross_board(run))


def write_report(run: StoredRun, out_dir: Path) -> dict[str, Path]:
    paths = {"markdown": out_dir / "report.md", "html": out_dir / "report.html"}
    paths["markdown"].write_text(render_markdown(run), encoding="utf-8")
    paths["html"].write_text(render_html(run), encoding="utf-8")
    return paths


def report_plots(run: StoredRun) -> list[Plot]:
    """Every chart the run's data supports, in reading order."""
    ok = [r for r in run.results if r.ok]
    many_targets = len({r.target for r in ok}) > 1

    def label(r: ResultRecord) -> str:
        return f"{r.target}/{r.variant}" if many_targets else r.variant

    plots = []
    with_samples = [r for r in ok if r.latency_samples_ms]
    if with_samples:
        plots.append(Plot("plot-latency", "Latency per inference", svgplot.box_plot(
            "Latency per inference", [(label(r), r.latency_samples_ms) for r in with_samples],
            unit="ms", plot_id="plot-latency"),
            "Box: 25th to 75th percentile, black line: median, whiskers: 5th to 95th "
            "percentile, dots: the slowest and fastest runs."))
    scored = [(r, r.p50_ms, r.accuracy) for r in ok
              if r.accuracy is not None and r.p50_ms is not None]
    if scored:
        fronts = [svgplot.pareto_front([(label(r), p50, accuracy)
                                        for r, p50, accuracy in scored if r.target == target])
                  for target in sorted({r.target for r, _, _ in scored})]
        plots.append(Plot("plot-pareto", "Accuracy against latency", svgplot.scatter_plot(
            "Accuracy against latency (marker area: file size)",
            [(label(r), p50, 100 * accuracy, r.size_bytes or 0)
             for r, p50, accuracy in scored], x_unit="median latency (ms)",
            y_unit="accuracy (%)",
            plot_id="plot-pareto", fronts=fronts, size_label="bytes"),
            "Red outline and dashed line: the Pareto front of each board (no other variant on "
            "that board is both faster and more accurate)."))
    energy = [(label(r), e) for r in ok if (e := r.energy_per_inference_mj) is not None]
    if energy:
        plots.append(Plot("plot-energy", "Energy per inference", svgplot.bar_chart(
            "Energy per inference", energy, unit="mJ", plot_id="plot-energy"),
            "Energy measured on the board's own power sensor; rails it cannot see (PMIC "
            "losses, USB load) are not included."))
    memory = [(label(r), peak / 2**20) for r in ok if (peak := r.peak_rss_bytes)]
    if memory:
        plots.append(Plot("plot-memory", "Peak memory", svgplot.bar_chart(
            "Peak resident memory", memory, unit="MiB", plot_id="plot-memory"),
            "VmHWM of the process that loaded and ran the variant, runtime included."))
    if many_targets:
        targets = sorted({r.target for r in ok})
        timed = sorted((r for r in ok if r.p50_ms is not None),
                       key=lambda r: (r.variant, r.target))
        plots.append(Plot("plot-boards", "Median latency across boards", svgplot.bar_chart(
            "Median latency across boards",
            [(f"{r.variant} @ {r.target}", r.p50_ms or 0.0) for r in timed],
            unit="ms", plot_id="plot-boards", colors=[targets.index(r.target) for r in timed]),
            "One colour per board."))
    return plots


def _cross_board(run: StoredRun) -> dict[str, Any] | None:
    """variant -> target -> median ms, when the run spans boards."""
    targets = sorted({r.target for r in run.results})
    if len(targets) < 2:
        return None
    table: dict[str, dict[str, str]] = {}
    for r in run.results:
        cell = _ms(r.p50_ms) if r.ok else "failed"
        table.setdefault(r.variant, {})[r.target] = cell
    return {"targets": targets, "rows": table}


def _by_target(rows: list[ReportRow]) -> dict[str, list[ReportRow]]:
    grouped: dict[str, list[ReportRow]] = {}
    for row in rows:
        grouped.setdefault(row.target, []).append(row)
    return grouped


def _delta(before: ResultRecord | None, after: ResultRecord) -> str:
    if before is None or not after.ok:
        return ""
    parts = []
    b, a = before.p50_ms, after.p50_ms
    if b and a:
        parts.append(f"p50 {100 * (a / b - 1):+.1f}%")
    if before.size_bytes and after.size_bytes:
        parts.append(f"size {100 * (after.size_bytes / before.size_bytes - 1):+.1f}%")
    if before.accuracy is not None and after.accuracy is not None:
        parts.append(f"acc {100 * (after.accuracy - before.accuracy):+.2f} pt")
    eb, ea = before.energy_per_inference_mj, after.energy_per_inference_mj
    if eb and ea:
        parts.append(f"energy {100 * (ea / eb - 1):+.1f}%")
    return ", ".join(parts)


def _conditions(result: ResultRecord) -> str:
    """The agent's verdict when not VALID, throttling, and the hottest zone after the runs."""
    parts = []
    if result.verdict not in (None, "VALID"):
        reasons = "; ".join(result.verdict_reasons)
        parts.append(f"{result.verdict}" + (f": {reasons}" if reasons else ""))
    if str(result.measured.get("inputs", "")).startswith("synthetic"):
        parts.append("timed on synthetic inputs (the host sent no real one)")
    for number, why in enumerate(result.earlier_attempts, start=1):
        parts.append(f"measured again: attempt {number} was INVALID ({why})")
    thermal = result.thermal
    if thermal:
        if thermal.get("throttled"):
            parts.append("throttled: " + ", ".join(str(t) for t in thermal["throttled"]))
        zones = (thermal.get("after") or {}).get("zones_c") or {}
        temperatures = [t for t in zones.values() if isinstance(t, int | float)]
        if temperatures:
            parts.append(f"hottest {max(temperatures):.1f} C after the runs")
    return "; ".join(parts)


def _boards(run: StoredRun) -> dict[str, dict[str, Any]]:
    return {r.target: dict(r.board) for r in run.results if r.board}


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


def _ms(value: float | None) -> str:
    """A latency in the unit that fits it: a 15 us model is not ``0.015`` in every cell."""
    return "" if value is None else format_duration(value)


def _mib(value: int | None) -> str:
    return "" if value is None else f"{value / 2**20:.1f} MiB"


def _mj(value: float | None) -> str:
    return "" if value is None else f"{value:.3f} mJ"
