"""Variants of a float ``.tflite`` a user gives, where no PyTorch model exists.

Only recipes that rewrite a float file's weights can start from a ``.tflite``
(``fp16``, ``int8-dynamic``, ``int4-weight``, through ai-edge-quantizer, the same rules
as for a torch model's fp32 file); ``fp32`` is the file as given; full-integer ``int8``
(ai-edge-quantizer's static recipe) when the user gives calibration inputs
(``--calibration DIR``, :mod:`toolkit.model.calibration`), since a ``.tflite`` carries none.
Pruning, distillation, clustering and QAT change the model before conversion: they, and
``int8`` without calibration inputs, are refused before anything is built
(:func:`refusal`). The given file is the baseline every variant is judged against, on the
calibration inputs where given (the user's real inputs; int8 was calibrated on the same),
else on seeded random inputs: a ``.tflite`` has no labels, so agreement is by cosine.

Variants are named after the file: the file as given is ``NAME.tflite``, the others keep
their recipe names (``fp16``) and are written ``NAME.fp16.tflite`` beside it, so that no
recipe's file can take the given file's name.

Example::

    refusal(parse_chain("prune:0.5+int8"))  # 'needs the PyTorch model: ...'
    build_from_tflite(source, parse_recipes("fp32,fp16"), Path("out"))
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from toolkit._quiet import captured_native_output
from toolkit.artifacts.bundle import ARTIFACT_MODE, Artifact, FailedVariant
from toolkit.compress._convert import WEIGHT_ONLY, calibrate_file, requantize_file
from toolkit.compress._given import (
    AS_GIVEN,
    Sample,
    as_given,
    input_details,
    judged_against_given,
    judging_inputs,
    rewrite_each,
)
from toolkit.compress._recipes import Chain, Fp32Config, Int8StaticConfig
from toolkit.compress._toolchain import TFLITE_REWRITE
from toolkit.compress._usable import check_loads
from toolkit.errors import CompressError
from toolkit.links import place
from toolkit.model.load import ModelSource
from toolkit.run.cancel import interrupts_deferred

__all__ = ["AS_GIVEN", "build_from_tflite", "refusal"]


def refusal(chain: Chain, data: bytes, *, calibrated: bool = False) -> str | None:
    """Why ``chain`` cannot be built from the ``.tflite`` whose bytes are ``data`` (with
    calibration inputs given when ``calibrated``), or None when it can."""
    if chain.transforms:
        return ("needs the PyTorch model: pruning, distillation and clustering change the "
                "model before it is converted; deploy the .py model file for it")
    if isinstance(chain.conversion, Int8StaticConfig) and not calibrated:
        return ("needs calibration inputs, which a .tflite does not carry: give a folder of "
                "them with --calibration DIR (one .npy or .npz per sample), or use "
                "int8-dynamic")
    if not isinstance(chain.conversion, (Fp32Config, Int8StaticConfig, *WEIGHT_ONLY)):
        return "needs the PyTorch model; deploy the .py model file for it"
    if isinstance(chain.conversion, (Int8StaticConfig, *WEIGHT_ONLY)):
        quantized = quantized_weights(data)
        if quantized:
            return (f"rewrites float weights, and the file's are already quantized "
                    f"({quantized}); give its float version")
    return None


def quantized_weights(data: bytes) -> str | None:
    """The types of the file's constant integer tensors that carry a quantization scale
    (its weights quantized: ``"INT8"``), or None for a float file."""
    from ai_edge_litert import schema_py_generated as schema

    names = {value: name for name, value in vars(schema.TensorType).items()
             if not name.startswith("_")}
    model = schema.Model.GetRootAs(data, 0)
    found: set[str] = set()
    for number in range(model.SubgraphsLength()):
        graph = model.Subgraphs(number)
        for index in range(graph.TensorsLength()):
            tensor = graph.Tensors(index)
            quantization = tensor.Quantization()
            constant = tensor.Buffer() > 0 and model.Buffers(tensor.Buffer()).DataLength() + \
                model.Buffers(tensor.Buffer()).Size() > 0
            if constant and quantization is not None and quantization.ScaleLength() and \
                    names.get(tensor.Type(), "") not in ("FLOAT32", "FLOAT16"):
                found.add(names.get(tensor.Type(), str(tensor.Type())))
    # An int8 file's biases are int32 with a scale too: name the weights' type.
    return ", ".join(sorted(found - {"INT32"} or found)) or None


def build_from_tflite(source: ModelSource, chains: list[Chain], folder: Path, *,
                      progress: Callable[[str], None] = lambda _: None,
                      failed: list[FailedVariant] | None = None) -> list[Artifact]:
    """The given file (always, first) and each chain's rewrite of it, in ``folder``.

    ``failed``: as for :func:`toolkit.compress.build_artifacts`, a chain whose rewrite
    fails is appended there with its reason; without it, the failure is raised.
    """
    given = folder / source.path.name
    # A copy, never a link: the user may rewrite their file in place; the run keeps what ran.
    place(source.path, given, link=False)
    given.chmod(ARTIFACT_MODE)
    artifacts = [as_given(source, given)]
    calibration, samples, inputs_from = judging_inputs(source, input_details(given))
    return [*artifacts, *rewrite_each(
        source, chains, folder, doing=f"rewriting {source.path.name}'s weights",
        rewrite=lambda chain, target: _rewritten(chain, given, target, samples, inputs_from,
                                                 calibration),
        progress=progress, failed=failed)]


def _rewritten(chain: Chain, given: Path, target: Path,
               samples: list[Sample], inputs_from: str, calibration: list[Sample]) -> Artifact:
    from device_agent.runtime import find_runtime

    conversion = chain.conversion
    try:
        # ai-edge-quantizer prints its own summary; Ctrl-C waits until it returns, as
        # for every conversion (raised inside it, it could be swallowed).
        with interrupts_deferred(), captured_native_output():
            details = calibrate_file(given, conversion, calibration, target) \
                if isinstance(conversion, Int8StaticConfig) \
                else requantize_file(given, conversion, target)
    except Exception as exc:  # noqa: BLE001 - the quantizer raises anything on a file it cannot rewrite
        target.unlink(missing_ok=True)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CompressError(f"{chain.recipe}: ai-edge-quantizer could not rewrite "
                            f"{given.name}: {first}", recipe=chain.recipe) from None
    target.chmod(ARTIFACT_MODE)  # ai-edge-quantizer writes its files executable (0755)
    check_loads(target, chain.recipe)
    return judged_against_given(chain, target, given, samples, find_runtime(), details,
                                TFLITE_REWRITE, inputs_from=inputs_from)
