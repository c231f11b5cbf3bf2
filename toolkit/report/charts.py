"""The HTML report's charts (:func:`report_plots`): each answers one question faster than
the table, drawn inline as SVG by :mod:`toolkit.report.svgplot`.

Example::

    [plot.plot_id for plot in report_plots(run)]  # ['plot-latency', 'plot-tradeoff', ...]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from toolkit.report import svgplot
from toolkit.results.record import ResultRecord
from toolkit.results.store import StoredRun
from toolkit.units import format_energy

__all__ = ["Plot", "reference_name", "report_plots"]


@dataclass(frozen=True)
class Plot:
    """One chart of the HTML report."""

    plot_id: str
    title: str
    svg: str
    caption: str


def reference_name(run: StoredRun) -> str:
    """What the size column compares with: fp32, or the file as the user gave it; with both
    runtimes, each file format's own (``fp32 / fp32-ort``)."""
    named: dict[str, str] = {}
    for r in run.results:
        if r.is_float_reference:
            named.setdefault(r.file_format, r.recipe)
    return " / ".join(named.values()) or "fp32"


def report_plots(run: StoredRun) -> list[Plot]:
    """The charts that answer a question faster than the table, in reading order.

    - latency: how fast is each variant, how steady, and on which board (log axis);
    - trade-off: which variants are worth shipping (faster, more accurate, smaller);
    - threads (a ``--threads`` sweep): does a recipe get faster with more threads;
    - size: how much smaller than fp32 is each file, on disk and gzipped;
    - energy (when a board measured it): what one inference costs.

    Peak memory stays in the table: the runtime dominates it, and a chart of nearly
    equal bars answers nothing the column does not.
    """
    ok = [r for r in run.results if r.ok]
    targets = sorted({r.target for r in run.results})
    many_targets = len({r.target for r in ok}) > 1
    order = {variant: index for index, variant in
             enumerate(dict.fromkeys(r.variant for r in run.results))}

    def label(r: ResultRecord) -> str:
        return f"{r.variant} @ {r.target}" if many_targets else r.variant

    def key(r: ResultRecord) -> str:
        return f"{r.target}/{r.variant}"

    board_legend = [(targets.index(t), t) for t in targets if any(r.target == t for r in ok)] \
        if many_targets else []
    not_measured = _not_measured(run)
    plots = []
    ordered = sorted(ok, key=lambda r: (order[r.variant], r.target))
    timed = [r for r in ordered if r.latency_samples_ms]
    if timed:
        rows = [svgplot.Distribution(label(r) + (" (INVALID)" if r.verdict == "INVALID" else ""),
                                     r.latency_samples_ms, key=key(r),
                                     color=targets.index(r.target) if many_targets else i)
                for i, r in enumerate(timed)]
        separators = [i for i in range(1, len(timed))
                      if timed[i].variant != timed[i - 1].variant] if many_targets else []
        plots.append(Plot("plot-latency", "Latency per inference", svgplot.latency_plot(
            "Latency per inference" + (" per variant across boards" if many_targets else ""),
            rows, plot_id="plot-latency", legend=board_legend, separators=separators),
            "How fast is each variant, and how steady? Log axis. Box: 25th to 75th "
            "percentile; black bar: median (value above it); whiskers: 5th to 95th "
            "percentile; red diamond: 99th percentile; strip under the box: runs beyond the "
            "whiskers, darker where more fell; an "
            "arrow at the right edge counts runs slower than the axis (their slowest is "
            "written)." + not_measured))
    points = _tradeoff_points(ok, label, key, targets if many_targets else [])
    if points:
        plots.append(Plot("plot-tradeoff", "Accuracy against latency", svgplot.tradeoff_plot(
            "Accuracy against median latency (marker area: file size)", points,
            plot_id="plot-tradeoff", legend=board_legend),
            "Which variants are worth shipping? Up and to the left is better. Dark outline "
            "and dashed line: the Pareto front of each board (no other variant on that "
            "board is both faster and at least as accurate)." + (
                " In a thread sweep each recipe is shown at its fastest thread count."
                if any(r.swept for r in ok) else "") + not_measured))
    for target in targets:
        series = _thread_series(r for r in ok if r.target == target)
        if series:
            suffix = f" on {target}" if len(targets) > 1 else ""
            plot_id = "plot-threads" + (f"-{_slug(target)}" if len(targets) > 1 else "")
            plots.append(Plot(plot_id, "Latency against threads" + suffix, svgplot.threads_plot(
                "Median latency against threads" + suffix, series, plot_id=plot_id),
                "Do more threads make a recipe faster? Dot: median; bar up to the tick: 99th "
                "percentile (log axis). The legend gives each recipe's fastest thread count "
                "and its speed-up over the fewest threads."))
    sizes, unit = _size_rows(run.results)
    if sizes:
        plots.append(Plot("plot-size", "File size", svgplot.bar_plot(
            "File size per variant", sizes, plot_id="plot-size", axis=f"size ({unit})",
            label=lambda v: f"{v:g}",
            legend=[(0, "file"), (1, "gzip -9")] if any(len(r.bars) > 1 for r in sizes) else []),
            _size_caption(reference_name(run), {r.file_format for r in run.results})))
    energy = [(r, e) for r in ordered if (e := r.energy_per_inference_mj) is not None]
    if energy:
        # The axis in the unit format_energy gives the largest bar, so ticks and bar texts agree.
        unit = format_energy(max(e for _, e in energy)).rsplit(" ", 1)[-1]
        factor = {"J": 1e-3, "mJ": 1.0, "uJ": 1e3}[unit]
        plots.append(Plot("plot-energy", "Energy per inference", svgplot.bar_plot(
            "Energy per inference", [
                svgplot.BarRow(label(r), [(factor * e, format_energy(e))], key=key(r),
                               color=targets.index(r.target) if many_targets else 0)
                for r, e in energy], plot_id="plot-energy", axis=f"energy ({unit})",
            label=lambda v: f"{v:g}", legend=board_legend),
            "What does one inference cost? Measured on the board's own power sensor; rails "
            "it cannot see (PMIC losses, USB load) are not included."))
    return plots


def _not_measured(run: StoredRun) -> str:
    missing = [f"{r.variant} on {r.target} ({r.status.value})" for r in run.results if not r.ok]
    return f" Not measured, so not drawn: {', '.join(missing)}." if missing else ""


def _tradeoff_points(ok: list[ResultRecord], label: Callable[[ResultRecord], str],
                     key: Callable[[ResultRecord], str],
                     targets: list[str]) -> list[svgplot.Point]:
    """A point per variant with accuracy and latency; in a sweep, per recipe at its fastest
    thread count (the threads chart shows the rest)."""
    best: dict[tuple[str, str], ResultRecord] = {}
    for r in ok:
        if r.accuracy is None or r.p50_ms is None:
            continue
        slot = (r.target, r.recipe if r.swept else r.variant)
        if slot not in best or r.p50_ms < (best[slot].p50_ms or 0.0):
            best[slot] = r
    chosen = list(best.values())
    points: list[svgplot.Point] = []
    for target in sorted({r.target for r in chosen}):
        here = [r for r in chosen if r.target == target]
        front = set(svgplot.pareto_front([(key(r), r.p50_ms or 0.0, r.accuracy or 0.0)
                                          for r in here]))
        points.extend(svgplot.Point(label(r), r.p50_ms or 0.0, 100 * (r.accuracy or 0.0),
                                    float(r.size_bytes or 0), key=key(r),
                                    color=targets.index(target) if targets else 0,
                                    on_front=key(r) in front) for r in here)
    return points


def _thread_series(records: Iterable[ResultRecord]) -> list[svgplot.Series]:
    by_recipe: dict[str, list[tuple[int, float, float]]] = {}
    for r in records:
        p50, p99 = r.p50_ms, r.latency("p99")
        if r.swept and r.threads is not None and p50 is not None:
            by_recipe.setdefault(r.recipe, []).append((r.threads, p50, p99 or p50))
    if not any(len(points) > 1 for points in by_recipe.values()):
        return []
    return [svgplot.Series(recipe, points, color=index)
            for index, (recipe, points) in enumerate(by_recipe.items())]


def _size_rows(results: list[ResultRecord]) -> tuple[list[svgplot.BarRow], str]:
    """One row per recipe built (size does not depend on the board or thread count), in
    KiB or MiB so that the axis ticks are round numbers."""
    first: dict[str, ResultRecord] = {}
    for r in results:
        if r.size_bytes is not None:
            first.setdefault(r.recipe, r)
    # Each file format's own float reference: fp32 for a .tflite, fp32-ort for an .onnx.
    references: dict[str, tuple[str, int]] = {}
    for recipe, r in first.items():
        if r.is_float_reference and r.size_bytes:
            references.setdefault(r.file_format, (recipe, r.size_bytes))
    largest = max((r.size_bytes or 0 for r in first.values()), default=0)
    unit, factor = ("MiB", 2**20) if largest >= 2**20 else ("KiB", 2**10)
    rows = []
    for recipe, r in first.items():
        size = r.size_bytes or 0
        named, reference = references.get(r.file_format, ("", 0))
        ratio = f", {size / reference:.2f}x {named}" if reference else ""
        bars = [(size / factor, f"{svgplot.format_bytes(size)}{ratio}")]
        gzipped = r.artifact.get("gzip_bytes")
        if isinstance(gzipped, int) and not isinstance(gzipped, bool):
            bars.append((gzipped / factor, f"gzip {svgplot.format_bytes(gzipped)}"))
        rows.append(svgplot.BarRow(recipe, bars, key=recipe))
    return rows, unit


def _size_caption(reference: str, formats: set[str]) -> str:
    if formats == {"tflite", "onnx"}:
        return ("How much smaller than its runtime's fp32 is each file? The .tflite and "
                ".onnx files as deployed and gzipped (what sparsity saves on the wire), each "
                "with its ratio to the fp32 of its own format (fp32, fp32-ort).")
    kind = ".onnx" if formats == {"onnx"} else ".tflite"
    return (f"How much smaller than {reference} is each file? The {kind} file as deployed "
            f"and gzipped (what sparsity saves on the wire), with its ratio to {reference}.")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)
