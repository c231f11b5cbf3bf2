"""Agent bootstrap on a board: what is missing is named, and setup installs it with pip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.boards.bootstrap import probe
from toolkit.boards.ssh import Connection
from toolkit.boards.targets import load_target
from toolkit.errors import BoardSetupError
from toolkit.run.runner import JobRunner

from .lab import Sshd


def test_a_board_without_numpy_names_the_setup_command(sshd: Sshd, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    sshd.write_target(tmp_path / "targets", "lab", tmp_path / "board",
                      python=str(bare / "bin" / "python"))
    target = load_target("lab", tmp_path / "targets")
    with Connection(target) as board:
        facts = probe(board)
    assert facts.version >= (3, 9) and facts.numpy is None and facts.runtimes == {}
    with pytest.raises(BoardSetupError, match=r"numpy is missing.*edge targets setup lab"):
        facts.require()
    with pytest.raises(BoardSetupError):
        JobRunner(target).run_job({"job_id": "j", "variants": [],
                                      "settings": {"variant_timeout_seconds": 1}}, {})


def test_the_hosts_python_has_what_the_agent_needs(sshd: Sshd, tmp_path: Path) -> None:
    sshd.write_target(tmp_path / "targets", "lab", tmp_path / "board")
    with Connection(load_target("lab", tmp_path / "targets")) as board:
        facts = probe(board)
    facts.require()
    assert facts.numpy and facts.runtimes
