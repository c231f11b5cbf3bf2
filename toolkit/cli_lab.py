"""``edge doctor`` and ``edge lab status``: is each board fit, and who holds it now.

Example: edge doctor --targets tag:rpi4 ; edge lab status
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .cli_options import accelerator_option, lab_option, targets_dir_option, targets_option
from .errors import ExitCode, TargetError

if TYPE_CHECKING:
    from .doctor import BoardHealth
    from .lab import BoardStatus
    from .targets import Target

def _chosen(lab_file: Path | None, targets_dir: Path | None, targets: tuple[str, ...],
            every: bool) -> list[Target]:
    from .lab import load_lab

    lab = load_lab(lab_file, targets_dir)
    if targets:
        return lab.select(targets)
    if every and lab.boards:
        return lab.all()
    raise TargetError("name the boards: --targets NAMES/tag:TAG, or --all with a lab file")


@click.command()
@targets_option()
@click.option("--all", "every", is_flag=True, help="Every board of the lab file.")
@lab_option
@targets_dir_option
@accelerator_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def doctor(targets: tuple[str, ...], every: bool, lab_file: Path | None, targets_dir: Path | None,
           accelerators: list[str] | None, as_json: bool) -> None:
    """Check each board: reachable, host key, Python/numpy/runtime, disk, heat, power, clock.

    Exit status 1 when any board is unhealthy.  Example: edge doctor --all
    """
    from concurrent.futures import ThreadPoolExecutor

    from rich.console import Console
    from rich.table import Table

    from .doctor import diagnose

    boards = _chosen(lab_file, targets_dir, targets, every)
    with ThreadPoolExecutor(max_workers=min(16, len(boards))) as pool:
        found: list[BoardHealth] = list(pool.map(
            lambda board: diagnose(board, accelerators), boards))
    if as_json:
        click.echo(json.dumps([h.to_dict() for h in found], indent=2))
    else:
        table = Table("board", "check", "ok", "detail", title="edge doctor")
        for health in found:
            for check in health.checks:
                table.add_row(health.target, check.name,
                              "NO" if not check.ok else "warn" if check.warning else "yes",
                              check.detail)
        Console(file=sys.stdout).print(table)
    for health in found:
        for warning in health.warnings:
            click.echo(f"edge: warning: {warning}", err=True)
    sick = [h for h in found if not h.healthy]
    for health in sick:
        click.echo(f"edge: {health.target} is unhealthy: {health.reason}", err=True)
    if sick:
        sys.exit(ExitCode.FAILED)


@click.group()
def lab() -> None:
    """The boards of a lab file: who holds which, and which are reachable."""


@lab.command()
@targets_option()
@lab_option
@targets_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def status(targets: tuple[str, ...], lab_file: Path | None, targets_dir: Path | None,
           as_json: bool) -> None:
    """Each board: free, held (by whom, since and until when) or unreachable (why).

    Example: edge lab status --targets tag:jetson
    """
    from concurrent.futures import ThreadPoolExecutor

    from rich.console import Console
    from rich.table import Table

    from .lab import board_status

    boards = _chosen(lab_file, targets_dir, targets, every=True)
    with ThreadPoolExecutor(max_workers=min(16, len(boards))) as pool:
        found: list[BoardStatus] = list(pool.map(board_status, boards))
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in found], indent=2))
        return
    table = Table("board", "state", "held by", "since", "until", "detail", title="edge lab")
    for board in found:
        table.add_row(board.target, board.state, board.owner, _clock(board.since),
                      _clock(board.until), board.detail)
    Console(file=sys.stdout).print(table)


def _clock(epoch: int | None) -> str:
    import datetime as dt

    if epoch is None:
        return ""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
