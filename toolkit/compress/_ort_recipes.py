"""ONNX Runtime recipes: a float ``.onnx`` rewritten by ``onnxruntime.quantization``.

Shared by the ``.onnx`` a user gives (:mod:`._from_onnx`) and the ``.onnx`` exported from
a model file (:mod:`._to_onnx`):

- ``int8-dynamic``: ``quantize_dynamic``, int8 weights (uint8 in a graph with convolutions:
  onnxruntime 1.19, the last line for Python 3.8 boards, has a ``ConvInteger`` kernel for
  uint8 weights only), activations quantized at run time;
- ``int8``: ``quantize_static`` in QDQ format, int8 weights per channel and int8
  activations, calibrated (min/max) on the model file's ``calibration_data()`` (the
  samples the TFLite ``int8`` calibrates on) or a given ``.onnx``'s ``--calibration``
  inputs, refused without either (:func:`refusal`);
- ``fp16``: ``onnxruntime.transformers.float16``, float16 weights and compute with float32
  inputs and outputs (``keep_io_types``), so the board feeds it as it feeds fp32.

Example::

    details = rewrite(Int8StaticConfig(), Path("fp32.onnx"), Path("int8.onnx"), feeds)
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from toolkit._quiet import captured_native_output
from toolkit.compress._recipes import (
    ONNX_RUNTIME,
    Chain,
    Fp16Config,
    Fp32Config,
    Int8DynamicConfig,
    Int8StaticConfig,
)
from toolkit.errors import CompressError, UsageError
from toolkit.run.cancel import interrupts_deferred

if TYPE_CHECKING:
    import onnx

    from toolkit.compress._manifest import ConversionDetails

#: One calibration sample as the quantizer reads it: input name -> array.
Feed = dict[str, np.ndarray]
#: What exporting and rewriting imports: the exporter's onnxscript, the quantizer's onnx.
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
#: The conversions ONNX Runtime variants are built by (fp32: the float file itself).
ORT_CONVERSIONS = (Fp32Config, Fp16Config, Int8DynamicConfig, Int8StaticConfig)

INT8_DYNAMIC_DETAILS: ConversionDetails = {
    "tool": "onnxruntime.quantization.quantize_dynamic", "weights": "int8, per tensor",
    "activations": "uint8, quantized at run time"}
FP16_DETAILS: ConversionDetails = {
    "tool": "onnxruntime.transformers.float16.convert_float_to_float16 (keep_io_types)",
    "weights": "float16", "activations": "float16, float32 inputs and outputs"}


def refusal(chain: Chain, *, calibrated: bool) -> str | None:
    """Why ``chain`` has no ONNX Runtime variant, or None when it has; ``calibrated``:
    whether calibration inputs come with the file (a model file's ``calibration_data()``,
    or ``--calibration DIR`` for a given .onnx)."""
    if chain.transforms:
        return ("ONNX Runtime variants are not made from a pruned, distilled or clustered "
                "model yet; build this recipe with --runtime tflite")
    if not isinstance(chain.conversion, ORT_CONVERSIONS):
        return "the ONNX Runtime recipes are fp32, fp16, int8-dynamic and int8 (static QDQ)"
    if isinstance(chain.conversion, Int8StaticConfig) and not calibrated:
        return ("static int8 calibrates on representative inputs, which an .onnx does not "
                "carry: give a folder of them with --calibration DIR (one .npy or .npz per "
                "sample), or use int8-dynamic")
    return None


def require_ort_recipes(chains: Iterable[Chain]) -> None:
    """A usage error, before any conversion, naming the first of a model file's ``chains``
    built for ONNX Runtime that has no ONNX Runtime variant, or the package the export and
    the recipes need that this machine lacks."""
    ort = [chain for chain in chains if chain.runtime == ONNX_RUNTIME]
    for chain in ort:
        why = refusal(chain, calibrated=True)
        if why:
            raise UsageError(f"{chain.recipe} for --runtime onnxruntime: {why}")
    missing = [name for name in ONNX_PACKAGES if ort and importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"--runtime onnxruntime needs {', '.join(missing)} on this machine "
                         "(torch.onnx's exporter, onnxruntime's quantizer): "
                         "pip install 'edge[onnx]'")


def rewrite(chain: Chain, given: Path, target: Path, calibration: Sequence[Feed] = (), *,
            calibrated_on: str = "calibration_data()") -> ConversionDetails:
    """Write ``target``, ``chain``'s rewrite of the float ``given``; its details for the
    manifest.  ``calibration``: the feeds static int8 calibrates on, which
    ``calibrated_on`` names."""
    import onnx

    # The quantizer infers every shape again, and refuses a graph whose recorded value_info
    # disagrees with its inference: torch.onnx.export(dynamo=True) files do (a Gemm's
    # input recorded as 64 wide where it infers 512).  It gets the graph without them.
    bare = target.with_name(f".{target.name}.input")
    model = onnx.load_model(str(given))
    del model.graph.value_info[:]
    onnx.save_model(model, str(bare))
    try:
        # Ctrl-C waits until the quantizer returns, as for every conversion.
        with interrupts_deferred(), captured_native_output(), _root_logging_muted():
            return _rewritten(chain, model, bare, target, calibration, calibrated_on)
    except Exception as exc:  # noqa: BLE001 - the quantizer raises anything on a graph it cannot rewrite
        target.unlink(missing_ok=True)
        raise CompressError(f"{chain.recipe}: onnxruntime could not rewrite {given.name}: "
                            f"{one_line(exc)}", recipe=chain.recipe) from None
    finally:
        bare.unlink(missing_ok=True)


def _rewritten(chain: Chain, model: onnx.ModelProto, bare: Path, target: Path,
               calibration: Sequence[Feed], calibrated_on: str) -> ConversionDetails:
    """``chain``'s rewrite of ``model`` (saved as ``bare``, the quantizers read files)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    conversion = chain.conversion
    if isinstance(conversion, Int8DynamicConfig):
        details = INT8_DYNAMIC_DETAILS.copy()
        # quantize_dynamic makes each Conv a ConvInteger.
        unsigned = any(node.op_type == "Conv" for node in model.graph.node)
        quantize_dynamic(bare, target,
                         weight_type=QuantType.QUInt8 if unsigned else QuantType.QInt8)
        if unsigned:
            details["weights"] = ("uint8, per tensor (a convolution's ConvInteger on "
                                  "onnxruntime 1.19 takes uint8 weights only)")
        return details
    if isinstance(conversion, Fp16Config):
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save_model(convert_float_to_float16(model, keep_io_types=True), str(target))
        return FP16_DETAILS.copy()
    if isinstance(conversion, Int8StaticConfig):
        return _int8_static(conversion, bare, target, calibration, calibrated_on)
    why = refusal(chain, calibrated=True) or "fp32 is the float file itself, not a rewrite"
    raise CompressError(f"{chain.recipe}: {why}", recipe=chain.recipe)


def _int8_static(config: Int8StaticConfig, bare: Path, target: Path,
                 calibration: Sequence[Feed], calibrated_on: str) -> ConversionDetails:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        """The feeds, once, as the quantizer asks for them."""

        def __init__(self) -> None:
            self.feeds = iter(calibration)

        def get_next(self) -> Feed | None:
            return next(self.feeds, None)

    quantize_static(bare, target, Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=config.per_channel, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QInt8)
    per = "per channel" if config.per_channel else "per tensor"
    return {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
            "weights": f"int8, {per}", "activations": "int8, calibrated",
            "calibration": {"samples_requested": config.calibration_samples,
                            "samples_used": len(calibration), "source": calibrated_on,
                            "method": f"onnxruntime MinMax, symmetric int8 weights {per}"}}


@contextlib.contextmanager
def _root_logging_muted() -> Iterator[None]:
    """The quantizer advises pre-processing through ``logging.warning`` on the root logger,
    which would install a stderr handler for good (``basicConfig``): a handler that drops
    records keeps that from happening while it runs."""
    root, sink = logging.getLogger(), logging.NullHandler()
    root.addHandler(sink)
    try:
        yield
    finally:
        root.removeHandler(sink)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
