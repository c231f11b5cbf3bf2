"""A board that stopped answering on a labgrid place: power-cycled once, else marked bad.

One lab for the module: a real ``labgrid-coordinator`` and ``labgrid-exporter``, real
loopback sshd boards, and a network power switch on loopback (labgrid's ``rest`` model)
whose "off" kills a board's sshd and whose "on" starts it again: places pw-01 and pw-02
(``board=pwr``, ``unit=1``/``2``) are on the switch, np-01 (``board=nopw``) has no power
control.  Each test leaves every place free and good again.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.cli.main import main
from toolkit.errors import InfrastructureError
from toolkit.labgrid.health import bad_comment, bad_reason, good_comment, mark_good
from toolkit.labgrid.hold import SchedulerStatus, check_coordinator, hold_board, run_scheduled
from toolkit.labgrid.selector import ScheduledTarget

from .lab import Sshd
from .labgrid_lab import (
    Coordinator,
    Exporter,
    PowerSwitch,
    acquired_places,
    lease_job,
    places,
    reservations,
    running_lab,
    set_comment,
    wait_for_resources,
)

PLACES = {"pw-01": {"board": "pwr", "unit": "1"}, "pw-02": {"board": "pwr", "unit": "2"},
          "np-01": {"board": "nopw"}}
POWER = {"pw-01": 1, "pw-02": 2}
FAST = {"boot_seconds": 10.0, "power_off_seconds": 0.2}


@dataclass
class Lab:
    coordinator: Coordinator
    exporter: Exporter
    switch: PowerSwitch
    boards: dict[str, Sshd]
    targets_dir: Path

    @property
    def address(self) -> str:
        return self.coordinator.address

    def slot(self, selector: str) -> ScheduledTarget:
        return ScheduledTarget.resolve(selector, coordinator=self.address,
                                       targets_dir=self.targets_dir)

    def idle(self) -> bool:
        return acquired_places(self.address) == {} and reservations(self.address) == []


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_lab(tmp_path_factory.mktemp("power"), PLACES, power=POWER) as running:
        assert running.switch is not None
        yield Lab(running.coordinator, running.exporter, running.switch, running.boards,
                  running.targets_dir)


@pytest.fixture
def fresh(lab: Lab) -> Iterator[Lab]:
    """Every board up, the switch's log empty; afterwards every place free and good (the
    tests clear their own marks: this only keeps one failure from spreading)."""
    lab.switch.log.clear()
    lab.switch.dead.clear()
    lab.switch.broken.clear()
    yield lab
    for board in lab.boards.values():
        if board.process is None:
            board.start()
    for name, place in places(lab.address).items():
        if "edge_health" in place["tags"]:
            mark_good(lab.address, name)
    assert lab.idle()


def test_the_reason_goes_in_front_of_the_labs_own_comment_and_comes_out_again() -> None:
    now = dt.datetime(2026, 12, 1, 2, 30, tzinfo=dt.UTC)
    marked = bad_comment("stopped answering\n(refused)", "UART on ttyUSB3", now)
    assert marked == ("edge: bad since 2026-12-01 02:30 UTC: stopped answering (refused)"
                      " | UART on ttyUSB3")
    assert bad_reason(marked) == "bad since 2026-12-01 02:30 UTC: stopped answering (refused)"
    assert good_comment(marked) == "UART on ttyUSB3"
    assert good_comment(bad_comment("gone", "", now)) == ""
    assert good_comment("UART on ttyUSB3") == "UART on ttyUSB3" and bad_reason("x") == ""


def test_a_board_that_stopped_answering_is_power_cycled_and_the_job_runs_again(
        fresh: Lab) -> None:
    lab = fresh
    lab.boards["pw-01"].kill()  # it crashed: its sshd is gone
    statuses: list[SchedulerStatus] = []
    answer = run_scheduled(lab.slot("tag:board=pwr+unit=1"), lambda t: lease_job(t, 0),
                           on_status=statuses.append, **FAST)
    assert answer["place"] == "pw-01" and answer["server_port"] == lab.boards["pw-01"].port
    assert [s.state for s in statuses] == ["acquired", "power-cycling", "power-cycled"]
    assert lab.switch.log == [(1, "off"), (1, "on")]


def test_a_board_that_answers_keeps_its_error_and_is_not_switched(fresh: Lab) -> None:
    def disk_full(target: object) -> None:
        raise InfrastructureError("cannot write /w/job on pw-01: No space left on device")

    with pytest.raises(InfrastructureError, match="No space left on device"):
        run_scheduled(fresh.slot("tag:board=pwr+unit=1"), disk_full, **FAST)
    assert fresh.switch.log == []


def test_a_board_that_goes_silent_again_after_its_cycle_is_marked_bad(fresh: Lab) -> None:
    lab = fresh
    statuses: list[SchedulerStatus] = []

    def crashes_the_board(target: object) -> None:  # every run takes the board down
        lab.boards["pw-01"].kill()
        lease_job(target, 0)

    with pytest.raises(InfrastructureError, match=r"^labgrid place pw-01 stopped answering "
                       r"again after a power cycle \(cannot reach .*\): marked bad on "):
        run_scheduled(lab.slot("tag:board=pwr+unit=1"), crashes_the_board,
                      on_status=statuses.append, **FAST)
    assert lab.switch.log == [(1, "off"), (1, "on")]  # one cycle, not one per try
    assert [s.state for s in statuses] == ["acquired", "power-cycling", "power-cycled",
                                           "marked-bad"]
    assert places(lab.address)["pw-01"]["tags"]["edge_health"] == "bad"
    mark_good(lab.address, "pw-01")


def test_a_power_switch_that_fails_marks_the_place_bad_with_its_error(fresh: Lab) -> None:
    lab = fresh
    lab.switch.broken.add(1)
    lab.boards["pw-01"].kill()
    with pytest.raises(InfrastructureError) as caught:
        run_scheduled(lab.slot("tag:board=pwr+unit=1"), lambda t: lease_job(t, 0), **FAST)
    message = str(caught.value)
    assert "; power cycle of pw-01 through its NetworkPowerPort (rest http://127.0.0.1:" in message
    assert "failed: HTTPError: 500 Server Error" in message and "\n" not in message
    assert message.endswith("(edge lab mark-good pw-01 clears it)")
    mark_good(lab.address, "pw-01")


def test_a_place_without_power_control_is_marked_bad_with_one_line(fresh: Lab) -> None:
    lab = fresh
    set_comment(lab.address, "np-01", "UART on ttyUSB3")
    lab.boards["np-01"].kill()
    with pytest.raises(InfrastructureError) as caught:
        run_scheduled(lab.slot("tag:board=nopw"), lambda t: lease_job(t, 0), **FAST)
    message = str(caught.value)
    assert message.startswith("labgrid place np-01 stopped answering (cannot reach 127.0.0.1 "
                              f"port {lab.boards['np-01'].port}: Connection refused); ")
    assert message.endswith(
        f"; no power control in labgrid (no NetworkPowerPort): marked bad on {lab.address} "
        "and kept locked so no job gets it (edge lab mark-good np-01 clears it)")
    assert "\n" not in message and lab.switch.log == []
    state = places(lab.address)["np-01"]
    assert state["tags"] == {"board": "nopw", "edge_health": "bad"}
    assert state["comment"].startswith("edge: bad since ")
    assert state["comment"].endswith(" | UART on ttyUSB3")
    assert ".edge" in state["acquired"]  # the failed job's lock stays
    assert reservations(lab.address) == []
    # The next command is told before any work that no place is left.
    with pytest.raises(InfrastructureError, match=r"every labgrid place tagged board=nopw on "
                       r"\S+ is marked bad by edge \(np-01\): fix the boards, then edge lab "
                       r"mark-good PLACE"):
        check_coordinator(lab.slot("tag:board=nopw"))

    lab.boards["np-01"].start()  # fixed
    result = CliRunner().invoke(main, ["lab", "mark-good", "np-01", "--coordinator",
                                       lab.address], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"np-01 marked good on {lab.address}; freed the lock "
                                    "edge kept (")
    state = places(lab.address)["np-01"]
    assert (state["tags"], state["comment"], state["acquired"]) == (
        {"board": "nopw"}, "UART on ttyUSB3", "")
    again = CliRunner().invoke(main, ["lab", "mark-good", "np-01", "--coordinator",
                                      lab.address], catch_exceptions=False)
    assert again.stdout.strip() == f"np-01 is not marked bad on {lab.address}: nothing to do"
    set_comment(lab.address, "np-01", "")


@pytest.mark.slow
def test_a_board_dead_after_its_power_cycle_is_left_out_and_doctor_says_so(
        fresh: Lab) -> None:
    lab = fresh
    lab.switch.dead.add(2)  # pw-02 does not come back on
    lab.boards["pw-02"].kill()
    with hold_board(lab.slot("tag:board=pwr+unit=1")):  # pw-01 busy: the job gets pw-02
        with pytest.raises(InfrastructureError) as caught:
            run_scheduled(lab.slot("tag:board=pwr"), lambda t: lease_job(t, 0),
                          boot_seconds=2.0, power_off_seconds=0.2)
    message = str(caught.value)
    assert message.startswith("labgrid place pw-02 still silent 2 s after a power cycle (cannot "
                              "reach 127.0.0.1 port ")
    assert message.endswith("(edge lab mark-good pw-02 clears it)") and "\n" not in message
    assert lab.switch.log == [(2, "off"), (2, "on")]

    # Later jobs for board=pwr all go to pw-01.
    for _ in range(3):
        assert run_scheduled(lab.slot("tag:board=pwr"), lambda t: lease_job(t, 0))["place"] \
            == "pw-01"

    result = CliRunner().invoke(main, [
        "doctor", "--targets", "tag:board=pwr", "--coordinator", lab.address,
        "--targets-dir", str(lab.targets_dir), "--json"], catch_exceptions=False)
    # A board that cannot be reached is an infrastructure failure, 3, as deploy exits for it.
    assert result.exit_code == 3
    health = {h["target"]: h for h in json.loads(result.stdout)}
    assert set(health) == {"pw-01", "pw-02"}
    assert health["pw-01"]["checks"][0] == {"name": "labgrid place", "ok": True,
                                            "detail": "good", "warning": False}
    assert health["pw-02"]["reason"].startswith(
        "labgrid place: bad since ")
    assert health["pw-02"]["reason"].endswith(
        "; after fixing the board: edge lab mark-good pw-02")
    assert health["pw-02"]["checks"][1]["name"] == "reachable"
    assert not health["pw-02"]["checks"][1]["ok"]  # and the board is still down
    assert "edge: pw-02 is unhealthy: labgrid place: bad since " in result.stderr

    # A coordinator restart forgets every lock, not the tag: a job given pw-02 locks it
    # again and asks for another place.
    lab.coordinator.wait_saved({"pw-02": {**PLACES["pw-02"], "edge_health": "bad"}})
    lab.coordinator.restart()
    wait_for_resources(lab.address, len(PLACES))
    statuses: list[SchedulerStatus] = []
    skipped = threading.Event()
    done: list[dict[str, object]] = []

    def job() -> None:
        def status(update: SchedulerStatus) -> None:
            statuses.append(update)
            if update.state == "skipped-bad":
                skipped.set()

        done.append(run_scheduled(lab.slot("tag:board=pwr"), lambda t: lease_job(t, 0),
                                  on_status=status))

    with hold_board(lab.slot("tag:board=pwr+unit=1")):
        worker = threading.Thread(target=job)
        worker.start()
        assert skipped.wait(30)
        time.sleep(0.3)
    worker.join(30)
    assert [d["place"] for d in done] == ["pw-01"]
    assert [s.state for s in statuses if s.place == "pw-02"] == ["skipped-bad"]
    assert ".edge" in places(lab.address)["pw-02"]["acquired"]

    lab.switch.dead.clear()
    lab.boards["pw-02"].start()  # repaired
    assert mark_good(lab.address, "pw-02").startswith(f"pw-02 marked good on {lab.address}")
    assert run_scheduled(lab.slot("tag:board=pwr+unit=2"), lambda t: lease_job(t, 0))["place"] \
        == "pw-02"


@pytest.mark.slow
def test_edge_bench_power_cycles_a_silent_board_and_measures_on_it(
        fresh: Lab, digits_fp32_tflite: Path, tmp_path: Path) -> None:
    lab = fresh
    lab.boards["pw-01"].kill()
    result = CliRunner().invoke(main, [
        "bench", str(digits_fp32_tflite), "--targets", "tag:board=pwr+unit=1",
        "--coordinator", lab.address, "--targets-dir", str(lab.targets_dir), "--recipe",
        "fp32", "--min-runs", "20", "--min-seconds", "0", "-o", str(tmp_path / "out"),
        "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    cells = json.loads(result.stdout)["cells"]
    assert [(c["target"], c["status"]) for c in cells] == [("pw-01", "ok")]
    assert lab.switch.log == [(1, "off"), (1, "on")]
