"""Boards, one TOML file per board kind, loaded into a :class:`Target`.

Built-in files live in the repository's ``targets/`` folder (shipped inside
the wheel); a user's own folder (``--targets-dir`` or ``EDGE_TARGETS_DIR``)
is searched first, so a lab can keep its boards beside its models.

Example::

    target = load_target("local")
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import TargetError

TRANSPORTS = ("local",)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True, kw_only=True)
class Target:
    """Where and how the agent runs."""

    name: str
    transport: str
    description: str = ""
    threads: int = 1
    source: Path | None = None

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise TargetError(f"target {self.name}: transport {self.transport!r} is not "
                              f"supported; use one of {', '.join(TRANSPORTS)}", target=self.name)
        if not isinstance(self.threads, int) or self.threads < 0:
            raise TargetError(f"target {self.name}: threads must be a whole number >= 0",
                              target=self.name)


def builtin_targets_dir() -> Path:
    """``toolkit/targets`` inside a wheel, ``<repo>/targets`` in a source checkout."""
    packaged = Path(__file__).parent / "targets"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "targets"


def search_dirs(user_dir: str | Path | None = None) -> list[Path]:
    dirs = []
    chosen = user_dir or os.environ.get("EDGE_TARGETS_DIR")
    if chosen:
        dirs.append(Path(chosen).expanduser())
    dirs.append(builtin_targets_dir())
    return dirs


def available_targets(user_dir: str | Path | None = None) -> list[str]:
    names: set[str] = set()
    for folder in search_dirs(user_dir):
        names.update(path.stem for path in folder.glob("*.toml"))
    return sorted(names)


def load_target(name: str, user_dir: str | Path | None = None) -> Target:
    """Find ``<name>.toml`` in the search folders and load it."""
    if not _SAFE_NAME.match(name):
        raise TargetError(f"target name {name!r} must be a plain name like rpi4", target=name)
    for folder in search_dirs(user_dir):
        path = folder / f"{name}.toml"
        if path.is_file():
            return _parse(name, path)
    known = ", ".join(available_targets(user_dir)) or "none"
    raise TargetError(f"unknown target {name!r}; known targets: {known}", target=name)


def _parse(name: str, path: Path) -> Target:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TargetError(f"target file {path} is not valid TOML: {exc}", target=name) from None
    fields = {"transport", "description", "threads"}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise TargetError(f"target file {path}: unknown key {unknown[0]!r}", target=name)
    if "transport" not in data:
        raise TargetError(f"target file {path} needs a transport key", target=name)
    return Target(name=name, source=path, **data)
