"""The paired energy pass: blocks of each side under one power sampler, judged like latency.

No sensor and no model here: fake models advance a fake clock, and a fake sensor's watts
depend on which model ran last; the sampler reads it at its period of the fake clock
(a thread-free :class:`PowerSampler`), so every figure is exact.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from device_agent import protocol
from device_agent.paired import log_ratios, measure_energy
from device_agent.power import PowerReader, PowerSampler, SensorLost

RATE_HZ = 100.0
MODEL_NS = 1_000_000  # 1 ms an inference


class Clock:
    """Nanoseconds; ``last`` is the model that ran last, ``seconds`` the sampler's clock."""

    def __init__(self) -> None:
        self.now = 0
        self.last = "idle"
        self.sampler: SteppedSampler | None = None

    def seconds(self) -> float:
        return self.now / 1e9


class Model:
    """Each invocation takes ``ns`` (with a little seeded jitter), then the sampler catches up."""

    def __init__(self, clock: Clock, name: str, ns: int, seed: int) -> None:
        self.clock, self.name, self.ns, self.rng = clock, name, ns, random.Random(seed)

    def invoke(self) -> None:
        self.clock.now += self.ns + self.rng.randint(0, self.ns // 50)
        self.clock.last = self.name
        if self.clock.sampler is not None:
            self.clock.sampler.tick()


class Sensor(PowerReader):
    """Watts by the model that ran last (``watts[side]``), with 2 % seeded noise a sample;
    raises :class:`SensorLost` from read ``fail_after`` on, when given."""

    kind = "fake-ina"
    misses = "nothing: it is a test"

    def __init__(self, clock: Clock, watts: dict[str, float], fail_after: int = 0) -> None:
        self.clock, self.watts, self.fail_after = clock, watts, fail_after
        self.reads = 0
        self.rng = np.random.default_rng(0)
        self.closed = False

    def read_watts(self) -> float | None:
        self.reads += 1
        if self.fail_after and self.reads > self.fail_after:
            raise SensorLost("in1_input: [Errno 5] Input/output error")
        return self.watts.get(self.clock.last, 2.0) * float(1 + self.rng.normal(0, 0.02))

    def close(self) -> None:
        self.closed = True


class SteppedSampler(PowerSampler):
    """The real sampler's samples and error, read at its period of the fake clock, with no
    thread: :meth:`tick` (after every fake invocation) takes the readings that are due."""

    def __init__(self, reader: PowerReader, clock: Clock) -> None:
        super().__init__(reader, rate_hz=RATE_HZ, clock=clock.seconds)
        self.due = 0.0
        self.started = False
        clock.sampler = self
        self.fake = clock

    def start(self) -> SteppedSampler:
        self.started = True
        self.due = self.fake.seconds()
        return self

    def tick(self) -> None:
        while self.started and not self.error and self.fake.seconds() >= self.due:
            try:
                watts = self.reader.read_watts()
            except SensorLost as exc:
                self.error = f"sensor lost at {self.fake.seconds():.3f} s: {exc}"
                return
            if watts is not None:
                self.samples.append((self.fake.seconds(), watts))
            self.due += self.period

    def stop(self) -> list[tuple[float, float]]:
        self.started = False
        self.reader.close()
        return self.samples


def setup(power: dict[str, float], *, candidate_ns: int = MODEL_NS, fail_after: int = 0
          ) -> tuple[dict[str, Model], SteppedSampler, Clock]:
    clock = Clock()
    models = {side: Model(clock, side, candidate_ns if side == "candidate" else MODEL_NS, seed)
              for seed, side in enumerate(protocol.SIDES)}
    sampler = SteppedSampler(Sensor(clock, power, fail_after), clock)
    return models, sampler, clock


def settings(**changes: float) -> protocol.PairedSettings:
    return protocol.PairedSettings(**{"energy_block_seconds": 0.1, **changes})


def energy(models: dict[str, Model], sampler: SteppedSampler, clock: Clock,
           paired: protocol.PairedSettings | None = None) -> dict[str, Any]:
    return measure_energy(models, sampler, paired or settings(), rate_hz=RATE_HZ,
                          rng=random.Random(0), clock=clock.seconds)


@pytest.mark.parametrize(("candidate_w", "verdict"), [(2.0, "pass"), (2.2, "regression"),
                                                      (1.6, "improved")])
def test_power_drawn_per_inference_is_judged_from_paired_blocks(candidate_w: float,
                                                                verdict: str) -> None:
    models, sampler, clock = setup({"baseline": 2.0, "control": 2.0, "candidate": candidate_w})
    found = energy(models, sampler, clock)
    assert "error" not in found
    assert found["board_verdict"]["verdict"] == verdict
    assert found["rounds"] == 1
    blocks = found["block_energy_mj"]
    assert {len(v) for v in blocks.values()} == {12}
    # 2 W for about 1.01 ms an inference: about 2.02 mJ.
    assert float(np.median(blocks["baseline"])) == pytest.approx(2.02, rel=0.02)
    ratio = math.exp(float(np.median(log_ratios(blocks)["candidate"])))
    assert ratio == pytest.approx(candidate_w / 2.0, rel=0.01)
    assert found["block_seconds"] == pytest.approx(0.1)
    assert sampler.reader.closed  # type: ignore[attr-defined]


def test_a_slower_candidate_at_equal_power_costs_more_energy_per_inference() -> None:
    models, sampler, clock = setup({}, candidate_ns=1_100_000)
    found = energy(models, sampler, clock)
    assert found["board_verdict"]["verdict"] == "regression"
    assert found["board_verdict"]["ratio"] == pytest.approx(1.10, rel=0.01)
    assert found["runs"]["candidate"] < found["runs"]["baseline"]


def test_blocks_are_long_enough_for_the_sensor_and_interleaved_at_random(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from device_agent import paired

    blocks: list[str] = []
    timed = paired._timed_block

    def recording(model: Model, seconds: float, clock: Any) -> Any:
        blocks.append(model.name)
        return timed(model, seconds, clock)

    monkeypatch.setattr(paired, "_timed_block", recording)
    models, sampler, clock = setup({})
    found = energy(models, sampler, clock)
    # 10 samples at 100 Hz need 0.1 s; 0.5 s is the least a block lasts by default.
    assert protocol.PairedSettings().energy_block(RATE_HZ) == 0.5
    assert protocol.PairedSettings().energy_block(5.0) == 2.0
    triples = [tuple(blocks[i:i + 3]) for i in range(0, len(blocks), 3)]
    assert len(triples) == 12 and all(sorted(t) == sorted(protocol.SIDES) for t in triples)
    assert len(set(triples)) > 1
    assert found["samples"] >= 12 * 3 * 9  # about 10 a block


def test_the_pass_stops_at_its_cap_in_seconds_and_after_its_rounds() -> None:
    # 5 % more power: on the limit, never decided.
    models, sampler, clock = setup({"candidate": 2.1})
    found = energy(models, sampler, clock, settings(energy_max_seconds=5.0))
    assert found["seconds"] <= 5.0 and found["rounds"] == 2
    assert 12 < len(found["block_energy_mj"]["baseline"]) < 24
    assert found["board_verdict"]["verdict"] == "inconclusive"
    models, sampler, clock = setup({"candidate": 2.1})
    found = energy(models, sampler, clock, settings(energy_max_rounds=2))
    assert found["rounds"] == 2 and len(found["block_energy_mj"]["baseline"]) == 24


def test_a_sensor_lost_part_way_gives_no_energy_figure_and_names_the_error() -> None:
    models, sampler, clock = setup({"candidate": 2.4}, fail_after=150)
    found = energy(models, sampler, clock)
    assert "block_energy_mj" not in found and "board_verdict" not in found
    assert "sensor lost" in found["error"] and "Input/output error" in found["error"]
    assert found["seconds"] < 3.0  # stopped at once, not at the end of the round
    assert sampler.reader.closed  # type: ignore[attr-defined]


def test_a_sensor_too_slow_for_the_cap_is_not_run() -> None:
    models, sampler, clock = setup({})
    found = measure_energy(models, sampler, protocol.PairedSettings(), rate_hz=0.5,
                           rng=random.Random(0), clock=clock.seconds)
    assert "20 s" in found["error"] and "60 s" in found["error"]
    assert clock.now == 0 and not sampler.started
    assert sampler.reader.closed  # type: ignore[attr-defined]


def test_a_block_without_a_sample_gives_no_energy_figure() -> None:
    """A sensor that answers slower than asked (tegrastats gave 0.5 Hz where 20 Hz was
    asked): blocks without a sample make the pass say so, never a figure."""
    models, sampler, clock = setup({})
    sampler.period = 0.25  # 4 Hz, where blocks of 0.1 s were sized for 100 Hz
    found = energy(models, sampler, clock)
    assert "held no positive power sample" in found["error"] and "4 Hz" in found["error"]
