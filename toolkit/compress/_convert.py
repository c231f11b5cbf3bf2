"""Conversions of a torch module to one ``.tflite`` file (the last step of every chain).

Example::

    details = convert(module, example, Int8StaticConfig(), calibration, Path("int8.tflite"))
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ._recipes import (
    ConversionConfig,
    Fp16Config,
    Int8DynamicConfig,
    Int8StaticConfig,
)

Samples = Callable[[], Iterable[tuple[tuple[Any, ...], Any]]] | None


def convert(module: Any, example: tuple[Any, ...], config: ConversionConfig,
            calibration_data: Samples, target: Path) -> dict[str, Any]:
    """Write ``target`` from ``module``; returns details for the manifest (calibration)."""
    if isinstance(config, Int8StaticConfig):
        return _int8_static(module, example, config, calibration_data, target)
    if isinstance(config, Int8DynamicConfig):
        return _int8_dynamic(module, example, target)
    if isinstance(config, Fp16Config):
        return _fp16(module, example, target)
    _fp32(module, example, target)
    return {}


def check_sample(inputs: tuple[Any, ...], example: tuple[Any, ...], what: str) -> None:
    """A sample must match ``example_input()`` in count, shape and dtype; else name both."""
    if len(inputs) != len(example):
        raise ModelError(f"{what} gives {len(inputs)} inputs; example_input() has {len(example)}")
    for position, (given, expected) in enumerate(zip(inputs, example, strict=True)):
        given_shape = tuple(getattr(given, "shape", ()))
        if given_shape != tuple(expected.shape) or getattr(given, "dtype", None) != expected.dtype:
            raise ModelError(
                f"{what} input {position} has shape {given_shape} "
                f"dtype {getattr(given, 'dtype', type(given).__name__)}; example_input() has "
                f"shape {tuple(expected.shape)} dtype {expected.dtype}")


def _fp32(module: Any, example: tuple[Any, ...], target: Path) -> None:
    import litert_torch

    litert_torch.convert(module.eval(), example).export(str(target))


def _fp16(module: Any, example: tuple[Any, ...], target: Path) -> dict[str, Any]:
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.recipe_manager import RecipeManager

    # litert-torch has no float16 option: cast the weights of the fp32 file.
    float_path = target.with_suffix(".fp32-tmp.tflite")
    _fp32(module, example, float_path)
    try:
        recipe = RecipeManager()
        recipe.add_quantization_config(
            regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
            op_config=qtyping.OpQuantizationConfig(
                weight_tensor_config=qtyping.TensorQuantizationConfig(
                    num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
                compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True),
            algorithm_key=AlgorithmName.FLOAT_CASTING)
        casting = quantizer.Quantizer(str(float_path))
        casting.load_quantization_recipe(recipe.get_quantization_recipe())
        casting.quantize().export_model(str(target), overwrite=True)
    finally:
        float_path.unlink(missing_ok=True)
    return {"weights": "float16", "tool": "ai-edge-quantizer float casting"}


def _pt2e(module: Any, example: tuple[Any, ...], quantizer: Any,
          feed: Callable[[Any], int], target: Path) -> int:
    import litert_torch
    import torch
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    exported = torch.export.export(module.eval(), example).module()
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        used = feed(prepared)
    converted = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(converted, example,
                         quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(target))
    return used


def _int8_dynamic(module: Any, example: tuple[Any, ...], target: Path) -> dict[str, Any]:
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )

    quantizer = PT2EQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    # The string form: set_module_type(nn.Linear, ...) is silently ignored under torch 2.13.
    quantizer.set_module_type("torch.nn.modules.linear.Linear",  # type: ignore[arg-type]
                              get_symmetric_quantization_config(is_per_channel=False,
                                                                is_dynamic=True))

    def feed(prepared: Any) -> int:
        prepared(*example)
        return 0

    _pt2e(module, example, quantizer, feed, target)
    return {"weights": "int8 (conv per-channel, linear per-tensor)",
            "activations": "float, quantized at run time"}


def _int8_static(module: Any, example: tuple[Any, ...], config: Int8StaticConfig,
                 calibration_data: Samples, target: Path) -> dict[str, Any]:
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )

    if calibration_data is None:
        raise ModelError("the model file defines no calibration_data(); int8 needs "
                         "representative inputs to calibrate activations")
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(
        is_per_channel=config.per_channel, is_dynamic=False))

    def feed(prepared: Any) -> int:
        used = 0
        # The exported graph is specialised to the example's batch size: calibrate with it.
        for inputs, _label in itertools.islice(calibration_data(), config.calibration_samples):
            check_sample(inputs, example, "calibration_data()")
            prepared(*inputs)
            used += 1
        if used == 0:
            raise ModelError("calibration_data() yielded no samples")
        return used

    used = _pt2e(module, example, quantizer, feed, target)
    return {"calibration": {"samples_requested": config.calibration_samples,
                            "samples_used": used, "source": "calibration_data()",
                            "method": "PT2E min/max observers, symmetric, per-channel weights"
                            if config.per_channel else "PT2E min/max observers, per-tensor"}}
