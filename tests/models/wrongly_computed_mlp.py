"""A model tflite-runtime 2.14 runs without an error and computes wrongly.

ai-edge-quantizer's dynamic-range recipe on a small MLP: the file loads and runs on 2.14
and gives garbage there (argmax agreement about 10 %, SQNR near 0 dB), while
ai-edge-litert computes it right (toolchain notes). The float file it came from is
written beside it and agrees on both runtimes. Used by the host check, the board
check and ``benchmarks/runtime_floor.py``.

    python tests/models/wrongly_computed_mlp.py OUT_FOLDER
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path


def write_wrongly_computed_mlp(folder: Path) -> tuple[Path, Path]:
    """Write ``float.tflite`` and ``dynamic.tflite`` into ``folder``; seeds torch with 0."""
    import litert_torch
    import torch
    from ai_edge_quantizer import quantizer, recipe

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                              torch.nn.Linear(128, 10)).eval()
    float_file, dynamic_file = folder / "float.tflite", folder / "dynamic.tflite"
    with warnings.catch_warnings():  # the converter's own deprecation noise (typing_extensions)
        warnings.simplefilter("ignore", FutureWarning)
        litert_torch.convert(mlp, (torch.randn(1, 64),)).export(str(float_file))
    dynamic = quantizer.Quantizer(str(float_file))
    dynamic.load_quantization_recipe(recipe.dynamic_wi8_afp32())
    dynamic.quantize().export_model(str(dynamic_file), overwrite=True)
    return float_file, dynamic_file


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/models/wrongly_computed_mlp.py OUT_FOLDER")
    write_wrongly_computed_mlp(Path(sys.argv[1]))
