"""Faults injected into a real loopback sshd: killed servers, hostile names."""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path

import pytest

from toolkit.boards.board import SshBoard
from toolkit.boards.lease import board_lock, lease_dir, read_lease
from toolkit.boards.ssh import Connection
from toolkit.boards.targets import Target, load_target
from toolkit.boards.transfer import upload
from toolkit.errors import AgentError, BoardBusyError, InfrastructureError, TargetError
from toolkit.run.runner import JobRunner

from .lab import Sshd

HOSTILE = ["; rm -rf ~", "$(touch x)", "`touch y`", "../escape", "a\nb", "..", "x/../../y"]


def lab_target(sshd: Sshd, tmp_path: Path, **extra: object) -> Target:
    sshd.write_target(tmp_path / "targets", "lab", tmp_path / "board", **extra)
    return load_target("lab", tmp_path / "targets")


class _KillAt(io.RawIOBase):
    """Reads ``data`` and kills the server once ``at`` bytes have been read."""

    def __init__(self, data: bytes, at: int, sshd: Sshd) -> None:
        self.source, self.at, self.sshd, self.sent = io.BytesIO(data), at, sshd, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.sent >= self.at and self.sshd.process is not None:
            self.sshd.kill()
        chunk = self.source.read(size)
        self.sent += len(chunk)
        return chunk


class _KillingConnection(Connection):
    kill_at = 0
    sshd: Sshd

    def put(self, source, remote_path: str) -> int:  # type: ignore[no-untyped-def]
        return super().put(_KillAt(source.read(), self.kill_at, self.sshd), remote_path)


def test_sshd_killed_mid_upload_leaves_nothing_at_the_final_name_and_a_retry_works(
        own_sshd: Sshd, tmp_path: Path) -> None:
    data = bytes(range(256)) * 8192  # 2 MiB
    name = hashlib.sha256(data).hexdigest() + ".tflite"
    folder = tmp_path / "board" / "cache"
    target = lab_target(own_sshd, tmp_path)
    board = _KillingConnection(target)
    board.kill_at, board.sshd = len(data) // 3, own_sshd
    with pytest.raises(InfrastructureError):
        upload(board, str(folder), name, data)
    assert not (folder / name).exists()
    own_sshd.start()
    with Connection(target) as again:
        assert upload(again, str(folder), name, data) is True
    assert (folder / name).read_bytes() == data


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_file_names_are_refused_before_any_command(name: str, sshd: Sshd,
                                                           tmp_path: Path) -> None:
    target = lab_target(sshd, tmp_path)
    board = Connection(target)
    with pytest.raises(TargetError):
        upload(board, str(tmp_path / "board"), name, b"data")
    assert not board.is_open  # refused before even connecting
    with pytest.raises(TargetError):
        JobRunner(target).run_job({"job_id": "j", "variants": []}, {name: tmp_path / "x"})


def test_a_hostile_work_folder_is_only_ever_a_folder_name(sshd: Sshd, tmp_path: Path) -> None:
    """The work folder comes from a target file; quoting keeps it one literal path."""
    hostile = tmp_path / "w; touch INJECTED1 $(touch INJECTED2) `touch INJECTED3`\nx"
    data = b"payload"
    name = hashlib.sha256(data).hexdigest() + ".bin"
    with Connection(lab_target(sshd, tmp_path)) as board:
        assert upload(board, str(hostile), name, data) is True
        home = board.run("pwd").stdout.decode().strip()
    assert (hostile / name).read_bytes() == data
    for folder in (tmp_path, Path(home), hostile):
        assert not [p for p in folder.iterdir() if p.name.startswith("INJECTED")]


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per Connection made: how many times a job tried to reach the board."""
    made: list[int] = []
    real_init = Connection.__init__

    def counting_init(self: Connection, *args: object, **kwargs: object) -> None:
        made.append(1)
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Connection, "__init__", counting_init)
    return made


def test_an_infrastructure_failure_is_retried_a_bounded_number_of_times(
        own_sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        attempts: list[int]) -> None:
    monkeypatch.setattr("toolkit.run.runner.time.sleep", lambda seconds: None)
    target = lab_target(own_sshd, tmp_path, retries=2, connect_timeout=2.0)
    own_sshd.kill()
    with pytest.raises(InfrastructureError, match="cannot reach"):
        JobRunner(target).run_job({"job_id": "j", "variants": [],
                                      "settings": {"variant_timeout_seconds": 1}}, {})
    assert len(attempts) == 3


def test_a_failing_agent_is_a_job_error_and_not_retried(
        sshd: Sshd, tmp_path: Path, attempts: list[int]) -> None:
    target = lab_target(sshd, tmp_path, retries=3)
    # The agent refuses a job that breaks the protocol: its failure, not the link's.
    with pytest.raises(AgentError, match="agent on lab failed: agent: bad job"):
        JobRunner(target).run_job({"job_id": "j", "variants": [],
                                      "settings": {"variant_timeout_seconds": 1}}, {})
    assert len(attempts) == 1


def lease_folder(target: Target) -> Path:
    """The board-wide lease folder of ``target``'s board, as a path on this machine."""
    with SshBoard(target) as board:
        home = board.run("pwd").stdout.decode().strip()
        return Path(home) / lease_dir(board)


def test_one_job_per_board_and_an_expired_lock_is_taken_over(sshd: Sshd,
                                                             tmp_path: Path) -> None:
    target = lab_target(sshd, tmp_path)
    owner_file = lease_folder(target) / "owner"
    with SshBoard(target) as first, SshBoard(target) as second:
        with board_lock(first, seconds=600) as token:
            owner = owner_file.read_text().splitlines()
            assert owner[0] == token and int(owner[1]) > time.time() + 500
            with pytest.raises(BoardBusyError, match=r"locked by .*pid"):
                with board_lock(second, seconds=600):
                    pass
        assert not owner_file.exists()
        # A crashed job's lock: expired on the board's clock, so the next job takes it.
        owner_file.write_text(f"crashed\n{int(time.time()) - 5}\n")
        with board_lock(second, seconds=60) as token:
            assert owner_file.read_text().startswith(token)
        assert not owner_file.exists()


def test_a_busy_board_is_an_infrastructure_error(sshd: Sshd, tmp_path: Path) -> None:
    target = lab_target(sshd, tmp_path)
    owner_file = lease_folder(target) / "owner"
    owner_file.parent.mkdir(parents=True, exist_ok=True)
    owner_file.write_text(f"ci@other\n{int(time.time()) + 600}\n")
    try:
        with pytest.raises(BoardBusyError, match="locked by ci@other"):
            JobRunner(target).run_job({"job_id": "j", "variants": [],
                                       "settings": {"variant_timeout_seconds": 1}}, {})
    finally:
        owner_file.unlink()
    assert issubclass(BoardBusyError, InfrastructureError)


def test_a_held_lease_is_renewed_past_its_length_and_logged(sshd: Sshd, tmp_path: Path) -> None:
    target = lab_target(sshd, tmp_path)
    folder = lease_folder(target)
    log_before = (folder / "lock.log").read_text() if (folder / "lock.log").exists() else ""
    owner_file = folder / "owner"
    with SshBoard(target) as first, SshBoard(target) as second:
        with board_lock(first, seconds=2) as token:
            first_expiry = int(owner_file.read_text().splitlines()[1])
            time.sleep(4.5)  # over twice the lease: only renewal keeps it ours
            lease, clock = read_lease(second)
            assert lease is not None and lease.owner == token and lease.live
            assert lease.expires > first_expiry and lease.expires >= clock.wall
            assert lease.since is not None and lease.since <= first_expiry
            with pytest.raises(BoardBusyError):
                with board_lock(second, seconds=2):
                    pass
        assert read_lease(second)[0] is None
    events = [line.split(" ", 2) for line in
              (folder / "lock.log").read_text()[len(log_before):].splitlines()]
    assert [(event, who) for _, event, who in events] == [("acquire", token), ("release", token)]
    assert float(events[0][0]) < float(events[1][0])
