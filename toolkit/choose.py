"""Pick the variant to ship: within an accuracy budget, fastest as measured on the board.

Host estimates mislead: on tflite-runtime 2.14 on x86, XNNPACK takes only float
models and int8 runs several times slower than fp32.  So ``edge deploy
--max-accuracy-drop P`` measures every candidate within the budget on each board
and picks the lowest median latency there, saying why when a smaller variant lost.

Example::

    within, over = split_by_budget(artifacts, max_drop=0.5)
    choice = choose_fastest("rpi4", records)
    print(choice.message)   # "rpi4: int8 (p50 0.41 ms) ..."
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .artifact import Artifact
from .errors import UsageError


def split_by_budget(artifacts: Sequence[Artifact],
                    max_drop: float) -> tuple[list[Artifact], list[Artifact]]:
    """(within, over): the fp32 variant's accuracy is the reference; drops are in points."""
    baseline = next((a for a in artifacts if a.variant == "fp32"), None)
    if baseline is None or baseline.accuracy is None:
        raise UsageError("--max-accuracy-drop needs labelled eval data and the fp32 variant "
                         "as the reference")
    reference = baseline.accuracy
    within = [a for a in artifacts
              if a.accuracy is not None and 100 * (reference - a.accuracy) <= max_drop]
    return within, [a for a in artifacts if a not in within]


@dataclass(frozen=True)
class Choice:
    target: str
    variant: str | None
    message: str


def choose_fastest(target: str, records: list[dict[str, Any]]) -> Choice:
    """The measured variant with the lowest p50 on ``target``; the message says why."""
    measured = sorted((r for r in records if r["status"] == "ok" and r.get("latency_ms")),
                      key=lambda r: r["latency_ms"]["p50"])
    if not measured:
        return Choice(target, None, f"{target}: no variant within the budget was measured")
    best = measured[0]
    p50 = best["latency_ms"]["p50"]
    slower = [f"{r['variant']} is {r['latency_ms']['p50'] / p50:.1f}x slower"
              for r in measured[1:]]
    smaller_but_slower = [r["variant"] for r in measured[1:]
                          if r.get("size_bytes", 0) < best.get("size_bytes", 0)]
    why = (f"; smaller {', '.join(smaller_but_slower)} lost on this board's latency"
           if smaller_but_slower else "")
    return Choice(target, best["variant"],
                  f"{target}: picked {best['variant']} (p50 {p50:.3f} ms, fastest within the "
                  f"accuracy budget){'; ' + ', '.join(slower) if slower else ''}{why}")
