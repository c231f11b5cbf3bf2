"""The build step of :func:`toolkit.run.execute.execute`: a model's variants compressed into
its staging folder, with their manifest and the host's reference outputs.

Apart from the executor because it is the one step that runs on this machine only: no
board, no store; ``edge bench`` and ``edge deploy`` reach it through :func:`prepare`, and
the power check (``benchmarks/check_power.py``) through :func:`prepare_model`.

Example::

    artifacts, failed, references = prepare_model(source, [Chain(...)], staging)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.artifacts.bundle import Artifact, FailedVariant, write_manifest
from toolkit.errors import CompressError
from toolkit.model.load import ModelSource
from toolkit.model.reference import compute_references, reference_metric, source_inputs
from toolkit.results.choose import split_by_budget

if TYPE_CHECKING:
    from toolkit.compress import Chain
    from toolkit.run.plan import RunPlan

_log = logging.getLogger(__name__)


@dataclass
class PreparedModel:
    """One model, built: its variants (those within the budget), references, staging."""

    source: ModelSource
    run_id: str
    staging: Path
    final_dir: Path
    artifacts: list[Artifact]
    failed: list[FailedVariant]
    references: dict[str, Path]
    #: Variants the accuracy budget left out before running, with why.
    over_budget: list[tuple[str, str]] = field(default_factory=list)


def prepare(plan: RunPlan, source: ModelSource, run_id: str, staging: Path,
            say: Callable[[str], None]) -> PreparedModel:
    """``source`` built for ``plan`` in ``staging``: its variants, those the accuracy budget
    leaves out set apart, and their references."""
    artifacts, failed, references = prepare_model(source, list(plan.chains(source)), staging,
                                                  cache_dir=plan.policy.conversion_cache,
                                                  progress=say)
    # Without its torch module: a large model's weights must not stay in memory while the
    # boards measure (the local board's agent loads the file beside us).
    model = PreparedModel(source.without_module(), run_id, staging,
                          plan.out_dir / "runs" / run_id, artifacts, failed, references)
    budget = plan.policy.max_accuracy_drop
    if budget is not None:
        for failure in failed:
            if failure.variant == "fp32":
                raise CompressError(f"fp32, the accuracy reference of --max-accuracy-drop, "
                                    f"was not built: {failure.error}", recipe="fp32")
        model.artifacts, model.over_budget = split_by_budget(artifacts, budget)
    return model


def prepare_model(source: ModelSource, configs: list[Chain], staging: Path, *,
                  cache_dir: str | Path | None = None,
                  progress: Callable[[str], None] | None = None
                  ) -> tuple[list[Artifact], list[FailedVariant], dict[str, Path]]:
    """Compress ``source`` into ``staging/artifacts`` (with its manifest) and its references.

    A variant that cannot be built is returned among the failed, with its reason; the
    others are built all the same.  ``cache_dir``: the conversion cache, if any;
    ``progress``: told each step, as :func:`~toolkit.run.execute.execute`'s is.
    """
    from toolkit.compress import build_artifacts

    say = progress or _silent
    failed: list[FailedVariant] = []
    artifacts = build_artifacts(source, configs, staging / "artifacts",
                                cache_dir=Path(cache_dir) if cache_dir else None, failed=failed,
                                progress=lambda message: say(f"compress {message}"))
    write_manifest(staging / "artifacts", source, artifacts, failed)
    say("reference outputs on this machine")
    return artifacts, failed, build_references(source, artifacts, staging / "references")


def build_references(source: ModelSource, artifacts: list[Artifact],
                     folder: Path) -> dict[str, Path]:
    """Host interpreter outputs on real inputs, per artifact, for the board's output check.

    Computed in a child Python: a model that crashes the runtime costs its output
    check, not the run (the board then reports the crash as that variant's failure).
    """
    folder.mkdir(parents=True, exist_ok=True)
    made = compute_references([(a.path, folder / f"{a.sha256}.ref.npz") for a in artifacts],
                              source_inputs(source), metric=reference_metric(artifacts))
    references = {}
    for artifact in artifacts:
        answer = made[artifact.path]
        if isinstance(answer, Path):
            references[artifact.board_name] = answer
        else:  # e.g. a custom op the host lacks, or a crash: deploy it all the same
            _log.warning("no output check for %s: the host interpreter could not run it (%s)",
                         artifact.variant, answer)
    return references


def _silent(_message: object) -> None:
    """The progress callback when nobody watches."""


__all__ = ["PreparedModel", "build_references", "prepare", "prepare_model"]
