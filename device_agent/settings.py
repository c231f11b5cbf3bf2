"""The job's settings: how the agent measures a variant and how it measures a pair.

:class:`JobSettings` is the one place where every job setting and its default live, and
:class:`PairedSettings` the same for a paired job's ``paired`` section; the host fills
both (:mod:`toolkit.run.plan`, :mod:`toolkit.gate.paired`) and the agent reads them back
from the job.  Standard library only; :mod:`device_agent.protocol` re-exports every name.

Example::

    settings = JobSettings.from_dict({"threads": 2, "min_runs": 10})
    settings.replace(threads=4).to_dict()["threads"]   # 4
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field, fields
from typing import ClassVar, Dict, Mapping, Optional, TypeVar

from .checks import ProtocolError, require_choice, require_dict, require_number, require_type
from .wire import DelegateOption, SettingsDict

_T = TypeVar("_T")


#: Values of the ``accelerator`` setting (also per variant: an ``--accelerator`` sweep) and of
#: ``api``; see :mod:`device_agent.accelerators`.  ``delegate`` is the external delegate's
#: path on the board, and the dict setting ``delegate_options`` its options.
#: ``xnnpack`` is ONNX Runtime's XnnpackExecutionProvider (TFLite's XNNPACK is its ``cpu``).
ACCELERATORS = ("cpu", "xnnpack-off", "gpu", "gpu+cpu", "delegate", "xnnpack", "cuda",
                "tensorrt")
APIS = ("interpreter", "compiled")
#: Values of the ``runtime`` setting: ``auto`` takes ai-edge-litert if it imports, else
#: tflite-runtime (and onnxruntime for an ``.onnx``); a distribution name takes that one
#: or fails the variants saying so.
RUNTIMES = ("auto", "ai-edge-litert", "tflite-runtime", "onnxruntime")
#: What a ``set_governor`` value may be (the kernel's governors are such words).
GOVERNOR_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


def _setting(default: _T, *, since_v1: bool = False) -> _T:
    """A field of :class:`JobSettings`; ``since_v1``: required in every job (the first
    schema had it), else optional on the wire and defaulted when absent."""
    return field(default=default, metadata={"since_v1": since_v1})


@dataclass(frozen=True)
class JobSettings:
    """How the agent measures: the one place where every job setting and its default live.

    The host fills one from a target file and the command line
    (:mod:`toolkit.run.plan`); the job document carries :meth:`to_dict`, and the agent
    reads missing keys as these defaults, so an older host's job still runs.  A key no
    field has is refused with the nearest known name: a misspelt ``therads`` would
    otherwise measure with the default thread count and say nothing.

    ``power_sensor`` defaults to ``none``: reading a sensor costs an idle window per
    variant, so it is asked for (``auto`` probes every kind; a named kind fails the
    variant when absent), and ``power_command`` with no sensor named implies ``command``.

    Example::

        settings = JobSettings.from_dict({"threads": 2, "min_runs": 10})
        settings.to_dict()["max_cv"]   # 0.1
    """

    warmup_runs: int = _setting(5, since_v1=True)
    min_runs: int = _setting(50, since_v1=True)
    max_runs: int = _setting(1_000_000, since_v1=True)   # 8 MB of samples on the board at most
    min_seconds: float = _setting(1.0, since_v1=True)
    max_seconds: float = _setting(30.0, since_v1=True)
    threads: int = _setting(1, since_v1=True)
    variant_timeout_seconds: float = _setting(300.0, since_v1=True)
    #: Warm-up lasts at least this long, as well as ``warmup_runs``.
    warmup_seconds: float = _setting(0.2)
    #: Robust CV (MAD / median) above this makes the verdict INVALID.
    max_cv: float = _setting(0.10)
    #: Pause before each variant after the first.
    cooldown_seconds: float = _setting(1.0)
    #: Wait until the hottest thermal zone is at most this (0: off).
    cooldown_to_c: float = _setting(0.0)
    cooldown_max_seconds: float = _setting(300.0)
    #: Idle window sampled for idle power (only with a sensor).
    idle_seconds: float = _setting(1.0)
    power_rate_hz: float = _setting(20.0)
    #: Max abs diff allowed against the host's outputs.
    output_atol: float = _setting(1e-4)
    #: Top-1 agreement required against the host's outputs.
    output_min_top1: float = _setting(0.99)
    #: The whole job's deadline (0: :func:`job_budget_seconds` computes it).
    job_timeout_seconds: float = _setting(0.0)
    #: Measurements at most of a variant INVALID only for its spread.
    attempts: int = _setting(2)
    #: 1: a per-operator profile in a pass of its own (:mod:`device_agent.profiler`).
    profile: int = _setting(0)
    #: Which power sensor (see ``device_agent.power.POWER_SENSORS``), which rail, and a
    #: command that prints watts (an external meter).
    power_sensor: str = _setting("none")
    power_rail: str = _setting("")
    power_command: str = _setting("")
    #: The thermal zones that matter on this board, comma-separated folder names such as
    #: ``thermal_zone0`` (empty: every zone).
    thermal_zones: str = _setting("")
    #: A CPU governor (``performance``) the agent sets on every cluster for the job where
    #: the board user may write ``scaling_governor``, and puts back after it (empty: the
    #: board's governor is left alone); see :mod:`device_agent.clocks`.
    set_governor: str = _setting("")
    #: Which runtime runs the models (one of :data:`RUNTIMES`).
    runtime: str = _setting("auto")
    #: One of :data:`ACCELERATORS`, through one of :data:`APIS`.
    accelerator: str = _setting("cpu")
    api: str = _setting("interpreter")
    #: The external delegate's path on the board, and its options.
    delegate: str = _setting("")
    delegate_options: Mapping[str, DelegateOption] = field(default_factory=dict,
                                                           metadata={"since_v1": False})

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            where = f"job.settings.{item.name}"
            if item.name == "delegate_options":
                options = require_dict(value, where)
                for key, option in options.items():
                    if not isinstance(option, (str, int, float, bool)):
                        raise ProtocolError(f"{where}.{key} must be a string, number or "
                                            "boolean")
            elif isinstance(item.default, str):
                require_type(value, str, where)
            else:
                require_number(value, where, minimum=0)
        require_choice(self.runtime, RUNTIMES, "job.settings.runtime")
        require_choice(self.accelerator, ACCELERATORS, "job.settings.accelerator")
        require_choice(self.api, APIS, "job.settings.api")
        if self.set_governor and not GOVERNOR_NAME.fullmatch(self.set_governor):
            # Written into sysfs as it is: a governor is one lower-case word.
            raise ProtocolError(f"job.settings.set_governor {self.set_governor!r} is not a "
                                "governor name such as 'performance'")

    @classmethod
    def from_dict(cls, data: Mapping[str, object], *, where: str = "job.settings"
                  ) -> JobSettings:
        """Settings from a mapping; an unknown key is refused with the nearest known name."""
        check_setting_names(data, where=where)
        return cls(**data)  # type: ignore[arg-type]  # __post_init__ checks every value

    @classmethod
    def of(cls, settings: JobSettings | Mapping[str, object]) -> JobSettings:
        """``settings`` as they are, or read from a mapping by :meth:`from_dict`."""
        return settings if isinstance(settings, JobSettings) else cls.from_dict(settings)

    def to_dict(self) -> SettingsDict:
        """The job document's ``settings``: every key, plain JSON values."""
        data = {item.name: getattr(self, item.name) for item in fields(self)}
        data["delegate_options"] = dict(self.delegate_options)
        return data

    def replace(self, **changes: object) -> JobSettings:
        """A copy with ``changes``, checked as :meth:`from_dict` checks."""
        return JobSettings.from_dict({**self.to_dict(), **changes})


SETTING_NAMES = tuple(item.name for item in fields(JobSettings))


def check_setting_names(data: Mapping[str, object], *, where: str = "job.settings") -> None:
    """Refuse a key that names no setting, in one line with the nearest known name."""
    for key in data:
        if key not in SETTING_NAMES:
            near = difflib.get_close_matches(str(key), SETTING_NAMES, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ProtocolError(f"{where}: unknown setting {key!r}{hint}")


def _defaults(*, since_v1: bool, text: bool) -> SettingsDict:
    defaults = JobSettings().to_dict()
    return {item.name: defaults[item.name] for item in fields(JobSettings)
            if item.name != "delegate_options" and item.metadata["since_v1"] == since_v1
            and isinstance(item.default, str) == text}


#: Views of :class:`JobSettings`' defaults by kind, for code that reads a job's dict:
#: settings every job carries (the first schema's) ...
DEFAULT_SETTINGS: SettingsDict = _defaults(since_v1=True, text=False)
#: ... numbers added since (optional in a job: an older host's job still runs) ...
OPTIONAL_SETTINGS: SettingsDict = _defaults(since_v1=False, text=False)
#: ... and text settings (also optional).
TEXT_SETTINGS: Dict[str, str] = {name: str(value) for name, value in
                                  _defaults(since_v1=False, text=True).items()}
#: Fewest triples a paired comparison judges: below six, the sign test's interval has no
#: finite ends at 95 % or more.
MIN_TRIPLES = 6
#: The three models of a paired job's pair (device_agent.paired), in the order reported.
SIDES = ("baseline", "control", "candidate")

class PairedSettings:
    """How a pair is measured and when measuring stops (the job's ``paired`` section)."""

    FIELDS: ClassVar[Dict[str, float]] = {
        "limit": 0.05,            # the limit on the block medians judged while measuring (5 %)
        "tail_limit": 0.10,       # and on the blocks' 90th percentiles (10 %)
        "confidence": 0.99,       # over all rounds together: each round is 1 - (1 - c) / rounds
        "block_seconds": 0.02,    # one block of one model lasts about this long
        "min_block_runs": 15,     # and holds at least this many invocations (its median)
        "max_block_runs": 20_000,
        "round_triples": 16,      # triples per round: 16 is the fewest that can decide in one
        "max_rounds": 8,
        "max_seconds": 20.0,      # measuring time of a pair at most (warm-up excluded)
        # The energy pass (only with a power sensor), after the latency rounds:
        "energy_limit": 0.05,     # the limit on energy per inference (5 %)
        "energy_block_seconds": 0.5,   # one block lasts at least this long
        "energy_block_samples": 10,    # and long enough for this many sensor samples
        "energy_round_triples": 12,    # triples per round (10 are the fewest whose interval
        "energy_max_rounds": 3,        # has finite ends at 99 % spent over 3 looks)
        "energy_max_seconds": 60.0,    # the energy pass's time at most
    }

    def __init__(self, **values: object) -> None:
        unknown = sorted(set(values) - set(self.FIELDS))
        if unknown:
            raise ValueError(f"unknown paired setting {unknown[0]!r}; known: "
                             + ", ".join(sorted(self.FIELDS)))
        merged: Dict[str, float] = {}
        for key, value in {**self.FIELDS, **values}.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value <= 0:
                raise ValueError(f"paired setting {key} must be a number > 0, got {value!r}")
            merged[key] = value
        if not 0.5 <= merged["confidence"] < 1:
            raise ValueError(f"paired setting confidence must be in [0.5, 1), got "
                             f"{merged['confidence']!r}")
        for key in ("limit", "tail_limit", "energy_limit"):
            if merged[key] >= 1:
                raise ValueError(f"paired setting {key} is a fraction below 1, got "
                                 f"{merged[key]!r}")
        self.limit = float(merged["limit"])
        self.tail_limit = float(merged["tail_limit"])
        self.confidence = float(merged["confidence"])
        self.block_seconds = float(merged["block_seconds"])
        self.min_block_runs = int(merged["min_block_runs"])
        self.max_block_runs = max(self.min_block_runs, int(merged["max_block_runs"]))
        self.round_triples = max(MIN_TRIPLES, int(merged["round_triples"]))
        self.max_rounds = int(merged["max_rounds"])
        self.max_seconds = float(merged["max_seconds"])
        self.energy_limit = float(merged["energy_limit"])
        self.energy_block_seconds = float(merged["energy_block_seconds"])
        self.energy_block_samples = int(merged["energy_block_samples"])
        self.energy_round_triples = max(MIN_TRIPLES, int(merged["energy_round_triples"]))
        self.energy_max_rounds = int(merged["energy_max_rounds"])
        self.energy_max_seconds = float(merged["energy_max_seconds"])

    def energy_block(self, rate_hz: float) -> float:
        """Seconds of one energy block: at least ``energy_block_seconds``, and long enough
        for ``energy_block_samples`` samples of a sensor read at ``rate_hz``."""
        return max(self.energy_block_seconds, self.energy_block_samples / max(rate_hz, 1e-9))

    @classmethod
    def from_dict(cls, values: Optional[Mapping[str, object]]) -> PairedSettings:
        return cls(**(values or {}))

    def to_dict(self) -> Dict[str, float]:
        return {key: getattr(self, key) for key in self.FIELDS}
