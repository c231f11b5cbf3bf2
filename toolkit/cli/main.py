"""The ``edge`` command: a thin layer that parses, calls the library, and renders.

Library errors become one line on stderr and the error's exit code; a user
mistake never shows a traceback.

Every command module imports at its top only click and light modules (errors,
defaults, the recipe grammar); what a command runs (torch, numpy, paramiko, the
store, rich) is imported inside the command, so ``edge --help`` and every ``edge
COMMAND --help`` start about as fast as ``import click``. ``tests/test_cli_startup.py``
holds them to it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Unpack

import click

from toolkit.cli.bench import bench_command
from toolkit.cli.check import check
from toolkit.cli.compress import compress
from toolkit.cli.lab import doctor, lab
from toolkit.cli.options import (
    JobOptions,
    busy_wait_option,
    conversion_cache_option,
    coordinator_option,
    job_options,
    job_settings,
    lab_option,
    out_dir_option,
    priority_option,
    runtime_option,
    store_option,
    targets_dir_option,
    targets_option,
)
from toolkit.cli.progress import LiveProgress, one_line_warnings
from toolkit.cli.report import report
from toolkit.cli.runs import runs
from toolkit.cli.table import CAVEAT, Styled, echo_table
from toolkit.cli.targets import targets
from toolkit.cli.trend import trend_command
from toolkit.defaults import BUDGET_CANDIDATES
from toolkit.errors import EdgeError, ExitCode
from toolkit.run.cancel import cancel_on_signals, exit_status, interrupted_by
from toolkit.safe_text import one_line, printable

if TYPE_CHECKING:
    from toolkit.report.render import ReportRow
    from toolkit.results.store import StoredRun


class _EdgeGroup(click.Group):
    """Maps every :class:`EdgeError` to one line and its exit code; warnings are one line too."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            # SIGTERM and a closed terminal clean up (boards, leases, staging) like Ctrl-C.
            with cancel_on_signals(), one_line_warnings():
                try:
                    outcome = super().invoke(ctx)
                except (KeyboardInterrupt, EdgeError) as exc:
                    # An error caused by the interrupt (a board command cut short) is the
                    # interrupt.  Read before the block ends: it forgets the signal.
                    if isinstance(exc, EdgeError) and interrupted_by() is None:
                        raise
                    status = exit_status(interrupted_by())
                else:
                    if interrupted_by() is None:
                        return outcome
                    # A library swallowed the interrupt and the command went on to its end.
                    status = exit_status(interrupted_by())
        except EdgeError as exc:
            click.echo(f"edge: error: {one_line(exc)}", err=True)
            ctx.exit(exc.exit_code)
        # Everything was cleaned up on the way here (jobs, leases, staging folders); the
        # shell's convention rather than click's "Aborted!" and exit 1: 130, or 143 for
        # SIGTERM, so a script can tell an interrupt from a failed stage.
        click.echo("edge: interrupted", err=True)
        ctx.exit(status)


@click.group(cls=_EdgeGroup)
@click.version_option(package_name="edge")
def main() -> None:
    """Compress PyTorch models, run them on boards, and report how they really behave."""


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@targets_option(default=("local",), show_default=True)
@click.option("--recipe",
              help="Comma-separated variants to build [default: fp32,int8; with "
                   "--max-accuracy-drop the candidates fp32 and "
                   f"{BUDGET_CANDIDATES}; a .tflite or .onnx is measured as given, and fp16, "
                   "int8-dynamic, int4-weight (.tflite) and (with --calibration) int8 "
                   "rewrite it].")
@click.option("--max-accuracy-drop", type=click.FloatRange(min=0), metavar="POINTS",
              help="Run only variants at most POINTS below fp32's accuracy and pick, per "
                   "board, the fastest VALID one as measured there (the smaller file when "
                   "the difference is within noise); names every candidate left out.")
@out_dir_option
@store_option
@targets_dir_option
@lab_option
@coordinator_option
@priority_option
@runtime_option
@job_options
@busy_wait_option
@conversion_cache_option
@click.option("--against", metavar="RUN",
              help="The regression gate for CI: after measuring, measure every variant side "
                   "by side with RUN's file of the same variant (a run id or tag in the "
                   "store, e.g. main), interleaved in one process on the board, and judge "
                   "latency against [tool.edge.check]'s limits (default 5 %). Exit 1 on a "
                   "regression, 3 when it cannot tell, else 0.")
@click.option("--calibration", type=click.Path(path_type=Path), metavar="DIR",
              help="For a .tflite or .onnx given: a folder of its inputs, one .npy (or .npz "
                   "for several inputs, in the model's order) per sample, shaped as the "
                   "model's inputs; int8 is calibrated on them, and every rewrite is "
                   "compared with the given file on them.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as one JSON document.")
@click.option("-q", "--quiet", is_flag=True,
              help="No live progress line on a terminal (stage, board, elapsed time); "
                   "warnings and errors still show. Outside a terminal there is none anyway.")
@click.pass_context
def deploy(ctx: click.Context, model: Path, targets: tuple[str, ...], recipe: str | None,
           max_accuracy_drop: float | None, out_dir: Path,
           store_path: str | None, targets_dir: Path | None, lab_file: Path | None,
           coordinator: str | None, priority: int, runtimes: tuple[str, ...],
           busy_wait: float, conversion_cache: Path, against: str | None,
           calibration: Path | None, as_json: bool, quiet: bool,
           **job: Unpack[JobOptions]) -> None:
    """Compress MODEL, run every variant on the target boards, store and report.

    MODEL is a Python model file (build_model(), example_input(), optionally
    calibration_data() and eval_data()) or a float .tflite or .onnx file, measured as
    given and, with --recipe fp16,int8-dynamic,int4-weight (.tflite), rewritten by those
    recipes (int8 too, calibrated on --calibration DIR).

    Exit status 0 when every variant was measured; 3 when one failed to build or to
    run (each is named on stderr; the measured ones are stored and reported).

    With --against RUN, the exit status is the gate's: 1 when a variant got slower
    beyond the limit (measured side by side with RUN's file on the board), 3 when it
    cannot tell (or a variant was not measured), else 0.

    Example: edge deploy examples/digits_cnn.py --target local
    Example: edge deploy model.py --target rpi4 --against main

    Example: edge deploy examples/digits_cnn.py --runtime tflite,onnxruntime
    """
    from toolkit.gate.thresholds import Thresholds
    from toolkit.model.project import find_project_config
    from toolkit.results.store import describe_store
    from toolkit.run import deploy as pipeline

    thresholds = None
    if against is not None:
        project = find_project_config()
        thresholds = Thresholds.from_mapping(project.table("check"),
                                             where=f"{project.path} [tool.edge.check]")

    recipes = recipe or ("fp32," + BUDGET_CANDIDATES if max_accuracy_drop is not None
                         else None)
    with LiveProgress(enabled=not quiet) as progress:
        outcome = pipeline.deploy(model, targets=targets, recipes=recipes, out_dir=out_dir,
                                  store_path=store_path, targets_dir=targets_dir,
                                  settings=job_settings(job), threads=job["threads"],
                                  accelerators=job["accelerators"],
                                  busy_wait_seconds=busy_wait,
                                  max_accuracy_drop=max_accuracy_drop,
                                  conversion_cache=conversion_cache.expanduser(),
                                  lab_file=lab_file, progress=progress,
                                  coordinator=coordinator, priority=priority,
                                  against=against, thresholds=thresholds,
                                  calibration=calibration, runtimes=runtimes)
    if as_json:
        click.echo(json.dumps({"run_id": outcome.run.run_id,
                               "report": {k: str(v) for k, v in outcome.report.items()},
                               "choices": [{"target": c.target, "variant": c.variant,
                                            "message": c.message,
                                            "left_out": [{"variant": v, "reason": why}
                                                         for v, why in c.left_out]}
                                           for c in outcome.choices],
                               "results": outcome.run.to_dict()["results"],
                               **({"paired": [p.to_dict() for p in outcome.paired]}
                                  if against is not None else {})}, indent=2))
    else:
        for choice in outcome.choices:
            click.echo("\n".join(printable(line) for line in choice.lines()))
        if outcome.report:  # none when the stored run's report could not be written
            echo_results(outcome.run)
            click.echo(f"report: {outcome.report['html']}")
            click.echo(f"        {outcome.report['markdown']}")
        click.echo(f"stored as run {outcome.run.run_id} in {describe_store(outcome.store_path)}")
        for paired in outcome.paired:
            click.echo(paired.to_markdown())  # board strings in it are escaped
    for line in outcome.failures:
        click.echo(one_line(line), err=True)
    incomplete = outcome.incomplete()
    if against is not None:
        codes = {p.exit_code for p in outcome.paired} or {ExitCode.INCOMPLETE}
        for paired in outcome.paired:
            if paired.exit_code != ExitCode.OK:
                click.echo(f"edge: check {one_line(paired.summary)}", err=True)
        if incomplete is not None:
            click.echo(f"edge: error: {one_line(str(incomplete))}", err=True)
            codes.add(ExitCode.INCOMPLETE)
        # A regression fails the gate whatever else happened; then "cannot tell".
        ctx.exit(next(code for code in (ExitCode.FAILED, ExitCode.INCOMPLETE, ExitCode.OK)
                      if code in codes))
    if incomplete is not None:
        raise incomplete


def echo_results(run: StoredRun) -> None:
    """The report's figures as a table, then a line per variant whose verdict or notes need
    words: boxed and fitted to a terminal (raw Markdown wrapped mid-word in 100 columns),
    plain aligned columns in a pipe.  The size ratio, p90 and the profile are in the report."""
    from toolkit.report.render import report_rows

    rows = report_rows(run)
    columns: list[tuple[str, Callable[[ReportRow], str | Styled]]] = [
        ("target", lambda r: r.target), ("variant", lambda r: r.variant)]
    if len({r.runtime for r in rows if r.runtime}) > 1:  # --runtime tflite,onnxruntime
        columns.append(("runtime", lambda r: r.runtime))
    columns += [
        ("size", lambda r: r.size), ("accuracy", lambda r: r.accuracy),
        ("p50", lambda r: r.p50), ("p99", lambda r: r.p99),
        ("peak memory", lambda r: r.peak_memory)]
    if any(r.energy for r in rows):
        columns.append(("energy", lambda r: r.energy))
    columns.append(("verdict", _verdict_cell))
    numeric = {name for name, _ in columns} - {"target", "variant", "runtime", "verdict"}
    echo_table([name for name, _ in columns], [[cell(r) for _, cell in columns] for r in rows],
               numeric=numeric)
    for r in rows:
        if r.verdict not in ("VALID", "") or r.outputs_match is False or r.note:
            click.echo(printable(f"{r.target} {r.variant}: "
                                 + "; ".join(filter(None, [r.judgement, r.note]))))


def _verdict_cell(row: ReportRow) -> str | Styled:
    """:func:`_short_verdict`, amber when a VALID row has a condition, as in the report."""
    shown = _short_verdict(row)
    return Styled(shown, CAVEAT) if row.trusted and row.conditions else shown


def _short_verdict(row: ReportRow) -> str:
    """``VALID ✓``: the verdict's first word, the names of the board's conditions
    (``VALID; stalls ✓``, drawn amber as the report draws it) and the output check's mark."""
    mark = "" if not row.output_check else " \u2713" if row.outputs_match else " \u2717"
    if row.trusted and row.condition_names:
        return "; ".join([row.verdict.split(";", 1)[0], *row.condition_names]) + mark
    return row.verdict.split(":", 1)[0] + mark


main.add_command(runs)
main.add_command(check)
main.add_command(report)
main.add_command(targets)
main.add_command(compress)
main.add_command(bench_command)
main.add_command(doctor)
main.add_command(lab)
main.add_command(trend_command)
