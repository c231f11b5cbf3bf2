"""The packages that built a variant, with their versions: its record's ``toolchain``.

A figure moves with the converter as much as with the model: another litert-torch lowers
the same graph into other operators, another ai-edge-quantizer picks other scales.  Each
variant records the versions of what actually built it (``edge runs diff`` names those
that differ) and edge's own:

- a PyTorch model: :data:`TORCH_TO_TFLITE`, and what each step of the chain adds
  (``Chain.tools``: torchao for PT2E int8, QAT and int8-mixed, torch-pruning for
  ``prune-channels``, ai-edge-quantizer for the weight-only recipes);
- a ``.tflite`` given: its rewrites (weight-only, or int8 calibrated on ``--calibration``),
  :data:`TFLITE_REWRITE`; the file as given, none;
- an ``.onnx`` given: its rewrites, :data:`ONNX_QUANTIZATION`; the file as given, none;
- a PyTorch model's ONNX Runtime variants: :data:`TORCH_TO_ONNX`.

Versions are read from each distribution's metadata (``importlib.metadata``): reading
torch's version never imports torch.  The conversion cache keys its entries by the same
versions (:func:`toolkit.compress._cache.toolchain`), and a variant reused from it keeps
the versions it was built with.

Example::

    built_with(("torch", "litert-torch"))  # {"edge": "0.1.0", "torch": "2.13.0", ...}
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Iterable

__all__ = ["ABSENT", "ONNX_QUANTIZATION", "TFLITE_REWRITE", "TORCH_TO_ONNX", "TORCH_TO_TFLITE",
           "built_with", "version"]

#: What converts a PyTorch model into a ``.tflite``, whatever the chain: litert-torch traces
#: it with torch, litert-converter lowers the graph, ai-edge-litert holds the schema and the
#: compiler it calls.
TORCH_TO_TFLITE = ("torch", "litert-torch", "litert-converter", "ai-edge-litert")
#: What rewrites a ``.tflite`` a user gives (fp16, int8-dynamic, int4-weight, calibrated int8).
TFLITE_REWRITE = ("ai-edge-quantizer",)
#: What rewrites an ``.onnx`` (``onnxruntime.quantization`` and ``onnxruntime.transformers``'
#: float16 on ``onnx``).
ONNX_QUANTIZATION = ("onnx", "onnxruntime")
#: What makes a PyTorch model's ONNX Runtime variants (``--runtime onnxruntime``): torch's
#: exporter with onnxscript, then the rewrites of :data:`ONNX_QUANTIZATION`.
TORCH_TO_ONNX = ("torch", "onnxscript", *ONNX_QUANTIZATION)
#: The version recorded for a distribution that is not installed.
ABSENT = "absent"


@functools.cache
def version(distribution: str) -> str:
    """The installed version of ``distribution`` (``"2.13.0+cpu"``), or :data:`ABSENT`."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return ABSENT


def built_with(distributions: Iterable[str]) -> dict[str, str]:
    """edge's version and each of ``distributions``', in that order, each once."""
    return {name: version(name) for name in dict.fromkeys(("edge", *distributions))}
