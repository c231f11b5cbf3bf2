"""What one measuring child does: a variant's figures, or a pair's, printed as one JSON line.

The agent (:mod:`device_agent.__main__`) forks a child per variant (or pair) from its
zygote; the child names its runtime on stderr first (:data:`RUNTIME_MARK`: a crash can
still say which one died), checks the file is the one the host built and that the runtime
may run it, measures, and prints the figures as its last stdout line, or a one-line reason
on stderr and exits 1.

Example::

    measure(Path("job.json"), "fp32")   # prints {"status": "ok", "runtime": ..., ...}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional

from . import protocol
from .settings import JobSettings, PairedSettings
from .wire import Job, JobPair, JobVariant, PairEnergy

if TYPE_CHECKING:  # at run time each is imported where it is used
    import numpy as np
    from numpy.typing import NDArray

    from .interp import Model
    from .runtime import Runtime

#: The child's first stderr line names its runtime, so a crash can still say which one died.
RUNTIME_MARK = "edge-agent runtime: "


def load_job(job_path: Path) -> Job:
    with open(job_path, encoding="utf-8") as handle:
        return protocol.validate_job(json.load(handle))


def measure(job_path: Path, name: str) -> int:
    """Measure the variant (or pair) ``name`` of the job at ``job_path`` in this process."""
    from .accelerators import AcceleratorError
    from .measure import measure_variant
    from .outputs import load_reference
    from .power import SensorUnavailable, open_power_reader
    from .thermal import parse_zones, thermal_state

    job = load_job(job_path)
    pair = next((p for p in job.get("pairs") or () if p["name"] == name), None)
    if pair is not None:
        return _measure_pair(job_path, job, pair)
    variant = next(v for v in job["variants"] if v["name"] == name)
    settings = protocol.job_settings(job)
    runtime = _announced_runtime_of(settings, variant["file"])
    if runtime is None:
        return 1
    model_path = _runnable_file(job_path, variant, runtime)
    if model_path is None:
        return 1
    if "threads" in variant:
        settings = settings.replace(threads=variant["threads"])
    if "accelerator" in variant:
        settings = settings.replace(accelerator=variant["accelerator"])
    try:
        reader = open_power_reader(settings.power_sensor, rail=settings.power_rail,
                                   command=settings.power_command)
    except SensorUnavailable as exc:
        print(f"power sensor {settings.power_sensor!r} not available: {exc}",
              file=sys.stderr)
        return 1
    reference = None
    if "reference" in variant:
        try:
            reference = load_reference(job_path.parent / variant["reference"])
        except (OSError, ValueError, KeyError) as exc:
            print(f"reference {variant['reference']} is unreadable: {exc}", file=sys.stderr)
            return 1
    zones = parse_zones(settings.thermal_zones)
    try:
        figures = measure_variant(runtime, model_path, settings, power_reader=reader,
                                  reference=reference,
                                  thermal=lambda: thermal_state(zones=zones))
    except AcceleratorError as exc:  # already one line naming what is missing
        api = ("session" if runtime.name == "onnxruntime" else
               "compiled" if settings.accelerator.startswith("gpu") else settings.api)
        print(f"accelerator {settings.accelerator} (api {api}): {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the runtime's own message is the useful part
        print(f"{runtime.name} {runtime.version} could not run {variant['file']}: "
              f"{type(exc).__name__}: {_first_line(str(exc))}", file=sys.stderr)
        return 1
    figures["runtime_choice"] = runtime.choice
    print(json.dumps(figures))
    return 0


def _measure_pair(job_path: Path, job: Job, pair: JobPair) -> int:
    """A pair's baseline, control and candidate in this child (see device_agent.paired)."""
    from .measure import _measuring_inputs
    from .outputs import load_reference
    from .paired import measure_pair, open_models

    files = {v["name"]: v for v in job["variants"]}
    settings = protocol.job_settings(job)
    runtime = _announced_runtime_of(settings, files[pair["baseline"]]["file"])
    if runtime is None:
        return 1
    paths = {}
    for side, variant in (("baseline", files[pair["baseline"]]),
                          ("candidate", files[pair["candidate"]])):
        path = _runnable_file(job_path, variant, runtime)
        if path is None:
            return 1
        paths[side] = path
    paths["control"] = paths["baseline"]
    candidate = files[pair["candidate"]]
    # One sweep cell: both sides measured in it.
    if "threads" in candidate:
        settings = settings.replace(threads=candidate["threads"])
    if "accelerator" in candidate:
        settings = settings.replace(accelerator=candidate["accelerator"])
    reference = None
    if "reference" in candidate:  # both sides are fed the candidate's real input
        try:
            reference = load_reference(job_path.parent / candidate["reference"])
        except (OSError, ValueError, KeyError) as exc:
            print(f"reference {candidate['reference']} is unreadable: {exc}", file=sys.stderr)
            return 1
    paired = PairedSettings.from_dict(job.get("paired"))

    def inputs_for(interpreter: Model) -> List[NDArray[np.generic]]:
        return _measuring_inputs(interpreter, reference)[0]

    try:
        models = open_models(runtime, paths, settings, inputs_for)
        figures = measure_pair(models, paired)
        energy = _pair_energy(models, settings, paired)
    except Exception as exc:  # the runtime's own message is the useful part
        print(f"{runtime.name} {runtime.version} could not run the pair {pair['name']}: "
              f"{type(exc).__name__}: {_first_line(str(exc))}", file=sys.stderr)
        return 1
    if energy is not None:
        figures["energy"] = energy
    figures["status"] = "ok"
    figures["runtime"] = runtime.describe()
    figures["threads"] = int(settings.threads)
    figures["accelerator"] = settings.accelerator
    print(json.dumps(figures))
    return 0


def _announced_runtime_of(settings: JobSettings, file_name: str) -> Optional[Runtime]:
    """The runtime the settings choose for ``file_name`` (onnxruntime for an ``.onnx``),
    named on stderr first (RUNTIME_MARK: a crash can still say which one died); None with
    the reason on stderr when there is none."""
    from .runtime import RuntimeNotFound, runtime_for

    try:
        runtime = runtime_for(settings.runtime, file_name)
    except RuntimeNotFound as exc:
        print(str(exc), file=sys.stderr)
        return None
    print(RUNTIME_MARK + json.dumps(runtime.describe()), file=sys.stderr, flush=True)
    return runtime


def _runnable_file(job_path: Path, variant: JobVariant, runtime: Runtime) -> Optional[Path]:
    """The variant's file beside the job, or None (the reason on stderr) when it must not
    run: not byte for byte the one the host built, or a file this runtime cannot run."""
    path = job_path.parent / variant["file"]
    if protocol.sha256_file(path) != variant["sha256"]:
        print(f"{variant['file']} does not match its sha256 {variant['sha256']}; not run",
              file=sys.stderr)
        return None
    refusal = _unsupported(runtime, path)
    if refusal:
        print(f"{runtime.name} {runtime.version} cannot run {variant['file']}: {refusal}",
              file=sys.stderr)
        return None
    return path


def _pair_energy(models: Dict[str, Model], settings: JobSettings, paired: PairedSettings
                 ) -> Optional[PairEnergy]:
    """The pair's energy pass (device_agent.paired.measure_energy), after its latency rounds,
    when the job's power sensor opens; None without one.  The sensor is opened only now
    (tegrastats, a process of its own, must not run beside the latency rounds); a sensor
    that cannot be opened costs the energy figure, never the latency verdict."""
    from .paired import measure_energy
    from .power import PowerSampler, SensorUnavailable, open_power_reader

    sensor = settings.power_sensor
    try:
        reader = open_power_reader(sensor, rail=settings.power_rail,
                                   command=settings.power_command)
    except SensorUnavailable as exc:
        return {"sensor": {"kind": sensor, "misses": ""},
                "error": f"power sensor {sensor!r} not available: {exc}"}
    if reader is None:
        return None
    rate = float(settings.power_rate_hz)
    energy = measure_energy(models, PowerSampler(reader, rate_hz=rate), paired, rate_hz=rate)
    energy["sensor"] = reader.describe()
    return energy


def _unsupported(runtime: Runtime, model_path: Path) -> str:
    """Why ``runtime`` must not be given this file at all ("" if it may).

    tflite-runtime has no int4 kernels, and does not always say so: on an int4 file it
    refused a DEQUANTIZE node, crashed with SIGSEGV, or ran and computed garbage, from one
    run to the next.  The file's own tensor types decide before anything runs.
    """
    from .tflite_file import int4_tensors

    if runtime.name != "tflite-runtime":
        return ""
    count = int4_tensors(model_path.read_bytes())
    return (f"the file holds {count} int4 tensors and tflite-runtime has no int4 kernels "
            "(it crashes or computes garbage on them); int4 weights need ai-edge-litert "
            "(the target's runtime setting)") if count else ""


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""
