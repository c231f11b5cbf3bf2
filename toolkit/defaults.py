"""Defaults and names that the library uses and ``edge --help`` shows.

They live in a module that imports nothing, so that every help screen can show them
without importing what uses them (the store, numpy, jinja2, torch): ``edge --help``
then starts about as fast as ``import click``. The modules that use a name import it
from here and keep exporting it under its old home (``toolkit.report.render.FORMATS``, ...).
"""

from __future__ import annotations

from pathlib import Path

#: Where ``edge deploy`` and ``edge bench`` put runs, reports and the default store.
DEFAULT_OUT_DIR = Path("edge-out")

#: What ``edge report`` renders (:func:`toolkit.report.render.render`).
FORMATS = ("html", "md", "json")

#: ``edge check`` threshold name -> what it judges, in the unit of the threshold.
THRESHOLD_HELP = {
    "latency_p50": "latency median, % slower",
    "latency_p99": "latency 99th percentile, % slower",
    "latency_tail": "latency tail (90th percentile of each block; paired checks), % slower",
    "peak_memory": "peak resident memory, % more",
    "size": "artifact size, % larger",
    "accuracy": "accuracy, points lower",
    "energy": "energy per inference, % more",
}

#: How long ``edge bench`` waits for a board another job holds before giving its cells up.
DEFAULT_BUSY_WAIT_SECONDS = 900.0

#: What ``--max-accuracy-drop`` tries, most expected gain (size and speed) first.
BUDGET_CANDIDATES = ("prune-channels:0.5+distill+int8,int8,prune-channels:0.5+distill,"
                     "int8-dynamic,fp16")


def compress_budget_candidates(max_drop: float) -> str:
    """``edge compress --max-accuracy-drop``'s candidates, in order of expected gain.

    Beside :data:`BUDGET_CANDIDATES` (which ``edge deploy`` builds all of), a full-integer
    model that failed the budget gets two more chances before float activations: ``qat``,
    then ``int8-mixed`` held to the same budget.  Compress stops at the first that fits, so
    their cost (fine-tuning; a conversion per layer) is paid only when int8 fell short.
    """
    first, _, rest = BUDGET_CANDIDATES.partition(",int8,")
    return f"{first},int8,qat,int8-mixed:{max_drop:g},{rest}"


__all__ = ["BUDGET_CANDIDATES", "DEFAULT_BUSY_WAIT_SECONDS", "DEFAULT_OUT_DIR", "FORMATS",
           "THRESHOLD_HELP", "compress_budget_candidates"]
