"""Quality of the artifact that ships, computed with the TFLite interpreter on the host.

Quantized inputs and outputs are converted with the tensor's own scale and
zero point, exactly as an application on the board would do.  Accuracy needs
labels; fidelity (top-1 agreement, cosine similarity and SQNR against the float
torch model) does not, so models without labels are measured too.  Outputs that carry
no signal (all zero, constant, NaN or inf, in the float model or the file) are named
in ``degenerate``: two sets of zeros agree perfectly and mean nothing.

Example::

    accuracy = tflite_accuracy(Path("int8.tflite"), source.eval_data())
    fidelity = tflite_fidelity(Path("int8.tflite"), reference_module, inputs)
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias, cast

import numpy as np

from device_agent.interp import Model, TensorDetail
from device_agent.outputs import cosine as _cosine
from device_agent.outputs import degenerate, sqnr_db
from device_agent.runtime import RUNTIME_CANDIDATES, runtime_for
from toolkit._quiet import captured_native_output
from toolkit.errors import ModelError

if TYPE_CHECKING:
    import torch
    from numpy.typing import NDArray

    from toolkit.compress._manifest import Accuracy
    from toolkit.model.load import LabelledSample
    from toolkit.results.facts import Fidelity

#: One input (or output) value on the host: a tensor of the model file, or a numpy array.
Array: TypeAlias = "torch.Tensor | np.ndarray"


#: Files at least this large run on the host runtime's built-in kernels, without its
#: default delegate: XNNPACK packs a copy of every weight, the file's size again in memory
#: beside the mapped file (and the torch model the host holds meanwhile).  The board still
#: measures them as configured.
LARGE_FILE_BYTES = 1 << 30


def builtin_kernels_only(model_path: Path) -> bool:
    """Whether the host runs the TFLite file ``model_path`` without XNNPACK (see
    :data:`LARGE_FILE_BYTES`)."""
    return model_path.suffix != ".onnx" and model_path.stat().st_size >= LARGE_FILE_BYTES


def host_interpreter(model_path: Path) -> Model:
    """The host runtime's interpreter of ``model_path`` (onnxruntime for an ``.onnx``, as on
    the board), its tensors allocated."""
    runtime = runtime_for("auto", str(model_path))
    options: dict[str, object] = {}
    if builtin_kernels_only(model_path):
        module = importlib.import_module(dict(RUNTIME_CANDIDATES)[runtime.name])
        options["experimental_op_resolver_type"] = \
            module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with captured_native_output():  # the runtime announces its delegate on stderr
        interpreter = runtime.interpreter_class(model_path=str(model_path), **options)
        interpreter.allocate_tensors()
    return interpreter


def tflite_outputs(model_path: Path,
                   inputs: Iterable[Sequence[Array]]) -> Iterator[list[NDArray[np.float32]]]:
    """Run ``model_path`` on each input tuple; yields its outputs, dequantized to float32."""
    interpreter = host_interpreter(model_path)
    details_in, details_out = interpreter.get_input_details(), interpreter.get_output_details()
    for sample_inputs in inputs:
        if len(sample_inputs) != len(details_in):
            raise ModelError(f"the data gives {len(sample_inputs)} inputs; the model takes "
                             f"{len(details_in)}")
        for detail, value in zip(details_in, sample_inputs, strict=True):
            array = _as_numpy(value)
            if int(np.prod(array.shape)) != int(np.prod(detail["shape"])):
                raise ModelError(f"a sample has shape {tuple(array.shape)}; the model input "
                                 f"{detail['name']} has shape {tuple(detail['shape'])}")
            interpreter.set_tensor(detail["index"], _to_tensor(detail, array))
        interpreter.invoke()
        yield [_from_tensor(detail, interpreter.get_tensor(detail["index"]))
               for detail in details_out]


def tflite_accuracy(model_path: Path, samples: Iterable[LabelledSample]) -> Accuracy:
    """Top-1 accuracy of ``model_path`` (its first output) over labelled ``samples``."""
    labels: list[int] = []

    def inputs() -> Iterator[tuple[Array, ...]]:
        for sample_inputs, label in samples:
            labels.append(int(cast("int", label)))  # the callers check the data is labelled
            yield tuple(sample_inputs)

    correct = total = 0
    for outputs in tflite_outputs(model_path, inputs()):
        correct += int(np.argmax(outputs[0].reshape(-1)) == labels[total])
        total += 1
    if total == 0:
        raise ModelError("eval_data() yielded no samples")
    return {"accuracy": correct / total, "eval_samples": total}


def tflite_fidelity(model_path: Path, reference: torch.nn.Module,
                    inputs: Sequence[Sequence[Array]]) -> Fidelity:
    """Agreement of the file with ``reference`` (the float torch module) on ``inputs``.

    Top-1 agreement of the first output (for logits), the mean cosine similarity of the
    first output per sample (for embeddings, where the argmax means nothing; 0 for a
    sample where either side is all zero, which has no direction) and SQNR in dB over
    all outputs, 10 log10(|ref|^2 / |ref - out|^2).  ``degenerate`` (present only when
    found) names outputs without a signal on either side: their figures judge nothing.
    """
    import torch

    def expected() -> Iterator[list[np.ndarray]]:
        with torch.no_grad():
            for sample in inputs:
                outputs = reference(*sample)
                yield [_as_numpy(want) for want in (
                    outputs if isinstance(outputs, tuple | list) else (outputs,))]

    return _agreement(expected(), tflite_outputs(model_path, inputs), len(inputs),
                      reference="float model")


def file_fidelity(model_path: Path, reference_path: Path,
                  inputs: Sequence[Sequence[Array]]) -> Fidelity:
    """Agreement of the file with another ``.tflite`` (the float file a user gave) on
    ``inputs``: the figures of :func:`tflite_fidelity`."""
    return _agreement(tflite_outputs(reference_path, inputs), tflite_outputs(model_path, inputs),
                      len(inputs), reference="given file")


def _agreement(expected: Iterable[list[np.ndarray]], outputs: Iterable[list[NDArray[np.float32]]],
               count: int, *, reference: str) -> Fidelity:
    """The figures of :func:`tflite_fidelity` from ``count`` samples' outputs, each side a
    list of float arrays per sample; ``reference`` names the expected side."""
    signal = noise = cosine = 0.0
    agree = 0
    wanted: list[list[np.ndarray]] = []
    computed: list[list[NDArray[np.float32]]] = []
    for want_all, got_all in zip(expected, outputs, strict=True):
        for want, got in zip(want_all, got_all, strict=True):
            want_np = want.astype(np.float64).reshape(-1)
            got_np = got.astype(np.float64).reshape(-1)
            signal += float(np.sum(want_np ** 2))
            noise += float(np.sum((want_np - got_np) ** 2))
        wanted.append(want_all)
        computed.append(list(got_all))
        first_want = want_all[0].astype(np.float64).reshape(-1)
        first_got = got_all[0].astype(np.float64).reshape(-1)
        agree += int(np.argmax(first_want) == np.argmax(first_got))
        cosine += _cosine(first_want, first_got)
    fidelity: Fidelity = {
        "top1_agreement": agree / count if count else None,
        "cosine_similarity": round(cosine / count, 6) if count else None,
        "sqnr_db": sqnr_db(signal, noise),
        "fidelity_samples": count}
    problems = [f"{side} outputs are {found}" for side, found in (
        (f"the {reference}'s", degenerate(_per_output(wanted))),
        ("the file's", degenerate(_per_output(computed)))) if found]
    if problems:
        fidelity["degenerate"] = "; ".join(problems)
    return fidelity


def _per_output(samples: Sequence[Sequence[np.ndarray]]) -> list[NDArray[np.float64]]:
    """Per sample, per output -> per output, every sample's values flat."""
    width = min((len(outputs) for outputs in samples), default=0)
    return [np.concatenate([np.asarray(outputs[index], dtype=np.float64).reshape(-1)
                            for outputs in samples]) for index in range(width)]


def _as_numpy(value: Array) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _to_tensor(detail: TensorDetail, value: np.ndarray) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if np.issubdtype(dtype, np.integer) and scale and np.issubdtype(value.dtype, np.floating):
        info = np.iinfo(dtype)
        value = np.clip(np.round(value / scale) + zero_point, info.min, info.max)
    return value.astype(dtype).reshape(detail["shape"])


def _from_tensor(detail: TensorDetail, value: np.ndarray) -> NDArray[np.float32]:
    scale, zero_point = detail["quantization"]
    if np.issubdtype(value.dtype, np.integer) and scale:
        return (value.astype(np.float32) - zero_point) * scale
    return value.astype(np.float32)
