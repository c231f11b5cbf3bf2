"""Boards from a real labgrid coordinator: reserve, queue, acquire, run, release, restarts.

One lab per module: a ``labgrid-coordinator`` in a folder of its own on a free port, a
``labgrid-exporter`` with one NetworkService per board (real loopback sshd boards from
tests/lab.py), and places pi-01..pi-03 tagged ``board=rpi4`` and pi-05 tagged
``board=rpi5``.  The coordinator restart test runs last: it restarts the shared one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.boards.lab import load_lab
from toolkit.cli.main import main
from toolkit.errors import AgentError, InfrastructureError, TargetError, UsageError
from toolkit.labgrid.client import coordinator_address
from toolkit.labgrid.hold import SchedulerStatus, busy_now, hold_board, run_scheduled
from toolkit.labgrid.selector import ScheduledTarget, Selector
from toolkit.run.cancel import allow_jobs, cancel_running_jobs

from .lab import Sshd, free_port
from .labgrid_lab import (
    BIN,
    Coordinator,
    Exporter,
    acquired_places,
    add_places,
    lease_job,
    order_inversions,
    overlaps,
    reservations,
    running_lab,
    wait_for_resources,
)

REPO = Path(__file__).resolve().parent.parent
PLACES = {"pi-01": {"board": "rpi4"}, "pi-02": {"board": "rpi4"}, "pi-03": {"board": "rpi4"},
          "pi-05": {"board": "rpi5"}}


@dataclass
class Lab:
    coordinator: Coordinator
    exporter: Exporter
    boards: dict[str, Sshd]
    targets_dir: Path

    def slot(self, selector: str, priority: int = 0) -> ScheduledTarget:
        return ScheduledTarget.resolve(selector, coordinator=self.coordinator.address,
                                       priority=priority, targets_dir=self.targets_dir)

    def idle(self) -> bool:
        """No place locked and no reservation left: every job gave everything back."""
        return (acquired_places(self.coordinator.address) == {}
                and reservations(self.coordinator.address) == [])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_lab(tmp_path_factory.mktemp("labgrid"), PLACES) as running:
        yield Lab(running.coordinator, running.exporter, running.boards, running.targets_dir)


def test_a_selector_names_tags_and_the_kind_whose_target_file_applies(tmp_path: Path) -> None:
    selector = Selector.parse("tag:board=rpi4+pool=ci")
    assert (selector.kind, str(selector)) == ("rpi4", "board=rpi4+pool=ci")
    assert selector.matches({"board": "rpi4", "pool": "ci", "room": "b"})
    assert not selector.matches({"board": "rpi4"})
    with pytest.raises(TargetError, match="names no board=KIND"):
        Selector.parse("tag:pool=ci")
    with pytest.raises(TargetError, match="tag:KEY=VALUE"):
        Selector.parse("tag:board=")
    with pytest.raises(UsageError, match="give --coordinator"):
        load_lab().select_jobs("tag:board=rpi4")
    with pytest.raises(TargetError, match="unknown target 'nano9'"):
        load_lab().select_jobs("tag:board=nano9", coordinator="lab:20408")
    assert coordinator_address("lab") == "lab:20408"
    with pytest.raises(UsageError, match="HOST:PORT"):
        coordinator_address("lab:port")


def test_the_lab_file_names_the_coordinator_and_a_plain_board_list_refuses_a_selector(
        tmp_path: Path) -> None:
    lab_file = tmp_path / "lab.toml"
    lab_file.write_text('coordinator = "lab-server:7777"\n[boards.a]\nkind = "local"\n')
    lab = load_lab(lab_file)
    [slot, local] = lab.select_jobs("tag:board=rpi4,a", priority=3)
    assert isinstance(slot, ScheduledTarget)
    assert (slot.coordinator, slot.priority, local.name) == ("lab-server:7777", 3, "a")
    with pytest.raises(TargetError, match="only edge bench, edge deploy and edge doctor"):
        lab.select("tag:board=rpi4")


def test_a_job_reaches_the_board_of_the_place_it_was_given_and_gives_it_back(
        lab: Lab) -> None:
    statuses: list[SchedulerStatus] = []
    answer = run_scheduled(lab.slot("tag:board=rpi5"), lambda t: lease_job(t, 0),
                           on_status=statuses.append)
    assert answer["place"] == "pi-05"
    # The sshd that answered is the rpi5 board's: the address came from its NetworkService.
    assert answer["server_port"] == lab.boards["pi-05"].port
    assert [s.state for s in statuses] == ["acquired"]
    assert lab.idle()


def test_jobs_are_served_by_priority_then_age_with_their_queue_positions(lab: Lab) -> None:
    order: list[str] = []
    positions: dict[str, list[tuple[int | None, int | None]]] = {}
    with hold_board(lab.slot("tag:board=rpi5")):  # the only rpi5 is busy: the others queue

        def job(name: str, priority: int) -> None:
            def queued(status: SchedulerStatus) -> None:
                if status.state == "queued":
                    positions.setdefault(name, []).append((status.position, status.waiting))

            run_scheduled(lab.slot("tag:board=rpi5", priority), lambda t: order.append(name),
                          on_status=queued)

        threads = []
        for name, priority in (("old", 0), ("young", 0), ("urgent", 5)):
            threads.append(threading.Thread(target=job, args=(name, priority)))
            threads[-1].start()
            while name not in positions:
                time.sleep(0.02)
    for thread in threads:
        thread.join(30)
    assert order == ["urgent", "old", "young"]
    assert positions["old"][0] == (1, 1) and positions["young"][0] == (2, 2)
    assert positions["urgent"][0] == (1, 3)  # it overtook both on arrival
    assert lab.idle()


def test_a_failing_job_and_a_cancelled_wait_give_everything_back(lab: Lab) -> None:
    def fails(target: object) -> None:
        raise AgentError("agent on pi-05 failed: boom")

    with pytest.raises(AgentError, match="boom"):
        run_scheduled(lab.slot("tag:board=rpi5"), fails)
    assert lab.idle()

    outcome: list[BaseException] = []
    queued = threading.Event()

    def wait() -> None:
        try:
            run_scheduled(lab.slot("tag:board=rpi5"), lambda t: None,
                          on_status=lambda s: queued.set() if s.state == "queued" else None)
        except BaseException as exc:  # noqa: BLE001  (the test looks at what came out)
            outcome.append(exc)

    with hold_board(lab.slot("tag:board=rpi5")):
        waiter = threading.Thread(target=wait)
        waiter.start()
        assert queued.wait(15)
        cancel_running_jobs()  # what Ctrl-C, SIGTERM or SIGHUP do
        try:
            waiter.join(15)
        finally:
            allow_jobs()
        assert [type(e) for e in outcome] == [KeyboardInterrupt]
        assert len(reservations(lab.coordinator.address)) == 1  # only the holder's
    assert lab.idle()


def test_an_unreachable_coordinator_is_one_line_and_exit_3(
        lab: Lab, tmp_path: Path, digits_fp32_tflite: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The coordinator is asked with a long call timeout, so that waiting it out instead of
    # reporting the refused connection at once takes far longer than a loaded machine needs.
    from toolkit.labgrid import hold

    call_timeout = 120.0
    asked = hold.check_coordinator
    monkeypatch.setattr(hold, "check_coordinator",
                        lambda slot: asked(slot, timeout=call_timeout))
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = CliRunner().invoke(main, ["bench", str(digits_fp32_tflite), "--targets",
                                       "tag:board=rpi4", "--coordinator", address,
                                       "--targets-dir", str(lab.targets_dir)],
                                catch_exceptions=False)
    assert result.exit_code == 3
    assert result.stderr.strip().splitlines() == [
        f"edge: error: labgrid coordinator {address} is unreachable (connection refused)"]
    # A hang guard, not a figure: half the call timeout is the bound.
    assert time.monotonic() - started < call_timeout / 2


@pytest.mark.parametrize("command", ["deploy", "bench"])
def test_an_unreachable_coordinator_is_named_before_the_model_is_loaded(
        lab: Lab, tmp_path: Path, command: str) -> None:
    """Loading a model imports torch (seconds); the coordinator is asked first."""
    model = tmp_path / "model.py"
    model.write_text("raise SystemExit('the model file was imported')\n")
    address = f"127.0.0.1:{free_port()}"
    targets_option = "--target" if command == "deploy" else "--targets"
    result = CliRunner().invoke(main, [command, str(model), targets_option, "tag:board=rpi4",
                                       "--coordinator", address,
                                       "--targets-dir", str(lab.targets_dir),
                                       "-o", str(tmp_path / "out")],
                                catch_exceptions=False)
    assert result.exit_code == 3, result.output
    assert "unreachable" in result.stderr and "imported" not in result.output


def test_a_selector_no_place_matches_is_named_before_any_work(lab: Lab,
                                                              digits_fp32_tflite: Path) -> None:
    (lab.targets_dir / "rpi9.toml").write_text((lab.targets_dir / "rpi5.toml").read_text())
    result = CliRunner().invoke(main, ["deploy", str(digits_fp32_tflite), "--target",
                                       "tag:board=rpi9", "--coordinator",
                                       lab.coordinator.address, "--targets-dir",
                                       str(lab.targets_dir)], catch_exceptions=False)
    assert result.exit_code == 2
    assert "no labgrid place on" in result.stderr and "is tagged board=rpi9" in result.stderr
    assert "pi-05: board=rpi5" in result.stderr


def test_deploy_with_busy_wait_0_and_no_free_place_fails_before_compressing(
        lab: Lab, tiny_tflite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As for a named board: one line, exit 3, nothing converted and nothing reserved."""
    compressed: list[object] = []
    monkeypatch.setattr("toolkit.run.prepare.prepare_model",
                        lambda *args, **kwargs: compressed.append(args))  # never reached
    address = lab.coordinator.address
    with hold_board(lab.slot("tag:board=rpi5")):  # the only rpi5 is another job's
        [holder] = acquired_places(address).values()
        assert busy_now(lab.slot("tag:board=rpi4")) is None  # three free
        result = CliRunner().invoke(main, ["deploy", str(tiny_tflite), "--target",
                                           "tag:board=rpi5", "--coordinator", address,
                                           "--targets-dir", str(lab.targets_dir),
                                           "--busy-wait", "0", "-o", str(tmp_path / "out")],
                                    catch_exceptions=False)
        assert len(reservations(address)) == 1  # the holder's only
    assert result.exit_code == 3, result.output
    assert result.stderr.strip().splitlines() == [
        f"edge: error: no labgrid place tagged board=rpi5 on {address} is free now (pi-05: "
        f"acquired by {holder}) (--busy-wait 0: not waiting)"]
    assert compressed == []
    assert busy_now(lab.slot("tag:board=rpi5")) is None
    assert lab.idle()


@pytest.mark.slow
def test_edge_bench_measures_on_the_allotted_place_and_names_it(
        lab: Lab, digits_fp32_tflite: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [
        "bench", str(digits_fp32_tflite), "--targets", "tag:board=rpi5", "--coordinator",
        lab.coordinator.address, "--targets-dir", str(lab.targets_dir), "--recipe", "fp32",
        "--min-runs", "20", "--min-seconds", "0", "--priority", "2", "-o",
        str(tmp_path / "out"), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert [(c["target"], c["status"]) for c in outcome["cells"]] == [("pi-05", "ok")]
    assert lab.idle()


@pytest.mark.slow
def test_edge_deploy_shows_its_queue_position_then_measures_on_the_place(
        lab: Lab, digits_fp32_tflite: Path, tmp_path: Path) -> None:
    from toolkit.run.deploy import deploy

    stages: list[str] = []
    holding = threading.Event()

    def someone_else() -> None:  # has the only rpi5 for a moment
        with hold_board(lab.slot("tag:board=rpi5")):
            holding.set()
            time.sleep(2.0)

    other = threading.Thread(target=someone_else)
    other.start()
    assert holding.wait(15)
    outcome = deploy(digits_fp32_tflite, targets=["tag:board=rpi5"],
                     out_dir=tmp_path / "out", targets_dir=lab.targets_dir,
                     settings={"min_runs": 20, "min_seconds": 0.0},
                     coordinator=lab.coordinator.address, progress=stages.append)
    other.join()
    assert stages.index("tag:board=rpi5: reserving a board") < \
        stages.index("tag:board=rpi5: queue position 1 of 1 for board=rpi5") < \
        stages.index("tag:board=rpi5: acquired pi-05; measuring fp32.tflite"), stages
    assert [(r.target, r.ok) for r in outcome.run.results] == [("pi-05", True)]
    assert lab.idle()


@pytest.mark.slow
def test_two_controller_processes_never_share_a_board(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "jobs.jsonl"
    processes = [subprocess.Popen(
        [sys.executable, "-m", "tests.labgrid_lab", "controller", lab.coordinator.address,
         str(lab.targets_dir), "tag:board=rpi4", str(priority), "3", "2", "0.4", name,
         str(out)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        for name, priority in (("a", 0), ("b", 1))]
    for process in processes:
        assert process.wait(120) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 6 and all(r["done"] for r in records), records
    assert overlaps(records) == 0
    assert order_inversions(records) == 0
    # Four jobs at once for three boards: someone waited in the queue, and said so.
    assert any(s.startswith("queue position") for r in records for s in r["statuses"])
    assert lab.idle()


@pytest.mark.slow
def test_a_coordinator_restart_mid_run_keeps_jobs_apart_and_every_job_done(
        lab: Lab) -> None:
    lab.coordinator.wait_saved(PLACES)  # only saved places come back after a restart
    records: list[dict[str, object]] = []
    statuses: list[SchedulerStatus] = []

    def one(index: int) -> None:
        records.append(run_scheduled(lab.slot("tag:board=rpi4"),
                                     lambda target: lease_job(target, 3.5),
                                     on_status=statuses.append))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    time.sleep(0.8)  # three jobs run, two wait
    lab.coordinator.restart(down_seconds=0.5)
    for thread in threads:
        thread.join(60)
    assert len(records) == 5
    assert overlaps(records) == 0
    states = [s.state for s in statuses]
    # The two waiting jobs reserved again; the three running ones lost the coordinator and
    # took their places back, or (when a waiting job's new reservation got there first)
    # said so, and that job then waited for the board's lease instead of running beside.
    assert states.count("reconnecting") >= 5 and states.count("lost") == 3, states
    assert "reacquired" in states, states
    if "not-reacquired" in states:
        assert "lease-busy" in states, states
    assert lab.exporter.restarts >= 1
    wait_for_resources(lab.coordinator.address, len(PLACES))
    assert lab.idle()


@pytest.mark.slow
def test_a_coordinator_gone_for_good_ends_a_waiting_job_with_one_line(
        tmp_path: Path, lab: Lab) -> None:
    coordinator = Coordinator(tmp_path / "coordinator")
    try:
        add_places(coordinator.address, {"only": {"board": "rpi4"}})
        # Someone in the lab holds the only rpi4, with labgrid's own client.
        subprocess.run([str(BIN / "labgrid-client"), "-x", coordinator.address, "-p", "only",
                        "acquire", "--allow-unmatched"], check=True, capture_output=True,
                       timeout=30)
        slot = ScheduledTarget.resolve("tag:board=rpi4", coordinator=coordinator.address,
                                       targets_dir=lab.targets_dir)
        failure: list[BaseException] = []
        queued = threading.Event()

        def wait() -> None:
            try:
                run_scheduled(slot, lambda t: None, reconnect_seconds=2,
                              on_status=lambda s: queued.set() if s.state == "queued" else None)
            except InfrastructureError as exc:
                failure.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        assert queued.wait(15)
        coordinator.kill()
        waiter.join(20)
    finally:
        coordinator.kill()
    assert len(failure) == 1
    message = str(failure[0])
    assert message.startswith(f"labgrid coordinator {coordinator.address} unreachable for 2 s "
                              "while waiting for a board board=rpi4")
    assert message.endswith("no job was started") and "\n" not in message
