"""The paired gate: the job it sends, the answers it accepts, and the verdicts it draws.

Unit tests answer the job in-process (``run_job``) with constructed blocks; the last tests
run the real agent zipapp on a real converted model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device_agent import protocol
from device_agent.clocks import clock_state, governor_condition
from toolkit.boards.targets import load_target
from toolkit.errors import ExitCode, UsageError
from toolkit.gate.check import Thresholds
from toolkit.gate.paired import NO_SENSOR, PairSpec, check_paired, judge_pair, paired_job

from .test_agent import write_job
from .test_clocks import BIG_LITTLE, policy_tree


def spec(tmp_path: Path, variant: str = "fp32") -> PairSpec:
    base, new = tmp_path / f"{variant}-base.tflite", tmp_path / f"{variant}-new.tflite"
    base.write_bytes(b"base" + variant.encode())
    new.write_bytes(b"new" + variant.encode())
    return PairSpec(variant=variant, baseline_file=base, baseline_sha256=protocol.sha256_file(base),
                    candidate_file=new, candidate_sha256=protocol.sha256_file(new), threads=2)


def energy_blocks(ratio: float, *, control: float = 1.0, n: int = 12, noise: float = 0.005,
                  seed: int = 0) -> dict[str, Any]:
    """A pair's energy pass as the agent sends it: ``n`` blocks a side of about 2 mJ an
    inference, the candidate's ``ratio`` times the baseline's, ``noise`` per block."""
    rng = np.random.default_rng(seed)
    base = 2.0 * np.exp(rng.normal(0, noise, n))
    return {"sensor": {"kind": "ina3221-hwmon", "misses": "losses before the module input"},
            "block_seconds": 0.5, "rounds": 1, "seconds": 18.2, "rate_hz_asked": 20.0,
            "block_energy_mj": {
                "baseline": base.tolist(),
                "control": (base * control * np.exp(rng.normal(0, noise, n))).tolist(),
                "candidate": (base * ratio * np.exp(rng.normal(0, noise, n))).tolist()}}


def answer(job: dict[str, Any], ratios: dict[str, float], *, control: float = 1.0,
           failed: dict[str, str] | None = None, seed: int = 0,
           energy: dict[str, dict[str, Any]] | None = None,
           clocks: dict[str, Any] | None = None) -> bytes:
    """An agent's answer to a paired ``job``: 32 blocks a side, the candidate's median
    ``ratios[name]`` times the baseline's, with 0.5 % noise per block; ``energy[name]``
    its energy pass (none: no power sensor); ``clocks`` every pair's clock facts (none: an
    agent from before them)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for pair in job["pairs"]:
        name = pair["name"]
        if failed and name in failed:
            pairs.append({"name": name, "status": "failed", "error": failed[name]})
            continue
        base = 0.010 * np.exp(rng.normal(0, 0.005, 32))
        blocks = {"baseline": base.tolist(),
                  "control": (base * control * np.exp(rng.normal(0, 0.005, 32))).tolist(),
                  "candidate": (base * ratios[name] * np.exp(rng.normal(0, 0.005, 32))).tolist()}
        summary = {key: 0.01 for key in protocol.LATENCY_KEYS}
        pairs.append({"name": name, "status": "ok", "block_runs": 2000, "rounds": 2,
                      "seconds": 1.5, "block_median_ms": blocks,
                      "block_p90_ms": {side: [v * 1.02 for v in values]
                                       for side, values in blocks.items()},
                      "latency_ms": {side: summary for side in protocol.SIDES},
                      "runtime": {"name": "ai-edge-litert", "version": "2.3.0"},
                      "threads": 2, "accelerator": "cpu"})
        if energy and name in energy:
            pairs[-1]["energy"] = energy[name]
        if clocks is not None:
            pairs[-1]["clocks"] = clocks
    return json.dumps({"schema_version": protocol.SCHEMA_VERSION, "job_id": job["job_id"],
                       "board": {"hostname": "h", "machine": "x86_64", "system": "Linux",
                                 "python": "3.11"},
                       "variants": [], "pairs": pairs}).encode()


def test_the_job_pairs_each_variants_files_and_carries_the_limits(tmp_path: Path) -> None:
    specs = [spec(tmp_path, "fp32"), spec(tmp_path, "int8")]
    job, files = paired_job(specs, load_target("local"), Thresholds(latency_p50=3.0), "j")
    assert [p["name"] for p in job["pairs"]] == ["fp32", "int8"]
    assert job["paired"] == {"limit": 0.03, "tail_limit": 0.10, "energy_limit": 0.05}
    assert job["settings"]["power_sensor"] == "none"  # the local target's
    board = dataclasses.replace(load_target("local"), power_sensor="rapl")
    assert paired_job(specs, board, Thresholds(), "j")[0]["settings"]["power_sensor"] == "rapl"
    by_name = {v["name"]: v for v in job["variants"]}
    assert by_name["fp32~candidate"]["threads"] == 2
    assert files[by_name["fp32~baseline"]["file"]] == specs[0].baseline_file
    assert files[by_name["int8~candidate"]["file"]] == specs[1].candidate_file


def test_a_file_gone_from_a_run_folder_is_one_usage_line(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"the baseline.s file .* is gone; deploy the baseline"):
        PairSpec(variant="fp32", baseline_file=tmp_path / "nope.tflite", baseline_sha256="x",
                 candidate_file=tmp_path / "nope2.tflite", candidate_sha256="y")


@pytest.mark.parametrize(("ratio", "verdict", "code"), [
    (1.0, "pass", ExitCode.OK), (1.02, "pass", ExitCode.OK),
    (1.08, "regression", ExitCode.FAILED), (1.15, "regression", ExitCode.FAILED),
    (0.8, "improved", ExitCode.OK), (1.05, "inconclusive", ExitCode.INCOMPLETE)])
def test_verdicts_and_exit_codes_follow_the_ratio(tmp_path: Path, ratio: float, verdict: str,
                                                  code: ExitCode) -> None:
    outcome = check_paired(load_target("local"), [spec(tmp_path)], Thresholds(),
                           run_job=lambda _t, job, _f: answer(job, {"fp32": ratio}))
    median = next(c for c in outcome.checks if c.metric == "latency_p50")
    assert median.verdict == verdict and outcome.exit_code == code
    assert median.ratio == pytest.approx(ratio, rel=0.01)
    if verdict != "inconclusive":
        assert median.interval is not None
        assert median.interval[0] <= median.ratio <= median.interval[1]


def test_a_noisy_board_is_named_with_its_figure(tmp_path: Path) -> None:
    outcome = check_paired(load_target("local"), [spec(tmp_path)], Thresholds(),
                           run_job=lambda _t, job, _f: answer(job, {"fp32": 1.2}, control=1.12))
    assert outcome.exit_code == ExitCode.INCOMPLETE
    assert "too noisy to judge" in outcome.summary and "+12." in outcome.summary


def test_a_crashed_pair_fails_alone(tmp_path: Path) -> None:
    outcome = check_paired(
        load_target("local"), [spec(tmp_path, "fp32"), spec(tmp_path, "int8")], Thresholds(),
        run_job=lambda _t, job, _f: answer(job, {"fp32": 1.0},
                                           failed={"int8": "killed by signal SIGSEGV"}))
    verdicts = {(c.variant, c.metric): c.verdict for c in outcome.checks}
    assert verdicts[("fp32", "latency_p50")] == "pass"
    assert verdicts[("int8", "latency_p50")] == "inconclusive"
    assert outcome.exit_code == ExitCode.INCOMPLETE
    assert "SIGSEGV" in outcome.to_markdown() and "SIGSEGV" in outcome.to_junit()


def test_the_output_shows_units_intervals_and_the_control(tmp_path: Path) -> None:
    outcome = check_paired(load_target("local"), [spec(tmp_path)], Thresholds(),
                           run_job=lambda _t, job, _f: answer(job, {"fp32": 1.08}),
                           baseline="main-run", candidate="new-run")
    text = outcome.to_markdown()
    assert "**REGRESSION**" in text and "+8." in text
    assert re.search(r"\| \d+\.\d+ us \| \d+\.\d+ us \|", text)  # units as deploy shows them
    assert "the baseline against itself" in text and "`main-run`" in text
    assert "2000 runs" in text
    junit = outcome.to_junit()
    assert 'failures="1"' in junit
    assert outcome.to_dict()["kind"] == "paired"


@pytest.mark.parametrize("broken", [
    {"block_median_ms": {"baseline": [1.0], "control": [1.0], "candidate": []}},
    {"block_median_ms": {"baseline": [1.0], "control": [1.0], "candidate": [0.0]}},
    {"block_median_ms": {"baseline": [1.0], "control": [1.0], "candidate": ["x"]}},
    {"runtime": "litert"},
    {"block_runs": -1},
    {"clocks": "fast"},
    {"clocks": {"before": {"governor": 5}}},
    {"clocks": {"after": {"clusters": [{"cpus": ["x"]}]}}},
    {"clocks": {"after": {"clusters": [{"cpus": [0], "max_mhz": -1}]}}},
])
def test_malformed_paired_answers_are_refused(tmp_path: Path, broken: dict[str, Any]) -> None:
    job, _ = paired_job([spec(tmp_path)], load_target("local"), Thresholds(), "j")
    document = json.loads(answer(job, {"fp32": 1.0}))
    document["pairs"][0].update(broken)
    if "block_median_ms" in broken:
        document["pairs"][0]["block_p90_ms"] = broken["block_median_ms"]
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_result(json.dumps(document).encode(), job)


def test_a_paired_job_naming_a_file_it_does_not_carry_is_refused(tmp_path: Path) -> None:
    job, _ = paired_job([spec(tmp_path)], load_target("local"), Thresholds(), "j")
    job["pairs"][0]["baseline"] = "nowhere"
    with pytest.raises(protocol.ProtocolError, match="not a variant of the job"):
        protocol.validate_job(job)
    job["pairs"][0]["baseline"] = "fp32~baseline"
    job["paired"] = {"limt": 0.05}
    with pytest.raises(protocol.ProtocolError, match="unknown paired setting 'limt'"):
        protocol.validate_job(job)


@pytest.mark.parametrize(("ratio", "verdict", "code"), [
    (1.0, "pass", ExitCode.OK), (1.10, "regression", ExitCode.FAILED),
    (0.85, "improved", ExitCode.OK), (1.05, "inconclusive", ExitCode.INCOMPLETE)])
def test_energy_is_judged_from_its_paired_blocks_with_an_interval(
        tmp_path: Path, ratio: float, verdict: str, code: ExitCode) -> None:
    outcome = check_paired(
        load_target("local"), [spec(tmp_path)], Thresholds(),
        run_job=lambda _t, job, _f: answer(job, {"fp32": 1.0},
                                           energy={"fp32": energy_blocks(ratio)}))
    [energy] = [c for c in outcome.checks if c.metric == "energy"]
    assert energy.verdict == verdict and outcome.exit_code == code
    assert energy.limit == 5.0 and energy.triples == 12
    assert energy.ratio == pytest.approx(ratio, rel=0.01)
    assert energy.baseline_mj == pytest.approx(2.0, rel=0.02) and energy.baseline_ms is None
    if verdict != "inconclusive":
        assert energy.interval is not None and energy.ratio is not None
        assert energy.interval[0] <= energy.ratio <= energy.interval[1]
    assert NO_SENSOR not in outcome.notes
    text = outcome.to_markdown()
    assert re.search(r"\| fp32 \| energy \| [\d.]+ mJ \| [\d.]+ mJ \|", text)
    assert "fp32 energy: 12 blocks a side of 0.5 s" in text and "ina3221-hwmon" in text
    assert outcome.for_variant("fp32")["measurement"]["energy"]["triples"] == 12


def test_judge_pair_judges_energy_with_the_control(tmp_path: Path) -> None:
    """The control's offset widens energy's interval as it does latency's, and a control
    beyond the limit says the board is too noisy to judge energy."""
    job, _ = paired_job([spec(tmp_path)], load_target("local"), Thresholds(), "j")
    pair = json.loads(answer(job, {"fp32": 1.0}))["pairs"][0]
    pair["energy"] = energy_blocks(1.0, control=1.03)
    energy = next(c for c in judge_pair("local", pair, Thresholds()) if c.metric == "energy")
    assert energy.floor == pytest.approx(1.03, rel=0.01) and energy.verdict == "pass"
    pair["energy"] = energy_blocks(1.2, control=1.08)
    energy = next(c for c in judge_pair("local", pair, Thresholds()) if c.metric == "energy")
    assert energy.verdict == "inconclusive" and "too noisy" in energy.detail
    pair["energy"] = energy_blocks(1.2, n=4)  # too few blocks: no interval, no verdict
    energy = next(c for c in judge_pair("local", pair, Thresholds()) if c.metric == "energy")
    assert energy.verdict == "inconclusive" and energy.interval is None
    assert "spread unknown" in check_paired(
        load_target("local"), [spec(tmp_path)], Thresholds(),
        run_job=lambda _t, j, _f: answer(j, {"fp32": 1.0}, energy={"fp32": pair["energy"]})
    ).to_markdown()


def test_without_a_sensor_there_is_no_energy_metric_and_one_note(tmp_path: Path) -> None:
    outcome = check_paired(load_target("local"), [spec(tmp_path, "fp32"), spec(tmp_path, "int8")],
                           Thresholds(),
                           run_job=lambda _t, job, _f: answer(job, {"fp32": 1.0, "int8": 1.0}))
    assert {c.metric for c in outcome.checks} == {"latency_p50", "latency_tail"}
    assert outcome.notes == [NO_SENSOR] and outcome.exit_code == ExitCode.OK
    assert outcome.to_markdown().count(NO_SENSOR) == 1
    assert outcome.to_dict()["notes"] == [NO_SENSOR]
    assert NO_SENSOR in outcome.to_junit()


def test_a_sensor_error_gives_no_energy_verdict_and_names_the_error(tmp_path: Path) -> None:
    lost = {"sensor": {"kind": "ina3221-hwmon", "misses": ""},
            "error": "sensor lost at 12.345 s: in1_input: [Errno 5] Input/output error"}
    outcome = check_paired(
        load_target("local"), [spec(tmp_path, "fp32"), spec(tmp_path, "int8")], Thresholds(),
        run_job=lambda _t, job, _f: answer(job, {"fp32": 1.0, "int8": 1.0},
                                           energy={"fp32": lost, "int8": lost}))
    assert all(c.metric != "energy" for c in outcome.checks)
    assert outcome.exit_code == ExitCode.OK
    assert outcome.notes == [f"energy of fp32, int8: not measured: {lost['error']}"]
    assert "Input/output error" in outcome.to_markdown()


def test_the_outcome_says_the_clocks_and_the_governor_warning_of_a_variants_verdict(
        tmp_path: Path) -> None:
    """A board on schedutil: each pair's clocks said, and the very condition a variant's
    verdict names, once for the pairs measured under it, in the Markdown and the JSON."""
    schedutil = clock_state(policy_tree(tmp_path / "board", BIG_LITTLE), cpus={0})
    clocks = {"before": schedutil, "after": schedutil}
    outcome = check_paired(
        load_target("local"), [spec(tmp_path, "fp32"), spec(tmp_path, "int8")], Thresholds(),
        run_job=lambda _t, job, _f: answer(job, {"fp32": 1.0, "int8": 1.0}, clocks=clocks))
    warning = governor_condition([schedutil])
    assert warning.startswith("governor schedutil: figures depend on the load")
    assert outcome.notes[0] == f"fp32, int8: {warning}"
    assert outcome.exit_code == ExitCode.OK  # said, never a failed check
    text = outcome.to_markdown()
    assert f"- fp32, int8: {warning}" in text
    assert ("- int8 clocks: schedutil (CPUs 0-3 schedutil up to 1800 MHz, CPUs 4-5 "
            "performance up to 2400 MHz, CPUs 6-7 performance up to 2400 MHz)") in text
    document = json.loads(json.dumps(outcome.to_dict()))
    assert document["measurements"]["fp32"]["clocks"] == clocks
    assert document["notes"][0] == f"fp32, int8: {warning}"
    assert outcome.for_variant("fp32")["measurement"]["clocks"] == clocks  # kept in a record


def test_clocks_on_performance_give_no_warning_and_a_change_is_said_both_ways(
        tmp_path: Path) -> None:
    steady = clock_state(policy_tree(tmp_path / "steady", {0: ([0, 1], "performance",
                                                               1800000, 1800000)}))
    outcome = check_paired(load_target("local"), [spec(tmp_path)], Thresholds(),
                           run_job=lambda _t, job, _f: answer(
                               job, {"fp32": 1.0}, clocks={"before": steady, "after": steady}))
    assert outcome.notes == [NO_SENSOR]
    assert "- fp32 clocks: performance (CPUs 0-1 performance up to 1800 MHz)" in \
        outcome.to_markdown()
    # Set to schedutil during the rounds, which left the CPUs at 408 MHz: both said, warned.
    slowed = policy_tree(tmp_path / "slowed", {0: ([0, 1], "schedutil", 408000, 1800000)})
    (slowed / "sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq").write_text("408000\n")
    after = clock_state(slowed)
    changed = check_paired(load_target("local"), [spec(tmp_path)], Thresholds(),
                           run_job=lambda _t, job, _f: answer(
                               job, {"fp32": 1.0}, clocks={"before": steady, "after": after}))
    assert changed.notes[0] == f"fp32: {governor_condition([after])}"
    assert ("- fp32 clocks: before: performance (CPUs 0-1 performance up to 1800 MHz); "
            "after: schedutil (CPUs 0-1 schedutil at 408 of 1800 MHz)") in changed.to_markdown()


def test_an_agent_without_clock_facts_gives_neither_a_line_nor_a_note(tmp_path: Path) -> None:
    outcome = check_paired(load_target("local"), [spec(tmp_path)], Thresholds(),
                           run_job=lambda _t, job, _f: answer(job, {"fp32": 1.0}))
    assert outcome.notes == [NO_SENSOR] and "clocks" not in outcome.to_markdown()
    assert "clocks" not in outcome.measurements["fp32"]


def test_a_governor_from_a_hostile_board_stays_text_in_the_markdown(tmp_path: Path) -> None:
    hostile = {"governor": "x|y\x1b[2J<b>", "clusters": [
        {"cpus": [0], "governor": "x|y\x1b[2J<b>", "max_mhz": 1.0}]}
    outcome = check_paired(load_target("local"), [spec(tmp_path)], Thresholds(),
                           run_job=lambda _t, job, _f: answer(
                               job, {"fp32": 1.0}, clocks={"before": hostile}))
    text = outcome.to_markdown()
    assert "\x1b" not in text and "<b>" not in text
    assert "- fp32 clocks: x\\|y" in text  # the pipe escaped, as every board string


@pytest.mark.parametrize("broken", [
    {"block_energy_mj": {"baseline": [1.0], "control": [1.0], "candidate": []}},
    {"block_energy_mj": {"baseline": [1.0], "control": [1.0], "candidate": [0.0]}},
    {"block_energy_mj": {"baseline": [1.0], "control": [1.0]}},
    {"sensor": "ina"},
    {"error": 5},
])
def test_malformed_energy_answers_are_refused(tmp_path: Path, broken: dict[str, Any]) -> None:
    job, _ = paired_job([spec(tmp_path)], load_target("local"), Thresholds(), "j")
    document = json.loads(answer(job, {"fp32": 1.0}, energy={"fp32": energy_blocks(1.0)}))
    protocol.parse_result(json.dumps(document).encode(), job)
    document["pairs"][0]["energy"].update(broken)
    with pytest.raises(protocol.ProtocolError, match="energy"):
        protocol.parse_result(json.dumps(document).encode(), job)


# --- the real agent on a real model -------------------------------------------------------


def run_paired(folder: Path, pairs: list[tuple[str, str, str]],
               settings: dict[str, Any] | None = None,
               paired: dict[str, float] | None = None, *,
               python: str = sys.executable) -> dict[str, Any]:
    files = sorted({f for _, base, new in pairs for f in (base, new)})
    command, job = write_job(folder, [{"name": f, "file": f} for f in files], settings)
    job["pairs"] = [{"name": name, "baseline": base, "candidate": new}
                    for name, base, new in pairs]
    job["paired"] = {"max_seconds": 5.0, "block_seconds": 0.005, **(paired or {})}
    protocol.validate_job(job)
    (folder / "job.json").write_text(json.dumps(job))
    completed = subprocess.run([python, *command[1:]], capture_output=True, check=True)
    return protocol.parse_result(completed.stdout, job)


def test_the_agent_measures_a_file_against_itself_and_a_crash_fails_its_pair_alone(
        tflite_copy: Path, agent_python: str) -> None:
    broken = tflite_copy.parent / "broken.tflite"
    broken.write_bytes(b"\x00" * 64)
    result = run_paired(tflite_copy.parent, [("same", tflite_copy.name, tflite_copy.name),
                                             ("bad", tflite_copy.name, broken.name)],
                        python=agent_python)
    same, bad = result["pairs"]
    assert result["variants"] == []
    assert same["status"] == "ok" and bad["status"] == "failed" and bad["error"]
    counts = {len(v) for v in same["block_median_ms"].values()}
    assert len(counts) == 1 and counts.pop() >= 16
    assert same["block_runs"] >= protocol.PairedSettings().min_block_runs
    assert same["runtime"]["name"] in ("ai-edge-litert", "tflite-runtime")
    assert set(same["latency_ms"]) == set(protocol.SIDES)
    assert all(math.isfinite(v) and v > 0 for v in same["block_median_ms"]["candidate"])
    assert "energy" not in same  # the job's power sensor is none
    assert set(same["clocks"]) == {"before", "after"}  # read on the board, as a variant's


def test_the_agent_runs_an_energy_pass_when_the_sensor_opens(tflite_copy: Path,
                                                             agent_python: str) -> None:
    """A meter command printing a constant 3 W, read by the real sampler thread through the
    whole pass: the same file on both sides costs the same energy per inference.

    Blocks of 0.2 s at 50 Hz: a sampler that forks a command per reading fell behind on a
    machine at load 8, and 0.05 s blocks then held no sample (the pass's own refusal)."""
    result = run_paired(tflite_copy.parent, [("same", tflite_copy.name, tflite_copy.name)],
                        settings={"power_sensor": "command", "power_command": "echo 3.0",
                                  "power_rate_hz": 50.0},
                        paired={"energy_block_seconds": 0.2, "energy_block_samples": 2,
                                "energy_max_rounds": 1}, python=agent_python)
    [same] = result["pairs"]
    energy = same["energy"]
    assert energy["sensor"]["kind"] == "command" and "error" not in energy, energy
    assert energy["block_seconds"] == pytest.approx(0.2) and energy["rounds"] == 1
    assert {len(v) for v in energy["block_energy_mj"].values()} == {12}
    [judged] = [c for c in judge_pair("local", same, Thresholds()) if c.metric == "energy"]
    assert judged.verdict != "regression" and judged.interval is not None


def test_a_sensor_that_does_not_open_costs_the_energy_figure_only(tflite_copy: Path,
                                                                  agent_python: str) -> None:
    result = run_paired(tflite_copy.parent, [("same", tflite_copy.name, tflite_copy.name)],
                        settings={"power_sensor": "command", "power_command": " "},
                        python=agent_python)
    [same] = result["pairs"]
    assert same["status"] == "ok" and "power_command is empty" in same["energy"]["error"]


# --- edge deploy --against and edge check --paired ------------------------------------------


def edge(*args: str) -> Any:
    from click.testing import CliRunner

    from toolkit.cli.main import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_against_a_run_in_no_store_fails_at_once(tmp_path: Path) -> None:
    model = tmp_path / "model.tflite"
    model.write_bytes(b"not read: the baseline is looked up first")
    found = edge("deploy", str(model), "-o", str(tmp_path / "out"), "--against", "main")
    assert found.exit_code == ExitCode.USAGE
    assert "no results store" in found.stderr and "Traceback" not in found.output


def test_deploy_against_a_tagged_run_measures_side_by_side_and_stores_the_figures(
        tflite_copy: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    fast = ["--min-runs", "20", "--min-seconds", "0.1"]
    assert edge("deploy", str(tflite_copy), "-o", out, *fast).exit_code == 0
    assert edge("runs", "tag", "latest", "main", "--store",
                str(tmp_path / "out" / "results.sqlite")).exit_code == 0
    unknown = edge("deploy", str(tflite_copy), "-o", out, "--against", "nosuch", *fast)
    assert unknown.exit_code == ExitCode.USAGE and "nosuch" in unknown.stderr
    found = edge("deploy", str(tflite_copy), "-o", out, "--against", "main", "--json", *fast)
    assert found.exit_code in (ExitCode.OK, ExitCode.INCOMPLETE), found.output
    document = json.loads(found.stdout)
    [paired] = document["paired"]
    assert paired["kind"] == "paired" and paired["target"] == "local"
    assert {c["metric"] for c in paired["checks"]} == {"latency_p50", "latency_tail"}
    # The same file on both sides: never a regression.
    assert all(c["verdict"] != "regression" for c in paired["checks"])
    [record] = document["results"]
    assert record["paired"]["baseline_run"] == paired["baseline"]
    assert record["paired"]["measurement"]["block_runs"] >= 15

    again = edge("check", "--baseline", "main", "latest", "--paired", "--store",
                 str(tmp_path / "out" / "results.sqlite"))
    assert again.exit_code in (ExitCode.OK, ExitCode.INCOMPLETE), again.output
    assert "edge check (paired on local)" in again.stdout
