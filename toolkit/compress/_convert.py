"""Conversions of a torch module to one ``.tflite`` file (the last step of every chain).

Example::

    details = convert(module, example, Int8StaticConfig(), calibration, Path("int8.tflite"))
"""

from __future__ import annotations

import itertools
import re
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

import numpy as np

from toolkit.compress._recipes import (
    ConversionConfig,
    Fp16Config,
    Int4WeightConfig,
    Int8DynamicConfig,
    Int8MixedConfig,
    Int8StaticConfig,
    QatConfig,
)
from toolkit.errors import CompressError, ModelError

if TYPE_CHECKING:
    import torch
    from ai_edge_quantizer import qtyping
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer

    from toolkit.compress._manifest import Calibration, ConversionDetails
    from toolkit.model.load import DataFunction, Inputs


def convert(module: torch.nn.Module, example: Inputs, config: ConversionConfig,
            calibration_data: DataFunction | None, target: Path) -> ConversionDetails:
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
    if isinstance(config, WEIGHT_ONLY):
        float_path = target.with_suffix(".fp32-tmp.tflite")
        converted = _fp32(module, example, float_path)
        try:
            return {**converted, **requantize_file(float_path, config, target)}
        finally:
            float_path.unlink(missing_ok=True)
    return _fp32(module, example, target)


def forget_last_export() -> None:
    """Let go of the graph torch.export traced last, and of the weights it holds.

    torch (2.13) keeps the last export's graph in a module global until the next export
    starts (``proxy_tensor._FAKE_TENSOR_ID_TO_PROXY_MAP_FOR_EXPORT``), and the graph holds
    the traced module's parameters: a 2 GiB model stayed in memory after the run let it
    go, beside the board's agent loading its file.  The next export clears it first
    thing, so clearing it early changes nothing else.
    """
    from torch.fx.experimental import proxy_tensor

    table = getattr(proxy_tensor, "_FAKE_TENSOR_ID_TO_PROXY_MAP_FOR_EXPORT", None)
    if isinstance(table, dict):
        table.clear()


#: Recipes that rewrite only the weights of a float ``.tflite`` (ai-edge-quantizer): built
#: from the fp32 file of a torch model, or from a float ``.tflite`` a user gives.
WEIGHT_ONLY = (Fp16Config, Int8DynamicConfig, Int4WeightConfig)


def requantize_file(float_path: Path, config: ConversionConfig,
                    target: Path) -> ConversionDetails:
    """Write ``target``: the float file ``float_path`` with its weights rewritten as the
    weight-only ``config`` says; returns the details for the manifest."""
    if isinstance(config, Int8DynamicConfig):
        return _int8_dynamic(float_path, target)
    if isinstance(config, Int4WeightConfig):
        return _int4_weight(float_path, config, target)
    if isinstance(config, Fp16Config):
        return _fp16(float_path, target)
    raise CompressError(f"{config.recipe} does not rewrite a file's weights", recipe=config.recipe)


def calibrate_file(float_path: Path, config: Int8StaticConfig,
                   samples: Iterable[Sequence[np.ndarray]], target: Path) -> ConversionDetails:
    """Write ``target``: the float file ``float_path`` as full-integer int8 (int8 weights per
    channel, int8 activations and inputs/outputs) through ai-edge-quantizer's static recipe,
    its activation ranges calibrated on at most ``config.calibration_samples`` of
    ``samples`` (each the inputs in the file's input order); returns the manifest details."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    # The host's LiteRT, whose signature runners ai-edge-quantizer calibrates through.
    interpreter = Interpreter(model_path=str(float_path))
    signatures = list(interpreter.get_signature_list())
    if not signatures:
        raise CompressError(f"{config.recipe}: {float_path.name} has no signature, through "
                            "which ai-edge-quantizer calibrates", recipe=config.recipe)
    # ai-edge-quantizer feeds a signature by input name; the samples follow the file's order.
    named = interpreter.get_signature_runner(signatures[0]).get_input_details()
    name_of = {detail["index"]: name for name, detail in named.items()}
    order = [name_of[detail["index"]] for detail in interpreter.get_input_details()]
    feeds = [dict(zip(order, (np.asarray(value) for value in sample), strict=True))
             for sample in itertools.islice(samples, config.calibration_samples)]
    rewriting = quantizer.Quantizer(str(float_path))
    rewriting.load_quantization_recipe(recipe.static_wi8_ai8())
    with warnings.catch_warnings():
        # Calibration keeps every tensor, which LiteRT warns is for debugging only.
        warnings.simplefilter("ignore", UserWarning)
        calibration = rewriting.calibrate({signatures[0]: feeds})
        rewriting.quantize(calibration).export_model(str(target), overwrite=True)
    return {"weights": "int8, per channel", "activations": "int8, calibrated (min-max)",
            "tool": "ai-edge-quantizer static_wi8_ai8",
            "calibration": {"samples_requested": config.calibration_samples,
                            "samples_used": len(feeds), "source": "--calibration",
                            "method": "min-max"}}


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
    if _data_dependent(exc):
        message += f"; {DATA_DEPENDENT_ADVICE}"
    return CompressError(message, recipe=what)


#: The way out of torch.export's ``GuardOnDataDependentSymNode``, whose text names a symbol
#: (``Eq(u0, 1)``) and not the construct the user wrote.
DATA_DEPENDENT_ADVICE = ("forward branches on a tensor's value, which a converted model "
                         "cannot: express the branch with torch.cond, or move it out of forward")


def _data_dependent(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it was raised from, is torch's failure to export a
    branch on a value only known when the model runs."""
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in chain:  # a chain set by hand may loop
        chain.append(link)
        link = link.__cause__ or link.__context__
    # By name: torch is not imported to word a failure.
    return any(kind.__name__ == "GuardOnDataDependentSymNode"
               for found in chain for kind in type(found).__mro__)


def checked_calibration(calibration_data: DataFunction | None, example: Inputs, samples: int,
                        recipe: str) -> Iterator[Inputs]:
    """The first ``samples`` inputs of a model file's ``calibration_data()``, each checked
    against ``example_input()``; a :class:`ModelError` now when the file defines none, and
    once read through when it yielded none."""
    if calibration_data is None:
        raise ModelError(f"the model file defines no calibration_data(); {recipe} needs "
                         "representative inputs to calibrate activations")

    def checked(data: DataFunction) -> Iterator[Inputs]:
        used = 0
        for inputs, _label in itertools.islice(data(), samples):
            check_sample(inputs, example, "calibration_data()")
            used += 1
            yield inputs
        if used == 0:
            raise ModelError("calibration_data() yielded no samples")

    return checked(calibration_data)


def check_sample(inputs: Sequence[object], example: Inputs, what: str) -> None:
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


#: Models with at least this many bytes of weights are converted in litert-torch's
#: low-memory mode (``lightweight_conversion``: constants handled lazily, folded by the
#: runtime afterwards).  A 2 GiB MLP peaked at 2.6 GiB in the process instead of about 5x
#: the model, in 15 s instead of minutes; smaller models keep the default, whose constant
#: folding can leave fewer ops (a MobileNetV2's batch norms) and whose files are unchanged.
LARGE_MODEL_BYTES = 1 << 30


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of the module's parameters and buffers."""
    return sum(int(t.numel()) * t.element_size()
               for t in (*module.parameters(), *module.buffers()))


def _fp32(module: torch.nn.Module, example: Inputs, target: Path) -> ConversionDetails:
    """The fp32 file of ``module``; details for the manifest (the low-memory mode, if used)."""
    import litert_torch

    lightweight = weight_bytes(module) >= LARGE_MODEL_BYTES
    litert_torch.convert(module.eval(), example,
                         lightweight_conversion=lightweight).export(str(target))
    return {"conversion": "litert-torch lightweight_conversion (weights of 1 GiB or more)"} \
        if lightweight else {}


def _fp16(float_path: Path, target: Path) -> ConversionDetails:
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    # litert-torch has no float16 option: cast the weights of the fp32 file.
    _rewritten(float_path, target, [Rule(
        qtyping.TFLOperationName.ALL_SUPPORTED, qtyping.OpQuantizationConfig(
            weight_tensor_config=qtyping.TensorQuantizationConfig(
                num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
            compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True),
        algorithm=AlgorithmName.FLOAT_CASTING)])
    return {"weights": "float16", "tool": "ai-edge-quantizer float casting"}


@dataclass(frozen=True)
class Rule:
    """How ai-edge-quantizer rewrites one TFLite operation's weights: everywhere, or in the
    ops whose output tensor names match ``scope`` (a later rule wins where both match)."""

    operation: qtyping.TFLOperationName
    op_config: qtyping.OpQuantizationConfig
    scope: str = ".*"
    algorithm: str = "min_max_uniform_quantize"


def _rewritten(float_path: Path, target: Path, rules: list[Rule]) -> None:
    """Write ``target``: ``float_path`` with its weights rewritten by ai-edge-quantizer as
    ``rules`` say; operations no rule names keep float weights."""
    from ai_edge_quantizer import quantizer
    from ai_edge_quantizer.recipe_manager import RecipeManager

    recipe = RecipeManager()
    for rule in rules:
        recipe.add_quantization_config(regex=rule.scope, operation_name=rule.operation,
                                       op_config=rule.op_config, algorithm_key=rule.algorithm)
    rewriting = quantizer.Quantizer(str(float_path))
    rewriting.load_quantization_recipe(recipe.get_quantization_recipe())
    rewriting.quantize().export_model(str(target), overwrite=True)


def _integer_weights(bits: int, granularity: str, *,
                     dequantize_at_load: bool = False) -> qtyping.OpQuantizationConfig:
    """Symmetric integer weights; float activations, quantized at run time unless the
    weights are dequantized at load (then the op computes in float)."""
    from ai_edge_quantizer import qtyping

    return qtyping.OpQuantizationConfig(
        weight_tensor_config=qtyping.TensorQuantizationConfig(
            num_bits=bits, symmetric=True,
            granularity=qtyping.QuantGranularity(granularity)),
        compute_precision=(qtyping.ComputePrecision.FLOAT if dequantize_at_load
                           else qtyping.ComputePrecision.INTEGER),
        explicit_dequantize=dequantize_at_load)


def _pt2e(module: torch.nn.Module, example: Inputs, quantizer: PT2EQuantizer,
          feed: Callable[[torch.fx.GraphModule], int], target: Path) -> int:
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    exported = torch.export.export(module.eval(), example).module()
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        used = feed(prepared)
    pt2e_to_tflite(prepared, example, quantizer, target)
    return used


def pt2e_to_tflite(prepared: torch.nn.Module, example: Inputs, quantizer: PT2EQuantizer,
                   target: Path) -> None:
    """Observers (or fake quantizers) of a prepared PT2E graph -> q/dq ops -> int8 ``.tflite``."""
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    converted = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(converted, example,
                         quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(target))


def qat_quantizer(config: QatConfig) -> PT2EQuantizer:
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


def static_quantizer(per_channel: bool) -> PT2EQuantizer:
    """The PT2E quantizer of ``int8``: min/max observers, symmetric, per-channel weights."""
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )

    return PT2EQuantizer().set_global(get_symmetric_quantization_config(
        is_per_channel=per_channel, is_dynamic=False))


def _int8_dynamic(float_path: Path, target: Path) -> ConversionDetails:
    """Dynamic range through ai-edge-quantizer, with the rules that make the file run
    right on tflite-runtime 2.14 too (each one a refusal or a wrong result seen there):
    per-tensor Linear (per-channel emits FULLY_CONNECTED v12, which 2.14 cannot load),
    per-channel convolutions (per-tensor depthwise computes garbage), and embedding tables
    per channel, dequantized at load (2.14's hybrid EMBEDDING_LOOKUP applies one scale to
    every row; the converter's own asymmetric table is refused for its zero point)."""
    from ai_edge_quantizer import qtyping

    operation = qtyping.TFLOperationName
    _rewritten(float_path, target, [
        Rule(operation.FULLY_CONNECTED, _integer_weights(8, "TENSORWISE")),
        Rule(operation.CONV_2D, _integer_weights(8, "CHANNELWISE")),
        Rule(operation.DEPTHWISE_CONV_2D, _integer_weights(8, "CHANNELWISE")),
        Rule(operation.EMBEDDING_LOOKUP,
             _integer_weights(8, "CHANNELWISE", dequantize_at_load=True)),
    ])
    return {"weights": "int8 (linear per-tensor, convolutions per-channel, embedding tables "
                       "per-channel dequantized at load)",
            "activations": "float, quantized at run time", "tool": "ai-edge-quantizer"}


def _int4_weight(float_path: Path, config: Int4WeightConfig,
                 target: Path) -> ConversionDetails:
    """Blockwise int4 Linear weights (activations float, quantized at run time), int4
    embedding tables per channel; convolutions keep float weights.  A Linear layer whose
    input size is not a multiple of the block gets one scale per output channel."""
    from ai_edge_quantizer import qtyping

    operation = qtyping.TFLOperationName
    per_channel = _linear_outputs_not_in_blocks(float_path, config.block_size)
    _rewritten(float_path, target, [
        Rule(operation.FULLY_CONNECTED, _integer_weights(4, f"BLOCKWISE_{config.block_size}")),
        *(Rule(operation.FULLY_CONNECTED, _integer_weights(4, "CHANNELWISE"),
               scope=re.escape(name)) for name in per_channel),
        Rule(operation.EMBEDDING_LOOKUP,
             _integer_weights(4, "CHANNELWISE", dequantize_at_load=True))])
    details: ConversionDetails = {
        "weights": f"int4 (linear blockwise, {config.block_size} per block; embedding tables "
                   "per-channel); convolutions float",
        "activations": "float, quantized at run time", "tool": "ai-edge-quantizer"}
    if per_channel:
        details["per_channel_linear"] = len(per_channel)
    return details


def _linear_outputs_not_in_blocks(path: Path, block_size: int) -> list[str]:
    """Output tensor names of the FULLY_CONNECTED ops whose weights' input size is not a
    multiple of ``block_size`` (blockwise quantization refuses them)."""
    from device_agent.interp import Interpreter
    from device_agent.runtime import find_runtime

    # find_runtime() is a TFLite runtime (onnxruntime only by name): a whole Interpreter.
    interpreter = cast(Interpreter, find_runtime().interpreter_class(model_path=str(path)))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    names: list[str] = []
    for op in interpreter._get_ops_details():
        if op["op_name"] != "FULLY_CONNECTED" or len(op["inputs"]) < 2:
            continue
        weights = tensors.get(int(op["inputs"][1]))
        if weights is not None and int(weights["shape"][-1]) % block_size:
            names.extend(tensors[int(index)]["name"] for index in op["outputs"])
    return names


def _int8_static(module: torch.nn.Module, example: Inputs, config: Int8StaticConfig,
                 calibration_data: DataFunction | None, target: Path) -> ConversionDetails:
    return {"calibration": calibrated_int8(
        module, example, static_quantizer(config.per_channel), calibration_data,
        config.calibration_samples, target, recipe=config.recipe,
        per_channel=config.per_channel)}


def calibrated_int8(module: torch.nn.Module, example: Inputs, quantizer: PT2EQuantizer,
                    calibration_data: DataFunction | None, samples: int, target: Path, *,
                    recipe: str, per_channel: bool) -> Calibration:
    """Static int8 through ``quantizer``, calibrated on ``samples`` samples; the calibration."""
    calibration = checked_calibration(calibration_data, example, samples, recipe)

    def feed(prepared: torch.fx.GraphModule) -> int:
        used = 0
        # The exported graph is specialised to the example's batch size: calibrate with it.
        for inputs in calibration:
            prepared(*inputs)
            used += 1
        return used

    used = _pt2e(module, example, quantizer, feed, target)
    return {"samples_requested": samples, "samples_used": used, "source": "calibration_data()",
            "method": "PT2E min/max observers, symmetric, per-channel weights"
            if per_channel else "PT2E min/max observers, per-tensor"}
