"""A run plan: models x recipes x boards x a settings sweep x a policy, checked up front.

``edge deploy`` and ``edge bench`` each fill one :class:`RunPlan` and hand it to
:func:`toolkit.run.execute.execute`; nothing else merges job settings.  Settings come
from two places only: the board's target file (:func:`job_settings`) and the
command line (``RunPlan.settings``, names checked against
:class:`~device_agent.protocol.JobSettings`); the defaults live in ``JobSettings``.

Everything a plan can get wrong is found before the first conversion: names,
accelerators, recipes, the model file's data functions (a recipe that fine-tunes
without ``train_data()``), coordinators, the boards themselves.

Example::

    plan = RunPlan(models=(Path("model.py"),), recipes=parse_recipes("fp32,int8"),
                   boards=tuple(board_sources(load_lab().select_jobs(["local"]))),
                   sweep=Sweep(threads=(1, 2)))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from device_agent.protocol import ACCELERATORS, JobSettings, ProtocolError, check_setting_names
from toolkit.defaults import DEFAULT_BUSY_WAIT_SECONDS, DEFAULT_OUT_DIR
from toolkit.errors import ModelError, UsageError
from toolkit.run.boards import BoardSource

if TYPE_CHECKING:
    from toolkit.boards.targets import Target
    from toolkit.compress import Chain
    from toolkit.model.load import ModelSource


@dataclass(frozen=True, kw_only=True)
class Sweep:
    """Thread counts and accelerators to measure every variant with (empty: the board's).

    More than one value of either names each cell apart: ``fp32-t2``, ``fp32@gpu``.
    """

    threads: tuple[int, ...] = ()
    accelerators: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in self.threads) \
                or len(set(self.threads)) != len(self.threads):
            raise UsageError(f"threads {list(self.threads)}: give distinct counts >= 0")
        for kind in self.accelerators:
            if kind not in ACCELERATORS:
                raise UsageError(f"unknown accelerator {kind!r}; one of "
                                 f"{', '.join(ACCELERATORS)}")


@dataclass(frozen=True, kw_only=True)
class Policy:
    """How the run behaves around the measurements.

    ``max_accuracy_drop``: only variants within it (points below fp32) run, and each
    board's fastest VALID one is picked.  ``busy_wait_seconds``: how long to wait for a
    board another job holds (0: fail at once, before any conversion).  ``health``: why a
    board must be left out (None: healthy), checked before the run; without it, a board
    that fails its check fails the run.  ``keep_going``: a board that fails marks its
    cells and the others finish (``edge bench``), instead of failing the run.
    ``parallel``: every board at once, one thread each (``edge bench``), instead of one
    after the other.
    """

    max_accuracy_drop: float | None = None
    busy_wait_seconds: float = DEFAULT_BUSY_WAIT_SECONDS
    health: Callable[[Target], str | None] | None = None
    keep_going: bool = False
    parallel: bool = False
    conversion_cache: Path | None = None

    def __post_init__(self) -> None:
        if self.max_accuracy_drop is not None and self.max_accuracy_drop < 0:
            raise UsageError("--max-accuracy-drop must be >= 0 points")
        if self.busy_wait_seconds < 0:
            raise UsageError("--busy-wait must be >= 0 seconds")


@dataclass(frozen=True, kw_only=True)
class RunPlan:
    """What to run; ``settings`` are the command line's job settings (the boards' own
    come from their target files)."""

    models: tuple[Path, ...]
    #: Empty: each model's default, ``fp32,int8`` for a model file, the file as given
    #: (``fp32``) for a ``.tflite``.
    recipes: tuple[Chain, ...]
    boards: tuple[BoardSource, ...]
    settings: Mapping[str, object] = field(default_factory=dict)
    sweep: Sweep = field(default_factory=Sweep)
    policy: Policy = field(default_factory=Policy)
    out_dir: Path = DEFAULT_OUT_DIR
    store_path: str | Path | None = None
    tags: tuple[str, ...] = ()
    #: Calibration inputs for a ``.tflite`` or ``.onnx`` given (:mod:`toolkit.model.calibration`).
    calibration: Path | None = None
    #: The runtimes a model file's variants are built for (``--runtime``, names of
    #: :data:`toolkit.compress.RUNTIMES`); empty: TFLite only.  A file given as it is runs
    #: on its own runtime.
    runtimes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from toolkit.compress import parse_runtimes

        if self.runtimes:  # distinct known names, as --runtime takes them
            parse_runtimes(",".join(self.runtimes))
        if not self.boards:
            raise UsageError("no target given; use for example --target local")
        if not self.models:
            raise UsageError("no model given")
        try:
            check_setting_names(self.settings, where="settings")
            JobSettings.from_dict(self.settings)
        except ProtocolError as exc:
            raise UsageError(str(exc)) from None

    def chains(self, source: ModelSource) -> tuple[Chain, ...]:
        """The recipes to build for ``source``, once per runtime of a model file; with a
        budget, fp32 too (its accuracy reference)."""
        from toolkit.compress import for_runtimes, parse_recipes

        recipes = self.recipes or tuple(parse_recipes("fp32" if source.as_given
                                                      else "fp32,int8"))
        if self.policy.max_accuracy_drop is not None \
                and "fp32" not in [c.recipe for c in recipes]:
            recipes = (*parse_recipes("fp32"), *recipes)
        if source.as_given:
            return recipes
        return tuple(for_runtimes(recipes, self.model_runtimes(source)))

    def model_runtimes(self, source: ModelSource) -> tuple[str, ...]:
        """The runtimes ``source``'s files run on: a given file's own, else ``runtimes``
        (TFLite when none is named)."""
        from toolkit.compress._recipes import ONNX_RUNTIME, TFLITE

        if source.as_given:
            return (ONNX_RUNTIME,) if source.is_onnx else (TFLITE,)
        return self.runtimes or (TFLITE,)

    def check_model(self, source: ModelSource) -> None:
        """The model file has what every recipe needs, before any conversion (as ``edge
        compress`` checks): a chain that fine-tunes needs ``train_data()``, ``int8-mixed``
        eval and calibration data.  A budget tries such chains and lets them fail alone.
        ``--runtime`` names a runtime of a model file: a file given as it is runs on its
        own runtime, and a recipe ONNX Runtime has no variant of is refused."""
        if source.as_given and self.runtimes and self.runtimes != self.model_runtimes(source):
            raise UsageError(f"--runtime {','.join(self.runtimes)}: {source.path.name} runs "
                             f"on {self.model_runtimes(source)[0]} as it is given; --runtime "
                             "chooses the runtimes of a .py model file's variants")
        if source.as_given:
            from toolkit.compress._from_onnx import refusal as onnx_refusal
            from toolkit.compress._from_tflite import refusal as tflite_refusal
            from toolkit.compress._given import calibration_samples

            calibration_samples(source, source.path)  # each sample fits the file's inputs
            calibrated = source.calibration_data is not None
            data = b"" if source.is_onnx else source.path.read_bytes()
            for chain in self.chains(source):
                why = (onnx_refusal(chain, calibrated=calibrated) if source.is_onnx
                       else tflite_refusal(chain, data, calibrated=calibrated))
                if why:
                    raise UsageError(f"{chain.recipe} on {source.path.name}: {why}")
            return
        from toolkit.compress._mixed import require_measuring_data
        from toolkit.compress._ort_recipes import require_ort_recipes

        require_ort_recipes(self.chains(source))
        if self.policy.max_accuracy_drop is None and source.train_data is None:
            tuned = [c.recipe for c in self.chains(source) if c.needs_training_data]
            if tuned:
                raise ModelError(f"{tuned[0]} fine-tunes the model: {source.path} must define "
                                 "train_data() yielding (inputs, label)", path=source.path)
        for chain in self.chains(source):
            if chain.needs_eval_data:
                require_measuring_data(source, chain.recipe)


def job_settings(target: Target, overrides: Mapping[str, object]) -> JobSettings:
    """The job settings for ``target``: its target file's, then the command line's.

    A power meter on the command line (``power_command``) with no sensor named there
    means the ``command`` sensor, whatever the target file names.
    """
    board: dict[str, object] = {
        "threads": target.threads, "runtime": target.runtime,
        "accelerator": target.accelerator, "api": target.api,
        "delegate": target.delegate or "", "delegate_options": dict(target.delegate_options),
        "thermal_zones": ",".join(target.thermal_zones), "power_sensor": target.power_sensor,
        "set_governor": target.set_governor}
    if overrides.get("power_command") and "power_sensor" not in overrides:
        board["power_sensor"] = "command"
    return JobSettings.from_dict({**board, **overrides})


__all__ = ["Policy", "RunPlan", "Sweep", "job_settings"]
