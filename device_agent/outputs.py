"""Does a runtime compute what the host's computes?  One rule, for the board and the host.

A model that loads is not a model that works (tflite-runtime 2.14 computes some
dynamic-range models wrongly without an error), so the board runs the inputs
the host ran and compares its outputs with the host interpreter's.  The host's
``--compat-python`` check (``toolkit.compress.compat``) judges with the same
:func:`compare_outputs`, so a file is right or wrong the same way in both places.

The rule.  Two correct runtimes do not agree bit for bit: integer kernels round
differently at every layer (a correct int8 digits CNN on tflite-runtime 2.14 is one
output step, 0.196, from ai-edge-litert; a 96x96 MobileNetV2 int8 differs by
more than two steps: 36.9 dB, 2.8 % max error, below its own quantization noise
of 29 dB against float), and float kernels sum in other orders.  A runtime that
computes a file wrongly is far off (ai-edge-quantizer's dynamic MLP on 2.14:
0.15 dB, 8 % argmax agreement).  So outputs agree when either

- every output is within its tolerance, 2 quantization steps for a quantized output
  (``atol`` for a float one) or 2 % of the output's range, whichever is larger, and
  the first output's argmax agrees on ``min_agreement`` of the samples; or
- the signal-to-noise ratio of all outputs is at least 30 dB and the argmax agrees
  on 95 % of the samples (only near-ties flipped).

A model without labels (an encoder) is judged by cosine instead (``metric="cosine"``,
which the host writes into the reference as ``agreement_metric``): the argmax of an
embedding means nothing, and a correct quantized encoder flips it at cosine 0.999.  Its
outputs agree when every output is within the tolerance above, or when every sample's
outputs have a cosine similarity of at least ``MIN_COSINE`` (0.99) with the host's.

Degenerate outputs never agree: NaN or inf in any output, or outputs that are all zero or
constant (every output one value over every sample and element) on either side.  A file
that computes only zeros computes them on the host too, and agreement about outputs that
carry no signal proves nothing; ``degenerate`` names what was found.

The result names the rule that judged it (``rule``), or why none held.

The reference travels as one ``.npz`` file beside the model: ``input_0..`` and
``output_0..`` arrays (raw tensors, in the model's own dtypes), each with the
batch of samples on the first axis.

Example::

    check_outputs(interpreter, load_reference(path), atol=1e-4, min_top1=0.99)
    # {"ok": True, "rule": "within 2 output steps", "samples": 32, "max_abs_diff": 0.19, ...}
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, List, Sequence, TypedDict

import numpy as np

from .wire import OutputCheck, OutputComparison

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from .interp import Model, TensorDetail

#: Argmax agreement (first output) required with the tolerance rule.
MIN_AGREEMENT = 0.99
#: Tolerance of the first rule: this many quantization steps of a quantized output ...
MAX_STEPS = 2
#: ... or this fraction of the output's range (its largest magnitude), whichever is larger.
MAX_RELATIVE_ERROR = 0.02
#: The second rule: at least this SQNR (dB) over all outputs, with this argmax agreement.
MIN_SQNR_DB = 30.0
MIN_AGREEMENT_AT_SQNR = 0.95
#: The cosine rule (models without labels): every sample's cosine with the reference.
MIN_COSINE = 0.99
#: How outputs are judged: ``top1`` (a classifier's logits) or ``cosine`` (an embedding).
METRICS = ("top1", "cosine")


class Reference(TypedDict):
    """A reference ``.npz`` read back: per model input and output, every sample's values."""

    inputs: List[NDArray[np.generic]]
    outputs: List[NDArray[np.generic]]
    metric: str


def degenerate(outputs: Sequence[NDArray[np.generic]]) -> str:
    """Why ``outputs`` (one array per output, every sample in it) carry no signal, or "".

    NaN or inf in any output; or every output a single value over all its samples and
    elements ("all zero", or "constant (every value 0.5)").  A single number is never
    called constant: there is nothing to compare it with.
    """
    arrays = [np.asarray(values, dtype=np.float64).reshape(-1) for values in outputs]
    for index, values in enumerate(arrays):
        for name, found in (("NaN", np.isnan(values)), ("inf", np.isinf(values))):
            if found.any():
                where = f" in output {index}" if len(arrays) > 1 else ""
                return f"{name}{where} ({int(found.sum())} of {values.size} values)"
    if sum(values.size for values in arrays) < 2 or not all(values.size for values in arrays):
        return ""
    if not all(bool(np.all(values == values[0])) for values in arrays):
        return ""
    if all(values[0] == 0 for values in arrays):
        return "all zero"
    return "constant (every value " + ", ".join(f"{values[0]:.4g}" for values in arrays) + ")"


def cosine(want: NDArray[np.floating], got: NDArray[np.floating]) -> float:
    """cos(want, got) of two flat arrays; 0.0 when either is all zero (no direction)."""
    norms = float(np.linalg.norm(want) * np.linalg.norm(got))
    return float(np.dot(want, got)) / norms if norms else 0.0


def sqnr_db(signal: float, noise: float) -> float | None:
    """10 log10(signal / noise) in dB, to 0.01; None when nothing differs (infinite)."""
    return round(10 * math.log10(max(signal, 1e-30) / noise), 2) if noise else None


def output_step(detail: TensorDetail) -> float:
    """One quantization step of an output tensor (its scale), 0.0 for a float output."""
    scale = detail.get("quantization", (0.0, 0))[0]
    return float(scale) if np.issubdtype(np.dtype(detail["dtype"]), np.integer) else 0.0


def dequantize(values: NDArray[np.generic], detail: TensorDetail) -> NDArray[np.float64]:
    """Integer outputs in real units with the tensor's scale and zero point (float64)."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    real = np.asarray(values).astype(np.float64)
    if np.issubdtype(np.dtype(detail["dtype"]), np.integer) and scale:
        return (real - zero_point) * scale
    return real


def compare_outputs(expected: Sequence[Sequence[NDArray[np.generic]]],
                    got: Sequence[Sequence[NDArray[np.generic]]], steps: Sequence[float], *,
                    atol: float = 0.0, min_agreement: float = MIN_AGREEMENT,
                    metric: str = "top1",
                    sides: tuple[str, str] = ("the reference's", "the runtime's")
                    ) -> OutputComparison:
    """Judge ``got`` against ``expected`` (per sample, per output, in real units).

    ``steps`` gives each output's quantization step (0 for a float output, which
    is allowed ``atol`` instead); ``metric`` is ``top1`` or ``cosine`` (see the module
    docstring); ``sides`` name ``expected`` and ``got`` in the summary.  Returns ``ok``,
    the ``rule`` that judged it, and the figures: ``samples``, ``max_abs_diff``,
    ``max_steps`` (worst error in steps of a quantized output, None without one),
    ``max_relative_error``, ``sqnr_db`` (None: identical), ``top1_agreement``,
    ``min_cosine`` (the lowest sample's), ``metric`` and ``degenerate`` ("" or what
    made the outputs meaningless); ``summary`` says it in one line.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    agree = 0
    cosines = []
    max_diff = worst_relative = 0.0
    worst_steps: float | None = None
    signal = noise = 0.0
    within_steps = within_relative = True
    for want_outputs, got_outputs in zip(expected, got):
        for want_raw, got_raw, step in zip(want_outputs, got_outputs, steps):
            want = np.asarray(want_raw, dtype=np.float64)
            other = np.asarray(got_raw, dtype=np.float64).reshape(want.shape)
            error = float(np.max(np.abs(other - want))) if want.size else 0.0
            spread = float(np.max(np.abs(want))) if want.size else 0.0
            spread = spread or 1.0
            max_diff = max(max_diff, error)
            worst_relative = max(worst_relative, error / spread)
            absolute = MAX_STEPS * step if step else atol
            if step:
                worst_steps = max(worst_steps or 0.0, error / step)
            within_steps &= error <= absolute
            within_relative &= error <= max(absolute, MAX_RELATIVE_ERROR * spread)
            signal += float(np.sum(np.square(want)))
            noise += float(np.sum(np.square(other - want)))
        if want_outputs:
            agree += int(np.argmax(np.asarray(got_outputs[0]).reshape(-1))
                         == np.argmax(np.asarray(want_outputs[0]).reshape(-1)))
            cosines.append(cosine(_flat(want_outputs), _flat(got_outputs)))
    samples = len(expected)
    agreement = agree / samples if samples else 1.0
    lowest_cosine = min(cosines) if cosines else 1.0
    sqnr = sqnr_db(signal, noise)
    problems = [f"{side} outputs are {found}" for side, found in zip(
        sides, (degenerate(_per_output(expected)), degenerate(_per_output(got)))) if found]
    quantized = any(steps)
    tight = (f"within {MAX_STEPS} output steps" if quantized and all(steps)
             else f"within atol {atol:g}" if not quantized
             else f"within {MAX_STEPS} output steps (quantized) or atol {atol:g} (float)")
    rule = ""
    # The cosine metric drops the argmax condition (it means nothing for an embedding).
    argmax_holds = metric == "cosine" or agreement >= min_agreement
    if problems:
        pass  # agreement about outputs without a signal proves nothing
    elif argmax_holds and within_steps:
        rule = tight
    elif argmax_holds and within_relative:
        rule = f"within {MAX_RELATIVE_ERROR:.0%} of the output range"
    elif metric == "cosine" and lowest_cosine >= MIN_COSINE:
        rule = f"cosine >= {MIN_COSINE:g} in every sample"
    elif metric == "top1" and agreement >= MIN_AGREEMENT_AT_SQNR and (
            sqnr is None or sqnr >= MIN_SQNR_DB):
        rule = f"SQNR >= {MIN_SQNR_DB:g} dB with top-1 agreement >= {MIN_AGREEMENT_AT_SQNR:g}"
    figures = (f"max abs diff {max_diff:.3g}"
               + (f" ({worst_steps:.2f} output steps)" if worst_steps is not None else "")
               + f", {worst_relative:.2%} of range, SQNR "
               + ("inf" if sqnr is None else f"{sqnr:g}") + " dB, "
               + (f"lowest cosine {lowest_cosine:.4f}" if metric == "cosine" else
                  f"top-1 agreement {agreement:.3f}"))
    if problems:
        summary = "degenerate outputs: " + "; ".join(problems) + f" ({figures})"
    elif rule:
        summary = f"{rule}: {figures}"
    elif metric == "cosine":
        summary = (f"{figures}; neither {tight} or {MAX_RELATIVE_ERROR:.0%} of range, nor "
                   f"cosine >= {MIN_COSINE:g} in every sample")
    else:
        summary = (f"{figures}; neither {tight} or {MAX_RELATIVE_ERROR:.0%} of range with "
                   f"top-1 >= {min_agreement:g}, nor SQNR >= {MIN_SQNR_DB:g} dB with top-1 >= "
                   f"{MIN_AGREEMENT_AT_SQNR:g}")
    return {"ok": bool(rule), "rule": rule, "samples": samples, "max_abs_diff": max_diff,
            "max_steps": None if worst_steps is None else round(worst_steps, 3),
            "max_relative_error": round(worst_relative, 6), "sqnr_db": sqnr,
            "top1_agreement": agreement, "min_cosine": round(lowest_cosine, 6),
            "metric": metric, "degenerate": "; ".join(problems), "summary": summary}


def _flat(outputs: Sequence[NDArray[np.generic]]) -> NDArray[np.float64]:
    """One sample's outputs as one flat float64 vector."""
    return np.concatenate([np.asarray(o, dtype=np.float64).reshape(-1) for o in outputs]) \
        if len(outputs) else np.zeros(0)


def _per_output(samples: Sequence[Sequence[NDArray[np.generic]]]
                ) -> List[NDArray[np.float64]]:
    """Per sample, per output -> per output, every sample's values flat."""
    width = min((len(outputs) for outputs in samples), default=0)
    return [np.concatenate([np.asarray(outputs[index], dtype=np.float64).reshape(-1)
                            for outputs in samples]) for index in range(width)]


def load_reference(path: Path) -> Reference:
    """Read a reference ``.npz`` into ``{"inputs": [...], "outputs": [...], "metric": ...}``.

    ``metric`` is the file's ``agreement_metric`` (``top1`` or ``cosine``); a reference
    from a host that wrote none is judged by ``top1``, as it always was.
    """
    with np.load(path, allow_pickle=False) as data:
        inputs = [data[f"input_{i}"] for i in range(_count(data.files, "input_"))]
        outputs = [data[f"output_{i}"] for i in range(_count(data.files, "output_"))]
        metric = str(data["agreement_metric"]) if "agreement_metric" in data.files else "top1"
    if metric not in METRICS:
        raise ValueError(f"agreement_metric must be one of {METRICS}, got {metric!r}")
    return {"inputs": inputs, "outputs": outputs, "metric": metric}


def _count(names: list[str], prefix: str) -> int:
    return sum(1 for name in names if name.startswith(prefix))


def check_outputs(interpreter: Model, reference: Reference, *, atol: float,
                  min_top1: float) -> OutputCheck:
    """Run every reference sample on the board and judge with :func:`compare_outputs`
    by the reference's ``metric`` (``top1`` when it names none)."""
    in_details = interpreter.get_input_details()
    out_details = interpreter.get_output_details()
    samples = int(reference["inputs"][0].shape[0])
    expected, got = [], []
    for index in range(samples):
        for detail, batch in zip(in_details, reference["inputs"]):
            interpreter.set_tensor(detail["index"], batch[index].astype(detail["dtype"]))
        interpreter.invoke()
        got.append([dequantize(interpreter.get_tensor(detail["index"]), detail)
                    for detail in out_details])
        expected.append([dequantize(batch[index], detail)
                         for detail, batch in zip(out_details, reference["outputs"])])
    check = compare_outputs(expected, got, [output_step(d) for d in out_details], atol=atol,
                            min_agreement=min_top1, metric=str(reference.get("metric", "top1")),
                            sides=("the host's", "the board's"))
    return {**check, "atol": atol, "min_top1": min_top1}
