"""How much worse each metric may get before the gate calls it a regression.

One :class:`Thresholds` serves both gates: the unpaired ``edge check``
(:mod:`toolkit.gate.check`) and the paired one (:mod:`toolkit.gate.paired`).  Values come
from ``[tool.edge.check]`` in pyproject.toml, then ``--threshold NAME=VALUE``, each over
the one before (:meth:`Thresholds.from_mapping`).

Example::

    Thresholds.from_mapping({"latency_p50": "3%", "accuracy": 1}).latency_p50  # 3.0
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from toolkit.defaults import THRESHOLD_HELP
from toolkit.errors import UsageError

__all__ = ["Thresholds"]


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """How much worse each metric may get, in percent (accuracy: in points), and how sure to be.

    Example: ``Thresholds.from_mapping({"latency_p50": "3%", "accuracy": 1})``
    """

    latency_p50: float = 5.0
    latency_p99: float = 10.0
    latency_tail: float = 10.0
    peak_memory: float = 5.0
    size: float = 1.0
    accuracy: float = 0.5
    energy: float = 5.0
    confidence: float = 0.95
    resamples: int = 2000

    def __post_init__(self) -> None:
        for name in THRESHOLD_HELP:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value) or value < 0:
                raise UsageError(f"check threshold {name} must be a number >= 0, got {value!r}")
        if not 0.5 <= self.confidence < 1:
            raise UsageError(f"check confidence must be in [0.5, 1), got {self.confidence!r}")
        if not isinstance(self.resamples, int) or not 100 <= self.resamples <= 100_000:
            raise UsageError(f"check resamples must be a whole number in [100, 100000], "
                             f"got {self.resamples!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, object], *, base: Thresholds | None = None,
                     where: str = "check settings") -> Thresholds:
        """Override ``base`` with ``values`` (``"5%"``, ``5`` or ``"5"`` all mean five)."""
        known = {f.name for f in dataclasses.fields(cls)}
        # Each value's type depends on its name (resamples is whole): __post_init__ checks.
        parsed: dict[str, Any] = {}
        for key, raw in values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise UsageError(f"{where}: unknown check setting {key!r}; known: "
                                 f"{', '.join(sorted(known))}")
            parsed[name] = _number(raw, f"{where}: {key}", whole=name == "resamples")
        return dataclasses.replace(base or cls(), **parsed)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def _number(raw: object, where: str, *, whole: bool) -> float:
    """``raw`` (a number, or text such as ``"5%"``) as a number; a whole one for ``whole``."""
    if isinstance(raw, str):
        text: str | float = raw.strip().removesuffix("%").strip()
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        text = raw
    else:
        raise UsageError(f"{where} must be a number like 5 or \"5%\", got {raw!r}")
    try:
        return int(text) if whole else float(text)
    except ValueError:
        raise UsageError(f"{where} must be a number like 5 or \"5%\", got {raw!r}") from None
