"""Latency methodology, verdicts, energy from a fixture sensor, and the on-board output check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device_agent import protocol
from device_agent.measure import latency_summary, measure_variant
from device_agent.outputs import load_reference
from device_agent.power import PowerReader, SensorLost
from device_agent.runtime import find_runtime
from device_agent.verdict import judge, stalls

FAST = {**protocol.DEFAULT_SETTINGS, "warmup_runs": 2, "warmup_seconds": 0.0, "min_runs": 10,
        "min_seconds": 0.05, "idle_seconds": 0.1, "power_rate_hz": 200.0}
NO_THERMAL = {"zones_c": {}, "cpu_mhz": {}}


class ConstantPower(PowerReader):
    kind = "fixture"
    misses = "nothing: a constant by construction"

    def __init__(self, watts: float) -> None:
        self.watts = watts

    def read_watts(self) -> float | None:
        return self.watts


def test_summary_has_percentiles_and_cv() -> None:
    summary = latency_summary(np.array([1.0, 1.0, 2.0, 2.0]))
    assert summary["mean"] == 1.5 and summary["std"] == 0.5
    assert summary["cv"] == pytest.approx(1 / 3)
    assert summary["robust_cv"] == pytest.approx(1.4826 * 0.5 / 1.5)
    assert summary["min"] == 1.0 and summary["max"] == 2.0


def test_rare_os_stalls_do_not_void_a_steady_microsecond_run() -> None:
    # 100,000 steady runs of 9 us (+-0.2 us) and two 1.2 ms stalls: std / mean says 0.6,
    # the robust CV says the runs were steady; the stalls still show in max.
    rng = np.random.default_rng(0)
    samples = np.concatenate([0.009 + 0.0002 * rng.standard_normal(100_000), [1.2, 1.26]])
    summary = latency_summary(samples)
    assert summary["cv"] > 0.5 and summary["robust_cv"] < 0.03 and summary["max"] == 1.26
    figures = {"runs": samples.size, "measured_seconds": 1.0, "latency_ms": summary}
    settings = {**FAST, "min_runs": 50, "min_seconds": 0.5, "max_cv": 0.1}
    assert judge(figures, settings)["status"] == "VALID"


def test_measurement_follows_the_floors_and_is_judged(tflite_copy: Path) -> None:
    figures = measure_variant(find_runtime(), tflite_copy, {**FAST, "max_cv": 0.0},
                              thermal=lambda: NO_THERMAL)
    assert figures["runs"] >= 10 and figures["wall_seconds"] >= 0.05
    assert len(figures["latency_samples_ms"]) == figures["runs"]
    assert figures["warmup_runs_done"] >= 2
    assert figures["model_load_ms"] + figures["allocate_ms"] == pytest.approx(
        figures["load_ms"])
    assert figures["verdict"]["status"] in ("VALID", "INVALID")
    assert "power" not in figures  # no sensor: energy fields absent, not zero
    assert "output_check" not in figures


def test_many_runs_ship_every_kth_sample_and_summarise_them_all(
        tflite_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("device_agent.measure.MAX_RAW_SAMPLES", 7)
    figures = measure_variant(find_runtime(), tflite_copy, {**FAST, "min_runs": 50},
                              thermal=lambda: NO_THERMAL)
    every = figures["latency_samples_every"]
    assert figures["runs"] >= 50 and every == -(-figures["runs"] // 7)
    assert len(figures["latency_samples_ms"]) == -(-figures["runs"] // every) <= 7
    # The summary comes from every run, so its extremes bound the shipped subset.
    assert figures["latency_ms"]["min"] <= min(figures["latency_samples_ms"]) + 1e-3
    assert figures["latency_ms"]["max"] >= max(figures["latency_samples_ms"]) - 1e-3


def test_a_fast_model_reaches_the_time_floor_before_the_count_ceiling(
        tflite_copy: Path) -> None:
    settings = {**protocol.DEFAULT_SETTINGS, "warmup_runs": 2, "warmup_seconds": 0.0,
                "min_seconds": 1.0}
    figures = measure_variant(find_runtime(), tflite_copy, settings, thermal=lambda: NO_THERMAL)
    assert figures["wall_seconds"] >= 1.0
    assert not any(r.startswith("too") for r in figures["verdict"]["reasons"])


def test_ceiling_cuts_a_run_short_and_the_verdict_says_why(tflite_copy: Path) -> None:
    settings = {**FAST, "min_runs": 10**9, "min_seconds": 100.0, "max_seconds": 0.05}
    figures = measure_variant(find_runtime(), tflite_copy, settings, thermal=lambda: NO_THERMAL)
    # Cut by the ceiling, not run to the floors: a hang guard against the 100 s time floor
    # (half of it: a loaded machine cannot come near), not a figure.
    assert figures["wall_seconds"] < settings["min_seconds"] / 2
    assert figures["runs"] < settings["min_runs"]
    reasons = " ".join(figures["verdict"]["reasons"])
    assert figures["verdict"]["status"] == "INVALID"
    assert "too few runs" in reasons and "too short" in reasons


def test_verdict_reasons_one_by_one() -> None:
    good = {"runs": 100, "measured_seconds": 2.0, "latency_ms": {"cv": 0.01, "robust_cv": 0.01},
            "thermal": {"throttled": []}}
    settings = {**FAST, "min_runs": 50, "min_seconds": 1.0, "max_cv": 0.05}
    assert judge(good, settings) == {"status": "VALID", "reasons": []}
    cases = [
        ({"runs": 3}, "too few runs"),
        ({"measured_seconds": 0.1}, "too short"),
        ({"thermal": {"throttled": ["throttled after (0x4)"]}}, "throttled after"),
        ({"latency_ms": {"cv": 0.2, "robust_cv": 0.2}},
         "coefficient of variation 0.200 (robust: MAD / median) above the limit 0.05"),
        ({"output_check": {"ok": False, "summary": "top-1 0.5"}}, "outputs mismatched"),
    ]
    for change, reason in cases:
        verdict = judge({**good, **change}, settings)
        assert verdict["status"] == "INVALID"
        assert len(verdict["reasons"]) == 1 and reason in verdict["reasons"][0]


def test_energy_per_inference_from_a_constant_fixture_sensor(tflite_copy: Path) -> None:
    watts = 6.5
    figures = measure_variant(find_runtime(), tflite_copy, FAST, power_reader=ConstantPower(watts),
                              thermal=lambda: NO_THERMAL)
    power = figures["power"]
    assert power["idle_power_w"] == watts and power["active_power_w"] == watts
    assert power["runs"] >= 10  # the energy pass has its own runs, the latency pass none
    assert power["energy_per_inference_j"] == pytest.approx(
        watts * power["wall_seconds"] / power["runs"])
    assert power["energy_above_idle_per_inference_j"] == pytest.approx(0.0)
    assert power["sample_rate_hz"] > 0
    assert power["sensor"]["kind"] == "fixture"


class VanishingPower(ConstantPower):
    """Answers a few times, then the device is gone (driver unbound, cable pulled)."""

    def __init__(self, watts: float, answers: int) -> None:
        super().__init__(watts)
        self.answers = answers

    def read_watts(self) -> float | None:
        if self.answers == 0:
            raise SensorLost("power1_input: No such device")
        self.answers -= 1
        return self.watts


def test_a_sensor_lost_mid_run_leaves_a_reason_and_no_energy(tflite_copy: Path) -> None:
    figures = measure_variant(find_runtime(), tflite_copy, FAST,
                              power_reader=VanishingPower(3.0, answers=2),
                              thermal=lambda: NO_THERMAL)
    assert figures["status"] == "ok"
    assert "sensor lost" in figures["power"]["error"]
    assert "energy_per_inference_j" not in figures["power"]


def write_reference(folder: Path, model: Path, *, corrupt: bool = False) -> Path:
    """What the host does: run a few real digits through its interpreter, save in and out."""
    from sklearn.datasets import load_digits

    from toolkit.model.reference import compute_reference

    images = load_digits().images[:8].astype(np.float32) / 16.0
    samples = [(image,) for image in images.reshape(8, 1, 1, 8, 8)]
    samples = [(image,) for image in images.reshape(8, 1, 1, 8, 8)]
    path = compute_reference(model, samples, folder / "ref.npz")
    if corrupt:
        reference = load_reference(path)
        np.savez(path, input_0=reference["inputs"][0], output_0=-reference["outputs"][0])
    return path


def test_output_check_agrees_with_the_host(tflite_copy: Path) -> None:
    reference = load_reference(write_reference(tflite_copy.parent, tflite_copy))
    figures = measure_variant(find_runtime(), tflite_copy, FAST, reference=reference,
                              thermal=lambda: NO_THERMAL)
    check = figures["output_check"]
    assert check["ok"] is True and check["samples"] == 8
    assert check["max_abs_diff"] <= 1e-4 and check["top1_agreement"] == 1.0
    assert check["rule"] == "within atol 0.0001"  # the same runtime: the tight rule judged it


def test_mismatched_outputs_are_flagged(tflite_copy: Path) -> None:
    reference = load_reference(write_reference(tflite_copy.parent, tflite_copy, corrupt=True))
    figures = measure_variant(find_runtime(), tflite_copy, FAST, reference=reference,
                              thermal=lambda: NO_THERMAL)
    assert figures["output_check"]["ok"] is False
    assert figures["verdict"]["status"] == "INVALID"
    assert any("outputs mismatched" in r for r in figures["verdict"]["reasons"])


def test_a_model_the_host_cannot_run_is_deployed_without_an_output_check(
        tflite_copy: Path, tmp_path: Path) -> None:
    from toolkit.artifacts.bundle import describe_artifact
    from toolkit.model.load import load_model_source
    from toolkit.run.execute import build_references

    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"\x00" * 64)
    artifacts = [describe_artifact("good", tflite_copy, config={}),
                 describe_artifact("broken", broken, config={})]
    references = build_references(load_model_source(tflite_copy), artifacts, tmp_path / "refs")
    assert list(references) == [artifacts[0].board_name]
    assert load_reference(references[artifacts[0].board_name])["outputs"][0].shape[0] == 32


def test_microsecond_samples_keep_sub_microsecond_resolution(tflite_copy: Path) -> None:
    # The digits CNN runs in a few to a few tens of microseconds: samples rounded to 1 us
    # (0.001 ms) took a handful of values and its gate could not see a 10 % change.
    figures = measure_variant(find_runtime(), tflite_copy, {**FAST, "min_runs": 200},
                              thermal=lambda: NO_THERMAL)
    samples = np.array(figures["latency_samples_ms"])
    # No bound on the speed itself (a busy machine moves it): the checks below hold for a run
    # of any length, and fail when the samples are rounded to whole microseconds.
    assert figures["latency_ms"]["p50"] > 0
    in_us = samples * 1e3
    assert np.any(np.abs(in_us - np.round(in_us)) > 1e-6)  # not all multiples of 0.001 ms
    in_ns = samples * 1e6
    assert np.allclose(in_ns, np.round(in_ns), atol=1e-3)  # whole nanoseconds, as timed
    assert len(np.unique(samples)) > 20


def test_without_eval_data_the_reference_starts_with_the_models_own_example() -> None:
    # The board times the model on the reference's first sample: for token ids that must be
    # the ids the user gave, never random integers (EMBEDDING_LOOKUP fails on those).
    from toolkit.model.load import load_model_source
    from toolkit.model.reference import source_inputs

    tokens = load_model_source(Path(__file__).parent / "models" / "token_ids.py")
    found = source_inputs(tokens)
    assert found is not None and len(found) == 1
    assert np.array_equal(found[0][0], tokens.example_input[0].numpy())
    # All-float inputs: the example first, then seeded random ones for a wider check.
    floats = load_model_source(Path(__file__).parent / "models" / "embedding_bag.py")
    found = source_inputs(floats, samples=5)
    assert found is not None and len(found) == 5
    assert np.array_equal(found[0][0], floats.example_input[0].numpy())
    assert found[1][0].shape == found[0][0].shape and not np.array_equal(found[1][0],
                                                                          found[0][0])


def test_the_arm_style_tail_is_named_beside_valid_and_a_steady_run_is_plain_valid() -> None:
    # arm64 board: p50 0.44 ms, 10 % of runs at ten times the median (p99 20.7 ms).
    rng = np.random.default_rng(0)
    steady = 0.44 + 0.004 * rng.standard_normal(9_000)
    stalled = np.concatenate([steady, 4.4 + 16 * rng.random(1_000)])
    settings = {**FAST, "min_runs": 50, "min_seconds": 0.5, "max_cv": 0.1}
    for samples, condition in ((stalled, "stalls: 10.0 % of runs above 10x the median"),
                               (steady, None)):
        figures = {"runs": samples.size, "measured_seconds": 5.0,
                   "latency_ms": latency_summary(samples),
                   "latency_samples_ms": samples.tolist()}
        verdict = judge(figures, settings)
        assert verdict["status"] == "VALID" and verdict["reasons"] == []
        if condition is None:
            assert "conditions" not in verdict
        else:
            [said] = verdict["conditions"]
            assert said.startswith(condition) and "the median (0.44" in said
    # 1 % exactly is within the limit; one more stalled run is not.
    base = [1.0] * 99
    assert stalls([*base, 11.0], 1.0) == ""
    assert stalls([*base[:-1], 11.0, 11.0], 1.0).startswith("stalls: 2.0 % of runs")


def test_an_energy_figure_from_few_sensor_samples_is_named_rough() -> None:
    samples = np.full(200, 1.0)
    figures = {"runs": samples.size, "measured_seconds": 1.0,
               "latency_ms": latency_summary(samples), "latency_samples_ms": samples.tolist()}
    settings = {**FAST, "min_runs": 50, "min_seconds": 0.5}
    for active_samples, said in ((3.0, "energy from 3 sensor samples (fewer than 10): a rough "
                                       "figure"), (10.0, None)):
        power = {"energy_per_inference_j": 0.001, "active_samples": active_samples}
        verdict = judge({**figures, "power": power}, settings)
        assert verdict["status"] == "VALID"
        if said is None:
            assert "conditions" not in verdict
        else:
            [condition] = verdict["conditions"]
            assert condition.startswith(said)
    # A sensor that gave no figure has its own error, not this condition.
    assert "conditions" not in judge({**figures, "power": {"error": "no sample"}}, settings)


def test_degenerate_outputs_make_the_verdict_invalid_and_are_named() -> None:
    good = {"runs": 100, "measured_seconds": 2.0, "latency_ms": {"cv": 0.01, "robust_cv": 0.01},
            "thermal": {"throttled": []}}
    settings = {**FAST, "min_runs": 50, "min_seconds": 1.0, "max_cv": 0.05}
    check = {"ok": False, "degenerate": "the host's outputs are all zero; the board's outputs "
             "are all zero", "summary": "degenerate outputs: ..."}
    verdict = judge({**good, "output_check": check}, settings)
    assert verdict["status"] == "INVALID"
    assert verdict["reasons"] == ["outputs degenerate: the host's outputs are all zero; "
                                  "the board's outputs are all zero"]


def test_the_reference_tells_the_board_to_judge_a_model_without_labels_by_cosine(
        tflite_copy: Path, tmp_path: Path) -> None:
    from toolkit.artifacts.bundle import describe_artifact
    from toolkit.model.load import load_model_source
    from toolkit.run.execute import build_references

    source = load_model_source(tflite_copy)
    for fidelity, metric in (({"agreement_metric": "cosine"}, "cosine"), (None, "top1")):
        artifact = describe_artifact("fp32", tflite_copy, config={}, fidelity=fidelity)
        made = build_references(source, [artifact], tmp_path / metric)
        reference = load_reference(made[artifact.board_name])
        assert reference["metric"] == metric
        figures = measure_variant(find_runtime(), tflite_copy, FAST, reference=reference,
                                  thermal=lambda: NO_THERMAL)
        assert figures["output_check"]["ok"] and figures["output_check"]["metric"] == metric
