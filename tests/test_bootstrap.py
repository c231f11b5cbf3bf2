"""Agent bootstrap on a board: what is missing is named, and setup installs it with pip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.boards.bootstrap import probe
from toolkit.errors import BoardSetupError
from toolkit.run.runner import JobRunner

from .fakeboard import FakeBoard, fake_target, mount


def test_a_board_without_numpy_names_the_setup_command(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    board = FakeBoard(fake_target(tmp_path, "lab", python=str(bare / "bin" / "python")),
                      tmp_path / "board")
    facts = probe(board)
    assert facts.version >= (3, 9) and facts.numpy is None and facts.runtimes == {}
    with pytest.raises(BoardSetupError, match=r"numpy is missing.*edge targets setup lab"):
        facts.require()
    mount(monkeypatch, board)
    with pytest.raises(BoardSetupError):
        JobRunner(board.target).run_job({"job_id": "j", "variants": [],
                                         "settings": {"variant_timeout_seconds": 1}}, {})
    assert board.puts == []  # refused before the lease and any upload


def test_the_hosts_python_has_what_the_agent_needs(tmp_path: Path) -> None:
    facts = probe(FakeBoard(fake_target(tmp_path, "lab"), tmp_path / "board"))
    facts.require()
    assert facts.numpy and facts.runtimes
