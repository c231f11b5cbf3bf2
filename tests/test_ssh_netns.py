"""Boards as network namespaces: a link that goes down mid-job, several boards at once."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from device_agent import protocol
from toolkit.boards.targets import load_target
from toolkit.errors import InfrastructureError
from toolkit.run.runner import JobRunner

from .lab import Board, Sshd

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

LINK_TIMEOUT = 3.0  # the target's connect_timeout, which is also its TCP_USER_TIMEOUT
JOB_SECONDS = 60.0  # how long the job pulled mid-run measures: a host that hangs waits longer


@pytest.fixture
def boards(tmp_path: Path) -> Iterator[list[tuple[Board, Sshd]]]:
    made: list[tuple[Board, Sshd]] = []
    try:
        for tag in ("a", "b"):
            board = Board(tag)
            made.append((board, Sshd.create(tmp_path / f"sshd-{tag}", address=board.address,
                                            netns=board.name)))
        yield made
    finally:
        for board, sshd in made:
            sshd.kill()
            board.destroy()


def job_for(model: Path, job_id: str, seconds: float) -> tuple[dict, dict[str, Path]]:
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    job = protocol.make_job(job_id=job_id, variants=[
        {"name": "fp32", "file": f"{sha}.tflite", "sha256": sha}],
        settings={"warmup_runs": 1, "min_runs": 5, "min_seconds": seconds})
    return job, {f"{sha}.tflite": model}


@pytest.mark.slow
def test_link_down_mid_job_is_an_infrastructure_error_within_the_limit(
        boards: list[tuple[Board, Sshd]], tmp_path: Path, tflite_copy: Path) -> None:
    board, sshd = boards[0]
    sshd.write_target(tmp_path / "targets", "netboard", tmp_path / "work",
                      connect_timeout=LINK_TIMEOUT, keepalive_seconds=1,
                      command_timeout=2 * JOB_SECONDS)
    target = load_target("netboard", tmp_path / "targets")
    job, files = job_for(tflite_copy, "down", seconds=JOB_SECONDS)
    pulled: list[float] = []

    def pull_the_cable() -> None:
        # Wait until the agent runs (its job file is on the board), then drop the link.
        deadline = time.monotonic() + 60
        while not list((tmp_path / "work" / "cache").glob("job-*.json")):
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        time.sleep(0.5)
        board.link_down()
        pulled.append(time.monotonic())

    puller = threading.Thread(target=pull_the_cable)
    puller.start()
    try:
        with pytest.raises(InfrastructureError):
            JobRunner(target).run_job(job, files)
    finally:
        puller.join()
    assert pulled, "the job never started on the board"
    # A hang guard, not a figure: the error comes about LINK_TIMEOUT after the cable went,
    # where a host without TCP_USER_TIMEOUT hangs for good, or at best until the command
    # timeout; half the job's length (a quarter of that timeout) is the bound.
    assert time.monotonic() - pulled[0] < JOB_SECONDS / 2


@pytest.mark.slow
def test_two_boards_run_the_same_job(boards: list[tuple[Board, Sshd]], tmp_path: Path,
                                     tflite_copy: Path) -> None:
    for index, (_, sshd) in enumerate(boards):
        sshd.write_target(tmp_path / "targets", f"board{index}", tmp_path / f"work{index}")
    for index in range(len(boards)):
        target = load_target(f"board{index}", tmp_path / "targets")
        job, files = job_for(tflite_copy, f"multi-{index}", seconds=0.1)
        result = protocol.parse_result(JobRunner(target).run_job(job, files), job)
        assert result["variants"][0]["status"] == "ok"
