"""Does each produced file load AND compute correctly under another TFLite runtime?

Many boards carry ``tflite-runtime==2.14.0``, which needs numpy<2 and so cannot
live in the host's environment: it runs in another Python (a venv) through
:mod:`toolkit.compress._compat_probe`.  The same raw input tensors go to both runtimes and
the outputs are compared, because 2.14 runs some quantized files without error
but computes them wrongly.

Example::

    compat = runtime_compat(Path("venv214/bin/python"), [Path("int8.tflite")], inputs)
    compat["int8.tflite"]  # {"runtime": "tflite-runtime", "version": "2.14.0", "ok": True, ...}
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np

import device_agent

# One rule on the host and on the board: the board's own (device_agent.outputs).
from device_agent.interp import TensorDetail
from device_agent.outputs import compare_outputs, output_step
from toolkit._quiet import captured_native_output
from toolkit.compress.evaluate import _as_numpy, _from_tensor, _to_tensor
from toolkit.errors import CompressError, UsageError

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from toolkit.compress.evaluate import Array

PROBE = Path(__file__).with_name("_compat_probe.py")


class ProbeAnswer(TypedDict):
    """The probe's one JSON line: its runtime, and per file ``loads`` and any ``error``."""

    runtime: dict[str, str]
    results: dict[str, dict[str, object]]


def _host_run(path: Path, samples: Sequence[Sequence[Array]]
              ) -> tuple[dict[str, np.ndarray], list[list[NDArray[np.float32]]],
                         list[TensorDetail]]:
    from device_agent.runtime import find_runtime

    with captured_native_output():
        interpreter = find_runtime().interpreter_class(model_path=str(path))
        interpreter.allocate_tensors()
    details_in, details_out = interpreter.get_input_details(), interpreter.get_output_details()
    raw_inputs: dict[str, np.ndarray] = {}
    outputs = []
    for s, sample in enumerate(samples):
        for i, (detail, value) in enumerate(zip(details_in, sample, strict=True)):
            raw_inputs[f"s{s}_i{i}"] = _to_tensor(detail, _as_numpy(value))
            interpreter.set_tensor(detail["index"], raw_inputs[f"s{s}_i{i}"])
        interpreter.invoke()
        outputs.append([_from_tensor(d, interpreter.get_tensor(d["index"]))
                        for d in details_out])
    return raw_inputs, outputs, details_out


def runtime_compat(python: Path, files: list[Path],
                   samples: Sequence[Sequence[Array]]) -> dict[str, dict[str, object]]:
    """Run ``files`` under ``python``'s TFLite runtime; compare with the host runtime per file."""
    if not Path(python).is_file():
        raise UsageError(f"--compat-python {python} does not exist; give a Python that has "
                         "tflite-runtime installed, e.g. venv/bin/python")
    with tempfile.TemporaryDirectory(prefix="edge-compat-") as scratch:
        folder = Path(scratch)
        host: dict[str, tuple[list[list[NDArray[np.float32]]], list[TensorDetail]]] = {}
        models = []
        for n, path in enumerate(files):
            raw_inputs, outputs, details_out = _host_run(path, samples)
            np.savez(folder / f"in{n}.npz", **raw_inputs)  # type: ignore[arg-type]
            host[str(path)] = (outputs, details_out)
            models.append({"file": str(path), "inputs": str(folder / f"in{n}.npz"),
                           "outputs": str(folder / f"out{n}.npz")})
        job = folder / "job.json"
        job.write_text(json.dumps({"models": models}), encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(Path(device_agent.__file__).parent.parent)}
        done = subprocess.run([str(python), str(PROBE), str(job)], capture_output=True,
                              text=True, env=env, timeout=600, check=False)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise CompressError(f"runtime check with {python} failed: {tail}")
        answer = json.loads(lines[-1])
        return {Path(model["file"]).name: _compare(answer, model, *host[model["file"]])
                for model in models}


def _compare(answer: ProbeAnswer, model: dict[str, str],
             host_outputs: list[list[NDArray[np.float32]]],
             details_out: list[TensorDetail]) -> dict[str, object]:
    entry = {**answer["runtime"], **answer["results"][model["file"]]}
    if not entry["loads"]:
        return {**entry, "ok": False}
    got = np.load(model["outputs"])
    others = [[_from_tensor(detail, got[f"s{s}_o{o}"]) for o, detail in enumerate(details_out)]
              for s in range(len(host_outputs))]
    check = compare_outputs(host_outputs, others, [output_step(d) for d in details_out])
    return {**entry, "top1_agreement_with_host": check["top1_agreement"],
            "max_relative_error": check["max_relative_error"],
            "sqnr_db_vs_host": check["sqnr_db"], "rule": check["rule"],
            "summary": check["summary"], "ok": check["ok"]}
