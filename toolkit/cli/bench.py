"""``edge bench``: the models x variants x boards matrix, all boards at once.

Example: edge bench examples/digits_cnn.py --targets tag:rpi4,jetson-01 --recipe fp32,int8
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Unpack

import click

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
from toolkit.cli.table import CAVEAT
from toolkit.safe_text import printable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from toolkit.boards.targets import Target
    from toolkit.run.bench import BenchEvent, BenchOutcome


class _Progress:
    """Live board table on a terminal; one plain line per event otherwise (CI logs)."""

    def __init__(self, boards: list[str], console: Console) -> None:
        import threading

        from rich.live import Live

        self.console = console
        self.state = {board: ("queued", "") for board in boards}
        self._lock = threading.Lock()
        self.live = Live(self._table(), console=console, transient=False,
                         refresh_per_second=4) if console.is_terminal else None

    def __enter__(self) -> _Progress:
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.__exit__(None, None, None)

    def __call__(self, event: BenchEvent) -> None:
        with self._lock:
            what = f"{event.model}: {event.state}" if event.model else event.state
            self.state[event.target] = (what, event.detail)
            if self.live:
                self.live.update(self._table())
            else:
                detail = f" ({event.detail})" if event.detail else ""
                self.console.print(printable(f"{event.target}: {what}{detail}"), markup=False,
                                   highlight=False)

    def _table(self) -> Table:
        from rich.table import Table
        from rich.text import Text

        table = Table("board", "state", "detail", title="edge bench")
        for board, (what, detail) in self.state.items():
            table.add_row(*(Text(printable(text)) for text in (board, what, detail[:80])))
        return table


@click.command(name="bench")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@targets_option(required=True)
@lab_option
@targets_dir_option
@coordinator_option
@priority_option
@click.option("--recipe",
              help="Comma-separated recipes, as for edge deploy [default: fp32,int8; a "
                   ".tflite as given].")
@out_dir_option
@store_option
@runtime_option
@job_options
@busy_wait_option
@conversion_cache_option
@click.option("--health-check/--no-health-check", default=True, show_default=True,
              help="Run edge doctor's checks first and leave failing boards out.")
@click.option("--json", "as_json", is_flag=True, help="Print the matrix as one JSON document.")
def bench_command(models: tuple[Path, ...], targets: tuple[str, ...], lab_file: Path | None,
                  targets_dir: Path | None, coordinator: str | None, priority: int,
                  recipe: str | None, out_dir: Path, store_path: str | None,
                  runtimes: tuple[str, ...], busy_wait: float,
                  conversion_cache: Path, health_check: bool, as_json: bool,
                  **job: Unpack[JobOptions]) -> None:
    """Run every MODEL's recipes on every board at once; one stored run per model.

    Exit status 0 when every cell was measured, 3 when a board failed (its cells
    name the error class) or a variant failed to build or to run on a board (the
    cell shows why); everything measured is stored.

    A board entry tag:board=KIND (with --coordinator) is a board the labgrid
    coordinator allots per model: each job waits in its queue (priority, then age),
    runs on the place it gets, and gives the place back.

    Example: edge bench examples/digits_cnn.py --targets tag:rpi4 --recipe fp32,int8
    """
    from rich.console import Console

    from toolkit.boards.lab import load_lab
    from toolkit.run.bench import bench

    boards = load_lab(lab_file, targets_dir).select_jobs(targets, coordinator=coordinator,
                                                         priority=priority)
    console = Console(stderr=True)
    with _Progress([t.name for t in boards], console) as progress:
        outcome = bench(list(models), targets=boards, recipes=recipe, out_dir=out_dir,
                        store_path=store_path, settings=job_settings(job),
                        busy_wait_seconds=busy_wait, threads=job["threads"],
                        accelerators=job["accelerators"],
                        conversion_cache=conversion_cache.expanduser(), runtimes=runtimes,
                        health=_health_reason if health_check else None, on_event=progress)
    if as_json:
        click.echo(json.dumps(_as_json(outcome), indent=2))
    else:
        terminal = Console(file=sys.stdout)
        # In a pipe or a CI log, one row per line whatever its width: a wrapped cell splits
        # a failure's reason over lines that grep and the reader take apart.
        (terminal if terminal.is_terminal else Console(file=sys.stdout, width=1_000_000,
                                                       color_system=None)
         ).print(_summary(outcome))
        for run in outcome.runs:
            click.echo(f"stored {printable(run.model_name)} as run {run.run_id}: "
                       f"{printable(run.report_dir)}")
    incomplete = outcome.incomplete()
    if incomplete is not None:
        raise incomplete


def _health_reason(target: Target) -> str | None:
    """Why edge doctor would leave ``target`` out, or None when it is fit."""
    from toolkit.boards.doctor import diagnose

    return diagnose(target).reason or None


def _summary(outcome: BenchOutcome) -> Table:
    from rich.table import Table
    from rich.text import Text

    from toolkit.units import format_duration

    table = Table("model", "board", "variant", "p50", "status", title="edge bench summary")
    for cell in outcome.cells:
        p50 = format_duration(cell.p50_ms) if cell.p50_ms is not None else ""
        status = Text(printable(cell.shown_status))
        if cell.caveat:
            status.stylize(CAVEAT)
        table.add_row(*(Text(printable(text)) for text in (cell.model, cell.target, cell.variant,
                                                           p50)), status)
    return table


def _as_json(outcome: BenchOutcome) -> dict[str, object]:
    return {"complete": outcome.complete, "store": str(outcome.store_path),
            "runs": [run.run_id for run in outcome.runs], "left_out": outcome.left_out,
            "cells": [cell.__dict__ for cell in outcome.cells]}
