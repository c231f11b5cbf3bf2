"""`edge --help` imports only click and light modules: what a command runs is imported inside it.

A structural test, not a timing one (timings are noisy on a shared machine; the figure is
``benchmarks/cli_startup.py``'s): in a fresh interpreter, each help screen is shown, and
none of the modules behind the commands may have been imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.cli.main import main

REPO = Path(__file__).resolve().parent.parent

#: Imported only when a command runs: each costs from tens of milliseconds (rich, jinja2,
#: sqlite3) to seconds (torch), and ``edge --help`` must start about as fast as click.
HEAVY = ("torch", "numpy", "paramiko", "ai_edge_litert", "tflite_runtime", "litert_torch",
         "ai_edge_quantizer", "torchao", "sqlalchemy", "jinja2", "rich", "sqlite3",
         "toolkit.compress._build", "toolkit.run.deploy", "toolkit.run.bench",
         "toolkit.run.runner", "toolkit.results.store", "toolkit.report.render",
         "toolkit.gate.check", "toolkit.boards.ssh", "toolkit.boards.targets",
         "ruptures", "scipy", "toolkit.results.trend", "toolkit.results.diff")

_SHOW_HELP = """
import json, sys
from toolkit.cli.main import main
try:
    main(sys.argv[1:], prog_name="edge")
except SystemExit as exc:
    assert exc.code == 0, exc.code
print(json.dumps(sorted(sys.modules)))
"""


def modules_after(*args: str) -> set[str]:
    """Every module imported by a fresh interpreter that showed ``edge ARGS``."""
    shown = subprocess.run([sys.executable, "-c", _SHOW_HELP, *args], cwd=REPO,
                           capture_output=True, text=True, check=True)
    assert "Usage: edge" in shown.stdout
    return set(json.loads(shown.stdout[shown.stdout.rindex("\n["):]))


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.partition(".")[0] in HEAVY or m in HEAVY)


def commands() -> list[list[str]]:
    """``[]`` (edge itself), every command, and every command of every group."""
    found: list[list[str]] = [[]]
    for name, command in sorted(main.commands.items()):
        found.append([name])
        for sub in sorted(getattr(command, "commands", {})):
            found.append([name, sub])
    return found


@pytest.mark.parametrize("words", commands(), ids=lambda words: " ".join(words) or "edge")
def test_help_imports_nothing_heavy(words: list[str]) -> None:
    assert heavy_in(modules_after(*words, "--help")) == []


def test_import_toolkit_is_light_and_its_public_names_still_load() -> None:
    probe = ("import json, sys, toolkit; before = sorted(sys.modules); "
             "toolkit.check_runs, toolkit.compress, toolkit.ResultsStore; "
             "print(json.dumps([before, sorted(sys.modules), callable(toolkit.compress), "
             "type(toolkit.compress).__name__]))")
    shown = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                           text=True, check=True)
    before, after, callable_compress, kind = json.loads(shown.stdout)
    assert heavy_in(set(before)) == []
    assert {"numpy", "toolkit.gate.check", "toolkit.results.store"} <= set(after)
    # toolkit.compress is the function, as with the eager imports, not the subpackage.
    assert callable_compress and kind == "function"
