"""What the variants of a file a user gives (a ``.tflite`` or an ``.onnx``) share: each
chain's rewrite of the given file built in turn, a failure recorded beside the others,
each rewrite judged against the given file by cosine (on seeded random inputs, or the
user's calibration inputs where given), and those inputs checked against the file's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from device_agent.interp import TensorDetail
from device_agent.runtime import Runtime
from toolkit._quiet import captured_native_output
from toolkit.artifacts.bundle import Artifact, FailedVariant, describe_artifact
from toolkit.compress._recipes import Chain, Fp32Config
from toolkit.compress._toolchain import built_with
from toolkit.compress._usable import agrees
from toolkit.errors import CompressError
from toolkit.model.load import ModelSource
from toolkit.run.cancel import raise_if_interrupted

#: The config recipe of the file deployed as given (a ``.tflite`` or an ``.onnx``).
AS_GIVEN = "as-is"


def rewrite_each(source: ModelSource, chains: list[Chain], folder: Path, *,
                 doing: str, rewrite: Callable[[Chain, Path], Artifact],
                 progress: Callable[[str], None],
                 failed: list[FailedVariant] | None) -> list[Artifact]:
    """Each chain but fp32 (the file as given) rewritten by ``rewrite(chain, target)`` into
    ``folder/NAME.RECIPE.SUFFIX``, ``doing`` said as it starts; a chain that fails is
    appended to ``failed`` with its reason (raised when ``failed`` is None)."""
    artifacts = []
    for chain in chains:
        if isinstance(chain.conversion, Fp32Config):
            continue  # the file as given is the float variant
        raise_if_interrupted()
        target = folder / f"{source.path.stem}.{chain.file_stem}{source.path.suffix}"
        progress(f"{chain.recipe}: {doing}")
        try:
            artifacts.append(rewrite(chain, target))
        except CompressError as exc:
            if failed is None:
                raise
            reason = str(exc).removeprefix(f"{chain.recipe}: ")
            failed.append(FailedVariant(variant=chain.recipe, config=chain.to_dict(),
                                        stage="compress", error=reason))
            progress(f"{chain.recipe}: failed: {reason}")
    return artifacts


def judged_against_given(chain: Chain, target: Path, given: Path,
                         inputs: list[tuple[np.ndarray, ...]], runtime: Runtime,
                         details: Mapping[str, object], tools: tuple[str, ...], *,
                         inputs_from: str = "seeded random inputs") -> Artifact:
    """``target``, the rewrite of ``given`` by ``chain`` with the distributions ``tools``,
    described with its agreement with ``given`` on ``inputs`` (``inputs_from`` says what
    they are) as ``runtime`` computes both."""
    from toolkit.compress.evaluate import file_fidelity

    fidelity = file_fidelity(target, given, inputs)
    host = {**runtime.describe(), "loads": True,
            "top1_agreement_with_source": fidelity["top1_agreement"],
            "cosine_with_source": fidelity["cosine_similarity"],
            **({"degenerate": fidelity["degenerate"]} if fidelity.get("degenerate") else {}),
            "ok": agrees(fidelity, "cosine")}
    calibration = details.get("calibration")
    return describe_artifact(
        chain.recipe, target, config=chain.to_dict(), details=details,
        calibration=calibration if isinstance(calibration, Mapping) else None,
        fidelity={**fidelity, "agreement_metric": "cosine",
                  "inputs_from": inputs_from, "reference": f"given {given.name}"},
        runtime_compat=[host], toolchain=built_with(tools))


def as_given(source: ModelSource, given: Path, *,
             runtime_compat: Sequence[Mapping[str, object]] = ()) -> Artifact:
    """The file a user gave, copied to ``given``, as its own variant (named after the file):
    nothing built it but edge's copy; ``runtime_compat``: the host's check of it, where made."""
    return describe_artifact(source.path.name, given, config={"recipe": AS_GIVEN},
                             toolchain=built_with(()), runtime_compat=runtime_compat)


def calibration_samples(source: ModelSource, given: Path) -> list[tuple[np.ndarray, ...]]:
    """The ``--calibration`` samples (none without it), each checked against the inputs of
    ``given`` (a :class:`UsageError` naming the first that differs)."""
    from device_agent.runtime import runtime_for
    from toolkit.model.calibration import check_shapes

    if source.calibration_data is None:
        return []
    with captured_native_output():
        details: list[TensorDetail] = runtime_for("auto", given.name).interpreter_class(
            model_path=str(given)).get_input_details()
    wanted = [(tuple(int(n) for n in d["shape"]), str(d["name"])) for d in details]
    samples = []
    for number, (inputs, _label) in enumerate(source.calibration_data()):
        arrays = tuple(np.asarray(value) for value in inputs)
        check_shapes(arrays, wanted, f"--calibration sample {number + 1}")
        samples.append(arrays)
    return samples
