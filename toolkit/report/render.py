"""Stage 7: a stored run as a report people read: one offline HTML file, short Markdown, JSON.

The HTML report is a single file with its charts drawn inline as SVG
(:mod:`toolkit.report.svgplot`): latency distributions on a log axis (grouped per variant
across boards when the run spans several), accuracy against latency with size as
the marker area and the Pareto front, latency against threads for a ``--threads``
sweep, file size against fp32, and energy per inference; :mod:`toolkit.report.charts`
says which question each answers.  Every row carries a verdict: why it was not measured,
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

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import jinja2

from toolkit.defaults import FORMATS as FORMATS
from toolkit.errors import UsageError
from toolkit.report.charts import reference_name, report_plots
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
        comparisons=profile_comparisons(run), reference=reference_name(run))


def render_html(run: StoredRun, *, baseline: StoredRun | None = None) -> str:
    """The HTML report; escaping leaves a board's control characters in (an ESC is no
    markup), so they are shown as ``\\xNN``: the file may reach a terminal (stdout, cat)."""
    rows = report_rows(run, baseline)
    return printable_lines(_HTML.get_template("report.html.j2").render(
        run=run, baseline=baseline, rows=rows, boards=_boards(run), plots=report_plots(run),
        has_energy=any(r.energy for r in rows), has_notes=any(r.note for r in rows),
        runtimes=sorted({r.runtime for r in rows if r.runtime}), cross_board=_cross_board(run),
        profiles=profile_sections(run), comparisons=profile_comparisons(run),
        reference=reference_name(run)))


def write_report(run: StoredRun, out_dir: Path) -> dict[str, Path]:
    paths = {"markdown": out_dir / "report.md", "html": out_dir / "report.html"}
    paths["markdown"].write_text(render_markdown(run), encoding="utf-8")
    paths["html"].write_text(render_html(run), encoding="utf-8")
    return paths


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
