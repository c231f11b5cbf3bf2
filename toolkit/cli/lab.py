"""``edge doctor``, ``edge lab status`` and ``edge lab mark-good``: is each board fit, who
holds it now, and giving a labgrid place edge marked bad back to the lab.

Example: edge doctor --targets tag:rpi4 ; edge lab status ; edge lab mark-good pi-02
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import click

from toolkit.cli.options import (
    accelerator_option,
    coordinator_option,
    lab_option,
    targets_dir_option,
    targets_option,
)
from toolkit.errors import TargetError, UsageError
from toolkit.safe_text import one_line, printable

if TYPE_CHECKING:
    from rich.text import Text

    from toolkit.boards.doctor import BoardHealth
    from toolkit.boards.lab import BoardStatus
    from toolkit.boards.targets import Target

def _chosen(lab_file: Path | None, targets_dir: Path | None, targets: tuple[str, ...],
            every: bool) -> list[Target]:
    from toolkit.boards.lab import load_lab

    lab = load_lab(lab_file, targets_dir)
    if targets:
        return lab.select(targets)
    if every and lab.boards:
        return lab.all()
    raise TargetError("name the boards: --targets NAMES/tag:TAG, or --all with a lab file")


def _checks(lab_file: Path | None, targets_dir: Path | None, targets: tuple[str, ...],
            every: bool, coordinator: str | None,
            accelerators: list[str] | None) -> list[Callable[[], BoardHealth]]:
    """One check per board; a labgrid selector (tag:board=KIND) gives one per place."""
    from toolkit.boards.doctor import diagnose, diagnose_place
    from toolkit.boards.lab import load_lab
    from toolkit.labgrid.health import place_health
    from toolkit.labgrid.selector import ScheduledTarget, is_selector

    specs = [name.strip() for spec in targets for name in spec.split(",") if name.strip()]
    selectors = [spec for spec in specs if is_selector(spec)]
    names = tuple(spec for spec in specs if not is_selector(spec))
    checks: list[Callable[[], BoardHealth]] = []
    if names or not selectors:
        checks += [partial(diagnose, board, accelerators)
                   for board in _chosen(lab_file, targets_dir, names, every)]
    lab = load_lab(lab_file, targets_dir)
    for spec in dict.fromkeys(selectors):
        slot = ScheduledTarget.resolve(spec, coordinator=coordinator or lab.coordinator,
                                       targets_dir=targets_dir)
        checks += [partial(diagnose_place, place, accelerators)
                   for place in place_health(slot)]
    return checks


@click.command()
@targets_option()
@click.option("--all", "every", is_flag=True, help="Every board of the lab file.")
@lab_option
@targets_dir_option
@coordinator_option
@accelerator_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def doctor(targets: tuple[str, ...], every: bool, lab_file: Path | None, targets_dir: Path | None,
           coordinator: str | None, accelerators: list[str] | None, as_json: bool) -> None:
    """Check each board: reachable, host key, Python/numpy/runtime, disk, heat, power, clock.

    A labgrid selector (tag:board=KIND) checks every place with that tag: first whether
    edge marked it bad (a board that stopped answering; edge lab mark-good PLACE clears
    it), then its board.  Exit status when a board is unhealthy: 3 when one is unreachable
    (as edge deploy), 2 for a host key, login or Python to fix, else 1.
    Example: edge doctor --all ; edge doctor --targets tag:board=rpi4 --coordinator lab:20408
    """
    from concurrent.futures import ThreadPoolExecutor

    from rich.console import Console
    from rich.table import Table

    checks = _checks(lab_file, targets_dir, targets, every, coordinator, accelerators)
    with ThreadPoolExecutor(max_workers=min(16, len(checks))) as pool:
        found: list[BoardHealth] = list(pool.map(lambda check: check(), checks))
    if as_json:
        click.echo(json.dumps([h.to_dict() for h in found], indent=2))
    else:
        table = Table("board", "check", "ok", "detail", title="edge doctor")
        for health in found:
            for check in health.checks:
                table.add_row(*_cells(health.target, check.name, "NO" if not check.ok else
                                      "warn" if check.warning else "yes", check.detail))
        Console(file=sys.stdout).print(table)
    for health in found:
        for warning in health.warnings:
            click.echo(f"edge: warning: {one_line(warning)}", err=True)
    sick = [h for h in found if not h.healthy]
    for health in sick:
        click.echo(f"edge: {one_line(health.target)} is unhealthy: {one_line(health.reason)}",
                   err=True)
    if sick:
        sys.exit(max(health.exit_code for health in sick))


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

    from toolkit.boards.lab import board_status

    boards = _chosen(lab_file, targets_dir, targets, every=True)
    with ThreadPoolExecutor(max_workers=min(16, len(boards))) as pool:
        found: list[BoardStatus] = list(pool.map(board_status, boards))
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in found], indent=2))
        return
    table = Table("board", "state", "held by", "since", "until", "detail", title="edge lab")
    for board in found:
        table.add_row(*_cells(board.target, board.state, board.owner, _clock(board.since),
                              _clock(board.until), board.detail))
    Console(file=sys.stdout).print(table)


@lab.command("mark-good")
@click.argument("place")
@lab_option
@coordinator_option
def mark_good(place: str, lab_file: Path | None, coordinator: str | None) -> None:
    """Give a labgrid place edge marked bad back to the lab, once its board is fixed.

    Removes the place tag edge_health=bad and edge's reason from the place comment, and
    frees the lock edge kept on the place so that no job got it.  Check the board first:
    edge doctor --targets tag:board=KIND.  Example: edge lab mark-good pi-02
    """
    from toolkit.boards.lab import load_lab
    from toolkit.labgrid.health import mark_good as clear

    address = coordinator or load_lab(lab_file).coordinator
    if not address:
        raise UsageError("give --coordinator HOST:PORT (or coordinator = \"HOST:PORT\" in "
                         "lab.toml)")
    click.echo(clear(address, place))


def _cells(*texts: str) -> list[Text]:
    """Table cells of text a board or a lab file gave: not rich markup ("[main]" stays
    itself), and control characters shown escaped."""
    from rich.text import Text

    return [Text(printable(text)) for text in texts]


def _clock(epoch: int | None) -> str:
    import datetime as dt

    if epoch is None:
        return ""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
