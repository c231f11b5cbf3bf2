"""Stage 2: turn the torch model into deployable ``.tflite`` variants.

One frozen config class per recipe, found through :data:`RECIPES` by its name
as the user writes it (``fp32``, ``int8``).  Each config serialises to a dict
that goes into the manifest and the report.

Example::

    variant = compress(source, Int8StaticConfig(), out_dir)
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._quiet import captured_native_output, silence_library_logging
from .errors import CompressError, ModelError, UsageError
from .model import ModelSource


@dataclass(frozen=True, kw_only=True)
class Fp32Config:
    """The float baseline: the model as litert-torch converts it."""

    recipe: str = "fp32"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class Int8StaticConfig:
    """Full-integer static PTQ (PT2E): int8 weights per channel, int8 activations and I/O."""

    recipe: str = "int8"
    calibration_samples: int = 128
    per_channel: bool = True

    def __post_init__(self) -> None:
        if self.calibration_samples < 1:
            raise UsageError("int8 needs at least 1 calibration sample")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RecipeConfig = Fp32Config | Int8StaticConfig

RECIPES: dict[str, Callable[[], RecipeConfig]] = {
    "fp32": Fp32Config,
    "int8": Int8StaticConfig,
}


@dataclass(frozen=True)
class CompressedVariant:
    """A produced ``.tflite`` file and how it was made."""

    name: str
    path: Path
    config: dict[str, Any]
    seconds: float
    details: dict[str, Any]


def parse_recipes(text: str) -> list[RecipeConfig]:
    """``"fp32,int8"`` -> configs; an unknown name is a usage error naming the known ones."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UsageError("--recipe is empty; give for example fp32,int8")
    unknown = [name for name in names if name not in RECIPES]
    if unknown:
        raise UsageError(f"unknown recipe {unknown[0]!r}; known recipes: {', '.join(RECIPES)}")
    if len(set(names)) != len(names):
        raise UsageError(f"--recipe names a recipe twice: {text}")
    return [RECIPES[name]() for name in names]


def compress(source: ModelSource, config: RecipeConfig, out_dir: Path) -> CompressedVariant:
    """Produce ``out_dir/<recipe>.tflite`` from ``source`` following ``config``."""
    if source.is_tflite:
        raise UsageError(f"{source.path} is already a .tflite file; it is deployed as it is")
    silence_library_logging()
    target = out_dir / f"{config.recipe}.tflite"
    started = time.perf_counter()
    details: dict[str, Any] = {}
    with captured_native_output() as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # converter deprecation chatter is not the user's concern
        try:
            if isinstance(config, Int8StaticConfig):
                details = _convert_int8_static(source, config, target)
            else:
                _convert_fp32(source, target)
        except (UsageError, CompressError):
            raise
        except Exception as exc:
            reason = str(exc).strip().splitlines()
            raise CompressError(
                f"{config.recipe}: conversion failed: {type(exc).__name__}: "
                f"{reason[0] if reason else ''}", recipe=config.recipe) from exc
    if not target.is_file():
        raise CompressError(f"{config.recipe}: converter wrote no file; its log ended with: "
                            f"{log[-1] if log else '(nothing)'}", recipe=config.recipe)
    return CompressedVariant(name=config.recipe, path=target, config=config.to_dict(),
                             seconds=time.perf_counter() - started, details=details)


def _convert_fp32(source: ModelSource, target: Path) -> None:
    import litert_torch

    litert_torch.convert(source.module.eval(), source.example_input).export(str(target))


def _convert_int8_static(source: ModelSource, config: Int8StaticConfig,
                         target: Path) -> dict[str, Any]:
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if source.calibration_data is None:
        raise ModelError(f"{source.path} defines no calibration_data(); int8 needs "
                         "representative inputs to calibrate activations", path=source.path)
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(
        is_per_channel=config.per_channel, is_dynamic=False))
    example = source.example_input
    exported = torch.export.export(source.module.eval(), example).module()
    prepared = prepare_pt2e(exported, quantizer)
    used = 0
    with torch.no_grad():
        # The exported graph is specialised to the example's batch size: calibrate with it.
        for inputs, _label in itertools.islice(source.calibration_data(),
                                               config.calibration_samples):
            prepared(*inputs)
            used += 1
    if used == 0:
        raise ModelError(f"{source.path}: calibration_data() yielded no samples",
                         path=source.path)
    converted = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(converted, example,
                         quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(target))
    return {"calibration_samples_used": used}
