"""The on-board output check: run the host's reference inputs, compare with the host's outputs.

A model that loads is not a model that works (tflite-runtime 2.14 computes some
dynamic-range models wrongly without an error), so the board runs the inputs
the host ran and reports how far its outputs are from the host interpreter's.

The reference travels as one ``.npz`` file beside the model: ``input_0..`` and
``output_0..`` arrays, each with the batch of samples on the first axis.

Example::

    check_outputs(interpreter, load_reference(path), atol=1e-4, min_top1=0.99)
    # {"ok": True, "samples": 32, "max_abs_diff": 0.0, "top1_agreement": 1.0, ...}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def load_reference(path: Path) -> dict[str, list[np.ndarray]]:
    """Read a reference ``.npz`` into ``{"inputs": [...], "outputs": [...]}``."""
    with np.load(path, allow_pickle=False) as data:
        inputs = [data[f"input_{i}"] for i in range(_count(data.files, "input_"))]
        outputs = [data[f"output_{i}"] for i in range(_count(data.files, "output_"))]
    return {"inputs": inputs, "outputs": outputs}


def _count(names: list[str], prefix: str) -> int:
    return sum(1 for name in names if name.startswith(prefix))


def _as_float(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Dequantize integer outputs with the tensor's scale, so diffs are in real units."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    values = values.astype(np.float64)
    if np.issubdtype(np.dtype(detail["dtype"]), np.integer) and scale:
        return (values - zero_point) * scale
    return values


def check_outputs(interpreter: Any, reference: dict[str, list[np.ndarray]], *, atol: float,
                  min_top1: float) -> dict[str, Any]:
    """Run every reference sample; report max abs diff, top-1 agreement and ``ok``."""
    in_details = interpreter.get_input_details()
    out_details = interpreter.get_output_details()
    samples = int(reference["inputs"][0].shape[0])
    max_diff, agree = 0.0, 0
    for index in range(samples):
        for detail, batch in zip(in_details, reference["inputs"]):
            interpreter.set_tensor(detail["index"], batch[index].astype(detail["dtype"]))
        interpreter.invoke()
        first = True
        for detail, batch in zip(out_details, reference["outputs"]):
            board = _as_float(interpreter.get_tensor(detail["index"]), detail)
            host = _as_float(batch[index], detail)
            max_diff = max(max_diff, float(np.max(np.abs(board - host))))
            if first:  # top-1 is judged on the first output, the classifier's logits
                agree += int(np.argmax(board) == np.argmax(host))
                first = False
    top1 = agree / samples if samples else 1.0
    ok = max_diff <= atol and top1 >= min_top1
    return {"ok": ok, "samples": samples, "max_abs_diff": max_diff, "top1_agreement": top1,
            "atol": atol, "min_top1": min_top1,
            "summary": f"max abs diff {max_diff:.3g} (atol {atol:g}), "
                       f"top-1 agreement {top1:.3f} (min {min_top1:g})"}
