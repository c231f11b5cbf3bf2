"""Agent bootstrap on a board: what is missing is named, and setup installs it with pip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.bootstrap import probe
from toolkit.cli import main
from toolkit.errors import BoardSetupError
from toolkit.runner import JobRunner
from toolkit.ssh import Connection
from toolkit.targets import load_target

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


@pytest.mark.slow
def test_setup_makes_a_venv_from_a_pushed_wheelhouse(sshd: Sshd, tmp_path: Path) -> None:
    sshd.write_target(tmp_path / "targets", "lab", tmp_path / "board")
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    # pip wheel of a local, dependency-free project: no index needed, a real wheel.
    project = tmp_path / "probe_pkg"
    (project / "edge_probe_pkg").mkdir(parents=True)
    (project / "edge_probe_pkg" / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "edge-probe-pkg"\nversion = "1.0"\n')
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheelhouse), str(project)], check=True)
    result = CliRunner().invoke(main, ["targets", "setup", "lab", "--targets-dir",
                                       str(tmp_path / "targets"), "--wheelhouse",
                                       str(wheelhouse), "--system-site-packages"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "venv/bin/python" in result.stdout and "numpy" in result.stdout
    assert (tmp_path / "board" / "venv" / "bin" / "python").exists()
    assert list((tmp_path / "board" / "wheelhouse").glob("edge_probe_pkg-1.0-*.whl"))
