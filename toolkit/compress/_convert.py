"""Conversions of a torch module to one ``.tflite`` file (the last step of every chain).

Example::

    details = convert(module, example, Int8StaticConfig(), calibration, Path("int8.tflite"))
"""

from __future__ import annotations

import itertools
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from ..errors import CompressError, ModelError
from ._recipes import (
    ConversionConfig,
    Fp16Config,
    Int8DynamicConfig,
    Int8MixedConfig,
    Int8StaticConfig,
    QatConfig,
)

Samples = Callable[[], Iterable[tuple[tuple[Any, ...], Any]]] | None


def convert(module: Any, example: tuple[Any, ...], config: ConversionConfig,
            calibration_data: Samples, target: Path) -> dict[str, Any]:
    """Write ``target`` from ``module``; returns details for the manifest (calibration).

    For ``qat`` the module is the fine-tuned PT2E graph from ``quantization_aware_training``;
    ``int8-mixed`` measures as it converts and is built by ``int8_mixed``.
    """
    if isinstance(config, QatConfig):
        pt2e_to_tflite(module, example, qat_quantizer(config), target)
        return {"activations": "int8, ranges learned while fine-tuning",
                "weights": "int8 per-channel" if config.per_channel else "int8 per-tensor"}
    if isinstance(config, Int8MixedConfig):
        raise CompressError("int8-mixed is built by int8_mixed(), which measures each layer",
                            recipe=config.recipe)
    if isinstance(config, Int8StaticConfig):
        return _int8_static(module, example, config, calibration_data, target)
    if isinstance(config, Int8DynamicConfig):
        return _int8_dynamic(module, example, target)
    if isinstance(config, Fp16Config):
        return _fp16(module, example, target)
    _fp32(module, example, target)
    return {}


def compress_failure(what: str, exc: BaseException, model_file: Path) -> CompressError:
    """One line for an unexpected failure while compressing: ``what``, the exception's first
    line and, when the failing line is the user's, where in the model file.

    torch.export's messages name the guard it could not build (data-dependent control
    flow, say); the construct to change is the last line of the model file it ran.
    """
    reason = str(exc).strip().splitlines()
    message = f"{what}: {type(exc).__name__}: {reason[0] if reason else ''}"
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
              if Path(frame.filename).resolve() == model_file.resolve()]
    if frames:
        message += f" at {model_file.name}:{frames[-1].lineno}: {(frames[-1].line or '').strip()}"
    return CompressError(message, recipe=what)


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
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    exported = torch.export.export(module.eval(), example).module()
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        used = feed(prepared)
    pt2e_to_tflite(prepared, example, quantizer, target)
    return used


def pt2e_to_tflite(prepared: Any, example: tuple[Any, ...], quantizer: Any,
                   target: Path) -> None:
    """Observers (or fake quantizers) of a prepared PT2E graph -> q/dq ops -> int8 ``.tflite``."""
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    converted = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(converted, example,
                         quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(target))


def qat_quantizer(config: QatConfig) -> Any:
    """The PT2E quantizer of ``qat``: fake quantization of int8 weights and activations."""
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )

    class ConvBnFoldedQuantizer(PT2EQuantizer):  # type: ignore[misc]
        # Its conv+bn QAT patterns call torch.export.export on a plain function, which
        # torch 2.13 refuses; batch norms are folded into the convolutions beforehand instead.
        STATIC_QAT_ONLY_OPS: ClassVar[list[str]] = []

    return ConvBnFoldedQuantizer().set_global(get_symmetric_quantization_config(
        is_per_channel=config.per_channel, is_qat=True))


def static_quantizer(per_channel: bool) -> Any:
    """The PT2E quantizer of ``int8``: min/max observers, symmetric, per-channel weights."""
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )

    return PT2EQuantizer().set_global(get_symmetric_quantization_config(
        is_per_channel=per_channel, is_dynamic=False))


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
    return {"calibration": calibrated_int8(
        module, example, static_quantizer(config.per_channel), calibration_data,
        config.calibration_samples, target, recipe=config.recipe,
        per_channel=config.per_channel)}


def calibrated_int8(module: Any, example: tuple[Any, ...], quantizer: Any,
                    calibration_data: Samples, samples: int, target: Path, *,
                    recipe: str, per_channel: bool) -> dict[str, Any]:
    """Static int8 through ``quantizer``, calibrated on ``samples`` samples; the calibration."""
    if calibration_data is None:
        raise ModelError(f"the model file defines no calibration_data(); {recipe} needs "
                         "representative inputs to calibrate activations")

    def feed(prepared: Any) -> int:
        used = 0
        # The exported graph is specialised to the example's batch size: calibrate with it.
        for inputs, _label in itertools.islice(calibration_data(), samples):
            check_sample(inputs, example, "calibration_data()")
            prepared(*inputs)
            used += 1
        if used == 0:
            raise ModelError("calibration_data() yielded no samples")
        return used

    used = _pt2e(module, example, quantizer, feed, target)
    return {"samples_requested": samples, "samples_used": used, "source": "calibration_data()",
            "method": "PT2E min/max observers, symmetric, per-channel weights"
            if per_channel else "PT2E min/max observers, per-tensor"}
