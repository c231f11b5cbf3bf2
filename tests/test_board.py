"""One board interface: the lease is the board's and atomic; commands die at their limit;
``--target local`` runs through the same lease, upload and probe code as SSH."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from toolkit.boards.board import LocalBoard, SshBoard, local_board_home
from toolkit.boards.doctor import diagnose
from toolkit.boards.lab import load_lab
from toolkit.boards.lease import board_lock, lease_dir
from toolkit.boards.targets import Target, load_target
from toolkit.errors import BoardBusyError, InfrastructureError
from toolkit.run import runner
from toolkit.run.bench import bench
from toolkit.run.deploy import deploy

from .fakeboard import FakeBoard, fake_target
from .lab import Sshd

FAST = {"warmup_runs": 1, "min_runs": 5, "min_seconds": 0.05, "cooldown_seconds": 0.0}


def local_target(tmp_path: Path, name: str = "here", **extra: object) -> Target:
    folder = tmp_path / "targets"
    folder.mkdir(exist_ok=True)
    lines = ['transport = "local"', *(f"{key} = {value!r}".replace("'", '"')
                                      for key, value in extra.items())]
    (folder / f"{name}.toml").write_text("\n".join(lines) + "\n")
    return load_target(name, folder)


def lease_folder(board: LocalBoard | SshBoard) -> Path:
    home = board.run("pwd").stdout.decode().strip()
    return Path(home) / lease_dir(board)


@pytest.mark.slow
def test_300_concurrent_takeovers_of_an_expired_lease_never_give_two_holders(
        tmp_path: Path) -> None:
    """Two hosts taking over one expired lease: exactly one wins, every time (was 21/300)."""
    target = local_target(tmp_path)
    owner = lease_folder(LocalBoard(target)) / "owner"
    owner.parent.mkdir(parents=True, exist_ok=True)
    double_holds = 0
    for _trial in range(300):
        owner.write_text(f"crashed\n{int(time.time()) - 5}\n{int(time.time()) - 65}\n")
        tried, done = threading.Barrier(2), threading.Barrier(2)
        held: list[str] = []

        def take_over(tried: threading.Barrier, done: threading.Barrier,
                      held: list[str]) -> None:
            board = LocalBoard(target)
            tried.wait()
            try:
                with board_lock(board, seconds=60) as token:
                    held.append(token)
                    done.wait()  # both attempts are over while we still hold it
                    return
            except BoardBusyError:
                pass
            done.wait()

        workers = [threading.Thread(target=take_over, args=(tried, done, held))
                   for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert held, "nobody took the expired lease over"
        double_holds += len(held) > 1
    assert double_holds == 0


def test_two_target_files_naming_one_board_share_its_lease(tmp_path: Path) -> None:
    """The lease is the board's, not a work folder's: another work_dir or runtime is no way in;
    another board (another identity) has a lease of its own."""
    one = fake_target(tmp_path, "one", work_dir=str(tmp_path / "work-one"))
    two = fake_target(tmp_path, "two", work_dir=str(tmp_path / "work-two"),
                      runtime="ai-edge-litert")
    first, second = FakeBoard(one, tmp_path / "board"), FakeBoard(two, tmp_path / "board")
    assert first.identity() == second.identity()
    with board_lock(first, seconds=60):
        with pytest.raises(BoardBusyError):
            with board_lock(second, seconds=60):
                pass
        with board_lock(FakeBoard(two, tmp_path / "board", identity="b-another"), seconds=60):
            pass
    here, there = local_target(tmp_path, "a", work_dir="wa"), local_target(tmp_path, "b",
                                                                           work_dir="wb")
    with board_lock(LocalBoard(here), seconds=60), pytest.raises(BoardBusyError):
        with board_lock(LocalBoard(there), seconds=60):
            pass


@pytest.mark.slow
def test_jobs_from_two_target_files_of_one_board_never_overlap(
        sshd: Sshd, tmp_path: Path, digits_fp32_tflite: Path) -> None:
    sshd.write_target(tmp_path / "targets", "pi-litert", tmp_path / "work-1")
    sshd.write_target(tmp_path / "targets", "pi-auto", tmp_path / "work-2", runtime="auto")
    targets = load_lab(None, tmp_path / "targets").select("pi-litert,pi-auto")
    with SshBoard(targets[0]) as board:
        lock_log = lease_folder(board) / "lock.log"
    before = lock_log.read_text() if lock_log.exists() else ""
    outcome = bench([digits_fp32_tflite, digits_fp32_tflite], targets=targets, recipes="fp32",
                    out_dir=tmp_path / "out", settings={**FAST, "min_seconds": 0.5})
    assert outcome.complete, [c for c in outcome.cells if c.status != "ok"]
    events = [line.split(" ", 2) for line in lock_log.read_text()[len(before):].splitlines()]
    assert len(events) == 8
    holder = None
    for _when, event, owner in sorted(events, key=lambda e: float(e[0])):
        if event in ("acquire", "takeover"):
            assert holder is None, f"{owner} acquired while {holder} held the board"
            holder = owner
        else:
            assert (event, owner) == ("release", holder)
            holder = None


@pytest.mark.parametrize("kind", ["local", pytest.param("ssh", marks=pytest.mark.integration)])
def test_a_timed_out_command_is_killed_on_the_board(kind: str, request: pytest.FixtureRequest,
                                                    tmp_path: Path) -> None:
    """Cut off at 1 s, ``sleep 4; touch M`` must not go on to create M (it used to)."""
    # The command then sleeps on for a minute: a run() that waited for it instead of returning
    # at its timeout would take over 64 s, which a bound of half that catches on any machine.
    if kind == "local":
        board: LocalBoard | SshBoard = LocalBoard(local_target(tmp_path))
    else:
        sshd: Sshd = request.getfixturevalue("sshd")
        sshd.write_target(tmp_path / "targets", "lab", tmp_path / "board")
        board = SshBoard(load_target("lab", tmp_path / "targets"))
    marker = tmp_path / "M"
    with board:
        started = time.monotonic()
        with pytest.raises(InfrastructureError, match="did not finish within 1 s"):
            board.run(f"sleep 4; touch {marker}; sleep 60", timeout=1)
        assert time.monotonic() - started < 32
        assert board.run("echo still usable").stdout == b"still usable\n"
    time.sleep(4.5)
    assert not marker.exists()


def test_the_local_target_runs_through_the_lease_the_uploads_and_the_probe(
        tiny_tflite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probed: list[str] = []
    real_probe = runner.probe

    def counting_probe(board: object) -> object:
        probed.append(type(board).__name__)
        return real_probe(board)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "probe", counting_probe)
    outcome = deploy(tiny_tflite, targets=["local"], recipes="fp32", out_dir=tmp_path / "out",
                     settings=FAST)
    assert [r.status for r in outcome.run.results] == ["ok"]
    # The check before any conversion, and the job's own before its lease: both LocalBoard's.
    assert probed == ["LocalBoard", "LocalBoard"]
    home = local_board_home()
    folder = lease_folder(LocalBoard(load_target("local")))
    log = (folder / "lock.log").read_text().splitlines()
    assert [line.split(" ", 2)[1] for line in log] == ["acquire", "release"]
    sha = outcome.run.results[0].sha256
    assert (home / ".edge" / "cache" / f"{sha}.tflite").read_bytes() == tiny_tflite.read_bytes()
    assert not list((home / ".edge" / "cache").glob("job-*.json"))  # removed after the run
    assert not list(folder.glob("job*.pid"))


def test_threads_beyond_the_boards_cores_are_warned_and_kept_beside_the_figures(
        tiny_tflite: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """On a 2-core board 4 threads took 52.6 ms where 1 took 6.0: say so, do not refuse."""
    cores = os.cpu_count() or 1
    local_target(tmp_path, "many", threads=cores + 1)
    health = diagnose(load_target("many", tmp_path / "targets"))
    assert health.healthy, health.to_dict()
    assert len(health.warnings) == 1 and f"with {cores} core" in health.warnings[0]
    with caplog.at_level(logging.WARNING, logger="toolkit.run.runner"):
        outcome = deploy(tiny_tflite, targets=["many"], recipes="fp32", out_dir=tmp_path / "out",
                         targets_dir=tmp_path / "targets", settings=FAST)
    warned = [r.getMessage() for r in caplog.records if "core" in r.getMessage()]
    assert len(warned) == 1 and f"{cores + 1} threads" in warned[0]
    record = outcome.run.results[0]
    assert (record.threads, (record.board or {})["cpu_count"]) == (cores + 1, cores)
