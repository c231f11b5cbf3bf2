"""Latency, memory, power and thermal state of one model, measured in the process that runs it.

Run once per variant in a child process forked from the agent's unchanged
zygote (see ``proc``), so the peak resident memory (VmHWM) belongs to that
variant alone, whatever its position in the job, and a crash in the runtime
takes down only that variant.

The method follows LiteRT's benchmark_model and MLPerf: model load and
allocation timed, first inference timed on its own, a warm-up of at least a
count *and* a duration, then measured runs until both a minimum count and a
minimum duration are reached, with a time and count ceiling so a slow model
cannot hold the board for ever.  All times come from ``time.perf_counter_ns``
(monotonic, the highest resolution the board has).  Nothing polls the process
during the timed loop: memory is read once, after the runs, and power is sampled
in a separate pass of its own (as LiteRT's benchmark_model advises), so the
sampler thread never runs beside the latency figures.

Example::

    figures = measure_variant(find_runtime(), Path("m.tflite"), job["settings"])
    figures["latency_ms"]["p50"], figures["verdict"]["status"]
"""

from __future__ import annotations

import time
from array import array
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Mapping, Optional, Tuple

import numpy as np

from .accelerators import plan_model
from .clocks import clock_state
from .outputs import Reference, check_outputs
from .power import PowerReader, PowerSampler, summarize_power
from .protocol import MAX_RAW_SAMPLES, JobSettings
from .runtime import Runtime
from .thermal import thermal_state, was_throttled
from .verdict import judge
from .wire import (
    ClockState,
    LatencySummary,
    PowerFigures,
    Profile,
    ThermalState,
    VariantFigures,
)

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from .interp import Model


def measure_variant(runtime: Runtime, model_path: Path,
                    settings: JobSettings | Mapping[str, object], *,
                    power_reader: PowerReader | None = None,
                    reference: Optional[Reference] = None,
                    thermal: Callable[[], ThermalState] = thermal_state,
                    clocks: Callable[[], ClockState] = clock_state) -> VariantFigures:
    """Load ``model_path``, time it, and report figures and a verdict.

    ``power_reader`` (None: no sensor, energy fields absent) is sampled through
    an idle window before the runs and through the measured runs; ``reference``
    (``{"inputs": [...], "outputs": [...]}`` from the host) is checked after them.
    ``thermal`` and ``clocks`` are read just before the model loads and just after the runs.
    """
    settings = JobSettings.of(settings)  # the one place defaults live
    threads = int(settings.threads)
    # The accelerator and API asked for, probed in a child before anything is timed.
    plan = plan_model(runtime, model_path, settings)
    before, clocks_before = thermal(), clocks()
    rss_before = _status_bytes("VmRSS")
    started = time.perf_counter_ns()
    opened = plan.open()
    interpreter = opened.model
    loaded_ns = time.perf_counter_ns() - started
    interpreter.allocate_tensors()
    load_ns = time.perf_counter_ns() - started
    rss_loaded = _status_bytes("VmRSS")

    inputs, inputs_from = _measuring_inputs(interpreter, reference)
    for detail, tensor in zip(interpreter.get_input_details(), inputs):
        interpreter.set_tensor(detail["index"], tensor)

    first_ns = _timed_invoke(interpreter)
    warmup_runs = _warm_up(interpreter, runs=int(settings.warmup_runs),
                           seconds=float(settings.warmup_seconds))

    started_s = time.monotonic()
    samples_ns = _measured_runs(interpreter, settings)
    wall_seconds = time.monotonic() - started_s
    # Read the peak before the figures below allocate anything: it belongs to the model.
    peak_rss = _status_bytes("VmHWM")
    samples_ms = np.frombuffer(samples_ns, dtype=np.int64) / 1e6
    every = -(-samples_ms.size // MAX_RAW_SAMPLES)  # ceil: 1 until there are too many
    after, clocks_after = thermal(), clocks()
    figures: VariantFigures = {
        "status": "ok",
        "runtime": runtime.describe(),
        "threads": threads,
        "load_ms": load_ns / 1e6,
        "model_load_ms": loaded_ns / 1e6,
        "allocate_ms": (load_ns - loaded_ns) / 1e6,
        "first_inference_ms": first_ns / 1e6,
        "warmup_runs_done": warmup_runs,
        "runs": int(samples_ms.size),
        "measured_seconds": float(samples_ms.sum() / 1e3),
        "wall_seconds": wall_seconds,
        "latency_ms": latency_summary(samples_ms),
        "inputs": inputs_from,
        # Whole nanoseconds / 1e6: the shortest decimal of each is exact (0.015123 for
        # 15123 ns), so the samples keep the clock's full resolution at about 9 bytes each
        # (rounding to 1 us made a 2-20 us model's samples a handful of values).
        "latency_samples_ms": samples_ms[::every].tolist(),
        # Read after the runs, not polled during them: VmHWM is the kernel's own peak.
        "peak_rss_bytes": peak_rss,
        "load_rss_growth_bytes": max(0, rss_loaded - rss_before),
        "thermal": {"before": before, "after": after, "throttled": was_throttled(before, after)},
        "clocks": {"before": clocks_before, "after": clocks_after},
        "accelerator": opened.facts(),
    }
    if power_reader is not None:
        figures["power"] = _energy_pass(interpreter, power_reader, settings)
    if reference is not None:
        figures["output_check"] = check_outputs(
            interpreter, reference, atol=float(settings.output_atol),
            min_top1=float(settings.output_min_top1))
    if every > 1:
        figures["latency_samples_every"] = every
    if float(settings.profile) > 0:
        figures["profile"] = _profile_pass(runtime, model_path, threads, inputs, figures)
    figures["verdict"] = judge(figures, settings)
    return figures


def _energy_pass(interpreter: Model, reader: PowerReader, settings: JobSettings
                 ) -> PowerFigures:
    """Sample power through an idle window and a second set of measured runs.

    A pass of its own, as LiteRT's benchmark_model advises for anything that polls:
    the latency figures above never run beside the sampler thread.  Its own runs
    give the latency the energy is divided over.
    """
    rate = float(settings.power_rate_hz)
    power: PowerFigures = {"sensor": reader.describe(), "rate_hz_asked": rate}
    sampler = PowerSampler(reader, rate_hz=rate).start()
    idle_start = time.monotonic()
    time.sleep(float(settings.idle_seconds))
    idle = (idle_start, time.monotonic())
    samples_ns = _measured_runs(interpreter, settings)
    active = (idle[1], time.monotonic())
    raw = sampler.stop()
    samples_ms = np.frombuffer(samples_ns, dtype=np.int64) / 1e6
    power["runs"] = int(samples_ms.size)
    power["wall_seconds"] = active[1] - active[0]
    power["latency_mean_ms"] = float(samples_ms.mean())
    power["latency_p50_ms"] = float(np.percentile(samples_ms, 50))
    if sampler.error:
        # A sensor lost part-way covers only part of the runs: no energy figure is
        # better than one extrapolated from a window it did not see.
        power["error"] = sampler.error
    else:
        power.update(summarize_power(raw, idle=idle, active=active, runs=power["runs"]))
    return power


def _profile_pass(runtime: Runtime, model_path: Path, threads: int,
                  inputs: List[NDArray[np.generic]], figures: VariantFigures) -> Profile:
    """The per-operator profile, in a pass (and a child process) of its own, after every
    figure above: profiling slows the runs, so whole-model latency never comes from it."""
    from .profiler import profile_in_child  # only jobs that ask for it load the ctypes code

    return profile_in_child(runtime, model_path, threads=threads, inputs=inputs,
                            baseline_ms=float(figures["latency_ms"]["p50"]),
                            providers=figures["accelerator"].get("providers"))


def _measuring_inputs(interpreter: Model, reference: Optional[Reference]
                      ) -> Tuple[List[NDArray[np.generic]], str]:
    """What the timed runs feed the model, and where it came from.

    The host's first reference sample (a real input: ``eval_data()`` or
    ``example_input()``) when there is one: random integers are not token ids (an
    embedding lookup fails on them) and random values may take other paths through a
    model than real ones.  Otherwise seeded random values, said to be synthetic.
    """
    details = interpreter.get_input_details()
    if reference is not None and len(reference["inputs"]) == len(details):
        return ([batch[0].astype(detail["dtype"]).reshape(tuple(int(d) for d in detail["shape"]))
                 for detail, batch in zip(details, reference["inputs"])],
                "reference: the host's first input sample")
    return _random_inputs(interpreter), "synthetic: seeded random values"


def _random_inputs(interpreter: Model) -> List[NDArray[np.generic]]:
    """Inputs of the right shape and type, for a model the host sent no real input for."""
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


def _timed_invoke(interpreter: Model) -> int:
    started = time.perf_counter_ns()
    interpreter.invoke()
    return time.perf_counter_ns() - started


def _warm_up(interpreter: Model, *, runs: int, seconds: float) -> int:
    """Invoke until both ``runs`` and ``seconds`` are reached; return the runs done."""
    done, until = 0, time.perf_counter_ns() + int(seconds * 1e9)
    while done < runs or time.perf_counter_ns() < until:
        interpreter.invoke()
        done += 1
    return done


def _measured_runs(interpreter: Model, settings: JobSettings) -> array[int]:
    """Run until both floors of ``settings`` are met (MLPerf-style), or a ceiling (count or
    time) is hit.

    Nanoseconds in a packed array: 8 bytes a run, where a list of ints would add about
    36, and that would count in the peak memory reported for the model.
    """
    samples = array("q")
    min_runs, max_runs = int(settings.min_runs), int(settings.max_runs)
    min_ns = int(float(settings.min_seconds) * 1e9)
    max_ns = int(float(settings.max_seconds) * 1e9)
    started = time.perf_counter_ns()
    while True:
        samples.append(_timed_invoke(interpreter))
        elapsed = time.perf_counter_ns() - started
        if (len(samples) >= min_runs and elapsed >= min_ns) or elapsed >= max_ns \
                or len(samples) >= max_runs:
            return samples


def latency_summary(samples_ms: NDArray[np.floating]) -> LatencySummary:
    """p50/p90/p99, mean, std, min, max, and two coefficients of variation.

    ``cv`` is the classic std / mean.  ``robust_cv`` is 1.4826 * MAD / median (equal to the
    CV for normal noise): the verdict judges stability with it, because on a model of a few
    microseconds one 1 ms preemption by the OS among 100,000 runs is enough to push std / mean
    past any sensible limit, while the runs themselves were steady.  Such rare stalls still
    show, in p99 and max.
    """
    p50, p90, p99 = np.percentile(samples_ms, [50, 90, 99])
    mean = float(samples_ms.mean())
    std = float(samples_ms.std())
    mad = float(np.median(np.abs(samples_ms - p50)))
    return {
        "p50": float(p50), "p90": float(p90), "p99": float(p99),
        "mean": mean, "std": std,
        "min": float(samples_ms.min()), "max": float(samples_ms.max()),
        "cv": std / mean if mean > 0 else 0.0,
        "robust_cv": 1.4826 * mad / float(p50) if p50 > 0 else 0.0,
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
