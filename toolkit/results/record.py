"""One target x variant result, typed: what the store keeps and the report, choice and check read.

A record is built on the host from three sources that used to be merged into one flat
``dict`` wherever they met: the artifact's facts (:meth:`Artifact.to_dict`), the board's
facts and the agent's measurements (:mod:`device_agent.protocol`), and what the host
itself decided (its status when the board was never reached, the pick of
``--max-accuracy-drop``, the boards measured beside it).  :class:`ResultRecord` keeps
them apart, names the variant by what it is (the recipe as built and, in a ``--threads``
sweep, the thread count), and is the only place that knows the stored JSON shape:
:meth:`ResultRecord.to_dict` writes it and :meth:`ResultRecord.from_dict` reads it back,
including every shape earlier versions stored.

Stored shapes (``record_version``):

- 1 (no ``record_version`` key): written before this module.  ``recipe`` may be missing
  or name the config's recipe (``as-is`` for a ``.tflite`` deployed as it is, whose variant
  is ``tflite``); a failed variant of a sweep has no ``threads``.  The variant name is
  taken as stored, and its recipe and thread count are derived from it: ``fp32-t2`` is the
  ``fp32`` recipe on 2 threads only when the record's recipe or thread count says so.
- 2: ``recipe`` is the variant as built, ``threads`` the thread count it ran with, and
  ``variant`` is ``recipe`` or, in a sweep, ``recipe-tTHREADS``.  Failures carry the
  ``stage`` they happened in.  Keys added since, each optional (a record without one
  reads as it did, and an older edge keeps it with the measurements and writes it back):
  ``toolchain``, the versions of the packages that built the file.  Adding a key is not
  a new version: a new version is refused by every older edge.

Keys this version does not know are kept with the measurements and written back
unchanged (an agent newer than the host adds figures).  Each block's shape (the board's
facts, the artifact's, the agent's figures, the stored record itself) is a ``TypedDict`` of
:mod:`toolkit.results.facts`.

Example::

    record = ResultRecord.from_dict(json.loads(stored_text))
    record.variant, record.status is Status.OK, record.p50_ms
    json.dumps(record.to_dict())
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict, Unpack

from toolkit.results.facts import (
    ARTIFACT_KEYS,
    RECORD_KEYS,
    ArtifactFacts,
    BoardFacts,
    LatencySummary,
    Measurements,
    Profile,
    StoredRecord,
    ThermalFacts,
    artifact_facts_of,
    board_of,
    measurements_of,
)

if TYPE_CHECKING:
    from toolkit.artifacts.bundle import Artifact

#: The shape :meth:`ResultRecord.to_dict` writes; see the module docstring for each version.
RECORD_VERSION = 2
#: ARTIFACT_KEYS, the keys :meth:`Artifact.to_dict` writes besides ``variant`` and ``recipe``
#: (a test holds the two in step), is defined beside the shape it names,
#: :class:`~toolkit.results.facts.ArtifactFacts`.
__all__ = ["ARTIFACT_KEYS", "BOARD_IDENTITY", "RECORD_VERSION", "STORED_PATHS", "ResultRecord",
           "Stage", "Status", "artifact_facts"]


class Status(enum.StrEnum):
    """Whether a target x variant was measured, and if not, which side failed."""

    OK = "ok"            # measured on the board
    FAILED = "failed"    # the variant failed: not built, or the agent could not measure it
    ERROR = "error"      # edge bench: the board or the job failed, the variant never ran
    SKIPPED = "skipped"  # edge bench: the board was left out (its health check failed)

    @classmethod
    def parse(cls, value: object, where: str = "result record") -> Status:
        """``value`` as a Status; a ValueError naming the known ones otherwise."""
        if isinstance(value, str) and value in cls.__members__.values():
            return cls(value)
        known = ", ".join(s.value for s in cls)
        raise ValueError(f"{where}: status {value!r} is not one of {known}")


class Stage(enum.StrEnum):
    """Where a variant that was not measured failed."""

    COMPRESS = "compress"  # conversion failed, or the converted file does not load
    BOARD = "board"        # the board or the job failed before the agent answered
    MEASURE = "measure"    # the agent answered that it could not measure the variant


#: Where the stored JSON keeps the figures a store query reads without loading whole records
#: (``ResultsStore.latency_history``); :meth:`ResultRecord.to_dict` writes them there.
#: Board facts that must agree for two results of one target to come from one board.
BOARD_IDENTITY = ("machine", "cpu_model", "board_model")
STORED_PATHS: dict[str, tuple[str, ...]] = {
    "sha256": ("sha256",), **{fact: ("board", fact) for fact in BOARD_IDENTITY},
    "p50_ms": ("latency_ms", "p50"), "p99_ms": ("latency_ms", "p99"),
    "verdict": ("verdict", "status")}


@dataclass(frozen=True, kw_only=True)
class ResultRecord:
    """One target x variant: its key, its status, and the artifact, board and agent facts.

    ``recipe`` is the variant as built (``fp32``, ``prune+int8``, ``tflite`` for a file
    deployed as it is); ``threads`` the thread count it ran with (None when it never ran
    on a board); ``swept`` says it was one of a ``--threads`` sweep, so that its name
    (:attr:`variant`, what tables show and runs are compared by) carries the count.
    """

    target: str
    recipe: str
    status: Status
    threads: int | None = None
    swept: bool = False
    stage: Stage | None = None
    error: str | None = None
    #: edge bench: the kind of failure (infrastructure, job, result, usage, unhealthy).
    error_class: str | None = None
    artifact: ArtifactFacts = field(default_factory=ArtifactFacts)
    board: BoardFacts | None = None
    #: The agent's figures (latency_ms, latency_samples_ms, peak_rss_bytes, verdict, ...)
    #: and any key this version does not know.
    measured: Measurements = field(default_factory=Measurements)
    #: ``--max-accuracy-drop``: why this variant was picked on its target.
    chosen: str | None = None
    #: Other boards measured at the same time on the same machine (same kernel boot id).
    measured_beside: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = f"result record {self.target}/{self.recipe}"
        for name in ("target", "recipe"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{where}: {name} must be a non-empty string")
        object.__setattr__(self, "status", Status.parse(self.status, where))
        if self.stage is not None:
            object.__setattr__(self, "stage", _stage(self.stage, where))
        if self.threads is not None and (isinstance(self.threads, bool)
                                         or not isinstance(self.threads, int)
                                         or self.threads < 0):
            raise ValueError(f"{where}: threads must be a whole number >= 0, "
                             f"got {self.threads!r}")
        if self.swept and self.threads is None:
            raise ValueError(f"{where}: a record of a thread sweep needs its thread count")

    # --- identity -------------------------------------------------------------------

    @property
    def variant(self) -> str:
        """The variant's name in tables and in comparisons: ``fp32``, or ``fp32-t2`` in a sweep."""
        return f"{self.recipe}-t{self.threads}" if self.swept else self.recipe

    @property
    def key(self) -> tuple[str, str]:
        """(target, variant): what one run holds once and two runs are compared by."""
        return self.target, self.variant

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    # --- artifact facts -------------------------------------------------------------

    @property
    def config(self) -> Mapping[str, object]:
        config = self.artifact.get("config")
        return config if isinstance(config, Mapping) else {}

    @property
    def is_float_reference(self) -> bool:
        """The variant the others of its file format are compared with: fp32 (``fp32-ort``
        among ONNX Runtime's), or a file as given (its accelerator or thread count aside)."""
        return self.recipe.partition("@")[0] == "fp32" \
            or self.config.get("recipe") in ("as-is", "fp32")

    @property
    def file_format(self) -> str:
        """``onnx`` for a variant ONNX Runtime runs (an ``.onnx`` file), else ``tflite``."""
        return "onnx" if str(self.artifact.get("file", "")).endswith(".onnx") else "tflite"

    @property
    def size_bytes(self) -> int | None:
        return _whole(self.artifact.get("size_bytes"))

    @property
    def accuracy(self) -> float | None:
        return _number(self.artifact.get("accuracy"))

    @property
    def cosine_with_float(self) -> float | None:
        """Mean cosine similarity of the file's outputs with the float model's, for a model
        judged that way (no labels: an embedding); None for a classifier."""
        fidelity = self.artifact.get("fidelity")
        if not isinstance(fidelity, Mapping) or fidelity.get("agreement_metric") != "cosine":
            return None
        return _number(fidelity.get("cosine_similarity"))

    @property
    def board_identity(self) -> tuple[str, ...]:
        """The :data:`BOARD_IDENTITY` facts of the board it ran on ("" where unknown)."""
        board = self.board
        return tuple(str(board.get(fact, "")) if board else "" for fact in BOARD_IDENTITY)

    @property
    def sha256(self) -> str | None:
        value = self.artifact.get("sha256")
        return value if isinstance(value, str) else None

    @property
    def toolchain(self) -> dict[str, str]:
        """The version of each package that built the file, and edge's (``{"edge": "0.1.0",
        "litert-torch": "0.10.0", ...}``); empty for a record stored before it was kept."""
        toolchain = self.artifact.get("toolchain")
        if not isinstance(toolchain, Mapping):
            return {}
        return {str(name): str(version) for name, version in toolchain.items()}

    # --- measurements ---------------------------------------------------------------

    @property
    def latency_ms(self) -> LatencySummary:
        """The agent's latency summary (p50, p90, p99, mean, ...; cv, robust_cv when sent)."""
        latency = self.measured.get("latency_ms")
        return latency if isinstance(latency, Mapping) else LatencySummary()

    def latency(self, key: str) -> float | None:
        """One figure of :attr:`latency_ms` (``"p50"``), None when not measured."""
        return _number(self.latency_ms.get(key))

    @property
    def p50_ms(self) -> float | None:
        return self.latency("p50")

    @property
    def latency_samples_ms(self) -> list[float]:
        samples = self.measured.get("latency_samples_ms")
        return list(samples) if isinstance(samples, list) else []

    @property
    def runs(self) -> int | None:
        return _whole(self.measured.get("runs"))

    @property
    def peak_rss_bytes(self) -> int | None:
        return _whole(self.measured.get("peak_rss_bytes"))

    @property
    def runtime(self) -> str:
        """``"ai-edge-litert 2.3.0"``, or "" when no runtime was reported."""
        runtime = self.measured.get("runtime")
        if not isinstance(runtime, Mapping) or "name" not in runtime:
            return ""
        return f"{runtime['name']} {runtime.get('version', '')}".strip()

    @property
    def verdict(self) -> str | None:
        """The board's ``VALID`` / ``INVALID``; None from agents that send no verdict."""
        verdict = self.measured.get("verdict")
        return str(verdict.get("status")) if isinstance(verdict, Mapping) else None

    @property
    def verdict_reasons(self) -> tuple[str, ...]:
        verdict = self.measured.get("verdict")
        reasons = verdict.get("reasons") if isinstance(verdict, Mapping) else None
        return tuple(str(reason) for reason in reasons or ())

    @property
    def verdict_conditions(self) -> tuple[str, ...]:
        """The board's named conditions beside its status (``stalls: 10.2 % of runs above
        10x the median (0.44 ms)``): a VALID run that a reader should look at twice."""
        verdict = self.measured.get("verdict")
        conditions = verdict.get("conditions") if isinstance(verdict, Mapping) else None
        return tuple(str(c) for c in conditions) if isinstance(conditions, list) else ()

    @property
    def earlier_attempts(self) -> list[str]:
        """Why each earlier measurement of this variant was measured again (the agent's
        ``attempts`` setting: INVALID only for the spread of its runs), oldest first."""
        attempts = self.measured.get("earlier_attempts")
        found = []
        for attempt in attempts if isinstance(attempts, list) else ():
            verdict = attempt.get("verdict") if isinstance(attempt, Mapping) else None
            reasons = verdict.get("reasons") if isinstance(verdict, Mapping) else None
            found.append("; ".join(str(reason) for reason in reasons or ()) or "INVALID")
        return found

    @property
    def invalid_reasons(self) -> list[str] | None:
        """The board's reasons when it judged this measurement INVALID, else None."""
        return list(self.verdict_reasons) if self.verdict == "INVALID" else None

    @property
    def energy_per_inference_mj(self) -> float | None:
        """Energy per inference in millijoules, when the board had a power sensor.

        Read from the agent's optional ``power.energy_per_inference_j``; None when absent.
        """
        power = self.measured.get("power")
        value = _number(power.get("energy_per_inference_j")) if isinstance(power, Mapping) \
            else None
        return None if value is None else 1000.0 * value

    @property
    def profile(self) -> Profile | None:
        """The board's per-operator profile (``--profile``): rows in run order (``ops``), a
        summary by op type (``by_type``), the profiled pass's total and overhead, or
        ``{"error": ...}``; None when no profile was asked for."""
        profile = self.measured.get("profile")
        return profile if isinstance(profile, Mapping) else None

    @property
    def thermal(self) -> ThermalFacts:
        thermal = self.measured.get("thermal")
        return thermal if isinstance(thermal, Mapping) else ThermalFacts()

    # --- building and serialising ---------------------------------------------------

    @classmethod
    def measured_on(cls, target: str, artifact: Artifact, answer: Mapping[str, object], *,
                    board: Mapping[str, object], threads: int, swept: bool) -> ResultRecord:
        """The record of ``artifact`` run on ``threads`` threads, from the agent's ``answer``
        (one validated entry of a result's ``variants``) and its result's ``board``."""
        figures = {k: v for k, v in answer.items() if k not in ("name", "status", "error",
                                                                "threads")}
        status = Status.parse(answer.get("status"),
                              f"agent answer for {target}/{answer.get('name')}")
        error = _text(answer.get("error"))
        if error:
            # The board knows the file by its content hash; its user by the name it has here.
            error = re.sub(rf"[^\s'\"]*{re.escape(artifact.board_name)}", artifact.path.name,
                           error)
        return cls(target=target, recipe=artifact.variant, status=status, threads=threads,
                   swept=swept, stage=None if status is Status.OK else Stage.MEASURE,
                   error=error, artifact=artifact_facts(artifact),
                   board=board_of(board), measured=measurements_of(figures))

    def to_dict(self) -> StoredRecord:
        """The JSON the store keeps (see the module docstring); :meth:`from_dict` reads it."""
        data: StoredRecord = {"record_version": RECORD_VERSION, "target": self.target,
                              "variant": self.variant, "recipe": self.recipe,
                              **self.artifact}
        if self.board is not None:
            data["board"] = self.board.copy()
        data.update(self.measured)
        data["status"] = self.status.value
        # In this order, and only those set (a stored record has no null of its own).
        if self.threads is not None:
            data["threads"] = self.threads
        if self.stage is not None:
            data["stage"] = self.stage.value
        if self.error is not None:
            data["error"] = self.error
        if self.error_class is not None:
            data["error_class"] = self.error_class
        if self.chosen is not None:
            data["chosen"] = self.chosen
        if self.measured_beside:
            data["measured_beside"] = list(self.measured_beside)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ResultRecord:
        """A stored record of any version; a ValueError saying what is wrong otherwise."""
        target, variant = data.get("target"), data.get("variant")
        where = f"result record {target}/{variant}"
        if not isinstance(target, str) or not isinstance(variant, str) or not variant:
            raise ValueError(f"{where}: target and variant must be strings")
        version = data.get("record_version", 1)
        if isinstance(version, bool) or not isinstance(version, int):
            raise ValueError(f"{where}: record version must be a whole number, got {version!r}")
        if version > RECORD_VERSION:
            raise ValueError(f"{where}: record version {version} is newer than this edge "
                             f"reads ({RECORD_VERSION}); upgrade edge")
        threads = data.get("threads")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)):
            raise ValueError(f"{where}: threads must be a whole number, got {threads!r}")
        recipe, threads, swept = _variant_key(variant, data, threads)
        stage, board = data.get("stage"), data.get("board")
        return cls(target=target, recipe=recipe, threads=threads, swept=swept,
                   status=Status.parse(data.get("status"), where),
                   stage=None if stage is None else _stage(stage, where),
                   error=_text(data.get("error")), error_class=_text(data.get("error_class")),
                   artifact=artifact_facts_of(data),
                   board=board_of(board) if isinstance(board, Mapping) else None,
                   measured=measurements_of({k: v for k, v in data.items()
                                             if k not in ARTIFACT_KEYS and k not in RECORD_KEYS}),
                   chosen=_text(data.get("chosen")),
                   measured_beside=_texts(data.get("measured_beside")))

    def replace(self, **changes: Unpack[_Changes]) -> ResultRecord:
        """A copy with ``changes`` (records are frozen: the host adds facts by copying)."""
        return dataclasses.replace(self, **changes)


class _Changes(TypedDict, total=False):
    """What :meth:`ResultRecord.replace` may change: any field (a test holds the two in step)."""

    target: str
    recipe: str
    status: Status
    threads: int | None
    swept: bool
    stage: Stage | None
    error: str | None
    error_class: str | None
    artifact: ArtifactFacts
    board: BoardFacts | None
    measured: Measurements
    chosen: str | None
    measured_beside: tuple[str, ...]


def artifact_facts(artifact: Artifact) -> ArtifactFacts:
    """What a record keeps of ``artifact``: :meth:`Artifact.to_dict` without its name."""
    return artifact_facts_of(artifact.to_dict())


def _variant_key(variant: str, data: Mapping[str, object],
                 threads: int | None) -> tuple[str, int | None, bool]:
    """(recipe, threads, swept) of a stored record whose name is ``variant``.

    The name is kept exactly; a ``-tN`` suffix is read as a thread count only when the
    record's recipe (or its config's) is the name without it, or its thread count is N.
    """
    config = data.get("config")
    named = config.get("recipe") if isinstance(config, Mapping) else None
    for recipe in (data.get("recipe"), named):
        if not isinstance(recipe, str) or not recipe:
            continue
        if variant == recipe:
            return recipe, threads, False
        suffix = variant[len(recipe):]
        if variant.startswith(recipe) and suffix.startswith("-t") and suffix[2:].isdigit() \
                and threads in (None, int(suffix[2:])):
            return recipe, int(suffix[2:]), True  # an older failed record had no threads
    if threads is not None and variant.endswith(f"-t{threads}") \
            and len(variant) > len(f"-t{threads}"):
        return variant[:-len(f"-t{threads}")], threads, True
    return variant, threads, False


def _stage(value: object, where: str) -> Stage:
    if isinstance(value, str) and value in Stage.__members__.values():
        return Stage(value)
    raise ValueError(f"{where}: stage {value!r} is not one of "
                     f"{', '.join(s.value for s in Stage)}")


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _texts(value: object) -> tuple[str, ...]:
    """A stored list of names (``measured_beside``) as text; nothing when absent."""
    if not value:
        return ()
    if not isinstance(value, Iterable):
        raise TypeError(f"{type(value).__name__!r} object is not iterable")
    return tuple(str(item) for item in value)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _whole(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
