"""`edge deploy --max-accuracy-drop`: candidates within the budget, picked by board latency."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.choose import choose_fastest
from toolkit.pipeline import deploy

from .conftest import DIGITS_MODEL
from .lab import Sshd


def measured(variant: str, p50: float, size: int) -> dict:
    return {"target": "pi", "variant": variant, "status": "ok", "size_bytes": size,
            "latency_ms": {"p50": p50}}


def test_the_fastest_on_the_board_wins_and_a_smaller_slower_one_is_named() -> None:
    # tflite-runtime 2.14 on x86: XNNPACK takes only float models, int8 is ~10x slower.
    choice = choose_fastest("pi", [measured("fp32", 0.40, 158_800),
                                   measured("int8", 3.88, 47_552),
                                   {"target": "pi", "variant": "fp16", "status": "failed"}])
    assert choice.variant == "fp32"
    assert "int8 is 9.7x slower" in choice.message
    assert "smaller int8 lost on this board's latency" in choice.message


def test_nothing_measured_is_said_plainly() -> None:
    assert choose_fastest("pi", []).variant is None


@pytest.mark.slow
def test_deploy_with_a_budget_on_a_tflite_runtime_214_board(
        sshd: Sshd, tflite_runtime_214: Path, tmp_path: Path) -> None:
    sshd.write_target(tmp_path / "targets", "old", tmp_path / "board",
                      python=str(tflite_runtime_214))
    outcome = deploy(DIGITS_MODEL, targets=["old"], recipes="int8,fp16",
                     out_dir=tmp_path / "out", targets_dir=tmp_path / "targets",
                     settings={"min_runs": 50, "min_seconds": 0.2}, max_accuracy_drop=0.5)
    records = {r["variant"]: r for r in outcome.run.results}
    assert set(records) == {"fp32", "int8", "fp16"}  # fp32 added as the reference
    assert all(r["runtime"]["name"] == "tflite-runtime" for r in records.values())
    [choice] = outcome.choices
    fastest = min(records.values(), key=lambda r: r["latency_ms"]["p50"])
    assert choice.variant == fastest["variant"] and records[choice.variant]["chosen"]
    assert "picked" in (outcome.run_dir / "report.md").read_text()
