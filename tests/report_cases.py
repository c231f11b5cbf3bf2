"""Stored runs a report has to draw well, for the report tests and benchmarks/report_screenshots.py.

Each is shaped like what ``edge deploy`` / ``edge bench`` store: a digits-sized model
whose medians are microseconds, boards that differ by 3-4x, a ``--threads`` sweep, a
variant that failed to build, and a shared machine's hiccup (one run of 15 ms among
runs of a few microseconds); and series of runs for ``edge trend``'s page.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from toolkit.results.store import ResultsStore, StoredRun
from toolkit.results.trend import Trend, trend

from .records import BOARD, make_run, record

PI = dict(BOARD, hostname="pi", machine="aarch64", cpu_model="Cortex-A76",
          board_model="Raspberry Pi 5 Model B Rev 1.0")
PASSED = {"ok": True, "rule": "within 2 output steps", "samples": 32, "max_abs_diff": 0.0039,
          "top1_agreement": 1.0, "summary": "within 2 output steps: top-1 1.000"}
EXACT = dict(PASSED, rule="within atol 0.0001", max_abs_diff=0.0,
             summary="within atol 0.0001: top-1 1.000")
#: gzip -9 of the digits CNN's files as edge deploy measured them
GZIP = {"fp32": 144_700, "int8": 40_300, "fp16": 72_000, "int8-dynamic": 41_000}
SIZE = {"fp32": 158_400, "int8": 47_300, "fp16": 80_100, "int8-dynamic": 48_000}


def measured(variant: str, median_ms: float, *, seed: int, target: str = "local",
             accuracy: float = 0.9844, spread: float = 0.12, outliers: Sequence[float] = (),
             board: dict | None = None, energy_mj: float | None = None,
             threads: int | None = None, n: int = 400) -> dict:
    """A VALID record whose samples (ms) are lognormal around ``median_ms``, plus
    ``outliers``; outputs checked on the board; ``threads`` makes it one of a sweep."""
    recipe = variant
    name = f"{recipe}-t{threads}" if threads else recipe
    result = record(name, target=target, size=SIZE.get(recipe, 100_000), accuracy=accuracy,
                    board=board, energy_mj=energy_mj, seed=seed, n=n)
    rng = np.random.default_rng(seed)
    samples = np.concatenate([median_ms * rng.lognormal(0.0, spread, n - len(outliers)),
                              np.asarray(outliers, dtype=np.float64)])
    p50, p90, p99 = np.percentile(samples, [50, 90, 99])
    result.update(
        recipe=recipe, gzip_bytes=GZIP.get(recipe, 90_000), config={"recipe": recipe},
        latency_samples_ms=samples.tolist(),
        latency_ms={"p50": float(p50), "p90": float(p90), "p99": float(p99),
                    "mean": float(samples.mean()), "std": float(samples.std()),
                    "min": float(samples.min()), "max": float(samples.max())},
        verdict={"status": "VALID", "reasons": []},
        output_check=EXACT if recipe in ("fp32", "fp16") else PASSED)
    if threads:
        result["threads"] = threads
    return result


def failed(variant: str, error: str, *, target: str = "local", stage: str = "compress") -> dict:
    return {"target": target, "variant": variant, "recipe": variant, "status": "failed",
            "stage": stage, "error": error, "config": {"recipe": variant}}


def readme_run() -> StoredRun:
    """``edge deploy examples/digits_cnn.py --target local``: fp32 and int8 on one board."""
    return make_run("r-readme", [measured("fp32", 0.0119, seed=1),
                                 measured("int8", 0.0188, seed=2)])


def thread_sweep_run() -> StoredRun:
    """``--threads 1,2,4``: more threads make a 12 us model slower (thread hand-off costs)."""
    results = []
    for threads, (fp32, int8) in zip((1, 2, 4), ((0.0119, 0.0188), (0.0204, 0.0233),
                                                  (0.031, 0.035)), strict=True):
        results.append(measured("fp32", fp32, seed=threads, threads=threads))
        results.append(measured("int8", int8, seed=10 + threads, threads=threads))
    return make_run("r-sweep", results)


def two_board_run() -> StoredRun:
    """``edge bench`` on the local machine and a Raspberry Pi 5 with a power sensor; the
    Pi throttled during fp32 and judged it INVALID."""
    pi_fp32 = measured("fp32", 0.052, seed=3, target="rpi5", board=PI, energy_mj=0.21)
    pi_fp32.update(
        thermal={"before": {"zones_c": {"cpu": 48.0}, "cpu_mhz": {}},
                 "after": {"zones_c": {"cpu": 61.5, "gpu": 55.0}, "cpu_mhz": {}},
                 "throttled": ["soft temperature limit active"]},
        verdict={"status": "INVALID", "reasons": ["throttled during the runs"]})
    return make_run("r-two", [
        measured("fp32", 0.0119, seed=1, board=BOARD, energy_mj=0.05),
        measured("int8", 0.0188, seed=2, board=BOARD, energy_mj=0.07),
        measured("fp16", 0.0131, seed=5, board=BOARD, accuracy=0.9833, energy_mj=0.055),
        pi_fp32,
        measured("int8", 0.041, seed=4, target="rpi5", board=PI, energy_mj=0.16),
        measured("fp16", 0.066, seed=6, target="rpi5", board=PI, accuracy=0.9833,
                 energy_mj=0.25),
    ], tags=("main",))


def failed_variant_run() -> StoredRun:
    """One variant not built, one measured with a 15 ms hiccup among microsecond runs."""
    return make_run("r-failed", [
        measured("fp32", 0.0119, seed=1, outliers=(15.2, 11.4)),
        measured("int8", 0.0188, seed=2),
        measured("fp16", 0.0131, seed=5, accuracy=0.9833),
        failed("int8-dynamic", "not built: the converted file does not load: FULLY_CONNECTED "
               "version 12 is not supported by tflite-runtime 2.14"),
    ])


def everything_run() -> StoredRun:
    """Two boards, a thread sweep on each, a failed variant, microsecond latencies with a
    15 ms outlier: every chart at once, for the geometry test."""
    results: list[dict] = []
    for target, board, factor in (("local", BOARD, 1.0), ("rpi5", PI, 3.6)):
        for threads in (1, 2, 4):
            slow = 1 + 0.4 * (threads - 1)
            outliers = (15.0,) if (target, threads) == ("local", 1) else ()
            results.append(measured("fp32", 0.0021 * factor * slow, seed=threads,
                                    target=target, board=board, threads=threads,
                                    outliers=outliers, energy_mj=0.01 * factor))
            results.append(measured("int8", 0.0034 * factor * slow, seed=20 + threads,
                                    target=target, board=board, threads=threads,
                                    accuracy=0.9811, energy_mj=0.015 * factor))
        results.append(failed("int8-dynamic", "not built: conversion failed", target=target))
    return make_run("r-all", results)


def crowded_run() -> StoredRun:
    """Ten recipes within a few microseconds and a few tenths of a point of each other, some
    with long names: the trade-off chart's labels must still find free places."""
    names = ("fp32", "int8", "fp16", "int8-dynamic", "prune-channels:0.5+distill+int8",
             "prune-channels:0.5+distill", "prune:0.5+int8", "int8-per-tensor",
             "prune:0.3+fp16", "int8-weights-only")
    return make_run("r-crowded", [
        measured(name, 0.010 * (1 + 0.05 * index), seed=index,
                 accuracy=0.984 - 0.001 * (index % 4) - 0.0002 * index)
        for index, name in enumerate(names)])


#: The digits CNN's XNNPACK operators (op, kernel, node op, output shape) as ai-edge-litert 2.3
#: profiled them on this machine, with fp32 and int8 mean times per run (us).
DIGITS_OPS = (
    ("Static Reshape", "Static Reshape (NC)", "RESHAPE", [1, 8, 8, 1], 0.065, 0.067),
    ("Convolution", "Convolution (NHWC, {}) IGEMM", "DEPTHWISE_CONV_2D", [1, 8, 8, 16],
     0.463, 3.64),
    ("Convolution", "Convolution (NHWC, {}) IGEMM", "CONV_2D", [1, 8, 8, 32], 17.1, 20.6),
    ("Max Pooling", "Max Pooling (NHWC, {})", "MAX_POOL_2D", [1, 4, 4, 32], 0.115, 0.069),
    ("Transpose", "Transpose (ND, {}) Transpose", "TRANSPOSE", [1, 32, 4, 4], 0.041, 0.083),
    ("Static Reshape", "Static Reshape (NC)", "RESHAPE", [1, 512], 0.0, 0.0),
    ("Fully Connected", "Fully Connected (NC, {}) GEMM", "FULLY_CONNECTED", [1, 64], 3.87, 1.26),
    ("Fully Connected", "Fully Connected (NC, {}) GEMM", "FULLY_CONNECTED", [1, 10], 0.026,
     0.001),
)


def digits_profile(int8: bool) -> dict:
    """A per-operator profile of the digits CNN shaped like the agent's (``--profile``)."""
    total = 47.0 if int8 else 41.0
    ops = []
    for index, (op, kernel, node_op, shape, fp32_us, int8_us) in enumerate(DIGITS_OPS):
        mean = int8_us if int8 else fp32_us
        ops.append({"index": index, "op": op, "kernel": kernel.format("QC8" if int8 else "F32"),
                    "source": "xnnpack", "p50_us": float(round(mean)), "mean_us": mean,
                    "node": index, "node_op": node_op, "version": 3 if int8 else 1,
                    "output_shape": shape, "share": mean / total})
    by_type: dict[str, dict] = {}
    for row in ops:
        entry = by_type.setdefault(row["node_op"], {"op": row["node_op"], "count": 0,
                                                    "mean_us": 0.0})
        entry["count"] += 1
        entry["mean_us"] += row["mean_us"]
    summed = sum(row["mean_us"] for row in ops)
    return {"method": "LiteRT C API profiler (CompiledModel, CPU, XNNPACK, 1 thread(s))",
            "runs": 1000, "ops": ops,
            "by_type": [dict(e, share=e["mean_us"] / total) for e in
                        sorted(by_type.values(), key=lambda e: -e["mean_us"])],
            "total_us": {"p50": total, "mean": total}, "ops_sum_us": summed,
            "coverage": summed / total, "overhead": total / (18.2 if int8 else 11.5) - 1}


def profiled_run() -> StoredRun:
    """fp32 and int8 of the digits CNN with per-operator profiles (edge deploy --profile)."""
    fp32 = measured("fp32", 0.0115, seed=1)
    int8 = measured("int8", 0.0182, seed=2)
    fp32["profile"], int8["profile"] = digits_profile(False), digits_profile(True)
    return make_run("r-profile", [fp32, int8])


#: The first run of the slower level in :func:`trend_runs` with a step (run 17 of 32).
STEP_AT = 16


def trend_runs(count: int = 32, *, step: bool = True, seed: int = 5) -> list[StoredRun]:
    """``count`` runs of the README model (fp32 on ``local``), one an hour, whose medians
    wander by 3 % from run to run (seeded); with ``step``, a file about 15 % slower from
    run ``STEP_AT + 1`` on, as a slower variant swapped in halfway would be."""
    rng = np.random.default_rng(seed)
    runs = []
    for index, noise in enumerate(rng.lognormal(0.0, 0.03, count)):
        slower = step and index >= STEP_AT
        result = measured("fp32", 0.0119 * (1.15 if slower else 1.0) * noise, seed=100 + index)
        result["sha256"] = hashlib.sha256(b"slower" if slower else b"fp32").hexdigest()
        runs.append(make_run(f"r-trend-{index + 1:02d}", [result],
                             created_at=f"2026-11-{1 + index // 24:02d}T{index % 24:02d}"
                                        ":00:00+00:00"))
    return runs


def stored_trend(runs: Sequence[StoredRun], store: Path) -> Trend:
    """The p50 trend of fp32 on ``local`` over ``runs``, stored into a fresh ``store``."""
    with ResultsStore(store) as opened:
        for run in runs:
            opened.add_run(run)
        return trend(opened, target="local", variant="fp32")


CASES = {"readme": readme_run, "thread-sweep": thread_sweep_run, "two-boards": two_board_run,
         "failed-variant": failed_variant_run, "everything": everything_run,
         "crowded": crowded_run, "profile": profiled_run}
