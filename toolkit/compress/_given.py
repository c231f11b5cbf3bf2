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
#: Inputs a rewrite is compared with the given file on, at most.
FIDELITY_SAMPLES = 32
#: One sample: the model's inputs in its order.
Sample = tuple[np.ndarray, ...]


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
            record_failure(failed, chain, chain.recipe, exc, progress)
    return artifacts


def record_failure(failed: list[FailedVariant], chain: Chain, variant: str, exc: Exception,
                   progress: Callable[[str], None]) -> None:
    """``chain`` (the variant ``variant``) could not be built: noted beside the variants
    that were, with its reason, and said."""
    reason = str(exc).removeprefix(f"{chain.recipe}: ")
    failed.append(FailedVariant(variant=variant, config=chain.to_dict(), stage="compress",
                                error=reason))
    progress(f"{variant}: failed: {reason}")


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


def calibration_samples(source: ModelSource, given: Path) -> list[Sample]:
    """The ``--calibration`` samples (none without it), each checked against the inputs of
    ``given`` (a :class:`UsageError` naming the first that differs)."""
    return _checked_calibration(source, input_details(given))


def input_details(given: Path) -> list[TensorDetail]:
    """The inputs of ``given`` as the host's runtime for its suffix reads them."""
    from device_agent.runtime import runtime_for

    with captured_native_output():
        return runtime_for("auto", given.name).interpreter_class(
            model_path=str(given)).get_input_details()


def judging_inputs(source: ModelSource, details: list[TensorDetail]
                   ) -> tuple[list[Sample], list[Sample], str]:
    """The ``--calibration`` samples (checked against ``details``, the given file's inputs;
    none without them), the inputs every rewrite is compared with the given file on, and
    what those are: at most :data:`FIDELITY_SAMPLES` of the samples (the user's real
    inputs), else seeded standard-normal inputs of the file's shapes (integer inputs zero:
    a random integer is not a valid token id; a quantized input is fed as float)."""
    calibration = _checked_calibration(source, details)
    if calibration:
        return calibration, calibration[:FIDELITY_SAMPLES], "the --calibration inputs"
    rng = np.random.default_rng(0)

    def random(detail: TensorDetail) -> np.ndarray:
        shape, dtype = tuple(detail["shape"]), np.dtype(detail["dtype"])
        if np.issubdtype(dtype, np.floating):
            return rng.standard_normal(shape).astype(dtype)
        if detail["quantization"][0]:
            return rng.standard_normal(shape).astype(np.float32)
        return np.zeros(shape, dtype)

    return [], [tuple(random(d) for d in details) for _ in range(FIDELITY_SAMPLES)], \
        "seeded random inputs"


def _checked_calibration(source: ModelSource, details: list[TensorDetail]) -> list[Sample]:
    from toolkit.model.calibration import check_shapes

    if source.calibration_data is None:
        return []
    wanted = [(tuple(int(n) for n in d["shape"]), str(d["name"])) for d in details]
    samples = []
    for number, (inputs, _label) in enumerate(source.calibration_data()):
        arrays = tuple(np.asarray(value) for value in inputs)
        check_shapes(arrays, wanted, f"--calibration sample {number + 1}")
        samples.append(arrays)
    return samples
