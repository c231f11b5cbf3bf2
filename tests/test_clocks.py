"""Clock facts (governor, clocks per cluster, Jetson power modes) from constructed sysfs
trees and the real local board, and the job's ``set_governor``."""

from __future__ import annotations

import copy
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from device_agent import __main__ as agent
from device_agent import protocol
from device_agent.clocks import (
    GovernorChange,
    clock_state,
    clock_summary,
    governor_condition,
    parse_cpu_list,
)
from device_agent.paired import measure_pair
from device_agent.paired_answer import validate_pair_results
from device_agent.settings import JobSettings
from device_agent.verdict import judge
from tests.records import BOARD, make_run, record
from tests.test_agent import run_agent, wait_for, write_job
from tests.test_paired_stats import fake_pair
from tests.test_protocol import GOOD_RESULT, JOB, encoded
from toolkit.boards.doctor import _governor_check
from toolkit.boards.targets import Target
from toolkit.cli.main import echo_results
from toolkit.report.render import render_html, render_markdown, report_rows

CPU = "sys/devices/system/cpu"
#: A big.LITTLE board as an RK3588 shows it: policy0 (little), policy4 and policy6 (big).
BIG_LITTLE = {0: ([0, 1, 2, 3], "schedutil", 408000, 1800000),
              4: ([4, 5], "performance", 2400000, 2400000),
              6: ([6, 7], "performance", 2400000, 2400000)}


def policy_tree(root: Path, policies: dict[int, tuple[list[int], str, int, int]]) -> Path:
    """``root`` laid out as ``/``: one cpufreq policy folder per cluster (kHz files)."""
    for number, (cpus, governor, low, high) in policies.items():
        folder = root / CPU / f"cpufreq/policy{number}"
        folder.mkdir(parents=True)
        (folder / "related_cpus").write_text(" ".join(map(str, cpus)) + "\n")
        (folder / "scaling_governor").write_text(governor + "\n")
        (folder / "scaling_cur_freq").write_text(f"{high}\n")
        (folder / "scaling_min_freq").write_text(f"{low}\n")
        (folder / "scaling_max_freq").write_text(f"{high}\n")
        (folder / "cpuinfo_max_freq").write_text(f"{high}\n")
    return root


def governors(root: Path) -> list[str]:
    return [path.read_text().strip() for path in
            sorted((root / CPU / "cpufreq").glob("policy*/scaling_governor"))]


def test_the_kernels_cpu_lists_are_read() -> None:
    assert parse_cpu_list("0-3 6,7\n") == [0, 1, 2, 3, 6, 7]
    assert parse_cpu_list("") == []


def test_each_cluster_is_read_once_with_its_governor_and_clocks(tmp_path: Path) -> None:
    state = clock_state(policy_tree(tmp_path, BIG_LITTLE), cpus=set(range(8)))
    assert [c["cpus"] for c in state["clusters"]] == [[0, 1, 2, 3], [4, 5], [6, 7]]
    assert state["clusters"][0] == {"cpus": [0, 1, 2, 3], "governor": "schedutil",
                                    "cur_mhz": 1800.0, "min_mhz": 408.0, "max_mhz": 1800.0,
                                    "cpuinfo_max_mhz": 1800.0}
    # The governor of the clusters that ran: the agent pinned to the big cores sees one.
    assert state["governor"] == "mixed"
    assert clock_state(tmp_path, cpus={4, 5})["governor"] == "performance"
    assert "jetson" not in state  # not a Jetson: no power mode to read


def test_an_older_kernel_without_policy_folders_is_grouped_by_related_cpus(
        tmp_path: Path) -> None:
    for cpu in range(4):
        folder = tmp_path / CPU / f"cpu{cpu}/cpufreq"
        folder.mkdir(parents=True)
        (folder / "related_cpus").write_text("0-1\n" if cpu < 2 else "2-3\n")
        (folder / "scaling_governor").write_text("ondemand\n")
    state = clock_state(tmp_path, cpus={0})
    assert [c["cpus"] for c in state["clusters"]] == [[0, 1], [2, 3]]
    # Clock files this kernel does not expose are left out, never read as 0.
    assert state["clusters"][0] == {"cpus": [0, 1], "governor": "ondemand"}
    assert state["governor"] == "ondemand"


def test_a_board_without_cpufreq_says_not_exposed(tmp_path: Path) -> None:
    (tmp_path / CPU / "cpufreq").mkdir(parents=True)  # as this machine: present, empty
    assert clock_state(tmp_path) == {"governor": "not exposed", "clusters": []}
    change = GovernorChange("performance", tmp_path)
    change.apply()
    assert change.failure == "cpufreq is not exposed on this board"
    assert change.condition.startswith("set_governor performance not applied: cpufreq is not "
                                       "exposed")


def test_a_jetsons_power_mode_and_jetson_clocks(tmp_path: Path) -> None:
    # jetson_clocks pins every cluster's minimum to its maximum.
    policy_tree(tmp_path, {0: ([0, 1, 2, 3], "schedutil", 1510400, 1510400),
                           4: ([4, 5], "schedutil", 1510400, 1510400)})
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nvpmodel.conf").write_text("< POWER_MODEL ID=0 NAME=15W >\n")
    queried = clock_state(tmp_path, runner=lambda command: "NV Power Mode: 15W\n0\n")
    assert queried["jetson"] == {"nvpmodel": "15W", "nvpmodel_source": "nvpmodel -q",
                                 "jetson_clocks": True}

    def no_nvpmodel(command: object) -> str:
        raise OSError("nvpmodel: No such file or directory")

    (tmp_path / "var/lib/nvpmodel").mkdir(parents=True)
    (tmp_path / "var/lib/nvpmodel/status").write_text("pmode:0002 fmode:quiet\n")
    (tmp_path / CPU / "cpufreq/policy4/scaling_min_freq").write_text("729600\n")
    from_status = clock_state(tmp_path, runner=no_nvpmodel)
    assert from_status["jetson"] == {"nvpmodel": "mode 2",
                                     "nvpmodel_source": "/var/lib/nvpmodel/status",
                                     "jetson_clocks": False}


def test_the_clock_summary_names_each_cluster_its_clock_and_a_jetsons_mode(
        tmp_path: Path) -> None:
    """One line for doctor and the paired gate: a clock below its most is said as such."""
    state = clock_state(policy_tree(tmp_path, BIG_LITTLE), cpus=set(range(8)))
    state["clusters"][0]["cur_mhz"] = 408.0
    state["jetson"] = {"nvpmodel": "MAXN", "jetson_clocks": False}
    assert clock_summary(state) == (
        "mixed (CPUs 0-3 schedutil at 408 of 1800 MHz, CPUs 4-5 performance up to 2400 MHz, "
        "CPUs 6-7 performance up to 2400 MHz); nvpmodel MAXN; jetson_clocks not applied")
    assert clock_summary({"governor": "not exposed", "clusters": []}) == "not exposed"


def test_a_pair_reads_the_clocks_before_its_first_block_and_after_its_rounds(
        tmp_path: Path) -> None:
    """The same reading as a variant's, around the interleaved rounds: a governor changed
    while the pair ran is seen, and the answer carrying it passes the protocol's checks."""
    steady = policy_tree(tmp_path / "a", {0: ([0, 1, 2, 3], "performance", 1800000, 1800000)})
    later = policy_tree(tmp_path / "b", {0: ([0, 1, 2, 3], "schedutil", 408000, 1800000)})
    roots = iter([steady, later])
    models, clock = fake_pair(10_000)
    found = measure_pair(models, protocol.PairedSettings(block_seconds=0.001, max_rounds=1),
                         rng=random.Random(0), clock=clock,
                         clocks=lambda: clock_state(next(roots), cpus={0}))
    assert [found["clocks"][when]["governor"] for when in ("before", "after")] == [
        "performance", "schedutil"]
    assert found["clocks"]["after"]["clusters"][0]["min_mhz"] == 408.0
    validate_pair_results([{**found, "name": "fp32", "status": "ok", "threads": 1,
                            "runtime": {"name": "ai-edge-litert", "version": "2.3.0"}}],
                          ["fp32"])


def test_a_governor_other_than_performance_is_a_named_condition_never_invalid(
        tmp_path: Path) -> None:
    schedutil = clock_state(policy_tree(tmp_path, BIG_LITTLE), cpus={0})
    assert governor_condition([schedutil]) == (
        "governor schedutil: figures depend on the load the governor sees; set performance "
        "for stable figures")
    assert governor_condition([{"governor": "performance"}, {"governor": "not exposed"}]) == ""
    figures = {"runs": 100, "wall_seconds": 2.0, "measured_seconds": 2.0,
               "latency_ms": {"p50": 1.0, "robust_cv": 0.01},
               "latency_samples_ms": [1.0] * 100,
               "clocks": {"before": schedutil, "after": schedutil}}
    verdict = judge(figures, {})
    assert verdict["status"] == "VALID"
    assert verdict["conditions"] == [governor_condition([schedutil])]
    figures["clocks"] = {"before": {"governor": "performance", "clusters": []}}
    assert "conditions" not in judge(figures, {})


def test_set_governor_sets_every_writable_cluster_and_restores_it(tmp_path: Path) -> None:
    policy_tree(tmp_path, BIG_LITTLE)
    change = GovernorChange("performance", tmp_path)
    change.apply()
    assert governors(tmp_path) == ["performance"] * 3 and change.failure == ""
    change.restore()
    assert governors(tmp_path) == ["schedutil", "performance", "performance"]


def test_a_cluster_that_cannot_be_set_is_named_and_the_others_still_restored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy_tree(tmp_path, {0: ([0, 1], "schedutil", 1, 2), 2: ([2, 3], "ondemand", 1, 2)})
    refused = tmp_path / CPU / "cpufreq/policy2/scaling_governor"
    original = Path.write_text

    def write_text(path: Path, text: str, *args: object, **kwargs: object) -> int:
        if path == refused:  # as sysfs answers a user who may not write it (root is exempt)
            raise PermissionError(13, "Permission denied")
        return original(path, text, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_text", write_text)
    change = GovernorChange("performance", tmp_path)
    change.apply()
    assert governors(tmp_path) == ["performance", "ondemand"]
    assert change.condition == (
        "set_governor performance not applied: scaling_governor not written for CPUs 2-3: "
        "Permission denied; figures are on the board's own governor")
    change.restore()
    assert governors(tmp_path) == ["schedutil", "ondemand"]
    # A governor the kernel does not offer is named as such, not as EINVAL.
    (tmp_path / CPU / "cpufreq/policy0/scaling_available_governors").write_text(
        "schedutil powersave\n")
    offered = GovernorChange("performance", tmp_path)
    offered.apply()
    assert offered.failure.startswith("scaling_governor not written for CPUs 0-1: not one of "
                                      "its governors (schedutil powersave); CPUs 2-3: ")
    offered.restore()


def test_the_agent_restores_the_governors_when_the_job_is_interrupted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    board = policy_tree(tmp_path / "board", BIG_LITTLE)
    job = protocol.make_job(job_id="j", variants=[{"name": "fp32", "file": "m.tflite",
                                                   "sha256": "0" * 64}],
                            settings={"set_governor": "performance"})
    (tmp_path / "job.json").write_text(json.dumps(job))
    during = []

    def interrupted(*args: object) -> None:
        during.append(governors(board))
        raise agent._Stopped(signal.SIGTERM)  # what the SIGTERM handler raises mid-job

    monkeypatch.setattr(agent, "GovernorChange",
                        lambda asked: GovernorChange(asked, root=board))
    monkeypatch.setattr(agent, "_run_job", interrupted)
    assert agent._run(tmp_path / "job.json", None) == 128 + signal.SIGTERM
    assert during == [["performance"] * 3]
    assert governors(board) == ["schedutil", "performance", "performance"]


def test_set_governor_is_a_governor_name() -> None:
    assert JobSettings.from_dict({"set_governor": "performance"}).set_governor == "performance"
    with pytest.raises(protocol.ProtocolError, match="set_governor"):
        JobSettings.from_dict({"set_governor": "performance\nschedutil"})


def test_clock_facts_are_checked_when_present() -> None:
    state = {"governor": "schedutil", "clusters": [{"cpus": [0, 1], "governor": "schedutil",
                                                    "cur_mhz": 1800.0}],
             "jetson": {"nvpmodel": "MAXN", "jetson_clocks": False}}
    newer = copy.deepcopy(GOOD_RESULT)
    newer["board"]["cpu_governor"] = "schedutil"
    newer["variants"][0]["clocks"] = {"before": state, "after": copy.deepcopy(state)}
    assert protocol.parse_result(encoded(newer), JOB)["board"]["cpu_governor"] == "schedutil"
    for change, message in [
        (lambda d: d["board"].update(cpu_governor=3), "board.cpu_governor"),
        (lambda d: d["variants"][0]["clocks"]["after"].update(governor=None), "after.governor"),
        (lambda d: d["variants"][0]["clocks"]["before"]["clusters"][0].update(cur_mhz=-1),
         r"clusters\[0\].cur_mhz"),
        (lambda d: d["variants"][0]["clocks"]["before"]["clusters"][0].update(cpus="0-1"),
         "cpus"),
        (lambda d: d["variants"][0]["clocks"]["before"]["jetson"].update(jetson_clocks="on"),
         "jetson_clocks"),
    ]:
        bad = copy.deepcopy(newer)
        change(bad)
        with pytest.raises(protocol.ProtocolError, match=message):
            protocol.parse_result(encoded(bad), JOB)


def test_the_local_board_sends_its_clock_facts_and_never_fails_for_them(
        tiny_tflite: Path, agent_python: str) -> None:
    """This machine, whatever it exposes: no cpufreq gives "not exposed", never a crash, and
    a governor that cannot be set is a named condition of a measured variant."""
    result = run_agent(tiny_tflite.parent, [{"name": "tiny", "file": tiny_tflite.name}],
                       {"set_governor": "performance", "cooldown_seconds": 0},
                       python=agent_python)
    measured = result["variants"][0]
    assert measured["status"] == "ok"
    local = clock_state()
    assert result["board"]["cpu_governor"] == local["governor"]
    assert [c["cpus"] for c in measured["clocks"]["before"]["clusters"]] == \
        [c["cpus"] for c in local["clusters"]]
    if not local["clusters"]:
        assert local["governor"] == "not exposed"
        assert any(c.startswith("set_governor performance not applied: cpufreq is not exposed")
                   for c in measured["verdict"]["conditions"])


def test_doctor_facts_carry_the_clock_state(agent_python: str) -> None:
    facts = json.loads(subprocess.run(
        [agent_python, "-m", "device_agent", "facts", "none"], capture_output=True,
        check=True, text=True, cwd=Path(__file__).resolve().parent.parent).stdout)
    assert facts["clocks"]["governor"] == facts["board"]["cpu_governor"]


def _in_own_cpufreq(tree: Path, command: list[str]) -> list[str]:
    """``command`` in a mount namespace of its own where ``tree`` is the board's cpufreq
    folder: the real agent on a sysfs this user may write (root only)."""
    return ["unshare", "--mount", "sh", "-c",
            f"mount --bind {shlex.quote(str(tree))} /sys/devices/system/cpu/cpufreq && exec "
            + shlex.join(command)]


def _can_overlay_cpufreq() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None \
        and Path("/sys/devices/system/cpu/cpufreq").is_dir()


@pytest.mark.integration
@pytest.mark.skipif(not _can_overlay_cpufreq(), reason="needs root, unshare and a cpufreq folder")
def test_the_real_agent_sets_the_governor_for_the_job_and_restores_it(
        tiny_tflite: Path, agent_python: str) -> None:
    board = policy_tree(tiny_tflite.parent / "board", BIG_LITTLE)
    cpufreq = board / CPU / "cpufreq"
    variants = [{"name": "tiny", "file": tiny_tflite.name}]
    command, job = write_job(tiny_tflite.parent, variants,
                             {"set_governor": "performance", "cooldown_seconds": 0})
    done = subprocess.run(_in_own_cpufreq(cpufreq, [agent_python, *command[1:]]),
                          capture_output=True, check=True)
    result = protocol.parse_result(done.stdout, job)
    measured = result["variants"][0]
    # Measured on the governor the job set, so no condition names it ...
    assert measured["clocks"]["before"]["governor"] == "performance"
    assert result["board"]["cpu_governor"] == "performance"
    assert "conditions" not in measured["verdict"]
    # ... and the board's own governors are back once the job is over.
    assert governors(board) == ["schedutil", "performance", "performance"]

    # Stopped mid-variant by the host's SIGTERM: restored too.
    command, _job = write_job(tiny_tflite.parent, variants, {
        "set_governor": "performance", "min_seconds": 60, "max_seconds": 60,
        "min_runs": 10**9, "max_runs": 10**9})
    running = subprocess.Popen(_in_own_cpufreq(cpufreq, [agent_python, *command[1:]]),
                               stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        wait_for(lambda: governors(board) == ["performance"] * 3)
        running.send_signal(signal.SIGTERM)
        stdout, stderr = running.communicate(timeout=30)
    finally:
        running.kill()
    assert running.returncode == 128 + signal.SIGTERM and stdout == b"", stderr
    assert governors(board) == ["schedutil", "performance", "performance"]


def test_the_governor_condition_is_shown_in_the_report_and_the_cli_row(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    schedutil = clock_state(policy_tree(tmp_path, BIG_LITTLE), cpus={0})
    measured = {**record("int8", board={**BOARD, "cpu_governor": "schedutil"}),
                "clocks": {"before": schedutil, "after": schedutil}}
    measured["verdict"] = judge(measured, {"min_runs": 1, "min_seconds": 0})
    warning = governor_condition([schedutil])
    run = make_run("r", [measured])
    [row] = report_rows(run)
    assert row.verdict == f"VALID; {warning}" and row.trusted
    assert f"| VALID; {warning}" in render_markdown(run)
    assert "Python 3.11.2, governor schedutil</li>" in render_html(run)  # the board's line
    echo_results(run)
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[-3:] == ["VALID;", "governor", "schedutil"]
    assert table[2] == f"local int8: VALID; {warning}"


def test_doctor_names_the_governor_and_warns_off_performance(tmp_path: Path) -> None:
    plain = Target(name="b", transport="local")
    schedutil = clock_state(policy_tree(tmp_path, BIG_LITTLE), cpus=set(range(8)))
    check = _governor_check(plain, schedutil)
    assert check.ok and check.warning  # a warning, never a failed board
    assert check.detail.startswith(
        "mixed (CPUs 0-3 schedutil up to 1800 MHz, CPUs 4-5 performance up to 2400 MHz, "
        "CPUs 6-7 performance up to 2400 MHz): figures depend on the load the governor sees")
    pinned = _governor_check(Target(name="b", transport="local", set_governor="performance"),
                             schedutil)
    assert pinned.ok and not pinned.warning and pinned.detail.endswith("jobs set performance")
    none = _governor_check(plain, {"governor": "not exposed", "clusters": []})
    assert none.ok and not none.warning and "not exposed" in none.detail
