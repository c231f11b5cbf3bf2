"""Stage 7: a stored run as a report people read: one offline HTML file, short Markdown, JSON.

The HTML report is a single file with its charts drawn inline as SVG
(:mod:`toolkit.report.svgplot`): latency distributions on a log axis (grouped per variant
across boards when the run spans several), accuracy against latency with size as
the marker area and the Pareto front, latency against threads for a ``--threads``
sweep, file size against fp32, and energy per inference; :func:`report_plots` says
which question each answers.  Every row carries a verdict: why it was not measured,
the board's VALID/INVALID with reasons, and the on-board output check as a pass mark.
The Markdown report fits a pull-request comment: a table per target, with deltas
against a baseline run when one is given.

Optional measurements (``power``, ``thermal``, ``verdict`` in a record) are
shown when present and simply left out when a board could not measure them.

Example::

    paths = write_report(run, out_dir)             # report.md and report.html
    text = render(run, "md", baseline=main_run)    # with deltas
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import jinja2

from toolkit.defaults import FORMATS as FORMATS
from toolkit.errors import UsageError
from toolkit.report import svgplot
from toolkit.report.profile import profile_comparisons, profile_sections
from toolkit.results.export import export_json
from toolkit.results.record import ResultRecord
from toolkit.results.store import StoredRun
from toolkit.safe_text import markdown_text, printable_lines
from toolkit.units import format_duration, format_energy


def _environment(*, autoescape: bool,
                 finalize: Callable[[object], object] | None = None) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("toolkit.report", "templates"),
                              undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True, autoescape=autoescape, finalize=finalize)


# Escaping is chosen by what a template renders, not by its file name: select_autoescape
# matched "report.html.j2" against ".html" and escaped nothing, so a board's hostname could
# carry a script into the report.  The charts are inserted with |safe: svgplot escapes every
# text and attribute value it writes (the hostile-string tests go through the charts too).
_HTML = _environment(autoescape=True)
_MARKDOWN = _environment(autoescape=False, finalize=markdown_text)


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
    #: failed: reason / VALID / INVALID: reasons, the board's conditions (stalls) and the
    #: measured-again notes
    verdict: str
    #: "\u2713 outputs match on the board (rule)", "\u2717 outputs differ ...", or ""
    output_check: str
    #: True when the board's outputs matched the host's and the file agrees with its source
    #: model on the host, False when either did not, else None
    outputs_match: bool | None
    note: str
    delta: str  # against the baseline, "" without one
    #: the board's named conditions beside VALID ("stalls: ..."), "" without one
    conditions: str = ""
    #: each condition's name, the words before its colon ("stalls", "governor schedutil")
    condition_names: tuple[str, ...] = ()

    @property
    def trusted(self) -> bool:
        """Measured, and not judged INVALID by the board."""
        return self.status == "ok" and not self.verdict.startswith("INVALID")

    @property
    def judgement(self) -> str:
        """The verdict and the output check in one cell (Markdown)."""
        return "; ".join(filter(None, [self.verdict, self.output_check]))


@dataclass(frozen=True)
class Plot:
    """One chart of the HTML report."""

    plot_id: str
    title: str
    svg: str
    caption: str


def report_rows(run: StoredRun, baseline: StoredRun | None = None) -> list[ReportRow]:
    # The fp32 recipe (or a .tflite as given) is the reference whatever its name in results
    # (fp32-t1 in a sweep; fp32@gpu in an --accelerator sweep, whose records' recipe
    # carries the accelerator).
    # Per file format: an ONNX Runtime variant is compared with fp32-ort, not the .tflite.
    baseline_size = {(r.target, r.file_format): r.size_bytes for r in run.results
                     if r.is_float_reference and r.size_bytes is not None}
    before = {r.key: r for r in (baseline.results if baseline else []) if r.ok}
    rows = []
    for result in run.results:
        base = baseline_size.get((result.target, result.file_format))
        size = result.size_bytes  # a variant that failed to build has no file
        rows.append(ReportRow(
            target=result.target,
            variant=result.variant + _accelerator_label(result),
            status=result.status.value,
            size=_size(size),
            size_ratio=f"{size / base:.2f}x" if base and size is not None else "",
            accuracy=_quality(result),
            p50=_ms(result.latency("p50")),
            p90=_ms(result.latency("p90")),
            p99=_ms(result.latency("p99")),
            peak_memory=_mib(result.peak_rss_bytes),
            energy=_mj(result.energy_per_inference_mj),
            runtime=result.runtime,
            verdict=_verdict(result),
            conditions="; ".join(result.verdict_conditions),
            condition_names=tuple(c.split(":", 1)[0] for c in result.verdict_conditions),
            output_check=_output_check(result),
            outputs_match=_outputs_match(result),
            note="; ".join(filter(None, [result.chosen or "", _conditions(result),
                                         _shared_machine(result), _first_gpu_run(result)])),
            delta=_delta(before.get(result.key), result),
        ))
    return rows


def _accelerator_label(result: ResultRecord) -> str:
    """`` (gpu: software Vulkan llvmpipe ..., CompiledModel)``: what ran, when it was not the
    CPU through the Interpreter (the report's footnote says so for unlabelled cells).

    A software Vulkan adapter is named as one, never as a GPU; a fallback and a model
    only partly accelerated are said."""
    facts = result.measured.get("accelerator")
    if not isinstance(facts, dict):
        return ""
    requested, used = facts.get("requested", "cpu"), facts.get("used", "cpu")
    api = "CompiledModel" if facts.get("api") == "compiled" else "Interpreter"
    if (requested, api) == ("cpu", "Interpreter"):
        return ""
    ran = requested
    if used == "software-vulkan":
        ran = f"{requested}: software Vulkan {facts.get('adapter', '')}, not a GPU"
    elif used == "gpu":
        ran = f"{requested}: {facts.get('adapter', 'GPU')}"
    elif facts.get("fallback"):
        ran = f"{requested}: fell back to the CPU"
    elif used == "delegate":
        ran = f"delegate {str(facts.get('delegate', '')).rsplit('/', 1)[-1]}"
    if facts.get("fully_accelerated") is False and requested not in ("cpu", "xnnpack-off"):
        ran += ", partly on the CPU" if facts.get("delegate_partitions") != 0 else \
            ", took no operator"
    return f" ({ran}, {api})"


def _first_gpu_run(result: ResultRecord) -> str:
    """The GPU's first run compiles its shaders (minutes on a software adapter): said apart
    from the steady-state latency the figures give."""
    facts = result.measured.get("accelerator")
    if not isinstance(facts, dict) or facts.get("used") not in ("gpu", "software-vulkan") \
            or not isinstance(facts.get("first_run_ms"), int | float):
        return ""
    return (f"first run {_ms(float(facts['first_run_ms']))} (compiles the GPU's shaders; "
            "not in the latency)")


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
    return _MARKDOWN.get_template("report.md.j2").render(
        run=run, baseline=baseline, by_target=_by_target(rows), boards=_boards(run),
        runtimes=sorted({r.runtime for r in rows if r.runtime}),
        has_energy=any(r.energy for r in rows), profiles=profile_sections(run),
        comparisons=profile_comparisons(run), reference=_reference_name(run))


def render_html(run: StoredRun, *, baseline: StoredRun | None = None) -> str:
    """The HTML report; escaping leaves a board's control characters in (an ESC is no
    markup), so they are shown as ``\\xNN``: the file may reach a terminal (stdout, cat)."""
    rows = report_rows(run, baseline)
    return printable_lines(_HTML.get_template("report.html.j2").render(
        run=run, baseline=baseline, rows=rows, boards=_boards(run), plots=report_plots(run),
        has_energy=any(r.energy for r in rows), has_notes=any(r.note for r in rows),
        runtimes=sorted({r.runtime for r in rows if r.runtime}), cross_board=_cross_board(run),
        profiles=profile_sections(run), comparisons=profile_comparisons(run),
        reference=_reference_name(run)))


def _reference_name(run: StoredRun) -> str:
    """What the size column compares with: fp32, or the file as the user gave it; with both
    runtimes, each file format's own (``fp32 / fp32-ort``)."""
    named: dict[str, str] = {}
    for r in run.results:
        if r.is_float_reference:
            named.setdefault(r.file_format, r.recipe)
    return " / ".join(named.values()) or "fp32"


def write_report(run: StoredRun, out_dir: Path) -> dict[str, Path]:
    paths = {"markdown": out_dir / "report.md", "html": out_dir / "report.html"}
    paths["markdown"].write_text(render_markdown(run), encoding="utf-8")
    paths["html"].write_text(render_html(run), encoding="utf-8")
    return paths


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
            _size_caption(_reference_name(run), {r.file_format for r in run.results})))
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


class CrossBoard(TypedDict):
    """The report's table across boards: the targets, and per variant its cell per target."""

    targets: list[str]
    rows: dict[str, dict[str, str]]


def _cross_board(run: StoredRun) -> CrossBoard | None:
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


def _verdict(result: ResultRecord) -> str:
    """What a reader must know before trusting the row's figures, in one cell.

    A variant that was not measured says where and why; a measured one gives the board's
    verdict with its reasons and the earlier attempts measured again.
    """
    if not result.ok:
        stage = f" ({result.stage.value})" if result.stage else ""
        return f"{result.status.value}{stage}" + (f": {result.error}" if result.error else "")
    parts = []
    if result.verdict is not None:
        reasons = "; ".join(result.verdict_reasons) if result.verdict != "VALID" else ""
        parts.append(result.verdict + (f": {reasons}" if reasons else ""))
        parts.extend(result.verdict_conditions)
    if str(result.measured.get("inputs", "")).startswith("synthetic"):
        parts.append("timed on synthetic inputs (the host sent no real one)")
    for number, why in enumerate(result.earlier_attempts, start=1):
        parts.append(f"measured again: attempt {number} was INVALID ({why})")
    return "; ".join(parts)


def _host_disagreement(result: ResultRecord) -> str:
    """Why the file does not compute what its source model computes, by the host's own
    check (``runtime_compat`` against the source, degenerate fidelity), or ""."""
    fidelity = result.artifact.get("fidelity")
    fidelity = fidelity if isinstance(fidelity, Mapping) else {}
    compat = result.artifact.get("runtime_compat")
    against_source = [c for c in compat if isinstance(c, Mapping) and (
        "cosine_with_source" in c or "top1_agreement_with_source" in c)] \
        if isinstance(compat, list) else []
    wrong = [c for c in against_source if c.get("ok") is False]
    if not wrong and not fidelity.get("degenerate"):
        return ""
    figures = []
    for check in wrong[:1]:
        cosine, top1 = check.get("cosine_with_source"), check.get("top1_agreement_with_source")
        if fidelity.get("agreement_metric") == "cosine" and isinstance(cosine, int | float):
            figures.append(f"cos {cosine:.4f}")
        elif isinstance(top1, int | float):
            figures.append(f"top-1 agreement {top1:.3f}")
    if fidelity.get("degenerate"):
        figures.append(str(fidelity["degenerate"]))
    return "; ".join(figures) or "outputs differ"


def _output_check(result: ResultRecord) -> str:
    """The board's outputs against the host's, with the rule that judged them: a pass
    mark says the deployed file computes what it should there, not only that it ran.

    Never a pass mark for a file the host found wrong against its source model (board
    and host computing the same zeros agree about garbage) or for degenerate outputs."""
    if not result.ok:
        return ""
    host = _host_disagreement(result)
    if host:
        return ("\u2717 disagrees with its source model on the host (" + host + "): the "
                "board matching the host's outputs proves nothing")
    check = result.measured.get("output_check")
    if not isinstance(check, Mapping):
        return ""
    if check.get("degenerate"):
        return f"\u2717 degenerate outputs on the board: {check['degenerate']}"
    if check.get("ok"):
        rule = check.get("rule")
        return "\u2713 outputs match on the board" + (f" ({rule})" if rule else "")
    summary = check.get("summary")
    return "\u2717 outputs differ from the host's on the board" + (
        f": {summary}" if summary else "")


def _outputs_match(result: ResultRecord) -> bool | None:
    if not result.ok:
        return None
    if _host_disagreement(result):
        return False
    check = result.measured.get("output_check")
    if not isinstance(check, Mapping):
        return None
    return bool(check.get("ok")) and not check.get("degenerate")


def _conditions(result: ResultRecord) -> str:
    """Throttling, the hottest zone after the runs, and why energy is missing if it is."""
    parts = []
    power = result.measured.get("power")
    if isinstance(power, Mapping) and power.get("error"):
        parts.append(f"energy not measured: {power['error']}")
    thermal = result.thermal
    if thermal:
        if thermal.get("throttled"):
            parts.append("throttled: " + ", ".join(str(t) for t in thermal["throttled"]))
        after = thermal.get("after")
        zones = after.get("zones_c") if isinstance(after, Mapping) else None
        temperatures = [t for t in zones.values() if isinstance(t, int | float)] \
            if isinstance(zones, Mapping) else []
        if temperatures:
            parts.append(f"hottest {max(temperatures):.1f} C after the runs")
    return "; ".join(parts)


@dataclass(frozen=True)
class BoardLine:
    """What the report says about one board: the protocol requires only its hostname,
    machine, system and Python, so every other fact reads "not reported" when absent."""

    cpu: str
    description: str


def _boards(run: StoredRun) -> dict[str, BoardLine]:
    lines = {}
    for r in run.results:
        if not r.board:
            continue
        facts = {key: str(value) for key, value in r.board.items()
                 if isinstance(value, str) and value}
        cpu = facts.get("cpu_model") or facts.get("machine") or "CPU not reported"
        system = " ".join(filter(None, [facts.get("system"), facts.get("release")]))
        lines[r.target] = BoardLine(cpu, ", ".join(filter(None, [
            cpu, system or "system not reported",
            f"Python {facts.get('python', 'not reported')}", facts.get("board_model"),
            # The governor the agent ran under (agents since the clock facts send it).
            f"governor {facts['cpu_governor']}" if "cpu_governor" in facts else ""])))
    return lines


def _quality(result: ResultRecord) -> str:
    """Accuracy with labels; without, the cosine similarity with the float model."""
    cosine = result.cosine_with_float
    fidelity = result.artifact.get("fidelity")
    if result.accuracy is None and isinstance(fidelity, Mapping) and fidelity.get("degenerate"):
        return "no signal (degenerate outputs)"  # never a cosine of two sets of zeros
    if result.accuracy is None and cosine is not None:
        return f"cos {cosine:.4f}"
    return _percent(result.accuracy)


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


def _ms(value: float | None) -> str:
    """A latency in the unit that fits it: a 15 us model is not ``0.015`` in every cell."""
    return "" if value is None else format_duration(value)


def _size(value: int | None) -> str:
    """KiB with one decimal, MiB from 1 MiB on: a 300 MB model is not 292968.8 KiB."""
    if value is None:
        return ""
    return f"{value / 2**20:.1f} MiB" if value >= 2**20 else f"{value / 1024:.1f} KiB"


def _mib(value: int | None) -> str:
    return "" if value is None else f"{value / 2**20:.1f} MiB"


def _mj(value: float | None) -> str:
    return "" if value is None else format_energy(value)
