"""A labgrid place whose holder died is freed for the queue; a live holder's never is.

labgrid's place locks never expire: a job SIGKILLed by the OOM killer or a CI timeout
kept its place locked for good (still acquired after 240 s; only ``labgrid-client release
--kick`` freed it).  An edge job that holds a place now beats (the place's ``edge_beat``
tag); a waiting job releases a place whose edge holder stopped beating and whose board's
own lease is over.

One lab for the module: a real ``labgrid-coordinator`` and exporter, and one place, pi-05
(``board=rpi5``), on a loopback sshd board.  The holders are processes of their own, so
that they can be SIGKILLed as the OOM killer would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from toolkit.boards.board import open_board
from toolkit.boards.lease import board_lock
from toolkit.boards.targets import Target
from toolkit.errors import BoardBusyError
from toolkit.labgrid.client import NetworkService
from toolkit.labgrid.hold import SchedulerStatus, run_scheduled
from toolkit.labgrid.liveness import HOLDER_SILENCE_SECONDS
from toolkit.labgrid.selector import ScheduledTarget

from .labgrid_lab import BIN, RunningLab, acquired_places, lease_job, reservations, running_lab

REPO = Path(__file__).resolve().parent.parent
PLACE = "pi-05"
SELECTOR = "tag:board=rpi5"

#: A job holding pi-05 in a process of its own: argv is the coordinator, the targets
#: folder, the beat interval, 1 to hold the board's lease meanwhile (0: the place only)
#: and how long to hold it. It prints one JSON line when it holds, one when it is done.
HOLDER = """
import json, sys, time
import toolkit.labgrid.hold as hold
import toolkit.labgrid.liveness as liveness
from toolkit.boards.board import open_board
from toolkit.boards.lease import board_lock
from toolkit.labgrid.selector import ScheduledTarget
coordinator, targets_dir, beat, with_lease, seconds = sys.argv[1:]
liveness.BEAT_SECONDS = float(beat)
slot = ScheduledTarget.resolve("tag:board=rpi5", coordinator=coordinator,
                               targets_dir=targets_dir)
def job(target):
    def holding():
        print(json.dumps({"holding": time.time()}), flush=True)
        time.sleep(float(seconds))
    if with_lease == "1":
        with open_board(target) as board, board_lock(board):
            holding()
    else:
        holding()
hold.run_scheduled(slot, job, wait_seconds=60)
print(json.dumps({"done": time.time()}), flush=True)
"""


@dataclass
class Lab:
    running: RunningLab

    @property
    def address(self) -> str:
        return self.running.coordinator.address

    def slot(self) -> ScheduledTarget:
        return ScheduledTarget.resolve(SELECTOR, coordinator=self.address,
                                       targets_dir=self.running.targets_dir)

    def board(self) -> Target:
        """pi-05's board, as a job given the place reaches it."""
        sshd = self.running.boards[PLACE]
        return self.slot().target(PLACE, NetworkService(sshd.address, sshd.port, sshd.user))

    def holder(self, *, beat: float, with_lease: bool, seconds: float) -> Holder:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, self.address, str(self.running.targets_dir),
             str(beat), "1" if with_lease else "0", str(seconds)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        return Holder(process)

    def idle(self) -> bool:
        return acquired_places(self.address) == {} and reservations(self.address) == []


class Holder:
    """A holder process and the JSON lines it printed."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.said: dict[str, float] = {}

    def wait_for(self, word: str, timeout: float = 60) -> float:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while word not in self.said:
            assert time.monotonic() < deadline, f"the holder never said {word}"
            line = self.process.stdout.readline()
            if not line:
                _, err = self.process.communicate()
                raise AssertionError(f"the holder ended: {err}")
            self.said.update(json.loads(line))
        return self.said[word]

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a CI timeout ends a job: nothing is given back."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self.process.communicate(timeout=10)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_lab(tmp_path_factory.mktemp("holders"), {PLACE: {"board": "rpi5"}}) as running:
        yield Lab(running)


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.close()


class Waiter:
    """``run_scheduled`` in a thread, as the next job in the queue: when it got the place
    (this machine's clock, epoch seconds) and what it said meanwhile."""

    def __init__(self, lab: Lab, **options: float) -> None:
        self.states: list[str] = []
        self.messages: list[str] = []
        self.started: float | None = None
        self.error: BaseException | None = None

        def status(update: SchedulerStatus) -> None:
            self.states.append(update.state)
            self.messages.append(str(update))

        def job(target: Target) -> None:
            self.started = time.time()
            lease_job(target, 0)

        def run() -> None:
            try:
                run_scheduled(lab.slot(), job, on_status=status, **options)
            except BaseException as exc:  # noqa: BLE001  (the test looks at what came out)
                self.error = exc

        self.thread = threading.Thread(target=run)
        self.thread.start()


@pytest.mark.slow
def test_a_place_held_by_a_sigkilled_job_is_free_for_the_next_job_within_2_minutes(
        lab: Lab, holders: list[Holder]) -> None:
    """The defaults, as a lab runs them: the holder beats every 10 s and holds the board's
    lease (60 s, renewed every 20 s) as a deploy does; the next job starts at once."""
    holders.append(holder := lab.holder(beat=10.0, with_lease=True, seconds=600))
    holder.wait_for("holding")
    assert PLACE in acquired_places(lab.address)
    holder.kill()
    killed = time.time()
    waiter = Waiter(lab, wait_seconds=300)
    waiter.thread.join(300)
    assert waiter.error is None, waiter.error
    assert waiter.started is not None
    freed = waiter.started - killed
    print(f"\nplace {PLACE} held by a SIGKILLed job: the next job ran on it {freed:.1f} s "
          f"after the kill (holder silence {HOLDER_SILENCE_SECONDS:g} s, board lease 60 s)")
    assert "released-dead" in waiter.states, waiter.messages
    assert freed < 120
    assert lab.idle()


def test_a_live_holder_keeps_its_place_however_long_it_holds_it(
        lab: Lab, holders: list[Holder]) -> None:
    """No board lease under it (the worst case: only its beat says it lives), a waiting job
    that presumes a holder dead after 2 s of silence: the place stays with its holder."""
    holders.append(holder := lab.holder(beat=0.5, with_lease=False, seconds=12))
    holder.wait_for("holding")
    waiter = Waiter(lab, wait_seconds=120, holder_silence_seconds=2)
    done = holder.wait_for("done")
    waiter.thread.join(120)
    assert waiter.error is None, waiter.error
    assert "released-dead" not in waiter.states, waiter.messages
    assert waiter.started is not None and waiter.started > done
    assert lab.idle()


def test_a_silent_holder_whose_board_is_still_leased_keeps_its_place(
        lab: Lab, holders: list[Holder]) -> None:
    """A holder cut off from the coordinator stops beating but its job still holds the
    board's lease: the place is released only once that lease is over."""
    holders.append(holder := lab.holder(beat=0.5, with_lease=False, seconds=600))
    holder.wait_for("holding")
    with open_board(lab.board()) as board, board_lock(board, seconds=60):
        holder.kill()
        waiter = Waiter(lab, wait_seconds=120, holder_silence_seconds=2)
        time.sleep(10)  # silent for 10 s: five times what the waiter allows
        assert waiter.started is None and "released-dead" not in waiter.states
        assert PLACE in acquired_places(lab.address)
        unleased = time.time()
    waiter.thread.join(120)
    assert waiter.error is None, waiter.error
    assert "released-dead" in waiter.states, waiter.messages
    assert waiter.started is not None and waiter.started > unleased
    assert lab.idle()


def test_a_place_someone_locked_with_labgrid_client_is_never_released(lab: Lab) -> None:
    """Not an edge job: it does not beat, and no silence makes its lock edge's to free."""
    client = [str(BIN / "labgrid-client"), "-x", lab.address, "-p", PLACE]
    subprocess.run([*client, "acquire"], check=True, capture_output=True, timeout=30)
    try:
        with pytest.raises(BoardBusyError, match="no board for board=rpi5 within 12 s"):
            run_scheduled(lab.slot(), lambda target: None, wait_seconds=12,
                          holder_silence_seconds=1)
        assert acquired_places(lab.address)[PLACE] != ""
    finally:
        subprocess.run([*client, "release"], check=True, capture_output=True, timeout=30)
    assert lab.idle()
