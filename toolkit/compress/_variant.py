"""One produced variant file: shared by the TFLite build (:mod:`._build`) and the ONNX
export (:mod:`._to_onnx`), which makes its ``-ort`` variants beside it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from toolkit.compress._manifest import ChainDict, ConversionDetails

__all__ = ["CompressedVariant"]


@dataclass(frozen=True)
class CompressedVariant:
    """A produced ``.tflite`` (or ``.onnx``) file, how it was made, and the torch module it
    came from."""

    name: str
    path: Path
    config: ChainDict
    seconds: float
    details: ConversionDetails
    module: torch.nn.Module | None = field(default=None, repr=False)
