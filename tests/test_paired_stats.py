"""The paired gate's statistics and measuring loop, on synthetic data and fake models.

No model runs here: a fake interpreter advances a fake clock by a chosen duration per
invocation, so the loop's verdicts are exact, and the statistics are checked against
their stated error rates over many synthetic trials.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from device_agent import protocol
from device_agent.paired import (
    MIN_FLOOR,
    TOO_NOISY,
    judge,
    log_ratios,
    measure_pair,
    median_interval,
    round_confidence,
)

LOOKS = 8
CONFIDENCE = 0.99


def synthetic(rng: np.random.Generator, n: int, shift: float, noise: float = 0.01,
              outliers: float = 0.05) -> list[float]:
    """``n`` log ratios centred on log(shift): normal noise plus a share of wild blocks (a
    preemption landing in one side's block), as on a shared machine."""
    values = rng.normal(math.log(shift), noise, n)
    wild = rng.random(n) < outliers
    values[wild] += rng.choice([-1, 1], wild.sum()) * rng.uniform(0.1, 0.5, wild.sum())
    return values.tolist()


def test_the_estimate_is_the_median_and_the_ends_are_order_statistics() -> None:
    values = [0.3, -0.1, 0.2, 0.05, 0.4, 0.1, 0.0, 0.25, 0.15, 0.12, 0.07, 0.18]
    found = median_interval(values, 0.9)
    assert found["estimate"] == pytest.approx(float(np.median(values)))
    ordered = sorted(values)
    # P(Binomial(12, 1/2) <= 2) = 0.019 <= 0.05 < P(<= 3) = 0.073: the 3rd from each end.
    assert (found["low"], found["high"]) == (ordered[2], ordered[-3])


def test_one_wild_block_moves_the_interval_by_one_rank_only() -> None:
    calm = [0.001 * i for i in range(-8, 8)]
    wild = [*calm[:-1], 0.5]
    assert median_interval(wild, 0.99)["high"] <= max(calm)


def test_too_few_values_have_no_finite_interval() -> None:
    found = median_interval([0.1, 0.2, 0.3], round_confidence(CONFIDENCE, LOOKS))
    assert math.isinf(found["low"]) and math.isinf(found["high"])
    assert judge([0.0] * 3, [0.0] * 3, limit=0.05, confidence=CONFIDENCE,
                 looks=LOOKS)["verdict"] == "inconclusive"


def test_the_interval_covers_the_centre_at_its_confidence() -> None:
    """Coverage over 2,000 trials of 16 heavy-tailed values: at least the stated 90 %."""
    rng = np.random.default_rng(1)
    trials = 2000
    covered = 0
    for _ in range(trials):
        found = median_interval(rng.standard_t(3, 16).tolist(), 0.9)
        covered += found["low"] <= 0 <= found["high"]
    assert covered / trials >= 0.88  # 0.90 nominal; the normal approximation is near it


@pytest.mark.parametrize(("n", "passing"), [(16, 900), (32, 990), (64, 990)])
def test_a_baseline_against_itself_never_regresses_at_the_stated_rate(n: int,
                                                                      passing: int) -> None:
    """1,000 A/A trials with 5 % wild blocks: no more regressions than the stated rate (1 %,
    spent over 8 looks).  One round (16 triples) leaves a few undecided when two wild blocks
    fall on one side; the next round decides them."""
    rng = np.random.default_rng(n)
    verdicts = [judge(synthetic(rng, n, 1.0), synthetic(rng, n, 1.0), limit=0.05,
                      confidence=CONFIDENCE, looks=LOOKS)["verdict"] for _ in range(1000)]
    assert verdicts.count("regression") <= 10
    assert verdicts.count("pass") >= passing


@pytest.mark.parametrize("shift", [1.07, 1.10, 1.20])
def test_a_slowdown_past_the_limit_is_found(shift: float) -> None:
    rng = np.random.default_rng(int(shift * 100))
    verdicts = [judge(synthetic(rng, 48, shift, noise=0.005), synthetic(rng, 48, 1.0,
                                                                        noise=0.005),
                      limit=0.05, confidence=CONFIDENCE, looks=LOOKS)["verdict"]
                for _ in range(200)]
    assert verdicts.count("regression") >= 190


def test_a_change_below_the_limit_passes_and_one_far_below_improves() -> None:
    rng = np.random.default_rng(3)
    small = [judge(synthetic(rng, 32, 1.02), synthetic(rng, 32, 1.0), limit=0.05,
                   confidence=CONFIDENCE, looks=LOOKS)["verdict"] for _ in range(200)]
    assert small.count("regression") == 0 and small.count("pass") >= 190
    faster = judge(synthetic(rng, 32, 0.8), synthetic(rng, 32, 1.0), limit=0.05,
                   confidence=CONFIDENCE, looks=LOOKS)
    assert faster["verdict"] == "improved" and faster["ratio"] == pytest.approx(0.8, rel=0.01)


def test_the_floor_is_the_controls_offset_and_never_below_one_percent() -> None:
    quiet = judge([0.0] * 20, [0.0] * 20, limit=0.05, confidence=CONFIDENCE, looks=LOOKS)
    assert quiet["floor"] == pytest.approx(math.exp(MIN_FLOOR))
    assert quiet["interval"] == pytest.approx([math.exp(-MIN_FLOOR), math.exp(MIN_FLOOR)])
    offset = judge([0.0] * 20, [math.log(1.03)] * 20, limit=0.05, confidence=CONFIDENCE,
                   looks=LOOKS)
    assert offset["floor"] == pytest.approx(1.03)
    # A 4.5 % change judged with a 3 % control offset cannot be told from the limit.
    near = judge([math.log(1.045)] * 20, [math.log(1.03)] * 20, limit=0.05,
                 confidence=CONFIDENCE, looks=LOOKS)
    assert near["verdict"] == "inconclusive" and "reaches past" in near["reason"]


def test_a_control_beyond_the_limit_says_the_board_is_too_noisy() -> None:
    found = judge([math.log(1.2)] * 20, [math.log(1.08)] * 20, limit=0.05,
                  confidence=CONFIDENCE, looks=LOOKS)
    assert found["verdict"] == "inconclusive"
    assert found["reason"].startswith(TOO_NOISY) and "+8.00 %" in found["reason"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


class FakeModel:
    """Each invocation takes ``ns`` on the fake clock, with a little seeded jitter."""

    def __init__(self, clock: FakeClock, ns: int, seed: int) -> None:
        self.clock, self.ns, self.rng = clock, ns, random.Random(seed)
        self.invocations = 0

    def invoke(self) -> None:
        self.invocations += 1
        self.clock.now += self.ns + self.rng.randint(0, self.ns // 50)


def fake_pair(candidate_ns: int, base_ns: int = 10_000) -> tuple[dict[str, Any], FakeClock]:
    clock = FakeClock()
    models = {"baseline": FakeModel(clock, base_ns, 1), "control": FakeModel(clock, base_ns, 2),
              "candidate": FakeModel(clock, candidate_ns, 3)}
    return models, clock


@pytest.mark.parametrize(("candidate_ns", "verdict"), [(10_000, "pass"), (10_800, "regression"),
                                                      (8_000, "improved")])
def test_the_loop_interleaves_equal_blocks_and_stops_when_decided(candidate_ns: int,
                                                                  verdict: str) -> None:
    models, clock = fake_pair(candidate_ns)
    settings = protocol.PairedSettings(block_seconds=0.001, round_triples=16)
    found = measure_pair(models, settings, rng=random.Random(0), clock=clock)
    assert found["board_verdicts"]["median"]["verdict"] == verdict
    assert found["rounds"] == 1
    # 1 ms blocks of the slowest model (10-10.2 us a run on the fake clock): 98-100 runs,
    # the same count on every side.
    slowest = max(candidate_ns, 10_000)
    assert 1_000_000 // (slowest * 1.02) <= found["block_runs"] <= 1_000_000 // slowest
    counts = {len(blocks) for blocks in found["block_median_ms"].values()}
    assert counts == {16}
    ratios = log_ratios(found["block_median_ms"])
    assert math.exp(float(np.median(ratios["candidate"]))) == pytest.approx(
        candidate_ns / 10_000, rel=0.02)


def test_the_loop_measures_more_rounds_while_it_cannot_tell_and_stops_at_its_cap() -> None:
    models, clock = fake_pair(10_500)  # 5 %: on the limit, never decided
    settings = protocol.PairedSettings(block_seconds=0.001, round_triples=16, max_rounds=3)
    found = measure_pair(models, settings, rng=random.Random(0), clock=clock)
    assert found["rounds"] == 3 and len(found["block_median_ms"]["baseline"]) == 48
    assert found["board_verdicts"]["median"]["verdict"] == "inconclusive"


def test_block_order_is_drawn_at_random_within_each_triple() -> None:
    clock = FakeClock()
    calls: list[str] = []

    class Named(FakeModel):
        def __init__(self, name: str) -> None:
            super().__init__(clock, 10_000, 0)
            self.name = name

        def invoke(self) -> None:
            calls.append(self.name)
            super().invoke()

    models = {side: Named(side) for side in protocol.SIDES}
    settings = protocol.PairedSettings(block_seconds=0.001, max_rounds=1)
    found = measure_pair(models, settings, rng=random.Random(5), clock=clock)
    size = found["block_runs"]
    blocks = calls[3 * settings.min_block_runs:]  # after each model was timed to size blocks
    sides = [blocks[i] for i in range(0, len(blocks), size)]
    assert all(blocks[i:i + size] == [side] * size for i, side in zip(
        range(0, len(blocks), size), sides, strict=True))
    triples = [tuple(sides[i:i + 3]) for i in range(0, len(sides), 3)]
    assert len(triples) == settings.round_triples
    assert all(sorted(t) == sorted(protocol.SIDES) for t in triples)
    assert len(set(triples)) > 1


def test_paired_settings_refuse_unknown_and_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown paired setting 'limt'"):
        protocol.PairedSettings(limt=0.05)
    with pytest.raises(ValueError, match="limit is a fraction below 1"):
        protocol.PairedSettings(limit=5)
    with pytest.raises(ValueError, match="must be a number > 0"):
        protocol.PairedSettings(max_seconds=-1)


def test_a_regressed_median_ends_the_measuring_whatever_the_tail() -> None:
    """8 % slower against a tail limit of 8 %: the tail cannot be told from its limit, but the
    median already failed the gate, so no further round is measured."""
    models, clock = fake_pair(10_800)
    settings = protocol.PairedSettings(block_seconds=0.001, tail_limit=0.08, max_rounds=4)
    found = measure_pair(models, settings, rng=random.Random(0), clock=clock)
    assert found["board_verdicts"]["median"]["verdict"] == "regression"
    assert found["board_verdicts"]["p90"]["verdict"] == "inconclusive"
    assert found["rounds"] == 1
