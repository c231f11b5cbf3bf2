"""Baseline and candidate measured side by side, in one process, and judged by their ratio.

Why: on a shared machine the median of a 15 us model moved by up to 17 % between two
processes seconds apart, while two interpreters interleaved in one process compared within
0.6 %.  No statistics on two separate runs see through that; measuring both files in one
process, in short interleaved blocks, cancels it (what Chromium's Pinpoint and Google
Benchmark's random interleaving do).

One measuring child per pair holds three models: the baseline (``A``), the baseline opened a
second time (the *control*, ``A'``), and the candidate (``B``), with the same runtime,
threads and accelerator.  A *round* is a number of *triples*: in each, one block of
``block_runs`` invocations of each model, in an order drawn at random.  Per triple, the log
ratio of block medians ``log(med B / med A)`` is the candidate's figure, and
``log(med A' / med A)`` the control's: what two copies of one file differ by in this
process on this board now (memory placement, a core's state), the floor no comparison of
two files can go below.

Statistics (:func:`judge`): the median of the log ratios with the distribution-free
interval of the sign test (:func:`median_interval`), widened on each side by the
floor (how far the control's estimate lies from 1, at least :data:`MIN_FLOOR`).  A
regression when the whole widened interval lies above ``log(1 + limit)``, a pass when it
lies below it (improved when below ``log(1 - limit)``), else ``inconclusive``.  Sequential:
while the answer is ``inconclusive``, another round is measured, up to ``max_rounds`` and
``max_seconds``; the error rate is spent evenly across the rounds that may be looked at
(Bonferroni), so looking again does not raise it.  When the control alone lies beyond the
limit the board is too noisy to judge, and the answer says so with the figure.

Energy (:func:`measure_energy`, only with a power sensor): after the latency rounds, a pass
of its own in longer blocks (long enough for the sensor's samples), one sampler running
through all of it; per triple the log ratio of the blocks' energy per inference, judged by
the same :func:`judge` with the control, in a few bounded rounds.

The host receives every block median (and block energy) and judges again with this same
code: the board's verdict only decides when to stop measuring.

Standard library and numpy only, Python 3.8 syntax (the board's Python).

Example::

    figures = measure_pair(runtime, Path("base.tflite"), Path("new.tflite"), settings,
                           PairedSettings.from_dict(job["paired"]))
    judge(figures["log_ratios"]["candidate"], figures["log_ratios"]["control"],
          limit=0.05, confidence=0.99, looks=8)["verdict"]
"""

from __future__ import annotations

import math
import random
import time
from array import array
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Callable,
    Dict,
    List,
    Mapping,
    Sequence,
    Tuple,
    TypedDict,
    Union,
)

import numpy as np

from .clocks import clock_state
from .settings import MIN_TRIPLES, SIDES, JobSettings, PairedSettings
from .wire import ClockState, Judgement, PairEnergy, PairFigures, SideBlocks

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from .interp import Model
    from .power import PowerSampler
    from .runtime import Runtime

#: One energy block on its clock: (start, end, runs).
Window = Tuple[float, float, int]

#: The smallest floor a comparison is widened by, as a log ratio: two copies of one file
#: interleaved in one process differed by up to 0.6 % between processes on a loaded 2-vCPU
#: machine (0.9944-1.0024 in 10 trials, shared/notes/toolchain.md); 1 % covers that with a
#: margin, and is a fifth of the default 5 % limit.
MIN_FLOOR = math.log(1.01)
VERDICTS = ("pass", "regression", "improved", "inconclusive")
#: How an ``inconclusive`` that more rounds cannot change begins its reason.
TOO_NOISY = "the board is too noisy to judge"


# --- statistics ---------------------------------------------------------------------------


class Interval(TypedDict):
    """A median and the ends of its interval (infinite when too few values)."""

    estimate: float
    low: float
    high: float
    n: int


def median_interval(values: Sequence[float], confidence: float) -> Interval:
    """The median of ``values`` and its distribution-free interval (the sign test's).

    The interval's ends are the ``k``-th smallest and largest values, ``k`` the largest
    rank with ``P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2``: it holds for any
    distribution, and a wild block (a preemption landing in one side's block) moves it by
    one rank, not by its size.  (A signed-rank interval is narrower on clean data, but one
    wild block in 16 carried 16 of its Walsh averages and blew it open.)  Ends are
    infinite when there are too few values for ``confidence``.
    """
    x = np.sort(np.asarray(values, dtype=float))
    n = int(x.size)
    if n == 0:
        return {"estimate": math.nan, "low": -math.inf, "high": math.inf, "n": 0}
    tail = (1.0 - confidence) / 2.0
    k, below = 0, 0.0  # below: P(Binomial(n, 1/2) < k + 1)
    while True:
        below += math.comb(n, k) / 2.0 ** n
        if below > tail:
            break
        k += 1
    estimate = float(np.median(x))
    if k < 1:
        return {"estimate": estimate, "low": -math.inf, "high": math.inf, "n": n}
    return {"estimate": estimate, "low": float(x[k - 1]), "high": float(x[n - k]), "n": n}


def round_confidence(confidence: float, looks: int) -> float:
    """The confidence of each of ``looks`` looks so that all of them together keep
    ``confidence`` (the error rate spent evenly: Bonferroni)."""
    return 1.0 - (1.0 - confidence) / max(1, looks)


def judge(candidate: Sequence[float], control: Sequence[float], *, limit: float,
          confidence: float, looks: int) -> Judgement:
    """The verdict on log ratios of block medians (candidate / baseline), given the control's.

    Returns the verdict, the ratio ``exp(estimate)``, the widened interval as ratios, the
    floor (as a ratio above 1) and the control's ratio; ``reason`` says why it could not
    tell, when it could not.
    """
    each = round_confidence(confidence, looks)
    new = median_interval(candidate, each)
    same = median_interval(control, each)
    upper, lower = math.log1p(limit), math.log1p(-limit)
    answer: Judgement = {
        "ratio": _exp(new["estimate"]), "control_ratio": _exp(same["estimate"]),
        "triples": new["n"], "confidence_each_look": each}
    if new["n"] < MIN_TRIPLES or not math.isfinite(new["low"]) \
            or not math.isfinite(same["low"]):
        answer.update({"verdict": "inconclusive", "floor": math.nan,
                       "interval": [0.0, math.inf],
                       "reason": f"{new['n']} triples; at least {MIN_TRIPLES} are needed"})
        return answer
    # The control's estimate is how far two copies of one file sit apart in this process;
    # its own sampling noise is already in the candidate's interval.
    floor = max(MIN_FLOOR, abs(same["estimate"]))
    low, high = new["low"] - floor, new["high"] + floor
    answer.update({"floor": _exp(floor), "interval": [_exp(low), _exp(high)]})
    if abs(same["estimate"]) > upper:
        answer.update({"verdict": "inconclusive",
                       "reason": f"{TOO_NOISY}: the baseline against itself "
                                 f"measured {_percent(same['estimate'])}, beyond the "
                                 f"{limit * 100:g} % limit"})
    elif low > upper:
        answer["verdict"] = "regression"
    elif high < lower:
        answer["verdict"] = "improved"
    elif high < upper:
        answer["verdict"] = "pass"
    else:
        answer.update({"verdict": "inconclusive",
                       "reason": f"the interval reaches past the {limit * 100:g} % limit "
                                 f"from below it"})
    return answer


def _exp(value: float) -> float:
    return math.exp(value) if math.isfinite(value) else value


def _percent(log_ratio: float) -> str:
    return f"{(math.exp(log_ratio) - 1) * 100:+.2f} %"


# --- measurement --------------------------------------------------------------------------


def measure_pair(models: Dict[str, Model], settings: PairedSettings, *,
                 rng: random.Random | None = None,
                 clock: Callable[[], int] = time.perf_counter_ns,
                 clocks: Callable[[], ClockState] = clock_state) -> PairFigures:
    """Interleave blocks of the three ``models`` (``SIDES`` -> an allocated interpreter with
    its inputs set, warmed up) until the verdict is known or the caps are reached.

    Returns the block medians and 90th percentiles per side (ms), the log ratios, the
    rounds, the block size, the time measured, every side's latency summary, the
    board's verdicts on the medians and the 90th percentiles (:func:`judge`), and the
    clock policy (``clocks``) read before the first block and after the last, as a
    variant's measurement reads it.  Measuring stops when both are decided, or the
    medians regressed.
    """
    rng = rng or random.Random()
    clocks_before = clocks()
    block_runs = _block_runs([models[side] for side in SIDES], settings, clock)
    medians: Dict[str, List[float]] = {side: [] for side in SIDES}
    p90s: Dict[str, List[float]] = {side: [] for side in SIDES}
    pooled: Dict[str, array[int]] = {side: array("q") for side in SIDES}
    started = time.monotonic()
    rounds = 0
    verdicts: Dict[str, Judgement] = {}
    order = list(SIDES)
    while True:
        rounds += 1
        for _ in range(settings.round_triples):
            rng.shuffle(order)
            for side in order:
                block = _block(models[side], block_runs, clock)
                pooled[side].extend(block)
                values = np.frombuffer(block, dtype=np.int64) / 1e6
                median, p90 = np.percentile(values, [50, 90])
                medians[side].append(float(median))
                p90s[side].append(float(p90))
        verdicts = {}
        for figure, blocks, limit in (("median", medians, settings.limit),
                                      ("p90", p90s, settings.tail_limit)):
            ratios = log_ratios(blocks)
            verdicts[figure] = judge(ratios["candidate"], ratios["control"], limit=limit,
                                     confidence=settings.confidence, looks=settings.max_rounds)
        if _decided(verdicts) or rounds >= settings.max_rounds \
                or time.monotonic() - started >= settings.max_seconds:
            break
    clocks_after = clocks()
    from .measure import latency_summary

    return {
        "block_runs": block_runs,
        "rounds": rounds,
        "seconds": time.monotonic() - started,
        "block_median_ms": medians,
        "block_p90_ms": p90s,
        "latency_ms": {side: latency_summary(np.frombuffer(pooled[side], dtype=np.int64) / 1e6)
                       for side in SIDES},
        "board_verdicts": verdicts,
        "clocks": {"before": clocks_before, "after": clocks_after},
    }


def measure_energy(models: Dict[str, Model], sampler: PowerSampler, settings: PairedSettings, *,
                   rate_hz: float, rng: random.Random | None = None,
                   clock: Callable[[], float] = time.monotonic) -> PairEnergy:
    """Energy per inference of the three ``models``, in interleaved blocks, judged paired.

    ``sampler`` is a :class:`~device_agent.power.PowerSampler` not yet started, reading at
    ``rate_hz`` on ``clock`` (seconds).  It runs through the whole pass: its thread runs
    beside every side equally, so the ratio cancels its cost.  A block runs one model until
    :meth:`PairedSettings.energy_block` seconds have passed (at least one invocation); its
    energy per inference is the mean power of the samples inside its window, times its wall
    time, over its runs (total board power: idle included, on every side alike).  The
    first sample period of a block is left out: a sensor reading then still averages the
    block before.  Rounds of ``energy_round_triples`` triples, in an order drawn at random
    within each, until :func:`judge` decides (against ``energy_limit``, the error rate
    spent over ``energy_max_rounds`` looks), or ``energy_max_rounds`` or
    ``energy_max_seconds`` is reached; a triple that would end past the cap is not begun.

    Returns ``block_energy_mj`` per side, the block length, rounds, seconds, samples and
    the board's verdict; or ``error`` alone (with the block length) when the sensor was
    lost part-way, a block held no sample, or no triple fits in the cap: no energy figure
    is better than one from a window the sensor did not see.
    """
    rng = rng or random.Random()
    block_seconds = settings.energy_block(rate_hz)
    facts: PairEnergy = {"block_seconds": block_seconds, "rate_hz_asked": rate_hz}
    if MIN_TRIPLES * len(SIDES) * block_seconds > settings.energy_max_seconds:
        facts["error"] = (f"blocks of {block_seconds:g} s (the sensor read at {rate_hz:g} Hz) "
                          f"leave no room for {MIN_TRIPLES} triples in the energy pass's "
                          f"{settings.energy_max_seconds:g} s")
        sampler.reader.close()
        return facts
    windows: Dict[str, List[Window]] = {side: [] for side in SIDES}
    verdict: Judgement = {}
    order = list(SIDES)
    rounds = 0
    sampler.start()
    started = clock()
    triple_seconds = len(SIDES) * block_seconds
    try:
        while True:
            rounds += 1
            capped = False
            for _ in range(settings.energy_round_triples):
                if clock() - started + triple_seconds > settings.energy_max_seconds \
                        or sampler.error:
                    capped = True
                    break
                begun = clock()
                rng.shuffle(order)
                for side in order:
                    windows[side].append(_timed_block(models[side], block_seconds, clock))
                triple_seconds = max(triple_seconds, clock() - begun)
            if sampler.error:
                break
            samples = list(sampler.samples)
            energy = _block_energy(windows, samples, sampler.period)
            if isinstance(energy, str):
                break
            ratios = log_ratios(energy)
            verdict = judge(ratios["candidate"], ratios["control"],
                            limit=settings.energy_limit, confidence=settings.confidence,
                            looks=settings.energy_max_rounds)
            if _settled(verdict) or capped \
                    or rounds >= settings.energy_max_rounds:
                break
    finally:
        samples = sampler.stop()
    facts.update({"rounds": rounds, "seconds": clock() - started})
    if sampler.error:
        facts["error"] = sampler.error
        return facts
    energy = _block_energy(windows, samples, sampler.period)
    if isinstance(energy, str):
        facts["error"] = energy
        return facts
    facts.update({"block_energy_mj": energy, "samples": len(samples), "board_verdict": verdict,
                  "runs": {side: sum(w[2] for w in windows[side]) for side in SIDES}})
    return facts


def _timed_block(model: Model, seconds: float, clock: Callable[[], float]) -> Window:
    """Invoke ``model`` until ``seconds`` have passed; (start, end, runs) on ``clock``."""
    start = clock()
    runs = 0
    while True:
        model.invoke()
        runs += 1
        end = clock()
        if end - start >= seconds:
            return start, end, runs


def _block_energy(windows: Mapping[str, Sequence[Window]],
                  samples: Sequence[Tuple[float, float]], settle: float
                  ) -> Union[SideBlocks, str]:
    """Per side, each block's energy per inference in mJ; or why a block has none (str)."""
    times = np.asarray([at for at, _ in samples], dtype=float)
    watts = np.asarray([w for _, w in samples], dtype=float)
    energy: Dict[str, List[float]] = {}
    empty = 0
    for side in SIDES:
        energy[side] = []
        for start, end, runs in windows[side]:
            inside = watts[(times > start + min(settle, (end - start) / 2)) & (times <= end)]
            if inside.size == 0 or not np.all(np.isfinite(inside)) or inside.mean() <= 0:
                empty += 1
                continue
            energy[side].append(float(inside.mean()) * (end - start) / runs * 1e3)
    if empty:
        blocks = sum(len(w) for w in windows.values())
        span = float(times[-1] - times[0]) if times.size > 1 else 0.0
        achieved = f"{(times.size - 1) / span:.2g} Hz" if span > 0 else \
            f"{times.size} sample(s) in all"
        return (f"{empty} of {blocks} energy blocks held no positive power sample (the sensor "
                f"gave {achieved})")
    return energy


def _decided(verdicts: Dict[str, Judgement]) -> bool:
    """Whether more rounds can change nothing that matters: the medians are decided (or the
    board is too noisy for more rounds to help), and so is the tail, unless the medians
    already regressed (the gate fails either way)."""
    median = verdicts["median"]
    return _settled(median) and (_settled(verdicts["p90"]) or median["verdict"] == "regression")


def _settled(verdict: Judgement) -> bool:
    """Decided, or inconclusive for a reason more rounds cannot change (a noisy board)."""
    return verdict["verdict"] != "inconclusive" \
        or verdict.get("reason", "").startswith(TOO_NOISY)


def log_ratios(medians: Mapping[str, Sequence[float]]) -> Dict[str, List[float]]:
    """Per triple, log(candidate / baseline) and log(control / baseline)."""
    base = np.asarray(medians["baseline"], dtype=float)
    return {side: np.log(np.asarray(medians[side], dtype=float) / base).tolist()
            for side in ("candidate", "control")}


def _block_runs(models: List[Model], settings: PairedSettings, clock: Callable[[], int]
                ) -> int:
    """Invocations per block: enough for ``block_seconds`` of the slowest model, within the
    bounds; every side gets the same count, so a block's median is comparable."""
    slowest = 0
    for model in models:
        start = clock()
        for _ in range(settings.min_block_runs):
            model.invoke()
        slowest = max(slowest, (clock() - start) // settings.min_block_runs)
    wanted = int(settings.block_seconds * 1e9 / max(1, slowest))
    return max(settings.min_block_runs, min(settings.max_block_runs, wanted))


def _block(model: Model, runs: int, clock: Callable[[], int]) -> array[int]:
    samples = array("q")
    for _ in range(runs):
        start = clock()
        model.invoke()
        samples.append(clock() - start)
    return samples


def open_models(runtime: Runtime, paths: Dict[str, Path], settings: JobSettings,
                inputs_for: Callable[[Model], List[NDArray[np.generic]]]
                ) -> Dict[str, Model]:
    """Open and allocate each side's model with the same accelerator, API and threads, set
    its inputs (``inputs_for(interpreter)``) and warm it up; ``paths``: side -> file."""
    from .accelerators import plan_model
    from .measure import _warm_up

    models: Dict[str, Model] = {}
    for side in SIDES:
        interpreter = plan_model(runtime, paths[side], settings).open().model
        interpreter.allocate_tensors()
        for detail, tensor in zip(interpreter.get_input_details(), inputs_for(interpreter)):
            interpreter.set_tensor(detail["index"], tensor)
        models[side] = interpreter
    for side in SIDES:
        _warm_up(models[side], runs=int(settings.warmup_runs),
                 seconds=float(settings.warmup_seconds))
    return models


__all__ = ["MIN_FLOOR", "MIN_TRIPLES", "SIDES", "VERDICTS", "PairedSettings", "judge",
           "log_ratios", "measure_energy", "measure_pair", "open_models", "round_confidence",
           "median_interval"]
