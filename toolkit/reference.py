"""Reference inputs and outputs for the on-board output check, computed on the host.

The host runs a few real inputs through its own TFLite interpreter and saves
inputs (already in the model's input dtype, quantized if the model is) and raw
outputs in one ``.npz`` file that travels beside the model; the board runs the
same inputs and reports how far its outputs are (see ``device_agent.outputs``).

Example::

    compute_reference(Path("int8.tflite"), source_inputs(source, 32), Path("int8.ref.npz"))
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from device_agent.runtime import find_runtime

from ._quiet import captured_native_output
from .evaluate import _as_numpy, _to_tensor
from .model import ModelSource

#: Inputs plus outputs kept under this size, so the job stays small on slow links.
MAX_REFERENCE_BYTES = 2 * 1024 * 1024
MAX_REFERENCE_SAMPLES = 32


def source_inputs(source: ModelSource, samples: int = MAX_REFERENCE_SAMPLES
                  ) -> list[tuple[Any, ...]] | None:
    """The first ``samples`` real inputs of ``eval_data()``, or None if the model has none."""
    if source.eval_data is None:
        return None
    return [inputs for inputs, _label in itertools.islice(source.eval_data(), samples)]


def compute_reference(model_path: Path, samples: Iterable[tuple[Any, ...]] | None,
                      out: Path) -> Path:
    """Run ``samples`` (tuples of inputs; None: seeded random inputs) and save the ``.npz``."""
    with captured_native_output():  # the runtime announces its delegate on stderr
        interpreter = find_runtime().interpreter_class(model_path=str(model_path))
        interpreter.allocate_tensors()
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
    with open(out, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return out


def _random_samples(details: list[dict[str, Any]], count: int) -> list[tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(0)
    return [tuple(rng.standard_normal(tuple(d["shape"])).astype(np.float32) for d in details)
            for _ in range(count)]
