"""`edge doctor` and `edge lab status`: healthy, dead, unknown, held (boards in this process,
tests/fakeboard.py), and a real sshd whose login prints a banner."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.boards.board import SshBoard
from toolkit.boards.bootstrap import probe
from toolkit.boards.doctor import diagnose
from toolkit.boards.lab import board_status
from toolkit.boards.lease import board_lock
from toolkit.boards.targets import Target, load_target
from toolkit.cli.main import main
from toolkit.errors import HostKeyError

from .fakeboard import FakeBoard, fake_target, mount
from .lab import Sshd
from .models.segfaulting_runtime import VERSION, write_segfaulting_runtime


def board(sshd: Sshd, tmp_path: Path, **extra: object) -> Target:
    sshd.write_target(tmp_path / "targets", "lab", tmp_path / "board", **extra)
    return load_target("lab", tmp_path / "targets")


def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **extra: object) -> FakeBoard:
    """An SSH board ``lab``, in this process (tests/fakeboard.py), mounted."""
    found = FakeBoard(fake_target(tmp_path, "lab", **extra), tmp_path / "board")
    mount(monkeypatch, found)
    return found


def test_a_healthy_board_passes_every_check(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    health = diagnose(fake(tmp_path, monkeypatch).target)
    assert health.healthy, health.to_dict()
    names = [c.name for c in health.checks]
    assert names == ["reachable", "host key", "login", "python", "threads", "disk", "runtime",
                     "runtime loads a model", "thermal", "governor", "power sensor", "clock"]
    clock = next(c for c in health.checks if c.name == "clock").detail
    assert clock.startswith("offset ") and abs(float(clock.split()[1])) < 5


def test_a_dead_board_and_an_unknown_key_each_give_one_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = fake(tmp_path, monkeypatch)
    lab.script("", error=HostKeyError("lab's host key is not in known_hosts: run "
                                      "`edge targets trust lab`", target="lab"), times=1)
    unknown = diagnose(lab.target)
    assert not unknown.healthy and unknown.reason.startswith("host key: ")
    lab.drop()
    dead = diagnose(lab.target)
    assert not dead.healthy and dead.reason.startswith("reachable: ")
    assert "\n" not in dead.reason


def test_a_board_that_asks_for_a_missing_power_sensor_is_unhealthy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    health = diagnose(fake(tmp_path, monkeypatch, power_sensor="ina3221-hwmon").target)
    assert health.reason.startswith("power sensor: ")


def test_a_runtime_that_segfaults_on_load_makes_the_board_unhealthy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The board's Python sees the stand-in first: tflite-runtime that imports, then
    # crashes (SIGSEGV) on any model it loads.
    standin = write_segfaulting_runtime(tmp_path / "standin")
    python = tmp_path / "python-with-standin"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={standin} exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    health = diagnose(fake(tmp_path, monkeypatch, python=str(python),
                           runtime="tflite-runtime").target)
    assert not health.healthy and health.exit_code == 1
    assert health.reason == ("runtime loads a model: killed by signal SIGSEGV in "
                             f"tflite-runtime {VERSION}")
    assert next(c for c in health.checks if c.name == "runtime").ok  # it imports


def test_lab_status_shows_free_held_and_unreachable(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    lab = fake(tmp_path, monkeypatch)
    assert board_status(lab.target).state == "free"
    with board_lock(lab, seconds=60) as token:
        held = board_status(lab.target)
        assert (held.state, held.owner) == ("held", token)
        assert held.since is not None and held.until is not None and held.until > held.since
    assert board_status(lab.target).state == "free"
    lab.drop()
    gone = board_status(lab.target)
    assert gone.state == "unreachable" and gone.detail


def test_edge_doctor_exits_3_for_an_unreachable_board_as_deploy_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake(tmp_path, monkeypatch).drop()
    done = CliRunner().invoke(main, ["doctor", "--targets", "lab", "--targets-dir",
                                     str(tmp_path / "targets")])
    assert done.exit_code == 3, done.output  # ExitCode.INCOMPLETE: infrastructure, as deploy
    assert done.stderr.strip().splitlines() == [
        next(line for line in done.stderr.splitlines() if line.startswith("edge: lab is "
                                                                         "unhealthy: reachable: "))]


@pytest.mark.integration
def test_a_login_that_prints_a_banner_breaks_neither_lab_status_nor_the_probe(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """Every answer is read from a marked frame: a login that prints first (a
    ForceCommand wrapper here; a ``~/.bashrc`` on a real board) is ignored."""
    chatty = Sshd.create(tmp_path_factory.mktemp("chatty"), extra_config=(
        'ForceCommand echo "Welcome to the lab board {not: json}"; '
        'eval "$SSH_ORIGINAL_COMMAND"',))
    try:
        target = board(chatty, tmp_path)
        with SshBoard(target) as shell:
            assert shell.run("echo hi").stdout == b"hi\n"  # the banner is outside the frame
            facts = probe(shell)
        assert facts.numpy and facts.runtimes
        assert board_status(target).state == "free"
        with SshBoard(target) as holder, board_lock(holder, seconds=60) as token:
            held = board_status(target)
            assert (held.state, held.owner) == ("held", token)
        result = CliRunner().invoke(main, ["lab", "status", "--targets", "lab", "--targets-dir",
                                           str(tmp_path / "targets"), "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)[0]["state"] == "free"
    finally:
        chatty.kill()
