"""The regression gate: is a candidate slower than its baseline on the board, beyond noise?

:mod:`toolkit.gate.paired` measures both side by side on the board (the default of
``edge deploy --against`` and ``edge check --paired``); :mod:`toolkit.check` compares two
stored runs when they cannot be measured again.
"""

from __future__ import annotations

from .paired import PairedMetric, PairedOutcome, PairSpec, check_paired, pair_records

__all__ = ["PairSpec", "PairedMetric", "PairedOutcome", "check_paired", "pair_records"]
