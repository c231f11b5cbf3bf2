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
from .defaults import FORMATS as FORMATS
from .errors import UsageError
from .store import StoredRun, energy_per_inference_mj, export_json
from .units import format_duration

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
    baseline_size = {r["target"]: r["size_bytes"] for r in run.results
                     if _recipe(r) == "fp32" and "size_bytes" in r}
    before = {(r["target"], r["variant"]): r for r in (baseline.results if baseline else [])
              if r.get("status") == "ok"}
    rows = []
    for result in run.results:
        latency = result.get("latency_ms") or {}
        runtime = result.get("runtime") or {}
        base = baseline_size.get(result["target"])
        rows.append(ReportRow(
            target=result["target"],
            variant=result["variant"],
            status=result["status"],
            # A variant that failed to build has no file.
            size=f"{result['size_bytes'] / 1024:.1f} KiB" if "size_bytes" in result else "",
            size_ratio=f"{result['size_bytes'] / base:.2f}x"
            if base and "size_bytes" in result else "",
            accuracy=_percent(result.get("accuracy")),
            p50=_ms(latency.get("p50")),
            p90=_ms(latency.get("p90")),
            p99=_ms(latency.get("p99")),
            peak_memory=_mib(result.get("peak_rss_bytes")),
            energy=_mj(energy_per_inference_mj(result)),
            runtime=f"{runtime['name']} {runtime['version']}" if runtime else "",
            note="; ".join(filter(None, [result.get("chosen") or "", result.get("error") or "",
                                         _conditions(result), _shared_machine(result)])),
            delta=_delta(before.get((result["target"], result["variant"])), result),
        ))
    return rows


def _recipe(result: dict[str, Any]) -> str:
    """The recipe a record was built with; older records only carry it in their config."""
    return str(result.get("recipe") or (result.get("config") or {}).get("recipe")
               or result["variant"])


def _shared_machine(result: dict[str, Any]) -> str:
    """Boards on one machine measured at once compete for its CPUs: the reader must know."""
    others = result.get("measured_beside") or []
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
    ok = [r for r in run.results if r["status"] == "ok"]
    many_targets = len({r["target"] for r in ok}) > 1

    def label(r: dict[str, Any]) -> str:
        return f"{r['target']}/{r['variant']}" if many_targets else r["variant"]

    plots = []
    with_samples = [r for r in ok if r.get("latency_samples_ms")]
    if with_samples:
        plots.append(Plot("plot-latency", "Latency per inference", svgplot.box_plot(
            "Latency per inference", [(label(r), r["latency_samples_ms"]) for r in with_samples],
            unit="ms", plot_id="plot-latency"),
            "Box: 25th to 75th percentile, black line: median, whiskers: 5th to 95th "
            "percentile, dots: the slowest and fastest runs."))
    scored = [r for r in ok if r.get("accuracy") is not None and r.get("latency_ms")]
    if scored:
        fronts = [svgplot.pareto_front([(label(r), r["latency_ms"]["p50"], r["accuracy"])
                                        for r in scored if r["target"] == target])
                  for target in sorted({r["target"] for r in scored})]
        plots.append(Plot("plot-pareto", "Accuracy against latency", svgplot.scatter_plot(
            "Accuracy against latency (marker area: file size)",
            [(label(r), r["latency_ms"]["p50"], 100 * r["accuracy"], r["size_bytes"])
             for r in scored], x_unit="median latency (ms)", y_unit="accuracy (%)",
            plot_id="plot-pareto", fronts=fronts, size_label="bytes"),
            "Red outline and dashed line: the Pareto front of each board (no other variant on "
            "that board is both faster and more accurate)."))
    energy = [(label(r), e) for r in ok if (e := energy_per_inference_mj(r)) is not None]
    if energy:
        plots.append(Plot("plot-energy", "Energy per inference", svgplot.bar_chart(
            "Energy per inference", energy, unit="mJ", plot_id="plot-energy"),
            "Energy measured on the board's own power sensor; rails it cannot see (PMIC "
            "losses, USB load) are not included."))
    memory = [(label(r), r["peak_rss_bytes"] / 2**20) for r in ok if r.get("peak_rss_bytes")]
    if memory:
        plots.append(Plot("plot-memory", "Peak memory", svgplot.bar_chart(
            "Peak resident memory", memory, unit="MiB", plot_id="plot-memory"),
            "VmHWM of the process that loaded and ran the variant, runtime included."))
    if many_targets:
        targets = sorted({r["target"] for r in ok})
        plots.append(Plot("plot-boards", "Median latency across boards", svgplot.bar_chart(
            "Median latency across boards",
            [(f"{r['variant']} @ {r['target']}", r["latency_ms"]["p50"])
             for r in sorted(ok, key=lambda r: (r["variant"], r["target"]))],
            unit="ms", plot_id="plot-boards",
            colors=[targets.index(r["target"]) for r in
                    sorted(ok, key=lambda r: (r["variant"], r["target"]))]),
            "One colour per board."))
    return plots


def _cross_board(run: StoredRun) -> dict[str, Any] | None:
    """variant -> target -> median ms, when the run spans boards."""
    targets = sorted({r["target"] for r in run.results})
    if len(targets) < 2:
        return None
    table: dict[str, dict[str, str]] = {}
    for r in run.results:
        cell = _ms((r.get("latency_ms") or {}).get("p50")) if r["status"] == "ok" else "failed"
        table.setdefault(r["variant"], {})[r["target"]] = cell
    return {"targets": targets, "rows": table}


def _by_target(rows: list[ReportRow]) -> dict[str, list[ReportRow]]:
    grouped: dict[str, list[ReportRow]] = {}
    for row in rows:
        grouped.setdefault(row.target, []).append(row)
    return grouped


def _delta(before: dict[str, Any] | None, after: dict[str, Any]) -> str:
    if before is None or after["status"] != "ok":
        return ""
    parts = []
    b, a = (before.get("latency_ms") or {}).get("p50"), (after.get("latency_ms") or {}).get("p50")
    if b and a:
        parts.append(f"p50 {100 * (a / b - 1):+.1f}%")
    if before.get("size_bytes") and after.get("size_bytes"):
        parts.append(f"size {100 * (after['size_bytes'] / before['size_bytes'] - 1):+.1f}%")
    if before.get("accuracy") is not None and after.get("accuracy") is not None:
        parts.append(f"acc {100 * (after['accuracy'] - before['accuracy']):+.2f} pt")
    eb, ea = energy_per_inference_mj(before), energy_per_inference_mj(after)
    if eb and ea:
        parts.append(f"energy {100 * (ea / eb - 1):+.1f}%")
    return ", ".join(parts)


def _conditions(result: dict[str, Any]) -> str:
    """The agent's verdict when not VALID, throttling, and the hottest zone after the runs."""
    parts = []
    verdict = result.get("verdict")
    if isinstance(verdict, dict) and verdict.get("status") not in (None, "VALID"):
        reasons = "; ".join(str(r) for r in verdict.get("reasons") or [])
        parts.append(f"{verdict['status']}" + (f": {reasons}" if reasons else ""))
    thermal = result.get("thermal")
    if isinstance(thermal, dict):
        if thermal.get("throttled"):
            parts.append("throttled: " + ", ".join(str(t) for t in thermal["throttled"]))
        zones = (thermal.get("after") or {}).get("zones_c") or {}
        temperatures = [t for t in zones.values() if isinstance(t, int | float)]
        if temperatures:
            parts.append(f"hottest {max(temperatures):.1f} C after the runs")
    return "; ".join(parts)


def _boards(run: StoredRun) -> dict[str, dict[str, Any]]:
    return {r["target"]: r["board"] for r in run.results if r.get("board")}


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


def _ms(value: float | None) -> str:
    """A latency in the unit that fits it: a 15 us model is not ``0.015`` in every cell."""
    return "" if value is None else format_duration(value)


def _mib(value: int | None) -> str:
    return "" if value is None else f"{value / 2**20:.1f} MiB"


def _mj(value: float | None) -> str:
    return "" if value is None else f"{value:.3f} mJ"
