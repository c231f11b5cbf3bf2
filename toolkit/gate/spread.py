"""How noisy latency and energy figures are: what the unpaired ``edge check`` widens by.

Statistics of stored runs (:mod:`toolkit.gate.check` judges with them): a circular
moving-block bootstrap of the ratio of two runs' quantiles (noise within each run), the
spread between runs of one file on one board learnt from the baselines and the store's
history (noise between runs), the same for energy, and Student's t for few runs.
The paired gate (:mod:`toolkit.gate.paired`) needs none of this: it measures both sides
in one process.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Final

import numpy as np

from toolkit.results.record import ResultRecord
from toolkit.results.store import EarlierLatency, StoredRun

#: ``np.percentile``'s method for a p50 or p99 computed here, the one the agent's
#: ``latency_summary`` (device_agent.measure) uses: check and deploy print one p99 for a run.
PERCENTILE_METHOD: Final = "linear"
#: Block length of the bootstrap, as a fraction of a run's samples (see bootstrap_ratio).
BLOCK_FRACTION = 0.05
#: Samples of a run the bootstrap resamples at most (see bootstrap_ratios).
BOOTSTRAP_SAMPLES = 5_000
#: Runs (baselines and earlier runs of their files) the spread between runs is taken from.
HISTORY_RUNS = 30


def between_run_spread(baselines: Sequence[StoredRun], history: Sequence[EarlierLatency] = (),
                       *, exclude: str = "") -> dict[tuple[str, str, str], tuple[float, int]]:
    """(target, variant, latency metric) -> (spread between runs as an SD of log quantiles,
    how many runs it comes from).

    The runs: each baseline run's sound measurement (ok, not INVALID, raw samples), and
    each run in ``history`` of the same file (sha256) on the same board (the identity
    facts of :data:`BOARD_IDENTITY`), except run ``exclude`` (the run being judged).
    ``history`` comes newest first; at most :data:`HISTORY_RUNS` runs count per key (a
    board's recent behaviour).  Only keys with at least two such runs get a spread:
    ``k - 1`` degrees of freedom.
    """
    observed: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    files: dict[tuple[str, str], set[tuple[str, tuple[str, ...]]]] = {}
    for stored in baselines:
        for r in stored.results:
            values = np.asarray(r.latency_samples_ms, dtype=np.float64)
            if not r.ok or r.invalid_reasons is not None \
                    or values.size < 2 or values.min() <= 0:
                continue
            key = r.key
            observed.setdefault(key, {})[stored.run_id] = (
                latency_figure(r, "p50", values), latency_figure(r, "p99", values))
            files.setdefault(key, set()).add((r.sha256 or "", r.board_identity))
    for earlier in history:
        key = (earlier.target, earlier.variant)
        runs = observed.get(key)
        if runs is None or earlier.run_id in runs or earlier.run_id == exclude \
                or (earlier.sha256, earlier.board) not in files[key] \
                or len(runs) >= HISTORY_RUNS:
            continue
        runs[earlier.run_id] = (earlier.p50_ms, earlier.p99_ms)
    spread = {}
    for (target, variant), runs in observed.items():
        if len(runs) < 2:
            continue
        for column, metric in enumerate(("latency_p50", "latency_p99")):
            logs = np.log([values[column] for values in runs.values()])
            spread[(target, variant, metric)] = (float(np.std(logs, ddof=1)), len(runs))
    return spread


def energy_spread(baselines: Sequence[StoredRun]) -> dict[tuple[str, str, str], tuple[float, int]]:
    """(target, variant, ``"energy"``) -> (spread of energy per inference between the
    baseline runs, as an SD of its log; how many runs it comes from).

    Energy per inference is one figure per run: the power sensor's average over the energy
    pass times that pass's duration, over its runs.  No samples are stored to resample, so
    its noise is learnt only from several runs of the baseline: each sound one (ok, not
    INVALID) with a figure counts; keys with fewer than two get no spread.
    """
    observed: dict[tuple[str, str], dict[str, float]] = {}
    for stored in baselines:
        for r in stored.results:
            energy = r.energy_per_inference_mj
            if r.ok and r.invalid_reasons is None and energy is not None and energy > 0:
                observed.setdefault(r.key, {})[stored.run_id] = energy
    return {(*key, "energy"): (float(np.std(np.log(list(runs.values())), ddof=1)), len(runs))
            for key, runs in observed.items() if len(runs) >= 2}


def student_t(confidence: float, df: int) -> float:
    """Two-sided ``confidence`` quantile of Student's t with ``df`` degrees of freedom.

    Exact for 1 and 2 degrees of freedom; from 3 on, the Cornish-Fisher expansion of
    Abramowitz & Stegun 26.7.5 (3.179 where the exact value is 3.182, 95 % at 3).
    """
    p = 1 - (1 - confidence) / 2
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = NormalDist().inv_cdf(p)
    terms = ((z ** 3 + z) / 4,
             (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96,
             (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384,
             (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160)
    return z + sum(term / df ** power for power, term in enumerate(terms, start=1))


def bootstrap_ratio(base: np.ndarray, new: np.ndarray, *, quantile: float, resamples: int,
                    confidence: float, seed: int = 0) -> tuple[float, float, float]:
    """Ratio of the ``quantile`` of ``new`` to that of ``base``, with a bootstrap interval.

    Both samples are resampled independently (percentile bootstrap) in circular moving
    blocks of :data:`BLOCK_FRACTION` of each run: samples are in time order and the OS or
    a neighbour disturbs runs in bursts, so resampling single samples would treat a burst
    as many independent slow inferences and call a one-off a certainty.  Returns
    ``(ratio, low, high)``.  Seeded, so one pair of runs always gets one verdict.
    """
    return bootstrap_ratios(base, new, quantiles=(quantile,), resamples=resamples,
                            confidence=confidence, seed=seed)[0]


def bootstrap_ratios(base: np.ndarray, new: np.ndarray, *, quantiles: Sequence[float],
                     resamples: int, confidence: float,
                     seed: int = 0) -> list[tuple[float, float, float]]:
    """:func:`bootstrap_ratio` for several quantiles from the same resamples.

    The interval comes from at most :data:`BOOTSTRAP_SAMPLES` of each run, evenly spaced
    in time (a microsecond model ships 50,000): the interval is then a little wider than
    all samples would give, never narrower, and a check takes seconds, not minutes.
    """
    rng = np.random.default_rng(seed)
    base_used, new_used = _evenly_spaced(base), _evenly_spaced(new)
    ratios = np.empty((resamples, len(quantiles)))
    # Chunks keep memory near a few MB even for the longest runs.
    chunk = max(1, 2_000_000 // max(base_used.size, new_used.size))
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        b = np.quantile(np.take(base_used, block_indices(rng, base_used.size, rows),
                                mode="wrap"), quantiles, axis=1)
        n = np.quantile(np.take(new_used, block_indices(rng, new_used.size, rows),
                                mode="wrap"), quantiles, axis=1)
        ratios[start:start + rows] = (n / b).T
    tail = (1 - confidence) / 2
    found = []
    for column, q in enumerate(quantiles):
        low, high = np.quantile(ratios[:, column], [tail, 1 - tail])
        found.append((float(np.quantile(new, q) / np.quantile(base, q)), float(low),
                      float(high)))
    return found


def _evenly_spaced(samples: np.ndarray) -> np.ndarray:
    """At most BOOTSTRAP_SAMPLES of ``samples``, every k-th, in time order."""
    return samples[::-(-samples.size // BOOTSTRAP_SAMPLES)]


def block_indices(rng: np.random.Generator, size: int, rows: int) -> np.ndarray:
    """``rows`` circular moving-block resamples of ``range(size)``, blocks of BLOCK_FRACTION.

    A block may start anywhere and wraps past the end to the start, so every sample is
    equally likely to be drawn; blocks that stop at the end would draw the first and last
    few samples of a run (where warm-up leftovers and throttling show) less often.  The
    indices run past ``size - 1`` where a block wraps: read them modulo ``size``
    (``np.take(samples, indices, mode="wrap")``, which is faster than wrapping them here).
    """
    length = max(1, int(size * BLOCK_FRACTION))
    count = -(-size // length)
    starts = rng.integers(0, size, (rows, count))
    return (starts[:, :, None] + np.arange(length)).reshape(rows, -1)[:, :size]


def latency_figure(record: ResultRecord, key: str, samples: np.ndarray) -> float:
    """The p50 or p99 (``key``) of ``record`` as deploy prints it.

    The agent's own summary, computed over every run: the stored samples are thinned to
    at most 50,000 (every k-th) and older versions rounded them to 1 us, so a p99 computed
    from them differs from deploy's in the last digits.  Computed from ``samples`` with the
    agent's definition (:data:`PERCENTILE_METHOD`) only when the record has no summary.
    """
    stored = record.latency(key)
    if stored is not None and stored > 0:
        return stored
    return float(np.percentile(samples, float(key.removeprefix("p")),
                               method=PERCENTILE_METHOD))


__all__ = ["BLOCK_FRACTION", "BOOTSTRAP_SAMPLES", "HISTORY_RUNS", "between_run_spread",
           "block_indices", "bootstrap_ratio", "bootstrap_ratios", "energy_spread",
           "latency_figure", "student_t"]
