"""``edge check``: judge RUN against the baseline, or against its own stored history
(``--history``); the exit code says what it comes to.

Exit codes (:class:`toolkit.errors.ExitCode`): 0 no regression, 1 a regression, 2 a usage
error, 3 the store could not be reached or read, or the check is inconclusive.

Example: edge check --baseline edge-baseline.json --junit check.xml --markdown check.md
Example: edge check --history latest
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from toolkit.cli.options import store_option, targets_dir_option, targets_option
from toolkit.cli.runs import write_output
from toolkit.defaults import DEFAULT_OUT_DIR, THRESHOLD_HELP
from toolkit.errors import ExitCode, UsageError
from toolkit.model.project import find_project_config, resolve_store_path
from toolkit.safe_text import one_line

if TYPE_CHECKING:
    from toolkit.gate.check import CheckOutcome, Thresholds
    from toolkit.gate.history import HistoryOutcome
    from toolkit.gate.paired import PairedOutcome
    from toolkit.results.store import StoredRun

_THRESHOLD_LINES = "; ".join(f"{name}: {what}" for name, what in THRESHOLD_HELP.items())


@click.command(epilog="\b\nExit codes:\n"
                      "  0  no regression, every metric judged\n"
                      "  1  a regression (whatever else was found)\n"
                      "  2  usage error: a bad option, baseline, run or threshold, no store\n"
                      "     file at that path; runs that cannot be compared (different models\n"
                      "     or boards)\n"
                      "  3  the store cannot be reached or read (unreachable, corrupt), or\n"
                      "     the check is inconclusive: nothing regressed, but a measurement\n"
                      "     was INVALID, failed or missing, a latency or energy interval\n"
                      "     reaches across its limit, or energy was measured against one\n"
                      "     baseline run (spread unknown; what to do is printed); with\n"
                      "     --history, a series of fewer than 6 runs")
@click.option("--baseline", "baseline_refs", multiple=True,
              help="A run id, a tag, or a baseline JSON file written by edge runs export. "
                   "Repeat it for several runs of the baseline: their spread widens the "
                   "latency intervals, and a regression or improvement must show against "
                   "each, so the spread between runs is not blamed on the code. Required "
                   "unless --history.")
@click.option("--history", is_flag=True,
              help="Judge RUN against its own stored runs instead of a baseline: for each "
                   "target x variant and metric, the series of the model's runs up to RUN "
                   "(edge trend's change points). A change point whose new level starts "
                   "among the newest 10 runs and moves past the limit is a regression (the "
                   "better way: improved). PELT needs 3 runs at a new level to see a step, "
                   "so a step is flagged from the 3rd to the 10th run after it, not "
                   "before; fewer than 6 runs stored is inconclusive (exit 3).")
@click.argument("run", default="latest")
@store_option
@click.option("--threshold", "overrides", multiple=True, metavar="NAME=VALUE",
              help=f"Override a limit, e.g. latency_p50=3%. Defaults: latency_p50 5, "
                   f"latency_p99 10, peak_memory 5, size 1, accuracy 0.5, energy 5 "
                   f"({_THRESHOLD_LINES}); also confidence=0.95, resamples=2000. "
                   "[tool.edge.check] in pyproject.toml sets them for a project.")
@click.option("--junit", type=click.Path(path_type=Path, dir_okay=False),
              help="Write JUnit XML here.")
@click.option("--markdown", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the Markdown summary here (for a pull-request comment).")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.option("--paired", is_flag=True,
              help="Measure the baseline's and RUN's files again, side by side on the board "
                   "(interleaved in one process, with the baseline against itself as a "
                   "control), and judge latency on that: decisive where two stored runs "
                   "differ by the machine's drift. Needs one --baseline whose files are "
                   "still in its run folder.")
@targets_option()
@targets_dir_option
@click.pass_context
def check(ctx: click.Context, baseline_refs: tuple[str, ...], history: bool, run: str,
          store_path: str | None, overrides: tuple[str, ...], junit: Path | None,
          markdown: Path | None, as_json: bool, paired: bool, targets: tuple[str, ...],
          targets_dir: Path | None) -> None:
    """Judge RUN (a run id, a tag, default latest) against the baseline, metric by metric.

    Latency is judged on the raw samples (bootstrap interval of the ratio of
    medians and of p99s, widened by the spread between runs of the baseline's
    files on the board: the --baseline runs and earlier runs in the store):
    wholly past the limit is a regression, wholly below it a pass, across it
    inconclusive; with a single run of the baseline's file the spread is unknown
    and a change past the limit is inconclusive. A latency that was INVALID on the
    board on either side cannot prove anything: inconclusive too, and the check
    says what to do. Energy per inference is judged on its spread between the
    --baseline runs: with one, it is inconclusive (spread unknown). A difference
    in how the runs were measured (runtime, threads, accelerator, board, clocks)
    is noted beside the verdicts it can move.

    With --paired, both runs' files are measured again side by side on the board
    and latency is judged on the ratio of interleaved blocks (see --paired).

    With --history, RUN is judged against the model's earlier stored runs, no
    baseline needed (see --history).

    \b
    Example: edge check --baseline main latest --junit check.xml
    Example: edge check --baseline main latest --paired
    Example: edge check --history latest
    """
    from toolkit.gate.check import Thresholds, check_runs, load_baseline
    from toolkit.results.store import ResultsStore

    project = find_project_config()
    thresholds = Thresholds.from_mapping(project.table("check"),
                                         where=f"{project.path} [tool.edge.check]")
    thresholds = Thresholds.from_mapping(dict(_split(o) for o in overrides), base=thresholds,
                                         where="--threshold")
    path = resolve_store_path(store_path, default=DEFAULT_OUT_DIR / "results.sqlite",
                              project=project)
    names = [name.strip() for spec in targets for name in spec.split(",") if name.strip()]
    if history and (baseline_refs or paired):
        raise UsageError("--history judges RUN against its own stored runs: leave out "
                         + ("--baseline" if baseline_refs else "--paired"))
    if not history and not baseline_refs:
        raise UsageError("give --baseline BASE (a run id, a tag or an exported file), or "
                         "--history to judge RUN against its own stored runs")
    if names and not paired:
        raise UsageError("--target chooses the board --paired measures on; add --paired")
    if len(names) > 1:
        raise UsageError("--paired measures on one board at a time; give one --target")
    target_name = names[0] if names else None
    if paired and len(baseline_refs) != 1:
        raise UsageError("--paired measures against one --baseline run; give exactly one")
    with ResultsStore(path, create=False) as store:
        baselines = [load_baseline(ref, store) for ref in baseline_refs]
        judged = store.get_run(run)
        outcome: CheckOutcome | PairedOutcome | HistoryOutcome
        if history:
            from toolkit.gate.history import check_history

            outcome = check_history(store, judged, thresholds)
        elif paired:
            outcome = _paired(baselines[0], judged, thresholds, target_name, targets_dir)
        else:
            outcome = check_runs(baselines, judged, thresholds,
                                 history=store.latency_history(judged.model_name,
                                                               until=judged.created_at))
    if junit:
        write_output(junit, outcome.to_junit())
    if markdown:
        write_output(markdown, outcome.to_markdown())
    click.echo(json.dumps(outcome.to_dict(), indent=1) if as_json else outcome.to_markdown())
    if outcome.exit_code == ExitCode.INCOMPLETE:
        click.echo(f"edge: check {one_line(outcome.summary)}", err=True)
    ctx.exit(outcome.exit_code)


def _paired(baseline: StoredRun, run: StoredRun, thresholds: Thresholds,
            target_name: str | None, targets_dir: Path | None) -> PairedOutcome:
    from toolkit.boards.targets import load_target
    from toolkit.gate.paired import check_paired, pair_records

    if baseline.model_name != run.model_name:
        raise UsageError(f"baseline {baseline.run_id} is model {baseline.model_name!r}, run "
                         f"{run.run_id} is {run.model_name!r}: not the same model")
    name, specs = pair_records(baseline, run, target=target_name)
    return check_paired(load_target(name, targets_dir), specs, thresholds,
                        baseline=baseline.run_id, candidate=run.run_id)


def _split(override: str) -> tuple[str, str]:
    name, sep, value = override.partition("=")
    if not sep or not name.strip():
        raise UsageError(f"--threshold {override!r} must look like NAME=VALUE, e.g. "
                         "latency_p50=3%")
    return name.strip(), value
