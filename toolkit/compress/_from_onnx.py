"""An ``.onnx`` a user gives, deployed as given: the one variant, named after the file.

The file runs on the board under ONNX Runtime (the agent chooses it by the suffix) and is
checked on the host first: it loads in the host's onnxruntime, whose outputs are the
board's reference.  Recipes on an ``.onnx`` (``onnxruntime.quantization``'s dynamic and
static int8, fp16) are not built yet: every recipe but ``fp32`` (the file as given) is
refused before anything is built (:func:`refusal`).

Example::

    refusal(parse_chain("int8-dynamic"))  # 'recipes on an .onnx are not built yet: ...'
    build_from_onnx(source, parse_recipes("fp32"), Path("out"))
"""

from __future__ import annotations

import shutil
from pathlib import Path

from toolkit.artifacts.bundle import Artifact, describe_artifact
from toolkit.compress._recipes import Chain, Fp32Config
from toolkit.errors import ModelError
from toolkit.model.load import ModelSource

__all__ = ["AS_GIVEN", "build_from_onnx", "refusal"]

#: The config recipe of the file deployed as given (as for a .tflite).
AS_GIVEN = "as-is"


def refusal(chain: Chain) -> str | None:
    """Why ``chain`` cannot be built from an ``.onnx``, or None for the file as given."""
    if chain.transforms or not isinstance(chain.conversion, Fp32Config):
        return ("recipes on an .onnx are not built yet: the file is measured as given (fp32); "
                "deploy the .py model file for the recipe")
    return None


def build_from_onnx(source: ModelSource, chains: list[Chain], folder: Path) -> list[Artifact]:
    """The given file in ``folder`` (``chains`` past :func:`refusal` ask for nothing else),
    after it loads in the host's onnxruntime."""
    from device_agent.runtime import RuntimeNotFound, find_runtime

    refused = [chain.recipe for chain in chains if refusal(chain)]
    if refused:  # the plan refuses them before any work: this is a caller's mistake
        raise ValueError(f"recipes {refused} cannot be built from {source.path.name}")
    folder.mkdir(parents=True, exist_ok=True)
    given = folder / source.path.name
    shutil.copyfile(source.path, given)
    try:
        runtime = find_runtime("onnxruntime")
        runtime.interpreter_class(model_path=str(given))
    except RuntimeNotFound as exc:
        raise ModelError(f"{source.path}: {exc}", path=source.path) from None
    except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph types
        text = " ".join(str(exc).split())[:300]
        raise ModelError(f"{source.path} does not load in onnxruntime {runtime.version}: "
                         f"{text}", path=source.path) from None
    host = {**runtime.describe(), "loads": True, "ok": True}
    return [describe_artifact(source.path.name, given, config={"recipe": AS_GIVEN},
                              runtime_compat=[host])]
