"""Variants of an ``.onnx`` a user gives: the file as given, and its dynamic int8 rewrite.

The file runs on the board under ONNX Runtime (the agent chooses it by the suffix) and is
checked on the host first: it loads in the host's onnxruntime, whose outputs are the
board's reference.  ``int8-dynamic`` rewrites it with ``onnxruntime.quantization``'s
``quantize_dynamic`` (int8 weights, activations quantized at run time), judged against
the given file by cosine on seeded random inputs, as a ``.tflite``'s rewrites are.  The
other recipes (static QDQ int8, fp16, and those that need the PyTorch model) are refused
before anything is built (:func:`refusal`).

Variants are named after the file: the file as given is ``NAME.onnx``, ``int8-dynamic``
is written ``NAME.int8-dynamic.onnx`` beside it.

Example::

    refusal(parse_chain("fp16"))  # 'not built for an .onnx yet: ...'
    build_from_onnx(source, parse_recipes("fp32,int8-dynamic"), Path("out"))
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from device_agent.interp import TensorDetail
from toolkit._quiet import captured_native_output
from toolkit.artifacts.bundle import Artifact, FailedVariant
from toolkit.compress._given import AS_GIVEN, as_given, judged_against_given, rewrite_each
from toolkit.compress._recipes import Chain, Fp32Config, Int8DynamicConfig
from toolkit.compress._toolchain import ONNX_QUANTIZATION
from toolkit.errors import CompressError, ModelError
from toolkit.model.load import ModelSource
from toolkit.run.cancel import interrupts_deferred

__all__ = ["AS_GIVEN", "build_from_onnx", "refusal"]

#: Seeded random inputs the rewrite is compared with the given file on.
FIDELITY_SAMPLES = 32
#: What the int8-dynamic rewrite does, for the manifest and the report.
INT8_DYNAMIC_DETAILS = {"tool": "onnxruntime.quantization.quantize_dynamic",
                        "weights": "int8, per tensor",
                        "activations": "uint8, quantized at run time"}


def refusal(chain: Chain) -> str | None:
    """Why ``chain`` cannot be built from an ``.onnx``, or None when it can."""
    if chain.transforms:
        return ("needs the PyTorch model: pruning, distillation and clustering change the "
                "model before it is exported; deploy the .py model file for it")
    if not isinstance(chain.conversion, (Fp32Config, Int8DynamicConfig)):
        return ("not built for an .onnx yet: only the file as given (fp32) and int8-dynamic "
                "(onnxruntime.quantization) are; deploy the .py model file for the recipe")
    return None


def build_from_onnx(source: ModelSource, chains: list[Chain], folder: Path, *,
                    progress: Callable[[str], None] = lambda _: None,
                    failed: list[FailedVariant] | None = None) -> list[Artifact]:
    """The given file (always, first) and each chain's rewrite of it, in ``folder``.

    ``failed``: as for :func:`toolkit.compress.build_artifacts`, a chain whose rewrite
    fails is appended there with its reason; without it, the failure is raised.
    """
    from device_agent.runtime import RuntimeNotFound, find_runtime

    given = folder / source.path.name
    shutil.copyfile(source.path, given)
    try:
        runtime = find_runtime("onnxruntime")
        with captured_native_output():
            session = runtime.interpreter_class(model_path=str(given))
    except RuntimeNotFound as exc:
        raise ModelError(f"{source.path}: {exc}", path=source.path) from None
    except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph types
        raise ModelError(f"{source.path} does not load in onnxruntime {runtime.version}: "
                         f"{_one_line(exc)}", path=source.path) from None
    host = {**runtime.describe(), "loads": True, "ok": True}
    artifacts = [as_given(source, given, runtime_compat=[host])]
    inputs = _random_inputs(session.get_input_details())
    return [*artifacts, *rewrite_each(
        source, chains, folder, doing=f"quantizing {source.path.name} with onnxruntime",
        rewrite=lambda chain, target: _int8_dynamic(chain, given, target, inputs),
        progress=progress, failed=failed)]


def _int8_dynamic(chain: Chain, given: Path, target: Path,
                  inputs: list[tuple[np.ndarray, ...]]) -> Artifact:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from device_agent.runtime import find_runtime

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
            quantize_dynamic(bare, target, weight_type=QuantType.QInt8)
    except Exception as exc:  # noqa: BLE001 - the quantizer raises anything on a graph it cannot rewrite
        target.unlink(missing_ok=True)
        raise CompressError(f"{chain.recipe}: onnxruntime.quantization could not rewrite "
                            f"{given.name}: {_one_line(exc)}", recipe=chain.recipe) from None
    finally:
        bare.unlink(missing_ok=True)
    return judged_against_given(chain, target, given, inputs, find_runtime("onnxruntime"),
                                INT8_DYNAMIC_DETAILS, ONNX_QUANTIZATION)


def _random_inputs(details: list[TensorDetail]) -> list[tuple[np.ndarray, ...]]:
    """Seeded standard-normal inputs of the file's input shapes (integer inputs zero: a
    random integer is not a valid token id)."""
    rng = np.random.default_rng(0)
    return [tuple(rng.standard_normal(tuple(d["shape"])).astype(d["dtype"])
                  if np.issubdtype(np.dtype(d["dtype"]), np.floating)
                  else np.zeros(tuple(d["shape"]), d["dtype"])
                  for d in details) for _ in range(FIDELITY_SAMPLES)]


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


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
