"""The one rule that says a runtime computes what the host computes (board and host share it)."""

from __future__ import annotations

import numpy as np

from device_agent.outputs import (
    MIN_COSINE,
    MIN_SQNR_DB,
    check_outputs,
    compare_outputs,
    degenerate,
    load_reference,
)

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


def zeros() -> list[list[np.ndarray]]:
    return [[np.zeros(10)] for _ in LOGITS]


def test_all_zero_outputs_on_both_sides_are_degenerate_never_a_match() -> None:
    # An int8 file that computes only zeros computes them on the host and the board alike.
    check = compare_outputs(zeros(), zeros(), [STEP], atol=1e-4,
                            sides=("the host's", "the board's"))
    assert not check["ok"] and check["rule"] == ""
    assert check["degenerate"] == ("the host's outputs are all zero; "
                                   "the board's outputs are all zero")
    assert check["summary"].startswith("degenerate outputs: the host's outputs are all zero")


def test_constant_nan_and_inf_outputs_are_named() -> None:
    constant = [[np.full(10, 0.5)] for _ in LOGITS]
    assert degenerate([np.stack([s[0] for s in constant])]) == "constant (every value 0.5)"
    with_nan = [[s[0].copy()] for s in LOGITS]
    with_nan[3][0][2] = np.nan
    check = compare_outputs(LOGITS, with_nan, [0.0], atol=1e-4)
    assert not check["ok"] and check["degenerate"].startswith("the runtime's outputs are NaN")
    assert degenerate([np.array([1.0, np.inf])]) == "inf (1 of 2 values)"
    # One number is not "constant"; outputs that vary are not degenerate.
    assert degenerate([np.array([0.0])]) == "" and degenerate([np.stack(LOGITS[0])]) == ""
    # Two heads: only every output constant makes the model degenerate.
    assert degenerate([np.zeros(4), np.arange(4.0)]) == ""


def embeddings_with_flipped_argmax() -> tuple[list[list[np.ndarray]], list[list[np.ndarray]]]:
    """An encoder's outputs and a quantized runtime's: cosine above 0.999 everywhere, the
    argmax flipped in most samples (near-ties), errors above 2 % of the range."""
    rng = np.random.default_rng(1)
    want, got = [], []
    for _ in range(32):
        embedding = rng.standard_normal(64)
        embedding[:2] = embedding.max() + 1.0  # a tie at the top
        noise = rng.standard_normal(64) * 0.02
        noise[:2] = (-0.1, 0.1)
        want.append([embedding])
        got.append([embedding + noise])
    return want, got


def test_an_encoder_whose_argmax_flips_at_cosine_0999_passes_by_cosine() -> None:
    want, got = embeddings_with_flipped_argmax()
    by_top1 = compare_outputs(want, got, [0.0], atol=1e-4)
    assert not by_top1["ok"] and by_top1["top1_agreement"] < 0.5  # the old rule failed it
    check = compare_outputs(want, got, [0.0], atol=1e-4, metric="cosine")
    assert check["min_cosine"] >= 0.999 and check["max_relative_error"] > 0.02
    assert check["ok"] and check["rule"] == f"cosine >= {MIN_COSINE:g} in every sample"
    assert "lowest cosine" in check["summary"]


def test_a_broken_encoder_below_cosine_09_fails() -> None:
    want, _ = embeddings_with_flipped_argmax()
    rng = np.random.default_rng(2)
    broken = [[w[0] + rng.standard_normal(64) * 0.7] for w in want]
    check = compare_outputs(want, broken, [0.0], atol=1e-4, metric="cosine")
    assert check["min_cosine"] < 0.9 and not check["ok"]
    assert f"nor cosine >= {MIN_COSINE:g} in every sample" in check["summary"]
    # An encoder computing zeros is degenerate, not "cosine 0": named as such.
    assert compare_outputs(want, [[np.zeros(64)] for _ in want], [0.0],
                           metric="cosine")["degenerate"] == "the runtime's outputs are all zero"


class EchoInterpreter:
    """Returns ``outputs[i]`` for the i-th invoke: the board's side of the check, in numpy."""

    def __init__(self, outputs: list[np.ndarray]) -> None:
        self.outputs, self.calls = outputs, -1

    def get_input_details(self) -> list[dict]:
        return [{"index": 0, "dtype": np.float32, "quantization": (0.0, 0)}]

    def get_output_details(self) -> list[dict]:
        return [{"index": 1, "dtype": np.float32, "quantization": (0.0, 0)}]

    def set_tensor(self, index: int, value: np.ndarray) -> None:
        pass

    def invoke(self) -> None:
        self.calls += 1

    def get_tensor(self, index: int) -> np.ndarray:
        return self.outputs[self.calls]


def test_the_board_judges_by_the_metric_the_host_wrote_into_the_reference(tmp_path) -> None:
    want, got = embeddings_with_flipped_argmax()
    path = tmp_path / "ref.npz"
    inputs = np.zeros((32, 3), np.float32)
    outputs = np.stack([w[0] for w in want]).astype(np.float32)
    np.savez(path, input_0=inputs, output_0=outputs)
    assert load_reference(path)["metric"] == "top1"  # an older host: argmax, as before
    board = [g[0].astype(np.float32) for g in got]
    assert not check_outputs(EchoInterpreter(board), load_reference(path), atol=1e-4,
                             min_top1=0.99)["ok"]
    np.savez(path, input_0=inputs, output_0=outputs, agreement_metric=np.array("cosine"))
    check = check_outputs(EchoInterpreter(board), load_reference(path), atol=1e-4, min_top1=0.99)
    assert check["ok"] and check["metric"] == "cosine"
    np.savez(path, input_0=inputs, output_0=np.zeros((32, 64), np.float32),
             agreement_metric=np.array("cosine"))
    check = check_outputs(EchoInterpreter([np.zeros(64, np.float32)] * 32), load_reference(path),
                          atol=1e-4, min_top1=0.99)
    assert not check["ok"] and check["degenerate"] == (
        "the host's outputs are all zero; the board's outputs are all zero")
