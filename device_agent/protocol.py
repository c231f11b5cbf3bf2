"""The versioned job protocol between the host and the board agent.

Defined once, here, with the standard library only; the host imports it from
this module so both sides agree on one schema.

A *job* (host -> board) names the artifacts to run and the measurement
settings.  A *result* (board -> host) carries board facts and, per variant,
either measurements or the reason it failed.  The host validates every result
with :func:`parse_result` before it stores anything: a malformed or oversized
answer is a :class:`ProtocolError`, never a stored result.

Fields added since version 1 first shipped are optional on both sides (an older
agent does not send them, an older host's job does not set them):

- job: per-variant ``threads`` (a ``--threads`` sweep) and ``reference`` (an
  ``.npz`` of host inputs and outputs beside the model); the settings of
  :class:`JobSettings` not in :data:`DEFAULT_SETTINGS`.
- result variant: ``latency_ms.cv`` and ``.robust_cv``, ``verdict`` (``VALID``/``INVALID`` with
  ``reasons``), ``thermal`` (``before``, ``after``, ``throttled``), ``power``
  (absent without a sensor), ``output_check`` (``ok``, and the ``rule`` of
  :func:`device_agent.outputs.compare_outputs` that judged it), ``cooldown``, ``model_load_ms``,
  ``allocate_ms``, ``warmup_runs_done``, ``wall_seconds``, ``load_rss_growth_bytes``,
  ``latency_samples_every`` (k: the raw samples are every k-th run, when there were more
  runs than :data:`MAX_RAW_SAMPLES`; absent means every run), ``runtime_choice`` (which
  runtime the ``runtime`` setting chose, and why), ``inputs`` (what the timed runs were
  fed: the host's first reference input, or synthetic values), ``verdict.unsteady_only``
  (true when the spread of the runs was the only reason for INVALID), ``earlier_attempts``
  (the verdicts and latency summaries of measurements of this variant that were INVALID only
  for their spread and were measured again, setting ``attempts``; the variant's figures are
  its last attempt's), ``accelerator`` (what ran: requested and used accelerator, API,
  adapter, fully accelerated or not; see :mod:`device_agent.accelerators`), ``profile``
  (setting ``profile``: the per-operator profile of :mod:`device_agent.profiler`, or
  ``{"error": ...}`` saying why there is none).
- job: per-variant ``accelerator`` (an ``--accelerator`` sweep); settings ``accelerator``,
  ``api``, ``delegate`` and ``delegate_options``.
- job: ``pairs`` (a paired job, :mod:`device_agent.paired`): each ``{"name", "baseline",
  "candidate"}`` names two of the job's variants (files) measured interleaved in one child;
  ``paired`` holds its :class:`~device_agent.paired.PairedSettings`.  The result then has
  ``pairs`` (one per pair, in order: block medians and 90th percentiles per side, the
  board's verdict, or ``status: failed`` with its ``error``) and an empty ``variants``.
  A pair measured with a power sensor has ``energy``: the ``sensor``, and either
  ``block_energy_mj`` per side (with ``block_seconds``, ``rounds``, ``seconds``) or the
  ``error`` that left it without a figure; no sensor, no ``energy``.

The whole job has one deadline, :func:`job_budget_seconds`: the host waits that long
(plus its own transfer time) and the agent enforces it too.

Example::

    job = make_job(job_id="abc", variants=[{"name": "fp32", "file": "fp32.tflite",
                                             "sha256": "..."}])
    result = parse_result(agent_stdout_bytes, job)
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Mapping

SCHEMA_VERSION = 1

#: Upper bound on an agent answer: numbers and raw latency samples (up to MAX_RAW_SAMPLES
#: per variant, whole nanoseconds in ms: about 9 bytes each), never payloads.
MAX_RESULT_BYTES = 32 * 1024 * 1024
#: Raw samples shipped per variant at most: a microsecond model reaching the time floor runs
#: hundreds of thousands of times; the summary is computed from every run on the board,
#: and an evenly spaced subset this large is plenty for plots and the bootstrap of edge check.
MAX_RAW_SAMPLES = 50_000

def _setting(default: Any, *, since_v1: bool = False) -> Any:
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
    #: Which TFLite runtime runs the models (one of :data:`RUNTIMES`).
    runtime: str = _setting("auto")
    #: One of :data:`ACCELERATORS`, through one of :data:`APIS`.
    accelerator: str = _setting("cpu")
    api: str = _setting("interpreter")
    #: The external delegate's path on the board, and its options.
    delegate: str = _setting("")
    delegate_options: Mapping[str, Any] = field(default_factory=dict,
                                                metadata={"since_v1": False})

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            where = f"job.settings.{item.name}"
            if item.name == "delegate_options":
                options = _require_dict(value, where)
                for key, option in options.items():
                    if not isinstance(option, (str, int, float, bool)):
                        raise ProtocolError(f"{where}.{key} must be a string, number or "
                                            "boolean")
            elif isinstance(item.default, str):
                _require_type(value, str, where)
            else:
                _require_number(value, where, minimum=0)
        _require_choice(self.runtime, RUNTIMES, "job.settings.runtime")
        _require_choice(self.accelerator, ACCELERATORS, "job.settings.accelerator")
        _require_choice(self.api, APIS, "job.settings.api")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "job.settings") -> JobSettings:
        """Settings from a mapping; an unknown key is refused with the nearest known name."""
        check_setting_names(data, where=where)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The job document's ``settings``: every key, plain JSON values."""
        data = {item.name: getattr(self, item.name) for item in fields(self)}
        data["delegate_options"] = dict(self.delegate_options)
        return data

    def replace(self, **changes: Any) -> JobSettings:
        """A copy with ``changes``, checked as :meth:`from_dict` checks."""
        check_setting_names(changes)
        return replace(self, **changes)


SETTING_NAMES = tuple(item.name for item in fields(JobSettings))


def check_setting_names(data: Mapping[str, Any], *, where: str = "job.settings") -> None:
    """Refuse a key that names no setting, in one line with the nearest known name."""
    for key in data:
        if key not in SETTING_NAMES:
            near = difflib.get_close_matches(str(key), SETTING_NAMES, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ProtocolError(f"{where}: unknown setting {key!r}{hint}")


def _defaults(*, since_v1: bool, text: bool) -> dict[str, Any]:
    return {item.name: item.default for item in fields(JobSettings)
            if item.name != "delegate_options" and item.metadata["since_v1"] == since_v1
            and isinstance(item.default, str) == text}


#: Views of :class:`JobSettings`' defaults by kind, for code that reads a job's dict:
#: settings every job carries (the first schema's) ...
DEFAULT_SETTINGS: dict[str, Any] = _defaults(since_v1=True, text=False)
#: ... numbers added since (optional in a job: an older host's job still runs) ...
OPTIONAL_SETTINGS: dict[str, Any] = _defaults(since_v1=False, text=False)
#: ... and text settings (also optional).
TEXT_SETTINGS: dict[str, str] = _defaults(since_v1=False, text=True)
#: Values of the ``accelerator`` setting (also per variant: an ``--accelerator`` sweep) and of
#: ``api``; see :mod:`device_agent.accelerators`.  ``delegate`` is the external delegate's
#: path on the board, and the dict setting ``delegate_options`` its options.
ACCELERATORS = ("cpu", "xnnpack-off", "gpu", "gpu+cpu", "delegate")
APIS = ("interpreter", "compiled")
#: Values of the ``runtime`` setting: ``auto`` takes ai-edge-litert if it imports, else
#: tflite-runtime; a distribution name takes that one or fails the variants saying so.
RUNTIMES = ("auto", "ai-edge-litert", "tflite-runtime")
#: The part of a job's budget that is not the variants': starting Python, importing numpy and
#: the runtime (seconds on a small board), forking, and printing the answer.
JOB_STARTUP_SECONDS = 60.0

#: Fewest triples a paired comparison judges: below six, the sign test's interval has no
#: finite ends at 95 % or more.
MIN_TRIPLES = 6
#: The three models of a paired job's pair (device_agent.paired), in the order reported.
SIDES = ("baseline", "control", "candidate")
#: Board facts besides the required ones: text when an agent sends them (reports show them).
OPTIONAL_BOARD_TEXT = ("release", "cpu_model", "board_model")
#: Figures of a measured variant besides the required ones: numbers >= 0 when sent.
OPTIONAL_FIGURES = ("model_load_ms", "allocate_ms", "warmup_runs_done", "wall_seconds",
                    "load_rss_growth_bytes")

VARIANT_STATUSES = ("ok", "failed")
VERDICTS = ("VALID", "INVALID")
LATENCY_KEYS = ("p50", "p90", "p99", "mean", "std", "min", "max")


def sha256_file(path: str | Path) -> str:
    """The sha256 a job names a file by, read in blocks (models can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class PairedSettings:
    """How a pair is measured and when measuring stops (the job's ``paired`` section)."""

    FIELDS: ClassVar[dict[str, float]] = {
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

    def __init__(self, **values: float) -> None:
        unknown = sorted(set(values) - set(self.FIELDS))
        if unknown:
            raise ValueError(f"unknown paired setting {unknown[0]!r}; known: "
                             + ", ".join(sorted(self.FIELDS)))
        merged = dict(self.FIELDS, **values)
        for key, value in merged.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value <= 0:
                raise ValueError(f"paired setting {key} must be a number > 0, got {value!r}")
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
    def from_dict(cls, values: dict[str, Any] | None) -> PairedSettings:
        return cls(**(values or {}))

    def to_dict(self) -> dict[str, float]:
        return {key: getattr(self, key) for key in self.FIELDS}


class ProtocolError(ValueError):
    """A job or result document does not follow the schema."""


def job_settings(job: dict[str, Any]) -> dict[str, Any]:
    """A job's settings with every default filled in (an older host's job lacks the newer)."""
    return JobSettings.from_dict(job["settings"]).to_dict()


def job_budget_seconds(job: dict[str, Any]) -> float:
    """The whole job's time limit on the board, in seconds, from its settings.

    Everything the agent may legitimately spend is in it: start-up, each variant's
    timeout (times ``attempts``: an unsteady variant is measured again), the pause before
    every measurement but the first, and the wait for the board to cool
    (``cooldown_to_c``, at most ``cooldown_max_seconds``) before each.
    A positive ``job_timeout_seconds`` replaces the sum (a host's own cap).  The agent
    stops at this deadline; the host adds its own transfer time and kills the agent's
    process group if it is still running after that.
    """
    settings = job_settings(job)
    if float(settings["job_timeout_seconds"]) > 0:
        return float(settings["job_timeout_seconds"])
    count = len(job["variants"]) * max(1, int(settings["attempts"]))
    cooling = float(settings["cooldown_max_seconds"]) if settings["cooldown_to_c"] > 0 else 0.0
    return (JOB_STARTUP_SECONDS
            + count * (float(settings["variant_timeout_seconds"]) + cooling)
            + max(0, count - 1) * float(settings["cooldown_seconds"]))


def make_job(*, job_id: str, variants: list[dict[str, Any]],
             settings: JobSettings | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Build a job document; settings not given take :class:`JobSettings`' defaults.

    A mapping naming a setting that does not exist is a :class:`ProtocolError`.
    """
    if not isinstance(settings, JobSettings):
        settings = JobSettings.from_dict(settings or {})
    job = {"schema_version": SCHEMA_VERSION, "job_id": job_id,
           "variants": variants, "settings": settings.to_dict()}
    validate_job(job)
    return job


def validate_job(job: Any) -> dict[str, Any]:
    """Check a job document, as the agent does before running anything."""
    _require_type(job, dict, "job")
    _check_version(job, "job")
    _require_type(job.get("job_id"), str, "job.job_id")
    variants = job.get("variants")
    _require_type(variants, list, "job.variants")
    if not variants:
        raise ProtocolError("job.variants is empty")
    names = set()
    for index, variant in enumerate(variants):
        where = f"job.variants[{index}]"
        _require_type(variant, dict, where)
        for key in ("name", "file", "sha256"):
            _require_type(variant.get(key), str, f"{where}.{key}")
        if "threads" in variant:  # per-variant override: how a --threads sweep travels
            _require_number(variant["threads"], f"{where}.threads", minimum=0)
        if "reference" in variant:
            _require_type(variant["reference"], str, f"{where}.reference")
        if "accelerator" in variant:  # per-variant override: how an --accelerator sweep travels
            _require_choice(variant["accelerator"], ACCELERATORS, f"{where}.accelerator")
        if variant["name"] in names:
            raise ProtocolError(f"{where}.name {variant['name']!r} is repeated")
        names.add(variant["name"])
    if "pairs" in job:
        _validate_pairs(job, names)
    settings = job.get("settings")
    _require_type(settings, dict, "job.settings")
    for key in DEFAULT_SETTINGS:
        _require_number(settings.get(key), f"job.settings.{key}", minimum=0)
    JobSettings.from_dict(settings)  # the optional ones default; a misspelt one is refused
    return job


def _validate_pairs(job: dict[str, Any], files: set[str]) -> None:
    pairs = _require_list(job["pairs"], "job.pairs")
    if not pairs:
        raise ProtocolError("job.pairs is empty")
    seen = set()
    for index, pair in enumerate(pairs):
        where = f"job.pairs[{index}]"
        _require_dict(pair, where)
        for key in ("name", "baseline", "candidate"):
            _require_type(pair.get(key), str, f"{where}.{key}")
        for key in ("baseline", "candidate"):
            if pair[key] not in files:
                raise ProtocolError(f"{where}.{key} {pair[key]!r} is not a variant of the job")
        if pair["name"] in seen or pair["name"] in files:
            raise ProtocolError(f"{where}.name {pair['name']!r} is repeated")
        seen.add(pair["name"])
    try:
        PairedSettings.from_dict(_require_dict(job.get("paired", {}), "job.paired"))
    except ValueError as exc:
        raise ProtocolError(f"job.paired: {exc}") from None


def _require_choice(value: Any, choices: tuple[str, ...], where: str) -> None:
    if value not in choices:
        raise ProtocolError(f"{where} must be one of {', '.join(choices)}, got {value!r}")


def parse_result(raw: bytes, job: dict[str, Any]) -> dict[str, Any]:
    """Decode and validate an agent's answer to ``job``; raise ProtocolError."""
    if len(raw) > MAX_RESULT_BYTES:
        raise ProtocolError(
            f"agent answer is {len(raw)} bytes, over the {MAX_RESULT_BYTES}-byte limit")
    try:
        result = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"agent answer is not JSON: {exc}") from None
    except RecursionError:  # the decoder recurses per level: 200,000 "[" exhaust the stack
        raise ProtocolError("agent answer is nested too deep to be a result") from None
    return validate_result(result, job)


def validate_result(result: Any, job: dict[str, Any]) -> dict[str, Any]:
    """Check a decoded result against the schema and against the job it answers."""
    _require_type(result, dict, "result")
    _check_version(result, "result")
    if result.get("job_id") != job["job_id"]:
        raise ProtocolError(
            f"result.job_id {result.get('job_id')!r} does not answer job {job['job_id']!r}")
    board = result.get("board")
    _require_type(board, dict, "result.board")
    for key in ("hostname", "machine", "system", "python"):
        _require_type(board.get(key), str, f"result.board.{key}")
    for key in OPTIONAL_BOARD_TEXT:
        if key in board:
            _require_type(board[key], str, f"result.board.{key}")
    if "cpu_count" in board:
        _require_number(board["cpu_count"], "result.board.cpu_count", minimum=0)
    variants = result.get("variants")
    _require_type(variants, list, "result.variants")
    expected = [] if job.get("pairs") else [v["name"] for v in job["variants"]]
    got = [v.get("name") if isinstance(v, dict) else None for v in variants]
    if got != expected:
        raise ProtocolError(f"result.variants are {got}, expected {expected}")
    for index, variant in enumerate(variants):
        _validate_variant(variant, f"result.variants[{index}]")
    if job.get("pairs"):
        _validate_pair_results(result.get("pairs"), [p["name"] for p in job["pairs"]])
    return result


def _validate_pair_results(pairs: Any, expected: list[str]) -> None:
    """A paired job's answer: per pair, equal numbers of blocks on every side, each figure a
    finite number above zero, or the reason it failed."""
    pairs = _require_list(pairs, "result.pairs")
    got = [p.get("name") if isinstance(p, dict) else None for p in pairs]
    if got != expected:
        raise ProtocolError(f"result.pairs are {got}, expected {expected}")
    for index, pair in enumerate(pairs):
        where = f"result.pairs[{index}]"
        if pair.get("status") not in VARIANT_STATUSES:
            raise ProtocolError(f"{where}.status must be one of {VARIANT_STATUSES}, "
                                f"got {pair.get('status')!r}")
        if pair["status"] == "failed":
            _require_type(pair.get("error"), str, f"{where}.error")
            continue
        _require_number(pair.get("block_runs"), f"{where}.block_runs", minimum=1)
        _require_number(pair.get("seconds"), f"{where}.seconds", minimum=0)
        if len({_blocks_per_side(pair.get(figure), f"{where}.{figure}")
                for figure in ("block_median_ms", "block_p90_ms")}) != 1:
            raise ProtocolError(f"{where} has unequal numbers of blocks per side")
        runtime = _require_dict(pair.get("runtime"), f"{where}.runtime")
        for key in ("name", "version"):
            _require_type(runtime.get(key), str, f"{where}.runtime.{key}")
        latency = _require_dict(pair.get("latency_ms"), f"{where}.latency_ms")
        for side in SIDES:
            summary = _require_dict(latency.get(side), f"{where}.latency_ms.{side}")
            for key in LATENCY_KEYS:
                _require_number(summary.get(key), f"{where}.latency_ms.{side}.{key}",
                                minimum=0)
        if "energy" in pair:
            _validate_pair_energy(pair["energy"], f"{where}.energy")


def _blocks_per_side(blocks: Any, where: str) -> int:
    """Check one figure's blocks (side -> figures above 0, at most MAX_RAW_SAMPLES, as many
    on every side) and return how many each side has."""
    blocks = _require_dict(blocks, where)
    counts = set()
    for side in SIDES:
        values = _require_list(blocks.get(side), f"{where}.{side}")
        if len(values) > MAX_RAW_SAMPLES:
            raise ProtocolError(f"{where}.{side} has {len(values)} blocks, "
                                f"over {MAX_RAW_SAMPLES}")
        for value in values:
            _require_number(value, f"{where}.{side}[]", minimum=0)
            if value <= 0:
                raise ProtocolError(f"{where}.{side}[] must be above 0")
        counts.add(len(values))
    if len(counts) != 1:
        raise ProtocolError(f"{where} has unequal numbers of blocks per side")
    return counts.pop()


def _validate_pair_energy(energy: Any, where: str) -> None:
    """A pair's energy pass: the sensor, and either why there is no figure or each side's
    block energies per inference (mJ, above 0), as many on every side."""
    energy = _require_dict(energy, where)
    sensor = _require_dict(energy.get("sensor"), f"{where}.sensor")
    _require_type(sensor.get("kind"), str, f"{where}.sensor.kind")
    if "error" in energy:
        _require_type(energy["error"], str, f"{where}.error")
        return
    _require_number(energy.get("block_seconds"), f"{where}.block_seconds", minimum=0)
    _require_number(energy.get("seconds"), f"{where}.seconds", minimum=0)
    _blocks_per_side(energy.get("block_energy_mj"), f"{where}.block_energy_mj")


def _validate_variant(variant: dict[str, Any], where: str) -> None:
    status = variant.get("status")
    if status not in VARIANT_STATUSES:
        raise ProtocolError(f"{where}.status must be one of {VARIANT_STATUSES}, got {status!r}")
    if status == "failed":
        _require_type(variant.get("error"), str, f"{where}.error")
        return
    runtime = _require_dict(variant.get("runtime"), f"{where}.runtime")
    _require_type(runtime.get("name"), str, f"{where}.runtime.name")
    _require_type(runtime.get("version"), str, f"{where}.runtime.version")
    for key in ("load_ms", "first_inference_ms", "measured_seconds"):
        _require_number(variant.get(key), f"{where}.{key}", minimum=0)
    _require_number(variant.get("runs"), f"{where}.runs", minimum=1)
    _require_number(variant.get("threads"), f"{where}.threads", minimum=0)
    _require_number(variant.get("peak_rss_bytes"), f"{where}.peak_rss_bytes", minimum=1)
    latency = _require_dict(variant.get("latency_ms"), f"{where}.latency_ms")
    for key in LATENCY_KEYS:
        _require_number(latency.get(key), f"{where}.latency_ms.{key}", minimum=0)
    samples: list[Any] = variant.get("latency_samples_ms")  # type: ignore[assignment]
    _require_type(samples, list, f"{where}.latency_samples_ms")
    if len(samples) > MAX_RAW_SAMPLES:
        raise ProtocolError(f"{where}.latency_samples_ms has {len(samples)} samples, over the "
                            f"{MAX_RAW_SAMPLES} an agent ships at most")
    every = variant.get("latency_samples_every", 1)
    _require_number(every, f"{where}.latency_samples_every", minimum=1)
    expected = -(-int(variant["runs"]) // int(every))  # runs 0, k, 2k, ...
    if len(samples) != expected:
        raise ProtocolError(f"{where}.latency_samples_ms has {len(samples)} samples for "
                            f"{variant['runs']} runs" + (f" kept every {every}" if every != 1
                                                         else ""))
    for sample in samples:
        _require_number(sample, f"{where}.latency_samples_ms[]", minimum=0)
    if not latency["p50"] <= latency["p90"] <= latency["p99"]:
        raise ProtocolError(f"{where}.latency_ms percentiles are not ordered p50 <= p90 <= p99")
    _validate_optional_figures(variant, where)


def _validate_optional_figures(variant: dict[str, Any], where: str) -> None:
    """Figures newer agents add: checked when present, never required (older agents)."""
    for key in ("cv", "robust_cv"):
        if key in variant["latency_ms"]:
            _require_number(variant["latency_ms"][key], f"{where}.latency_ms.{key}", minimum=0)
    for key in OPTIONAL_FIGURES:
        if key in variant:
            _require_number(variant[key], f"{where}.{key}", minimum=0)
    for key in ("runtime_choice", "inputs"):
        if key in variant:
            _require_type(variant[key], str, f"{where}.{key}")
    if "verdict" in variant:
        verdict = _require_dict(variant["verdict"], f"{where}.verdict")
        if verdict.get("status") not in VERDICTS:
            raise ProtocolError(f"{where}.verdict.status must be one of {VERDICTS}, "
                                f"got {verdict.get('status')!r}")
        _require_texts(verdict.get("reasons"), f"{where}.verdict.reasons")
    if "thermal" in variant:
        thermal = _require_dict(variant["thermal"], f"{where}.thermal")
        for key in ("before", "after"):
            if key in thermal:
                _require_dict(thermal[key], f"{where}.thermal.{key}")
        if "throttled" in thermal:
            _require_texts(thermal["throttled"], f"{where}.thermal.throttled")
    if "power" in variant:
        power = _require_dict(variant["power"], f"{where}.power")
        for key in ("idle_power_w", "active_power_w", "energy_per_inference_j",
                    "sample_rate_hz"):
            if key in power:
                _require_number(power[key], f"{where}.power.{key}", minimum=0)
        if "error" in power:
            _require_type(power["error"], str, f"{where}.power.error")
    if "output_check" in variant:
        check = _require_dict(variant["output_check"], f"{where}.output_check")
        _require_type(check.get("ok"), bool, f"{where}.output_check.ok")
        _require_number(check.get("max_abs_diff"), f"{where}.output_check.max_abs_diff",
                        minimum=0)
        _require_number(check.get("top1_agreement"), f"{where}.output_check.top1_agreement",
                        minimum=0)
        for key in ("rule", "summary"):
            if key in check:
                _require_type(check[key], str, f"{where}.output_check.{key}")
    if "accelerator" in variant:
        accelerator = _require_dict(variant["accelerator"], f"{where}.accelerator")
        for key in ("requested", "used", "api"):
            _require_type(accelerator.get(key), str, f"{where}.accelerator.{key}")
        for key in ("adapter", "delegate"):
            if key in accelerator:
                _require_type(accelerator[key], str, f"{where}.accelerator.{key}")
        if "first_run_ms" in accelerator:
            _require_number(accelerator["first_run_ms"], f"{where}.accelerator.first_run_ms",
                            minimum=0)
    if "profile" in variant:
        _validate_profile(variant["profile"], f"{where}.profile")
    if "earlier_attempts" in variant:
        _require_type(variant["earlier_attempts"], list, f"{where}.earlier_attempts")
        for index, attempt in enumerate(variant["earlier_attempts"]):
            _require_dict(attempt, f"{where}.earlier_attempts[{index}]")


def _validate_profile(profile: Any, where: str) -> None:
    """A per-operator profile: one error line, or rows, a by-type summary and totals."""
    profile = _require_dict(profile, where)
    if "error" in profile:
        _require_type(profile["error"], str, f"{where}.error")
        return
    for key in ("ops", "by_type"):
        for index, entry in enumerate(_require_list(profile.get(key), f"{where}.{key}")):
            row = _require_dict(entry, f"{where}.{key}[{index}]")
            _require_type(row.get("op"), str, f"{where}.{key}[{index}].op")
            _require_number(row.get("mean_us"), f"{where}.{key}[{index}].mean_us", minimum=0)
            for figure in ("p50_us", "index", "share", "count"):
                if figure in row:
                    _require_number(row[figure], f"{where}.{key}[{index}].{figure}", minimum=0)
    total = _require_dict(profile.get("total_us"), f"{where}.total_us")
    _require_number(total.get("p50"), f"{where}.total_us.p50", minimum=0)
    _require_number(profile.get("ops_sum_us"), f"{where}.ops_sum_us", minimum=0)


def _require_list(value: Any, where: str) -> list[Any]:
    _require_type(value, list, where)
    return value  # type: ignore[no-any-return]


def _require_texts(value: Any, where: str) -> None:
    for index, text in enumerate(_require_list(value, where)):
        _require_type(text, str, f"{where}[{index}]")


def _check_version(document: dict[str, Any], where: str) -> None:
    version = document.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ProtocolError(
            f"{where}.schema_version is {version!r}; this side speaks {SCHEMA_VERSION}")


def _require_type(value: Any, expected: type, where: str) -> None:
    if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
        raise ProtocolError(f"{where} must be a {expected.__name__}, got {type(value).__name__}")


def _require_dict(value: Any, where: str) -> dict[str, Any]:
    _require_type(value, dict, where)
    return value  # type: ignore[no-any-return]


def _require_number(value: Any, where: str, *, minimum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"{where} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < minimum:
        raise ProtocolError(f"{where} must be a finite number >= {minimum}, got {value!r}")
