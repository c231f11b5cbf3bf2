"""A lab: many boards, each a board kind's target file plus its own address and tags.

A lab file (TOML) lists boards; each names the ``kind`` whose target file it
builds on (``targets/rpi4.toml`` or a user's own) and overrides what differs
per board (host, port, work_dir, ...).  ``tags`` group boards, so a command can
say ``--targets tag:rpi4`` instead of naming every Raspberry Pi on the shelf::

    # lab.toml
    [boards.pi-01]
    kind = "rpi4"
    host = "10.0.0.11"
    tags = ["rpi4", "shelf-a"]

The lab file is ``--lab FILE``, else ``$EDGE_LAB``, else ``lab.toml`` in the
current folder; without one, names are plain target files.

A lab whose boards are places on a labgrid coordinator names it once
(``coordinator = "lab-server:20408"`` at the top of the file); ``edge bench`` and
``edge deploy`` then take selectors such as ``tag:board=rpi4`` (a ``KEY=VALUE`` place
tag, where ``tag:rpi4`` is a tag of this file): see :mod:`toolkit.labgrid`.

Example::

    targets = load_lab(None).select("tag:rpi4,local")
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.boards.targets import (
    Target,
    check_name,
    load_target,
    read_target_file,
    target_file,
    target_from_mapping,
)
from toolkit.errors import TargetError

if TYPE_CHECKING:
    from toolkit.labgrid.selector import ScheduledTarget

LAB_ENV = "EDGE_LAB"
DEFAULT_LAB_FILE = Path("lab.toml")
TAG_PREFIX = "tag:"


@dataclass(frozen=True)
class Lab:
    """Boards by name (with their tags); ``path`` is None when there is no lab file."""

    boards: dict[str, Target] = field(default_factory=dict)
    tags: dict[str, tuple[str, ...]] = field(default_factory=dict)
    path: Path | None = None
    targets_dir: str | Path | None = None
    #: The labgrid coordinator (``HOST:PORT``) that selectors such as ``tag:board=rpi4`` ask.
    coordinator: str | None = None

    def select(self, spec: str | Iterable[str]) -> list[Target]:
        """``"pi-01,tag:jetson"`` -> those boards, in order, each once.

        A name that is not a lab board is looked up as a plain target file.
        """
        chosen: dict[str, Target] = {}
        for name in _names(spec):
            for target in self._resolve(name):
                chosen.setdefault(target.name, target)
        return list(chosen.values())

    def select_jobs(self, spec: str | Iterable[str], *, coordinator: str | None = None,
                    priority: int = 0) -> list[Target | ScheduledTarget]:
        """:meth:`select`, where a selector (``tag:board=rpi4``) is a board the labgrid
        coordinator chooses per job: ``coordinator`` (else this file's) and ``priority``."""
        from toolkit.labgrid.selector import ScheduledTarget, is_selector

        chosen: dict[str, Target | ScheduledTarget] = {}
        for name in _names(spec):
            if is_selector(name):
                chosen.setdefault(name, ScheduledTarget.resolve(
                    name, coordinator=coordinator or self.coordinator, priority=priority,
                    targets_dir=self.targets_dir))
                continue
            for target in self._resolve(name):
                chosen.setdefault(target.name, target)
        return list(chosen.values())

    def all(self) -> list[Target]:
        """Every board of the lab file, in file order."""
        return list(self.boards.values())

    def _resolve(self, name: str) -> list[Target]:
        if "=" in name and name.startswith(TAG_PREFIX):
            raise TargetError(f"{name} is a labgrid place selector: only edge bench, edge deploy "
                              "and edge doctor take it (with --coordinator)")
        if name.startswith(TAG_PREFIX):
            tag = name[len(TAG_PREFIX):]
            matched = [self.boards[board] for board, tags in self.tags.items() if tag in tags]
            if not matched:
                where = self.path or "no lab file (see --lab or $EDGE_LAB)"
                raise TargetError(f"no board tagged {tag!r} in {where}")
            return matched
        if name in self.boards:
            return [self.boards[name]]
        return [load_target(name, self.targets_dir)]


def _names(spec: str | Iterable[str]) -> list[str]:
    parts = [spec] if isinstance(spec, str) else list(spec)
    names = [name.strip() for part in parts for name in part.split(",") if name.strip()]
    if not names:
        raise TargetError("no target given; use for example --targets local")
    return names


def lab_path(explicit: str | Path | None = None) -> Path | None:
    """``--lab``, else ``$EDGE_LAB``, else ``./lab.toml`` if it exists."""
    if explicit:
        return Path(explicit)
    if os.environ.get(LAB_ENV):
        return Path(os.environ[LAB_ENV])
    return DEFAULT_LAB_FILE if DEFAULT_LAB_FILE.is_file() else None


def load_lab(path: str | Path | None = None,
             targets_dir: str | Path | None = None) -> Lab:
    """Read the lab file (see :func:`lab_path`); an empty lab when there is none."""
    chosen = lab_path(path)
    if chosen is None:
        return Lab(targets_dir=targets_dir)
    if not chosen.is_file():
        raise TargetError(f"lab file {chosen} does not exist")
    data = read_target_file("lab", chosen)
    unknown = sorted(set(data) - {"boards", "coordinator"})
    if unknown:
        raise TargetError(f"lab file {chosen}: unknown key {unknown[0]!r} (only coordinator "
                          "and [boards.NAME])")
    coordinator = data.get("coordinator")
    if coordinator is not None and (not isinstance(coordinator, str) or not coordinator.strip()):
        raise TargetError(f"lab file {chosen}: coordinator must be \"HOST:PORT\"")
    tables = data.get("boards") or {}
    if not isinstance(tables, dict):
        raise TargetError(f"lab file {chosen}: boards must be tables, [boards.NAME]")
    boards: dict[str, Target] = {}
    tags: dict[str, tuple[str, ...]] = {}
    for name, entry in tables.items():
        check_name(name, f"board name in {chosen}")
        if not isinstance(entry, dict):
            raise TargetError(f"lab file {chosen}: boards.{name} must be a table")
        boards[name], tags[name] = _board(name, dict(entry), chosen, targets_dir)
    return Lab(boards=boards, tags=tags, path=chosen, targets_dir=targets_dir,
               coordinator=coordinator)


def _board(name: str, entry: dict[str, object], lab: Path,
           targets_dir: str | Path | None) -> tuple[Target, tuple[str, ...]]:
    board_tags = entry.pop("tags", [])
    if not isinstance(board_tags, list) or not all(isinstance(t, str) for t in board_tags):
        raise TargetError(f"lab file {lab}: boards.{name}.tags must be a list of strings",
                          target=name)
    kind = entry.pop("kind", None)
    base: dict[str, object] = {}
    if kind is not None:
        if not isinstance(kind, str):
            raise TargetError(f"lab file {lab}: boards.{name}.kind must be a target name",
                              target=name)
        base = read_target_file(kind, target_file(kind, targets_dir))
    # A board is tagged with its kind too: tag:rpi4 finds every rpi4 without repeating it.
    all_tags = tuple(dict.fromkeys([*board_tags, *([kind] if kind else [])]))
    return target_from_mapping(name, {**base, **entry}, lab), all_tags


@dataclass(frozen=True)
class BoardStatus:
    """``free``, ``held`` (by ``owner`` since/until, board clock) or ``unreachable``."""

    target: str
    state: str
    owner: str = ""
    since: int | None = None
    until: int | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def board_status(target: Target) -> BoardStatus:
    """Who holds ``target``'s lease now; an expired lease counts as free (it can be taken)."""
    from toolkit.boards.board import open_board
    from toolkit.boards.lease import read_lease
    from toolkit.errors import EdgeError

    try:
        with open_board(target) as board:
            lease, _ = read_lease(board)
    except EdgeError as exc:
        return BoardStatus(target.name, "unreachable", detail=str(exc))
    if lease is None:
        return BoardStatus(target.name, "free")
    if lease.expired:
        return BoardStatus(target.name, "free", owner=lease.owner, since=lease.since,
                           until=lease.expires, detail="expired lease: the next job takes it")
    return BoardStatus(target.name, "held", owner=lease.owner, since=lease.since,
                       until=lease.expires)
