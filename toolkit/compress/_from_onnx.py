"""Variants of an ``.onnx`` a user gives: the file as given, and its rewrites.

The file runs on the board under ONNX Runtime (the agent chooses it by the suffix) and is
checked on the host first: it loads in the host's onnxruntime, whose outputs are the
board's reference.  ``int8-dynamic``, ``fp16`` and, calibrated on ``--calibration DIR``,
static ``int8`` rewrite it (:mod:`._ort_recipes`), judged against the given file by cosine
on the calibration inputs (else seeded random inputs), as a ``.tflite``'s rewrites are.
Static ``int8`` without calibration inputs and the recipes that need the PyTorch model are
refused before anything is built (:func:`refusal`).

Variants are named after the file: the file as given is ``NAME.onnx``, ``fp16`` is
written ``NAME.fp16.onnx`` beside it.

Example::

    refusal(parse_chain("int8"))  # 'static int8 calibrates on representative inputs, ...'
    refusal(parse_chain("int8"), calibrated=True)  # None
    build_from_onnx(source, parse_recipes("fp32,int8-dynamic"), Path("out"))
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from toolkit._quiet import captured_native_output
from toolkit.artifacts.bundle import Artifact, FailedVariant
from toolkit.compress._given import (
    AS_GIVEN,
    Sample,
    as_given,
    judged_against_given,
    judging_inputs,
    rewrite_each,
)
from toolkit.compress._ort_recipes import Feed, one_line, rewrite
from toolkit.compress._ort_recipes import refusal as ort_refusal
from toolkit.compress._recipes import Chain
from toolkit.compress._toolchain import ONNX_QUANTIZATION
from toolkit.errors import ModelError
from toolkit.model.load import ModelSource

__all__ = ["AS_GIVEN", "build_from_onnx", "refusal"]


def refusal(chain: Chain, *, calibrated: bool = False) -> str | None:
    """Why ``chain`` cannot be built from an ``.onnx`` (with calibration inputs given when
    ``calibrated``), or None when it can."""
    if chain.transforms:
        return ("needs the PyTorch model: pruning, distillation and clustering change the "
                "model before it is exported; deploy the .py model file for it")
    return ort_refusal(chain, calibrated=calibrated)


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
                         f"{one_line(exc)}", path=source.path) from None
    host = {**runtime.describe(), "loads": True, "ok": True}
    artifacts = [as_given(source, given, runtime_compat=[host])]
    details = session.get_input_details()
    calibration, samples, inputs_from = judging_inputs(source, details)
    feeds = [{str(d["name"]): value for d, value in zip(details, sample, strict=True)}
             for sample in calibration]
    return [*artifacts, *rewrite_each(
        source, chains, folder, doing=f"rewriting {source.path.name} with onnxruntime",
        rewrite=lambda chain, target: _rewrite(chain, given, target, samples, inputs_from,
                                               feeds),
        progress=progress, failed=failed)]


def _rewrite(chain: Chain, given: Path, target: Path,
             samples: list[Sample], inputs_from: str, feeds: list[Feed]) -> Artifact:
    from device_agent.runtime import find_runtime

    details = rewrite(chain, given, target, feeds, calibrated_on="--calibration")
    return judged_against_given(chain, target, given, samples, find_runtime("onnxruntime"),
                                details, ONNX_QUANTIZATION, inputs_from=inputs_from)
