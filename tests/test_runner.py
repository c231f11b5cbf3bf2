"""The job runner: a job never outlives its lease, and a bad board is known before compression.

Ctrl-C, SIGTERM, a closed terminal (SIGHUP) and the deadline each stop the agent's whole
process group on the board before the lease is released; a host that died is cleaned up
after by the next job's acquire.  Every board fault is reported before anything is
converted or uploaded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from toolkit.boards.board import LocalBoard, SshBoard, local_board_home
from toolkit.boards.lab import board_status
from toolkit.boards.lease import board_lock, lease_dir
from toolkit.boards.targets import Target, load_target
from toolkit.errors import AgentError, BoardSetupError, HostKeyError, InfrastructureError
from toolkit.model.load import load_model_source
from toolkit.run import deploy as pipeline
from toolkit.run import runner
from toolkit.run.cancel import allow_jobs, cancel_running_jobs
from toolkit.run.runner import JobRunner, job_budget_seconds

from .fakeboard import FakeBoard, fake_target, mount
from .lab import Sshd
from .test_ssh_netns import job_for

REPO = Path(__file__).resolve().parent.parent
DIGITS_MODEL = REPO / "examples" / "digits_cnn.py"


def processes_in(folder: Path) -> list[int]:
    """Live (not zombie) processes whose working folder is ``folder`` or inside it."""
    found = []
    prefix = str(folder.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and (cwd == prefix or cwd.startswith(prefix + "/")):
            found.append(int(entry.name))
    return found


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


class Watcher:
    """Polls ``folder``'s processes; ``last_seen`` is the last time (epoch) one was alive."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.last_seen, self.first_seen = folder, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            now = time.time()
            if processes_in(self.folder):
                self.first_seen = self.first_seen or now
                self.last_seen = now

    def wait_running(self, limit: float = 120) -> None:
        deadline = time.monotonic() + limit
        while not self.first_seen:
            assert time.monotonic() < deadline, "the agent never started"
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def releases(lock_log: Path) -> list[float]:
    return [float(line.split(" ", 2)[0]) for line in lock_log.read_text().splitlines()
            if line.split(" ", 2)[1] == "release"]


def test_the_host_budget_counts_cooldown_waits() -> None:
    job, _ = job_for(REPO / "README.md", "b", seconds=1)
    plain = job_budget_seconds(job)
    cooling = {**job, "settings": {**job["settings"], "cooldown_to_c": 60.0,
                                   "cooldown_max_seconds": 200.0}}
    assert job_budget_seconds(cooling) >= plain + 200.0


def test_a_job_past_its_deadline_is_killed_before_its_lease_is_released(
        tiny_tflite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "job_budget_seconds", lambda job: 4.0)
    job, files = job_for(tiny_tflite, "late", seconds=25)
    job["settings"]["max_runs"] = 1_000_000_000  # a run of this model takes microseconds
    home = local_board_home()
    watcher = Watcher(home / ".edge")
    with pytest.raises(AgentError, match="did not finish within 4 s"):
        JobRunner(load_target("local")).run_job(job, files)
    time.sleep(2)
    assert processes_in(home / ".edge") == []
    watcher.stop()
    assert watcher.first_seen, "the agent never ran"
    lock_log = board_home_and_lease(LocalBoard(load_target("local")))[1] / "lock.log"
    assert releases(lock_log) and releases(lock_log)[-1] >= watcher.last_seen


def ssh_target(sshd: Sshd, tmp_path: Path, **extra: object) -> Target:
    sshd.write_target(tmp_path / "targets", "lab", tmp_path / "board", **extra)
    return load_target("lab", tmp_path / "targets")


def board_home_and_lease(board: LocalBoard | SshBoard) -> tuple[Path, Path]:
    home = Path(board.run("pwd").stdout.decode().strip())
    return home, home / lease_dir(board)


#: Run Python with SIGINT's default disposition whatever this process inherited: a suite
#: started with ``pytest &`` by a non-interactive shell ignores SIGINT, its children inherit
#: that, and Python leaves an ignored SIGINT ignored (as edge must: ``edge deploy &`` asks
#: for it), so Ctrl-C would never reach the deploy under test.
WITH_DEFAULT_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                       "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")


def start_deploy(model: Path, tmp_path: Path, target: str) -> subprocess.Popen[bytes]:
    """``edge deploy`` as started from a terminal, where Ctrl-C interrupts it."""
    return subprocess.Popen(
        [sys.executable, "-c", WITH_DEFAULT_SIGINT, "-m", "toolkit", "deploy", str(model),
         "--target", target, "--targets-dir", str(tmp_path / "targets"), "--recipe", "fp32",
         "--min-seconds", "25", "-o", str(tmp_path / "out")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "kind"), [(signal.SIGINT, "ssh"), (signal.SIGTERM, "local"),
                                              (signal.SIGTERM, "ssh"), (signal.SIGHUP, "local")])
def test_a_signal_mid_job_stops_the_agent_then_releases_the_lease(
        signum: int, kind: str, sshd: Sshd, tflite_copy: Path, tmp_path: Path) -> None:
    if kind == "ssh":
        target = ssh_target(sshd, tmp_path)
        work = tmp_path / "board"
        board: LocalBoard | SshBoard = SshBoard(target)
    else:
        (tmp_path / "targets").mkdir()
        target = load_target("local")
        work = local_board_home() / ".edge"
        board = LocalBoard(target)
    with board:
        _, lease = board_home_and_lease(board)
    edge = start_deploy(tflite_copy, tmp_path, target.name)
    watcher = Watcher(work)
    try:
        watcher.wait_running()
        time.sleep(random.uniform(0.0, 1.5))
        edge.send_signal(signum)
        _, err = edge.communicate(timeout=60)
    finally:
        if edge.poll() is None:
            edge.kill()
    assert edge.returncode > 0, err  # ended by itself (cleaned up), not killed by the signal
    assert b"Traceback" not in err
    time.sleep(2)
    assert processes_in(work) == []
    watcher.stop()
    assert releases(lease / "lock.log")[-1] >= watcher.last_seen
    assert not (lease / "owner").exists()
    assert not list((tmp_path / "out").glob(".staging-*"))  # SIGTERM cleans up like Ctrl-C


@pytest.mark.slow
def test_the_next_acquire_ends_a_job_whose_host_died(sshd: Sshd, tflite_copy: Path,
                                                     tmp_path: Path) -> None:
    target = ssh_target(sshd, tmp_path)
    with SshBoard(target) as board:
        _, lease = board_home_and_lease(board)
    edge = start_deploy(tflite_copy, tmp_path, target.name)
    watcher = Watcher(tmp_path / "board")
    try:
        watcher.wait_running()
        # The agent itself, not the shell that checks the lease token and starts it.
        deadline = time.monotonic() + 60
        while not any(b".pyz\0run\0" in cmdline(pid)
                      for pid in processes_in(tmp_path / "board")):
            assert time.monotonic() < deadline, "the agent never started"
            time.sleep(0.02)
    finally:
        edge.kill()  # the host dies: nothing cleans up
        edge.communicate()
    time.sleep(1)
    assert processes_in(tmp_path / "board"), "the agent should have outlived its host"
    # Its lease runs out (60 s, shortened here by writing an expiry in the past).
    owner = (lease / "owner").read_text().splitlines()
    (lease / "owner").write_text(f"{owner[0]}\n{int(time.time()) - 1}\n{owner[2]}\n")
    with SshBoard(target) as board, board_lock(board, seconds=60):
        assert processes_in(tmp_path / "board") == []
    watcher.stop()
    events = [line.split(" ", 2)[1] for line in (lease / "lock.log").read_text().splitlines()]
    assert events[-2:] == ["takeover", "release"]


#: The fault targets' connect and command timeouts: long, so that waiting one out instead of
#: failing at once takes far longer than any loaded machine needs to report the fault.
FAULT_TIMEOUT = 60.0

#: What the Python probe prints on a board whose Python lacks numpy, and on one whose only
#: runtime is ai-edge-litert (the target asks for tflite-runtime).
NO_NUMPY = b'python3\n{"version": [3, 11, 2], "numpy": null, "runtimes": {}, "cores": 4}\n'
OTHER_RUNTIME = (b'python3\n{"version": [3, 11, 2], "numpy": "1.26.4", '
                 b'"runtimes": {"ai-edge-litert": "2.3.0"}, "cores": 4}\n')


def fault_board(fault: str, tmp_path: Path) -> FakeBoard:
    """A board with ``fault``, as the host meets it (the transport's own side of each is
    tests/test_ssh.py's: a real sshd refusing, closed, or with another key)."""
    extra = {"runtime": "tflite-runtime"} if fault == "missing runtime" else {}
    target = fake_target(tmp_path, "lab", connect_timeout=FAULT_TIMEOUT,
                         command_timeout=FAULT_TIMEOUT, **extra)
    board = FakeBoard(target, tmp_path / "board")
    if fault == "unknown host key":
        board.script("", error=HostKeyError("lab's host key is not in known_hosts: run "
                                            "`edge targets trust lab`", target="lab"))
    elif fault == "changed host key":
        board.script("", error=HostKeyError("the host key of lab has CHANGED", target="lab"))
    elif fault == "sshd down":
        board.drop()
    else:
        probe_answer = NO_NUMPY if fault == "no numpy" else OTHER_RUNTIME
        board.script("importlib import metadata", stdout=probe_answer)
    return board


FAULTS = {"unknown host key": HostKeyError, "changed host key": HostKeyError,
          "sshd down": InfrastructureError, "no numpy": BoardSetupError,
          "missing runtime": BoardSetupError}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_board_fault_is_reported_before_compression_and_nothing_is_uploaded(
        fault: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    board = fault_board(fault, tmp_path)
    mount(monkeypatch, board)
    load_model_source(DIGITS_MODEL)  # the model's imports, paid before the clock starts
    compressed: list[object] = []
    monkeypatch.setattr("toolkit.run.prepare.prepare_model",
                        lambda *args: compressed.append(args))  # never reached
    started = time.monotonic()
    with pytest.raises(FAULTS[fault]):
        pipeline.deploy(DIGITS_MODEL, targets=[board.target.name], recipes="fp32",
                        out_dir=tmp_path / "out", targets_dir=tmp_path / "targets")
    # A hang guard, not a figure: the fault is reported at once, not after waiting out a
    # connect or command timeout (half of one is the bound: room for a loaded machine).
    assert time.monotonic() - started < FAULT_TIMEOUT / 2
    assert compressed == []
    assert board.puts == [] and not any("sha256sum" in c for c in board.commands)
    assert not (tmp_path / "board").exists() or not list((tmp_path / "board").iterdir())
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_failing_upload_is_retried_a_bounded_number_of_times_and_frees_the_board(
        tiny_tflite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("toolkit.run.runner.time.sleep", lambda seconds: None)
    board = FakeBoard(fake_target(tmp_path, "lab", retries=2), tmp_path / "board")
    board.fail_puts(InfrastructureError("SSH to lab: the upload broke off", target="lab"))
    mount(monkeypatch, board)
    job, files = job_for(tiny_tflite, "broken", seconds=1)
    with pytest.raises(InfrastructureError, match="the upload broke off"):
        JobRunner(board.target).run_job(job, files)
    assert len(board.puts) == 3  # one attempt and two retries, each stopped at its first put
    assert board_status(board.target).state == "free"  # each attempt released its lease
    assert not [p for p in (tmp_path / "board").rglob("*") if ".part-" in p.name]


@pytest.mark.slow
def test_sigterm_mid_bench_stops_every_boards_job_before_its_lease_is_released(
        sshd: Sshd, tflite_copy: Path, tmp_path: Path) -> None:
    """Each board's job runs in a thread of its own: cancellation must reach all of them."""
    target = ssh_target(sshd, tmp_path)
    with SshBoard(target) as board:
        _, ssh_lease = board_home_and_lease(board)
    with LocalBoard(load_target("local")) as board:
        _, local_lease = board_home_and_lease(board)
    works = {"ssh": tmp_path / "board", "local": local_board_home() / ".edge"}
    edge = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "bench", str(tflite_copy), "--targets", "lab,local",
         "--targets-dir", str(tmp_path / "targets"), "--recipe", "fp32", "--min-seconds", "25",
         "--no-health-check", "-o", str(tmp_path / "out")], cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    watchers = {kind: Watcher(work) for kind, work in works.items()}
    try:
        for watcher in watchers.values():
            watcher.wait_running()
        time.sleep(0.5)
        edge.send_signal(signal.SIGTERM)
        _, err = edge.communicate(timeout=60)
    finally:
        if edge.poll() is None:
            edge.kill()
            edge.communicate()
    assert edge.returncode > 0 and b"Traceback" not in err, err
    time.sleep(2)
    for kind, lease in (("ssh", ssh_lease), ("local", local_lease)):
        assert processes_in(works[kind]) == [], kind
        watchers[kind].stop()
        assert releases(lease / "lock.log")[-1] >= watchers[kind].last_seen, kind
    assert not list((tmp_path / "out").glob(".staging-*"))


def silent_agent_python(tmp_path: Path) -> Path:
    """A board ``python`` that answers the board check like a real one, but as the agent
    closes its output and sleeps: it never answers, never exits, never beats."""
    script = tmp_path / "silent-python"
    script.write_text("#!/bin/sh\n"
                      'case "$1" in *.pyz) exec >&- 2>&- </dev/null; exec sleep 900;; esac\n'
                      f'exec {sys.executable} "$@"\n')
    script.chmod(0o755)
    return script


@pytest.mark.slow
def test_a_silent_agent_is_given_up_within_the_heartbeat_bound_not_the_budget(
        tflite_copy: Path, tmp_path: Path) -> None:
    target = dataclasses.replace(load_target("local"), python=str(silent_agent_python(tmp_path)),
                                 retries=0)
    job, files = job_for(tflite_copy, "silent", seconds=900)
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            JobRunner(target).run_job(job, files)
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome["error"] = exc

    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    limit = runner.HEARTBEAT_TIMEOUT_SECONDS + runner.HEARTBEAT_CHECK_SECONDS + 20
    assert job_budget_seconds(job) > 10 * limit
    worker.join(limit)
    if worker.is_alive():  # the old host: waiting out the budget
        cancel_running_jobs()
        worker.join(30)
        allow_jobs()
        pytest.fail(f"still waiting after {limit:g} s (the budget is "
                    f"{job_budget_seconds(job):g} s)")
    took = time.monotonic() - started
    error = outcome.get("error")
    assert isinstance(error, InfrastructureError), repr(error)
    assert "went silent: no heartbeat for" in str(error)
    assert runner.HEARTBEAT_TIMEOUT_SECONDS <= took < limit
    time.sleep(1)
    left = processes_in(local_board_home() / ".edge")
    assert left == [], [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in left]


@pytest.mark.slow
def test_a_variant_measuring_longer_than_the_heartbeat_bound_is_not_stopped(
        tflite_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "HEARTBEAT_TIMEOUT_SECONDS", 12.0)  # agent: every 5 s
    job, files = job_for(tflite_copy, "slow", seconds=40)
    job["settings"]["max_runs"] = 1_000_000_000  # a run of this model takes microseconds
    started = time.monotonic()
    raw = JobRunner(load_target("local")).run_job(job, files)
    assert time.monotonic() - started > 2 * runner.HEARTBEAT_TIMEOUT_SECONDS
    [variant] = json.loads(raw)["variants"]
    assert variant["status"] == "ok", variant
    assert not list((local_board_home() / ".edge" / "cache").glob("*.alive*"))
