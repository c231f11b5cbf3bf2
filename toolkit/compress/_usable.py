"""Is a built file usable: does the runtime prepare it, and does it compute what its
source computes?  Asked of every variant, whether converted from a torch model
(:mod:`._build`) or rewritten from a user's ``.tflite`` (:mod:`._from_tflite`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from device_agent.outputs import MIN_AGREEMENT_AT_SQNR
from toolkit.compress.evaluate import host_interpreter
from toolkit.errors import CompressError

if TYPE_CHECKING:
    from toolkit.results.facts import Fidelity

#: Without labels the host runtime agrees with the torch model at this mean cosine
#: similarity or more (int4 weights of the BERT-style example: 0.999; a runtime that
#: read an embedding table with the wrong scales: 0.97).
MIN_COSINE = 0.99


def check_loads(path: Path, recipe: str) -> None:
    """A file the runtime cannot prepare is a failed conversion; the runtime names the op."""
    try:
        host_interpreter(path)
    except (RuntimeError, ValueError) as exc:
        path.unlink(missing_ok=True)
        reason = " ".join(str(exc).split())
        raise CompressError(f"{recipe}: the converted file does not run: {reason}",
                            recipe=recipe) from None


def agrees(fidelity: Fidelity, metric: str) -> bool:
    """Does the host runtime compute the file as its torch model does (by ``metric``)?
    Never when either side's outputs are degenerate (all zero, constant, NaN)."""
    if fidelity.get("degenerate"):
        return False
    if metric == "cosine":
        cosine = fidelity["cosine_similarity"]
        return bool(cosine is None or cosine >= MIN_COSINE)
    top1 = fidelity["top1_agreement"]
    return bool(top1 is None or top1 >= MIN_AGREEMENT_AT_SQNR)
