"""Accuracy of the artifact that ships, computed with the TFLite interpreter on the host.

Quantized inputs and outputs are converted with the tensor's own scale and
zero point, exactly as an application on the board would do.

Example::

    accuracy = tflite_accuracy(Path("int8.tflite"), source.eval_data())
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from device_agent.runtime import find_runtime

from ._quiet import captured_native_output
from .errors import ModelError


def tflite_accuracy(model_path: Path,
                    samples: Iterable[tuple[tuple[Any, ...], Any]]) -> dict[str, Any]:
    """Top-1 accuracy of ``model_path`` over labelled ``samples``."""
    with captured_native_output():  # the runtime announces its delegate on stderr
        interpreter = find_runtime().interpreter_class(model_path=str(model_path))
        interpreter.allocate_tensors()
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    correct = total = 0
    for sample_inputs, label in samples:
        if len(sample_inputs) != len(inputs):
            raise ModelError(f"eval_data() gives {len(sample_inputs)} inputs; the model takes "
                             f"{len(inputs)}")
        for detail, value in zip(inputs, sample_inputs, strict=True):
            interpreter.set_tensor(detail["index"], _to_tensor(detail, _as_numpy(value)))
        interpreter.invoke()
        scores = _from_tensor(outputs[0], interpreter.get_tensor(outputs[0]["index"]))
        correct += int(np.argmax(scores.reshape(-1)) == int(label))
        total += 1
    if total == 0:
        raise ModelError("eval_data() yielded no samples")
    return {"accuracy": correct / total, "eval_samples": total}


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _to_tensor(detail: dict[str, Any], value: np.ndarray) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if np.issubdtype(dtype, np.integer) and scale and np.issubdtype(value.dtype, np.floating):
        info = np.iinfo(dtype)
        value = np.clip(np.round(value / scale) + zero_point, info.min, info.max)
    return value.astype(dtype).reshape(detail["shape"])


def _from_tensor(detail: dict[str, Any], value: np.ndarray) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.issubdtype(value.dtype, np.integer) and scale:
        return (value.astype(np.float32) - zero_point) * scale
    return value.astype(np.float32)
