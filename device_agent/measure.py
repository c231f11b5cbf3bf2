"""Latency and memory of one model, measured in the process that runs it.

Run once per variant in a fresh child process (see ``__main__``), so the peak
resident memory (VmHWM) belongs to that variant alone and a crash in the
runtime takes down only that variant.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .runtime import Runtime


def measure_variant(runtime: Runtime, model_path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Load ``model_path``, time warm-up and measured runs, report the figures."""
    threads = int(settings["threads"])
    rss_before = _status_bytes("VmRSS")
    started = time.perf_counter_ns()
    interpreter = runtime.interpreter_class(
        model_path=str(model_path), num_threads=threads if threads > 0 else None)
    interpreter.allocate_tensors()
    load_ns = time.perf_counter_ns() - started
    rss_loaded = _status_bytes("VmRSS")

    for detail, tensor in zip(interpreter.get_input_details(), _random_inputs(interpreter)):
        interpreter.set_tensor(detail["index"], tensor)

    first_ns = _timed_invoke(interpreter)
    _warm_up(interpreter, runs=int(settings["warmup_runs"]))
    samples_ns = _measured_runs(
        interpreter,
        min_runs=int(settings["min_runs"]),
        max_runs=int(settings["max_runs"]),
        min_seconds=float(settings["min_seconds"]),
        max_seconds=float(settings["max_seconds"]),
    )
    samples_ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    return {
        "status": "ok",
        "runtime": runtime.describe(),
        "threads": threads,
        "load_ms": load_ns / 1e6,
        "first_inference_ms": first_ns / 1e6,
        "runs": int(samples_ms.size),
        "measured_seconds": float(samples_ms.sum() / 1e3),
        "latency_ms": _latency_summary(samples_ms),
        # Microsecond resolution keeps the raw samples compact for plots and statistics.
        "latency_samples_ms": [round(float(x), 3) for x in samples_ms],
        "peak_rss_bytes": _status_bytes("VmHWM"),
        "load_rss_growth_bytes": max(0, rss_loaded - rss_before),
    }


def _random_inputs(interpreter: Any) -> list[np.ndarray]:
    """Inputs of the right shape and type; latency of these models does not depend on values."""
    rng = np.random.default_rng(0)
    tensors = []
    for detail in interpreter.get_input_details():
        dtype = np.dtype(detail["dtype"])
        shape = tuple(int(d) for d in detail["shape"])
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            tensors.append(rng.integers(max(info.min, -128), min(info.max, 127) + 1,
                                        size=shape).astype(dtype))
        else:
            tensors.append(rng.standard_normal(shape).astype(dtype))
    return tensors


def _timed_invoke(interpreter: Any) -> int:
    started = time.perf_counter_ns()
    interpreter.invoke()
    return time.perf_counter_ns() - started


def _warm_up(interpreter: Any, *, runs: int) -> None:
    for _ in range(runs):
        interpreter.invoke()


def _measured_runs(interpreter: Any, *, min_runs: int, max_runs: int, min_seconds: float,
                   max_seconds: float) -> list[int]:
    """Run until both floors are met (MLPerf-style), or a ceiling (count or time) is hit."""
    samples: list[int] = []
    min_ns, max_ns = int(min_seconds * 1e9), int(max_seconds * 1e9)
    started = time.perf_counter_ns()
    while True:
        samples.append(_timed_invoke(interpreter))
        elapsed = time.perf_counter_ns() - started
        if (len(samples) >= min_runs and elapsed >= min_ns) or elapsed >= max_ns \
                or len(samples) >= max_runs:
            return samples


def _latency_summary(samples_ms: np.ndarray) -> dict[str, float]:
    p50, p90, p99 = np.percentile(samples_ms, [50, 90, 99])
    return {
        "p50": float(p50), "p90": float(p90), "p99": float(p99),
        "mean": float(samples_ms.mean()), "std": float(samples_ms.std()),
        "min": float(samples_ms.min()), "max": float(samples_ms.max()),
    }


def _status_bytes(field: str) -> int:
    """A ``kB`` field of /proc/self/status in bytes (Linux boards)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource  # not on every platform; ru_maxrss is kB on Linux

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
