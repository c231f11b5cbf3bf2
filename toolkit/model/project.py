"""What ``edge`` learns from the user's project: ``[tool.edge]`` settings and the git commit.

The nearest ``pyproject.toml`` (from the working folder upwards) may hold::

    [tool.edge]
    store = "lab/results.sqlite"      # relative to the pyproject.toml

    [tool.edge.check]
    latency_p50 = "5%"
    accuracy = "0.5"                  # points

Example::

    path = resolve_store_path(None, default=Path("edge-out/results.sqlite"))
    commit = git_commit(Path("examples/digits_cnn.py"))   # None outside a repository
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import UsageError

STORE_ENV = "EDGE_STORE"


@dataclass(frozen=True, kw_only=True)
class ProjectConfig:
    """The ``[tool.edge]`` table of a pyproject.toml (empty when there is none)."""

    path: Path | None = None
    settings: dict[str, object] | None = None

    def table(self, name: str) -> dict[str, object]:
        """A sub-table such as ``check``; ``{}`` when absent."""
        value = (self.settings or {}).get(name, {})
        if not isinstance(value, dict):
            raise UsageError(f"{self.path}: [tool.edge.{name}] must be a table")
        return value


def find_project_config(start: Path | None = None) -> ProjectConfig:
    """Read ``[tool.edge]`` from the nearest pyproject.toml at or above ``start``."""
    import tomllib  # here, not above: every help screen imports this module for STORE_ENV

    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        path = candidate / "pyproject.toml"
        if path.is_file():
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                raise UsageError(f"{path} is not valid TOML: {exc}") from None
            settings = data.get("tool", {}).get("edge")
            if settings is not None and not isinstance(settings, dict):
                raise UsageError(f"{path}: [tool.edge] must be a table")
            return ProjectConfig(path=path, settings=settings or {})
    return ProjectConfig()


def resolve_store_path(flag: str | Path | None, *, default: Path,
                       project: ProjectConfig | None = None) -> Path | str:
    """The store: ``--store``, else ``$EDGE_STORE``, else ``[tool.edge] store``, else default.

    A path, or a ``postgresql://...`` URL kept as a string (see :func:`store.store_location`).
    """
    from toolkit.results.store import store_location

    if flag:
        return store_location(flag)
    if os.environ.get(STORE_ENV):
        return store_location(os.environ[STORE_ENV])
    project = project if project is not None else find_project_config()
    configured = (project.settings or {}).get("store")
    if configured is not None:
        if not isinstance(configured, str) or not configured:
            raise UsageError(f"{project.path}: [tool.edge] store must be a path string")
        assert project.path is not None  # settings come only from a file
        location = store_location(configured)
        return location if isinstance(location, str) else \
            project.path.parent / location.expanduser()
    return default


def git_commit(path: Path) -> str | None:
    """The commit checked out where ``path`` lives, with ``+dirty`` if it has changes; else None."""
    folder = path.parent if path.is_file() or not path.exists() else path
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=False)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(folder), "status", "--porcelain",
                                 "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None  # no git on this machine: a run without a commit is still a run
    commit = head.stdout.strip()
    return commit + ("+dirty" if status.returncode == 0 and status.stdout.strip() else "")
