"""Reference inputs and outputs for the on-board output check, computed on the host.

The host runs a few real inputs through its own TFLite interpreter (ONNX Runtime for an
``.onnx``) and saves
inputs (already in the model's input dtype, quantized if the model is) and raw
outputs in one ``.npz`` file that travels beside the model; the board runs the
same inputs and reports how far its outputs are (see ``device_agent.outputs``).
The file also says how to judge them (``agreement_metric``): ``top1`` for a
classifier, ``cosine`` for a model without labels, as the host judged its fidelity.

A model the runtime crashes on (a user's ``.tflite`` can be one: see
``tests/models/segfaulting_tflite.py``) must not take the host down with it:
:func:`compute_references` runs the interpreter in a child Python and names the
signal instead, so the board still gets to run and report that variant.

Example::

    compute_reference(Path("int8.tflite"), source_inputs(source, 32), Path("int8.ref.npz"))
    compute_references([(Path("int8.tflite"), Path("int8.ref.npz"))], None)
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from device_agent.interp import TensorDetail
from device_agent.outputs import METRICS
from toolkit.compress.evaluate import _as_numpy, _to_tensor, host_interpreter
from toolkit.model.load import ModelSource

if TYPE_CHECKING:  # the reference child imports this module: keep it lean
    from numpy.typing import NDArray

    from toolkit.artifacts.bundle import Artifact
    from toolkit.compress.evaluate import Array

#: Inputs plus outputs kept under this size, so the job stays small on slow links.
MAX_REFERENCE_BYTES = 2 * 1024 * 1024
MAX_REFERENCE_SAMPLES = 32
#: Where ``toolkit`` is importable from, for the child Python.
_IMPORT_ROOT = str(Path(__file__).resolve().parents[2])
_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from toolkit.model.reference import compute_reference
samples = None
if sys.argv[2]:
    with np.load(sys.argv[2]) as saved:
        count, width = (int(n) for n in saved["shape"])
        samples = [tuple(saved[f"{i}_{j}"] for j in range(width)) for i in range(count)]
metric = sys.argv[3]
pairs = sys.argv[4:]
for index in range(0, len(pairs), 2):
    print("start", index // 2, flush=True)
    try:
        compute_reference(pairs[index], samples, pairs[index + 1], metric=metric)
    except Exception as exc:
        print("error", index // 2, type(exc).__name__ + ": " + " ".join(str(exc).split()),
              flush=True)
    else:
        print("done", index // 2, flush=True)
"""


def source_inputs(source: ModelSource, samples: int = MAX_REFERENCE_SAMPLES
                  ) -> list[tuple[Array, ...]] | None:
    """The first ``samples`` real inputs of ``eval_data()``; without it, ``example_input()``
    first (the board times the model on the first sample), then, for a model whose inputs
    are all floating point, seeded random inputs of its shapes for a wider output check.

    Never random integers: they are not token ids or masks (an embedding lookup fails on
    them).  None (seeded random inputs throughout) only for a source with no example.
    """
    if source.eval_data is not None:
        return [inputs for inputs, _label in itertools.islice(source.eval_data(), samples)]
    if not source.example_input:
        return None
    example = tuple(_as_numpy(value) for value in source.example_input)
    if not all(np.issubdtype(value.dtype, np.floating) for value in example):
        return [example]
    rng = np.random.default_rng(0)
    return [example, *(tuple(rng.standard_normal(value.shape).astype(value.dtype)
                             for value in example) for _ in range(samples - 1))]


def reference_metric(artifacts: Iterable[Artifact]) -> str:
    """How the board judges its outputs: as the host judged the files' fidelity
    (``cosine`` for a model without labels), ``top1`` when no file says."""
    for artifact in artifacts:
        metric = (artifact.fidelity or {}).get("agreement_metric")
        if metric in METRICS:
            return str(metric)
    return "top1"


def compute_reference(model_path: Path, samples: Iterable[Sequence[Array]] | None,
                      out: Path, *, metric: str = "top1") -> Path:
    """Run ``samples`` (tuples of inputs; None: seeded random inputs) and save the ``.npz``
    with ``metric`` (``top1`` or ``cosine``) as its ``agreement_metric``."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    # The board's choice: onnxruntime for an .onnx, else the preferred TFLite runtime.
    interpreter = host_interpreter(Path(model_path))
    in_details, out_details = interpreter.get_input_details(), interpreter.get_output_details()
    per_sample = sum(int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize
                     for d in (*in_details, *out_details))
    budget = max(1, min(MAX_REFERENCE_SAMPLES, MAX_REFERENCE_BYTES // max(1, per_sample)))
    chosen = list(itertools.islice(samples, budget)) if samples is not None else \
        _random_samples(in_details, budget)
    inputs: list[list[np.ndarray]] = [[] for _ in in_details]
    outputs: list[list[np.ndarray]] = [[] for _ in out_details]
    for sample in chosen:
        for index, (detail, value) in enumerate(zip(in_details, sample, strict=True)):
            tensor = _to_tensor(detail, _as_numpy(value))
            interpreter.set_tensor(detail["index"], tensor)
            inputs[index].append(tensor)
        interpreter.invoke()
        for index, detail in enumerate(out_details):
            outputs[index].append(interpreter.get_tensor(detail["index"]).copy())
    arrays: dict[str, Any] = {f"input_{i}": np.stack(batch) for i, batch in enumerate(inputs)}
    arrays.update({f"output_{i}": np.stack(batch) for i, batch in enumerate(outputs)})
    arrays["agreement_metric"] = np.array(metric)
    with open(out, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return out


def _random_samples(details: list[TensorDetail],
                    count: int) -> list[tuple[NDArray[np.float32], ...]]:
    rng = np.random.default_rng(0)
    return [tuple(rng.standard_normal(tuple(d["shape"])).astype(np.float32) for d in details)
            for _ in range(count)]


def compute_references(models: Sequence[tuple[Path, Path]],
                       samples: Iterable[Sequence[Array]] | None, *,
                       timeout: float = 600.0, metric: str = "top1") -> dict[Path, Path | str]:
    """:func:`compute_reference` for each ``(model, out)`` pair, in a child Python.

    Returns, per model, the ``.npz`` written or why there is none: the runtime's
    message, or the signal that killed it (the next child goes on with the rest).
    """
    outcome: dict[Path, Path | str] = {}
    with tempfile.TemporaryDirectory(prefix="edge-ref-") as scratch:
        samples_file = _save_samples(samples, Path(scratch)) if samples is not None else ""
        remaining = list(models)
        while remaining:
            answered, lost = _reference_child(remaining, samples_file, timeout, metric)
            for (model, out), answer in zip(remaining, answered, strict=False):
                outcome[model] = out if answer == "done" else answer
            remaining = remaining[len(answered):]
            if remaining and lost:
                outcome[remaining[0][0]] = lost
                remaining = remaining[1:]
            elif remaining:  # the child ended without a word about the rest: do not loop
                outcome.update((model, "the reference process stopped early")
                               for model, _ in remaining)
                break
    return outcome


def _save_samples(samples: Iterable[Sequence[Array]], folder: Path) -> str:
    chosen = [tuple(_as_numpy(value) for value in sample)
              for sample in itertools.islice(samples, MAX_REFERENCE_SAMPLES)]
    width = len(chosen[0]) if chosen else 0
    arrays: dict[str, Any] = {f"{i}_{j}": value for i, sample in enumerate(chosen)
                              for j, value in enumerate(sample)}
    arrays["shape"] = np.array([len(chosen), width])
    path = folder / "samples.npz"
    np.savez(path, **arrays)
    return str(path)


def _reference_child(models: Sequence[tuple[Path, Path]], samples_file: str,
                     timeout: float, metric: str) -> tuple[list[str], str]:
    """One child over ``models``: the answers it gave in order ("done" or an error),
    and why it stopped on the next one if it died there ("" if it did not)."""
    command = [sys.executable, "-c", _CHILD, _IMPORT_ROOT, samples_file, metric,
               *(str(part) for pair in models for part in pair)]
    try:
        child = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        stdout, died = child.stdout, _death(child.returncode, child.stderr)
    except subprocess.TimeoutExpired as exc:
        stdout, died = exc.stdout or b"", f"the host runtime timed out after {timeout:g} s"
    answers = []
    for line in stdout.decode("utf-8", "replace").splitlines():
        word, _, rest = line.partition(" ")
        if word == "done":
            answers.append("done")
        elif word == "error":
            answers.append(rest.partition(" ")[2])
    return answers, died


def _death(returncode: int, stderr: bytes) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"the host runtime crashed on it (killed by signal {name})"
    if returncode != 0:
        lines = stderr.decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {returncode}"
    return ""
