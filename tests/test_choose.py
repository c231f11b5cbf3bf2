"""`edge deploy --max-accuracy-drop`: candidates within the budget, picked by board latency."""

from __future__ import annotations

import math
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from toolkit.artifacts.bundle import Artifact
from toolkit.results.choose import choose_fastest, split_by_budget, within_noise
from toolkit.results.record import ResultRecord
from toolkit.run.deploy import deploy

from .conftest import DIGITS_MODEL
from .lab import Sshd


def measured(variant: str, p50: float, size: int, *, robust_cv: float = 0.01,
             verdict: str | None = "VALID", reasons: tuple[str, ...] = (),
             samples: list[float] | None = None) -> ResultRecord:
    """``verdict=None``: an older agent's record, without one."""
    return ResultRecord.from_dict({
        "target": "pi", "variant": variant, "status": "ok", "size_bytes": size,
        "latency_ms": {"p50": p50, "robust_cv": robust_cv},
        "latency_samples_ms": samples if samples is not None else [p50] * 100,
        **({} if verdict is None else {"verdict": {"status": verdict,
                                                   "reasons": list(reasons)}})})


def artifact(variant: str, accuracy: float | None, *, compat_ok: bool = True) -> Artifact:
    compat = [{"name": "ai-edge-litert", "version": "2.3.0", "ok": True,
               "top1_agreement_with_source": 1.0}]
    if not compat_ok:
        compat.append({"name": "tflite-runtime", "version": "2.14.0", "ok": False,
                       "top1_agreement_with_source": 0.02})
    return Artifact(variant=variant, path=Path(f"{variant}.tflite"), sha256="0" * 64,
                    size_bytes=1000, accuracy=accuracy, runtime_compat=compat)


def test_the_fastest_on_the_board_wins_and_a_smaller_slower_one_is_named() -> None:
    # tflite-runtime 2.14 on x86: XNNPACK takes only float models, int8 is ~10x slower.
    choice = choose_fastest("pi", [measured("fp32", 0.40, 158_800),
                                   measured("int8", 3.88, 47_552),
                                   ResultRecord.from_dict(
                                       {"target": "pi", "variant": "fp16", "status": "failed",
                                        "error": "killed by signal SIGSEGV"})])
    assert choice.variant == "fp32"
    assert "beyond noise" in choice.message
    assert "int8 is 9.7x slower" in choice.message
    assert "smaller int8 lost on this board's latency" in choice.message
    assert choice.left_out == (("fp16", "failed: killed by signal SIGSEGV"),)


def test_nothing_measured_is_said_plainly() -> None:
    assert choose_fastest("pi", []).variant is None


def test_an_invalid_measurement_never_wins_and_is_named_with_its_reasons() -> None:
    # The case: fp16 "faster" than int8 by 2 us, both figures from INVALID runs.
    noisy = "coefficient of variation 0.125 (robust: MAD / median) above the limit 0.1"
    choice = choose_fastest("pi", [measured("fp16", 0.013, 80_000, robust_cv=0.125,
                                            verdict="INVALID", reasons=(noisy,)),
                                   measured("int8", 0.015, 47_552, robust_cv=0.125,
                                            verdict="INVALID", reasons=(noisy,))])
    assert choice.variant is None
    assert "no variant within the budget has a VALID measurement" in choice.message
    assert choice.left_out == (("fp16", f"INVALID: {noisy}"), ("int8", f"INVALID: {noisy}"))
    # With int8 VALID, it wins although fp16 measured faster.
    choice = choose_fastest("pi", [measured("fp16", 0.013, 80_000, verdict="INVALID",
                                            reasons=(noisy,)),
                                   measured("int8", 0.015, 47_552)])
    assert choice.variant == "int8"
    assert "the only VALID measurement within the accuracy budget" in choice.message
    assert choice.left_out == (("fp16", f"INVALID: {noisy}"),)
    assert "  pi: left out fp16: INVALID: coefficient of variation" in choice.lines()[1]


def test_a_measurement_without_a_verdict_does_not_compete() -> None:
    old_agent = measured("fp32", 0.40, 158_800, verdict=None)
    choice = choose_fastest("pi", [old_agent, measured("int8", 0.5, 47_552)])
    assert choice.variant == "int8"
    assert choice.left_out == (("fp32", "no verdict from the board (an older agent): "
                                        "validity unknown"),)


def test_a_difference_within_the_runs_noise_picks_the_smaller_file() -> None:
    # 4 % apart with a robust CV of 5 %: no evidence fp16 is faster.
    choice = choose_fastest("pi", [measured("fp16", 0.0140, 80_000, robust_cv=0.05),
                                   measured("int8", 0.0146, 47_552, robust_cv=0.03),
                                   measured("fp32", 0.0400, 158_800)])
    assert choice.variant == "int8"
    assert "differ within noise" in choice.message and "smaller file wins" in choice.message
    assert "+4.3%, not above the robust CV 5.0%" in choice.message
    assert "fp32 is 2.7x slower" in choice.message


def test_overlapping_intervals_of_the_medians_are_noise_too() -> None:
    # Steady runs (small CV) but few, spread samples: the medians' intervals overlap.
    fast = measured("fp16", 1.00, 80_000, samples=[0.8, 0.9, 1.0, 1.1, 1.2] * 4)
    slow = measured("int8", 1.05, 47_552, samples=[0.85, 0.95, 1.05, 1.15, 1.25] * 4)
    assert "intervals overlap" in (within_noise(fast, slow) or "")
    assert choose_fastest("pi", [fast, slow]).variant == "int8"
    # Thousands of samples each, clearly apart: a real difference.
    rng = random.Random(8)
    fast = measured("fp16", 1.00, 80_000, samples=[rng.gauss(1.00, 0.01) for _ in range(2000)])
    slow = measured("int8", 1.05, 47_552, samples=[rng.gauss(1.05, 0.01) for _ in range(2000)])
    assert within_noise(fast, slow) is None
    assert choose_fastest("pi", [fast, slow]).variant == "fp16"


def test_every_candidate_left_out_before_running_is_named_with_why() -> None:
    within, over = split_by_budget([artifact("fp32", 0.97), artifact("int8", 0.965),
                                    artifact("int8-dynamic", 0.95),
                                    artifact("fp16", 0.97, compat_ok=False),
                                    artifact("prune:0.9", None)], max_drop=1.0)
    assert [a.variant for a in within] == ["fp32", "int8"]
    assert over == [
        ("int8-dynamic", "over the accuracy budget: 2.00 points below fp32 (budget 1)"),
        ("fp16", "not correct on every runtime: tflite-runtime 2.14.0: top-1 agreement "
                 "0.020 with the source"),
        ("prune:0.9", "no accuracy figure to hold to the budget")]
    choice = choose_fastest("pi", [measured("fp32", 0.4, 158_800), measured("int8", 0.2, 47_552)],
                            left_out=over)
    assert choice.variant == "int8" and [v for v, _ in choice.left_out] == [
        "int8-dynamic", "fp16", "prune:0.9"]


#: fp32's accuracy, the candidate's, whether every runtime computes it right, the budget in
#: points, and whether the candidate is within.  Accuracy is top-1 for every model edge
#: evaluates (higher is better): no metric where lower is better to judge the other way.
BUDGET_EDGES = {
    "exactly at the budget": (0.95, 0.945, True, 0.5, True),  # 0.5000000000000004 points
    "just over the budget": (0.95, 0.9449, True, 0.5, False),
    "no drop, a budget of 0": (0.9, 0.9, True, 0.0, True),
    "better than fp32": (0.9, 0.95, True, 0.0, True),
    "NaN accuracy": (0.95, math.nan, True, 5.0, False),
    "no accuracy figure": (0.95, None, True, 5.0, False),
    "no accuracy figure, a budget of 100": (0.95, None, True, 100.0, False),
    "within, but wrong on a runtime": (0.95, 0.95, False, 0.5, False),
}


@pytest.mark.parametrize("case", list(BUDGET_EDGES))
def test_edge_compress_and_edge_deploy_judge_the_budget_alike(
        case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``edge compress --max-accuracy-drop`` ships a candidate exactly when ``edge deploy
    --max-accuracy-drop`` runs it: one rule (``budget_verdict``), at its edges."""
    from toolkit.compress import _build
    from toolkit.compress._recipes import parse_recipes

    reference, accuracy, compat_ok, budget, within = BUDGET_EDGES[case]
    fp32, candidate = artifact("fp32", reference), artifact("int8", accuracy,
                                                            compat_ok=compat_ok)
    candidate.path.write_bytes(b"")  # edge compress removes a file it does not ship
    ran, _ = split_by_budget([fp32, candidate], budget)
    built = iter([[fp32], [candidate]])  # what the builds of fp32, then int8, give
    monkeypatch.setattr(_build, "build_artifacts", lambda *args, **kwargs: next(built))
    source: Any = SimpleNamespace(train_data=None)  # only the builds, given above, read it
    shipped, selection = _build._within_budget(source, parse_recipes("int8"), budget,
                                               Path("."), lambda message: None, ())
    assert ("int8" in [a.variant for a in ran]) == within
    assert ("int8" in [a.variant for a in shipped]) == within
    assert selection["tried"][0]["within_budget"] == within


@pytest.mark.slow
def test_deploy_with_a_budget_on_a_tflite_runtime_214_board(
        sshd: Sshd, tflite_runtime_214: Path, tmp_path: Path) -> None:
    sshd.write_target(tmp_path / "targets", "old", tmp_path / "board",
                      python=str(tflite_runtime_214))
    outcome = deploy(DIGITS_MODEL, targets=["old"], recipes="int8,fp16",
                     out_dir=tmp_path / "out", targets_dir=tmp_path / "targets",
                     settings={"min_runs": 50, "min_seconds": 0.2}, max_accuracy_drop=0.5)
    records = {r.variant: r for r in outcome.run.results}
    assert set(records) == {"fp32", "int8", "fp16"}  # fp32 added as the reference
    assert all(r.runtime.startswith("tflite-runtime ") for r in records.values())
    [choice] = outcome.choices
    # Only a VALID measurement can win; every other candidate is named with why.
    valid = {v for v, r in records.items() if r.verdict == "VALID"}
    assert {v for v, _ in choice.left_out} == set(records) - valid
    if choice.variant is None:
        assert not valid
    else:
        assert choice.variant in valid and records[choice.variant].chosen
        assert "picked" in (outcome.run_dir / "report.md").read_text()


def test_an_over_budget_variant_that_fine_tuned_says_how_to_train_it_longer() -> None:
    from toolkit.artifacts.bundle import Artifact
    from toolkit.results.choose import split_by_budget

    def made(variant: str, accuracy: float, steps: list[dict]) -> Artifact:
        return Artifact(variant=variant, path=Path(f"/tmp/{variant}.tflite"), sha256="0" * 64,
                        size_bytes=1, config={"recipe": variant, "steps": steps},
                        accuracy=accuracy, eval_samples=100)

    _, over = split_by_budget([
        made("fp32", 0.98, [{"recipe": "fp32"}]),
        made("prune:0.8", 0.40, [{"recipe": "prune", "epochs": 4}, {"recipe": "fp32"}])], 1.0)
    assert over == [("prune:0.8", "over the accuracy budget: 58.00 points below fp32 (budget 1); "
                                  "its prune step fine-tuned 4 epoch(s): more may recover it "
                                  "(add :epochs=8 to that step)")]
