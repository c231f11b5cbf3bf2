"""The one rule that says a runtime computes what the host computes (board and host share it)."""

from __future__ import annotations

import numpy as np

from device_agent.outputs import MIN_SQNR_DB, compare_outputs

RNG = np.random.default_rng(0)
LOGITS = [[RNG.standard_normal(10) * 4] for _ in range(32)]
STEP = 0.196  # the digits CNN's int8 output step


def shifted(by) -> list[list[np.ndarray]]:
    return [[sample[0] + by(index)] for index, sample in enumerate(LOGITS)]


def test_one_quantization_step_apart_is_the_same_computation() -> None:
    # tflite-runtime 2.14 vs ai-edge-litert on a correct int8 file: exactly one output step.
    check = compare_outputs(LOGITS, shifted(lambda i: STEP * (i % 2)), [STEP], atol=1e-4)
    assert check["ok"] and check["rule"] == "within 2 output steps"
    assert check["max_steps"] == 1.0 and check["top1_agreement"] == 1.0


def test_a_float_output_within_atol_is_judged_by_atol() -> None:
    check = compare_outputs(LOGITS, shifted(lambda i: 1e-6), [0.0], atol=1e-4)
    assert check["ok"] and check["rule"] == "within atol 0.0001"
    assert check["max_steps"] is None


def test_a_float_output_a_little_off_is_judged_by_its_range() -> None:
    # fp16 weights or another summation order: far above atol, far below the output's size.
    check = compare_outputs(LOGITS, shifted(lambda i: 0.01), [0.0], atol=1e-4)
    assert check["ok"] and check["rule"] == "within 2% of the output range"


def test_a_deep_network_beyond_two_steps_passes_on_its_sqnr() -> None:
    # Rounding differences compounded over many layers: several steps, SQNR well above 30 dB.
    noise = [[RNG.standard_normal(10) * 0.05] for _ in LOGITS]
    noisy = [[s[0] + n[0]] for s, n in zip(LOGITS, noise, strict=True)]
    noisy[0][0][int(np.argmax(LOGITS[0][0]))] += 1.0  # and one large error: not within
    check = compare_outputs(LOGITS, noisy, [0.01], atol=1e-4)
    assert check["ok"] and check["rule"].startswith(f"SQNR >= {MIN_SQNR_DB:g} dB")
    assert check["sqnr_db"] >= MIN_SQNR_DB


def test_wrong_outputs_fail_and_say_why() -> None:
    check = compare_outputs(LOGITS, [[-s[0]] for s in LOGITS], [STEP], atol=1e-4)
    assert not check["ok"] and check["rule"] == ""
    assert check["sqnr_db"] < 0 and check["top1_agreement"] < 0.5
    assert "neither within 2 output steps" in check["summary"]


def test_identical_outputs_have_no_finite_sqnr() -> None:
    check = compare_outputs(LOGITS, LOGITS, [STEP])
    assert check["ok"] and check["sqnr_db"] is None and check["max_abs_diff"] == 0.0
