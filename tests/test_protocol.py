"""The job protocol: what the host accepts from an agent, and what it refuses."""

from __future__ import annotations

import copy
import json

import pytest

from device_agent import protocol

JOB = protocol.make_job(job_id="job-1", variants=[
    {"name": "fp32", "file": "a.tflite", "sha256": "a" * 64},
    {"name": "int8", "file": "b.tflite", "sha256": "b" * 64},
])

GOOD_VARIANT = {
    "name": "fp32", "status": "ok", "runtime": {"name": "ai-edge-litert", "version": "2.3.0"},
    "threads": 1, "load_ms": 1.0, "first_inference_ms": 0.5, "runs": 3,
    "latency_samples_ms": [1.0, 0.9, 1.6],
    "measured_seconds": 1.0, "peak_rss_bytes": 50_000_000,
    "latency_ms": {"p50": 1.0, "p90": 1.2, "p99": 1.5, "mean": 1.05, "std": 0.1,
                   "min": 0.9, "max": 1.6},
}
GOOD_RESULT = {
    "schema_version": protocol.SCHEMA_VERSION, "job_id": "job-1",
    "board": {"hostname": "b", "machine": "aarch64", "system": "Linux", "python": "3.11.2"},
    "variants": [GOOD_VARIANT,
                 {"name": "int8", "status": "failed", "error": "killed by signal SIGSEGV"}],
}


def encoded(document: object) -> bytes:
    return json.dumps(document).encode()


def test_valid_result_is_accepted() -> None:
    assert protocol.parse_result(encoded(GOOD_RESULT), JOB)["variants"][1]["status"] == "failed"


def mutated(change) -> dict:
    document = copy.deepcopy(GOOD_RESULT)
    change(document)
    return document


@pytest.mark.parametrize("document, message", [
    (mutated(lambda d: d.update(schema_version=99)), "schema_version"),
    (mutated(lambda d: d.update(job_id="other")), "does not answer job"),
    (mutated(lambda d: d["variants"].pop()), "expected ['fp32', 'int8']"),
    (mutated(lambda d: d["variants"][0].update(status="great")), "status"),
    (mutated(lambda d: d["variants"][0]["latency_ms"].update(p50=float("nan"))), "finite"),
    (mutated(lambda d: d["variants"][0]["latency_ms"].update(p99=0.1)), "not ordered"),
    (mutated(lambda d: d["variants"][0].update(runs=True)), "runs must be a number"),
    (mutated(lambda d: d["variants"][0].pop("peak_rss_bytes")), "peak_rss_bytes"),
    (mutated(lambda d: d["board"].pop("python")), "board.python"),
    (mutated(lambda d: d["variants"][0]["latency_samples_ms"].pop()), "2 samples for 3 runs"),
    (mutated(lambda d: d["variants"][0].update(latency_samples_every=2)),
     "3 samples for 3 runs kept every 2"),
    (mutated(lambda d: d["variants"][0].update(latency_samples_every=0)),
     "latency_samples_every must be a finite number >= 1"),
    ([1, 2, 3], "result must be a dict"),
])
def test_malformed_results_are_refused(document: object, message: str) -> None:
    with pytest.raises(protocol.ProtocolError, match=message.replace("[", r"\[")):
        protocol.parse_result(encoded(document), JOB)


def test_every_kth_sample_of_many_runs_is_accepted() -> None:
    # 5 runs kept every 2: runs 0, 2 and 4.
    thinned = mutated(lambda d: d["variants"][0].update(runs=5, latency_samples_every=2))
    assert protocol.parse_result(encoded(thinned), JOB)["variants"][0]["runs"] == 5


def test_non_json_answer_is_refused() -> None:
    with pytest.raises(protocol.ProtocolError, match="not JSON"):
        protocol.parse_result(b"Segmentation fault\n", JOB)


def test_oversized_answer_is_refused_before_decoding() -> None:
    with pytest.raises(protocol.ProtocolError, match="over the"):
        protocol.parse_result(b" " * (protocol.MAX_RESULT_BYTES + 1), JOB)


def test_job_with_repeated_variant_names_is_refused() -> None:
    with pytest.raises(protocol.ProtocolError, match="repeated"):
        protocol.make_job(job_id="j", variants=[{"name": "x", "file": "a", "sha256": "a"}] * 2)


def test_newer_figures_are_accepted_and_checked_when_present() -> None:
    newer = mutated(lambda d: d["variants"][0].update(
        verdict={"status": "INVALID", "reasons": ["too short: 0.1 s < 1 s"]},
        power={"kind": "ina219-hwmon", "active_power_w": 3.0, "energy_per_inference_j": 0.003},
        output_check={"ok": True, "max_abs_diff": 0.0, "top1_agreement": 1.0,
                      "rule": "within atol 0.0001"},
        runtime_choice="auto: ai-edge-litert 2.3.0 preferred"))
    newer["variants"][0]["latency_ms"]["cv"] = 0.02
    assert protocol.parse_result(encoded(newer), JOB)["variants"][0]["verdict"]["reasons"]
    for change, message in [
        (lambda v: v.update(verdict={"status": "fine", "reasons": []}), "verdict.status"),
        (lambda v: v["latency_ms"].update(cv=-1), "latency_ms.cv"),
        (lambda v: v["latency_ms"].update(robust_cv="low"), "latency_ms.robust_cv"),
        (lambda v: v.update(power={"energy_per_inference_j": float("inf")}), "energy"),
        (lambda v: v.update(output_check={"ok": "yes"}), "output_check.ok"),
        (lambda v: v["output_check"].update(rule=2), "output_check.rule"),
        (lambda v: v.update(runtime_choice=None), "runtime_choice"),
    ]:
        bad = copy.deepcopy(newer)
        change(bad["variants"][0])
        with pytest.raises(protocol.ProtocolError, match=message):
            protocol.parse_result(encoded(bad), JOB)


def test_a_profile_row_has_text_for_its_kernel_and_provider_and_numbers_for_times() -> None:
    row = {"index": 0, "op": "Gemm", "kernel": "fc2/MatMulAddFusion",
           "provider": "CPUExecutionProvider", "p50_us": 2.0, "mean_us": 2.1}
    profile = {"ops": [row], "by_type": [{"op": "Gemm", "count": 1, "mean_us": 2.1}],
               "total_us": {"p50": 6.0, "mean": 6.2}, "ops_sum_us": 2.1}
    good = mutated(lambda d: d["variants"][0].update(profile=profile))
    assert protocol.parse_result(encoded(good), JOB)["variants"][0]["profile"]["ops"] == [row]
    for key, value in (("provider", 5), ("kernel", ["a"]), ("mean_us", "2")):
        bad = copy.deepcopy(good)
        bad["variants"][0]["profile"]["ops"][0][key] = value
        with pytest.raises(protocol.ProtocolError, match=f"profile.ops\\[0\\].{key}"):
            protocol.parse_result(encoded(bad), JOB)


def test_an_older_hosts_job_without_the_newer_settings_is_valid() -> None:
    old = copy.deepcopy(JOB)
    for key in (*protocol.OPTIONAL_SETTINGS, *protocol.TEXT_SETTINGS):
        del old["settings"][key]
    assert protocol.validate_job(old) is old


@pytest.mark.parametrize("change, message", [
    (lambda j: j["settings"].update(max_cv="high"), "max_cv"),
    (lambda j: j["settings"].update(power_sensor=3), "power_sensor"),
    (lambda j: j["variants"][0].update(threads=-2), "threads"),
    (lambda j: j["variants"][0].update(reference=7), "reference"),
])
def test_bad_newer_job_fields_are_refused(change, message: str) -> None:
    job = copy.deepcopy(JOB)
    change(job)
    with pytest.raises(protocol.ProtocolError, match=message):
        protocol.validate_job(job)


def test_the_job_budget_counts_every_wait_the_agent_may_make() -> None:
    settings = {"variant_timeout_seconds": 100, "cooldown_seconds": 2, "cooldown_to_c": 0,
                "attempts": 1}
    plain = protocol.make_job(job_id="j", variants=JOB["variants"], settings=settings)
    assert protocol.job_budget_seconds(plain) == protocol.JOB_STARTUP_SECONDS + 2 * 100 + 2
    cooling = protocol.make_job(job_id="j", variants=JOB["variants"], settings={
        **settings, "cooldown_to_c": 60, "cooldown_max_seconds": 50})
    assert protocol.job_budget_seconds(cooling) == (protocol.JOB_STARTUP_SECONDS
                                                    + 2 * (100 + 50) + 2)
    # An unsteady variant may be measured again: each attempt has its timeout and pause.
    twice = protocol.make_job(job_id="j", variants=JOB["variants"],
                              settings={**settings, "attempts": 2})
    assert protocol.job_budget_seconds(twice) == protocol.JOB_STARTUP_SECONDS + 4 * 100 + 3 * 2
    capped = protocol.make_job(job_id="j", variants=JOB["variants"],
                               settings={"job_timeout_seconds": 30})
    assert protocol.job_budget_seconds(capped) == 30
    older = copy.deepcopy(plain)
    for key in (*protocol.OPTIONAL_SETTINGS, *protocol.TEXT_SETTINGS):
        del older["settings"][key]
    assert protocol.job_budget_seconds(older) == protocol.JOB_STARTUP_SECONDS + 4 * 100 + 3 * 1


def test_the_runtime_setting_names_a_known_runtime() -> None:
    assert JOB["settings"]["runtime"] == "auto"
    with pytest.raises(protocol.ProtocolError, match=r"job\.settings\.runtime must be one of"):
        protocol.make_job(job_id="j", variants=JOB["variants"],
                          settings={"runtime": "tensorflow"})
