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
  ``{"error": ...}`` saying why there is none), ``clocks`` (``before`` and ``after``: the
  governor of the CPUs that ran, each cluster's governor and clocks, a Jetson's power mode;
  see :mod:`device_agent.clocks`).
- result board: ``cpu_governor`` (the governor of the clusters the agent runs on, ``mixed``
  or ``not exposed``); job: setting ``set_governor``.
- job: per-variant ``accelerator`` (an ``--accelerator`` sweep); settings ``accelerator``,
  ``api``, ``delegate`` and ``delegate_options``.
- job: ``pairs`` (a paired job, :mod:`device_agent.paired`): each ``{"name", "baseline",
  "candidate"}`` names two of the job's variants (files) measured interleaved in one child;
  ``paired`` holds its :class:`~device_agent.paired.PairedSettings`.  The result then has
  ``pairs`` (one per pair, in order: block medians and 90th percentiles per side, the
  board's verdict, or ``status: failed`` with its ``error``) and an empty ``variants``.
  A pair measured with a power sensor has ``energy``: the ``sensor``, and either
  ``block_energy_mj`` per side (with ``block_seconds``, ``rounds``, ``seconds``) or the
  ``error`` that left it without a figure; no sensor, no ``energy``.  A measured pair has
  ``clocks`` too, as a variant does: ``before`` its first run and ``after`` its last round.

The whole job has one deadline, :func:`job_budget_seconds`: the host waits that long
(plus its own transfer time) and the agent enforces it too.

Example::

    job = make_job(job_id="abc", variants=[{"name": "fp32", "file": "fp32.tflite",
                                             "sha256": "..."}])
    result = parse_result(agent_stdout_bytes, job)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping, Sequence, Union, cast

from .checks import (
    ProtocolError,
    check_version,
    require_choice,
    require_dict,
    require_list,
    require_number,
    require_text,
    require_texts,
    require_type,
    validate_clock_block,
)
from .paired_answer import validate_pair_results
from .settings import (
    ACCELERATORS,
    APIS,
    DEFAULT_SETTINGS,
    MIN_TRIPLES,
    OPTIONAL_SETTINGS,
    RUNTIMES,
    SETTING_NAMES,
    SIDES,
    TEXT_SETTINGS,
    JobSettings,
    PairedSettings,
    check_setting_names,
)
from .wire import (
    LATENCY_KEYS,
    MAX_RAW_SAMPLES,
    VARIANT_STATUSES,
    VERDICTS,
    Answer,
    Job,
    JobVariant,
)

SCHEMA_VERSION = 1

#: Upper bound on an agent answer: numbers and raw latency samples (up to MAX_RAW_SAMPLES
#: per variant, whole nanoseconds in ms: about 9 bytes each), never payloads.
MAX_RESULT_BYTES = 32 * 1024 * 1024

#: The part of a job's budget that is not the variants': starting Python, importing numpy and
#: the runtime (seconds on a small board), forking, and printing the answer.
JOB_STARTUP_SECONDS = 60.0

#: Board facts besides the required ones: text when an agent sends them (reports show them).
OPTIONAL_BOARD_TEXT = ("release", "cpu_model", "board_model", "cpu_governor", "agent")
#: Figures of a measured variant besides the required ones: numbers >= 0 when sent.
OPTIONAL_FIGURES = ("model_load_ms", "allocate_ms", "warmup_runs_done", "wall_seconds",
                    "load_rss_growth_bytes")



def sha256_file(path: str | Path) -> str:
    """The sha256 a job names a file by, read in blocks (models can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()



def job_settings(job: Job) -> JobSettings:
    """A job's settings with every default filled in (an older host's job lacks the newer)."""
    return JobSettings.from_dict(job["settings"])


def job_budget_seconds(job: Job) -> float:
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
    if float(settings.job_timeout_seconds) > 0:
        return float(settings.job_timeout_seconds)
    count = len(job["variants"]) * max(1, int(settings.attempts))
    cooling = float(settings.cooldown_max_seconds) if settings.cooldown_to_c > 0 else 0.0
    return (JOB_STARTUP_SECONDS
            + count * (float(settings.variant_timeout_seconds) + cooling)
            + max(0, count - 1) * float(settings.cooldown_seconds))


def make_job(*, job_id: str, variants: Sequence[Union[JobVariant, Mapping[str, object]]],
             settings: JobSettings | Mapping[str, object] | None = None) -> Job:
    """Build a job document; settings not given take :class:`JobSettings`' defaults.

    ``variants`` are checked as :func:`validate_job` checks them.  A mapping naming a
    setting that does not exist is a :class:`ProtocolError`.
    """
    if not isinstance(settings, JobSettings):
        settings = JobSettings.from_dict(settings or {})
    return validate_job({"schema_version": SCHEMA_VERSION, "job_id": job_id,
                         "variants": variants, "settings": settings.to_dict()})


def validate_job(job: object) -> Job:
    """Check a job document, as the agent does before running anything."""
    document = require_dict(job, "job")
    check_version(document, "job", SCHEMA_VERSION)
    require_type(document.get("job_id"), str, "job.job_id")
    variants = require_list(document.get("variants"), "job.variants")
    if not variants:
        raise ProtocolError("job.variants is empty")
    names = set()
    for index, entry in enumerate(variants):
        where = f"job.variants[{index}]"
        variant = require_dict(entry, where)
        name = require_text(variant.get("name"), f"{where}.name")
        for key in ("file", "sha256"):
            require_type(variant.get(key), str, f"{where}.{key}")
        if "threads" in variant:  # per-variant override: how a --threads sweep travels
            require_number(variant["threads"], f"{where}.threads", minimum=0)
        if "reference" in variant:
            require_type(variant["reference"], str, f"{where}.reference")
        if "accelerator" in variant:  # per-variant override: how an --accelerator sweep travels
            require_choice(variant["accelerator"], ACCELERATORS, f"{where}.accelerator")
        if name in names:
            raise ProtocolError(f"{where}.name {name!r} is repeated")
        names.add(name)
    if "pairs" in document:
        _validate_pairs(document, names)
    settings = require_dict(document.get("settings"), "job.settings")
    for key in DEFAULT_SETTINGS:
        require_number(settings.get(key), f"job.settings.{key}", minimum=0)
    JobSettings.from_dict(settings)  # the optional ones default; a misspelt one is refused
    return cast(Job, job)


def _validate_pairs(job: Mapping[str, object], files: set[str]) -> None:
    pairs = require_list(job["pairs"], "job.pairs")
    if not pairs:
        raise ProtocolError("job.pairs is empty")
    seen = set()
    for index, entry in enumerate(pairs):
        where = f"job.pairs[{index}]"
        pair = require_dict(entry, where)
        for key in ("name", "baseline", "candidate"):
            require_type(pair.get(key), str, f"{where}.{key}")
        for key in ("baseline", "candidate"):
            if pair[key] not in files:
                raise ProtocolError(f"{where}.{key} {pair[key]!r} is not a variant of the job")
        if pair["name"] in seen or pair["name"] in files:
            raise ProtocolError(f"{where}.name {pair['name']!r} is repeated")
        seen.add(pair["name"])
    try:
        PairedSettings.from_dict(require_dict(job.get("paired", {}), "job.paired"))
    except ValueError as exc:
        raise ProtocolError(f"job.paired: {exc}") from None


def parse_result(raw: bytes, job: Job) -> Answer:
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


def validate_result(result: object, job: Job) -> Answer:
    """Check a decoded result against the schema and against the job it answers."""
    document = require_dict(result, "result")
    check_version(document, "result", SCHEMA_VERSION)
    if document.get("job_id") != job["job_id"]:
        raise ProtocolError(
            f"result.job_id {document.get('job_id')!r} does not answer job {job['job_id']!r}")
    board = require_dict(document.get("board"), "result.board")
    for key in ("hostname", "machine", "system", "python"):
        require_type(board.get(key), str, f"result.board.{key}")
    for key in OPTIONAL_BOARD_TEXT:
        if key in board:
            require_type(board[key], str, f"result.board.{key}")
    if "cpu_count" in board:
        require_number(board["cpu_count"], "result.board.cpu_count", minimum=0)
    variants = require_list(document.get("variants"), "result.variants")
    expected = [] if job.get("pairs") else [v["name"] for v in job["variants"]]
    got = [v.get("name") if isinstance(v, dict) else None for v in variants]
    if got != expected:
        raise ProtocolError(f"result.variants are {got}, expected {expected}")
    for index, variant in enumerate(variants):
        _validate_variant(require_dict(variant, f"result.variants[{index}]"),
                          f"result.variants[{index}]")
    if job.get("pairs"):
        validate_pair_results(document.get("pairs"), [p["name"] for p in job["pairs"]])
    return cast(Answer, result)


def _validate_variant(variant: Mapping[str, object], where: str) -> None:
    status = variant.get("status")
    if status not in VARIANT_STATUSES:
        raise ProtocolError(f"{where}.status must be one of {VARIANT_STATUSES}, got {status!r}")
    if status == "failed":
        require_type(variant.get("error"), str, f"{where}.error")
        return
    runtime = require_dict(variant.get("runtime"), f"{where}.runtime")
    require_type(runtime.get("name"), str, f"{where}.runtime.name")
    require_type(runtime.get("version"), str, f"{where}.runtime.version")
    for key in ("load_ms", "first_inference_ms", "measured_seconds"):
        require_number(variant.get(key), f"{where}.{key}", minimum=0)
    runs = require_number(variant.get("runs"), f"{where}.runs", minimum=1)
    require_number(variant.get("threads"), f"{where}.threads", minimum=0)
    require_number(variant.get("peak_rss_bytes"), f"{where}.peak_rss_bytes", minimum=1)
    latency = require_dict(variant.get("latency_ms"), f"{where}.latency_ms")
    figures = {key: require_number(latency.get(key), f"{where}.latency_ms.{key}", minimum=0)
               for key in LATENCY_KEYS}
    samples = require_list(variant.get("latency_samples_ms"), f"{where}.latency_samples_ms")
    if len(samples) > MAX_RAW_SAMPLES:
        raise ProtocolError(f"{where}.latency_samples_ms has {len(samples)} samples, over the "
                            f"{MAX_RAW_SAMPLES} an agent ships at most")
    every = require_number(variant.get("latency_samples_every", 1),
                           f"{where}.latency_samples_every", minimum=1)
    expected = -(-int(runs) // int(every))  # runs 0, k, 2k, ...
    if len(samples) != expected:
        raise ProtocolError(f"{where}.latency_samples_ms has {len(samples)} samples for "
                            f"{variant['runs']} runs" + (f" kept every {every}" if every != 1
                                                         else ""))
    for sample in samples:
        require_number(sample, f"{where}.latency_samples_ms[]", minimum=0)
    if not figures["p50"] <= figures["p90"] <= figures["p99"]:
        raise ProtocolError(f"{where}.latency_ms percentiles are not ordered p50 <= p90 <= p99")
    _validate_optional_figures(variant, latency, where)


def _validate_optional_figures(variant: Mapping[str, object], latency: Mapping[str, object],
                               where: str) -> None:
    """Figures newer agents add: checked when present, never required (older agents)."""
    for key in ("cv", "robust_cv"):
        if key in latency:
            require_number(latency[key], f"{where}.latency_ms.{key}", minimum=0)
    for key in OPTIONAL_FIGURES:
        if key in variant:
            require_number(variant[key], f"{where}.{key}", minimum=0)
    for key in ("runtime_choice", "inputs"):
        if key in variant:
            require_type(variant[key], str, f"{where}.{key}")
    if "verdict" in variant:
        verdict = require_dict(variant["verdict"], f"{where}.verdict")
        if verdict.get("status") not in VERDICTS:
            raise ProtocolError(f"{where}.verdict.status must be one of {VERDICTS}, "
                                f"got {verdict.get('status')!r}")
        require_texts(verdict.get("reasons"), f"{where}.verdict.reasons")
    if "thermal" in variant:
        thermal = require_dict(variant["thermal"], f"{where}.thermal")
        for key in ("before", "after"):
            if key in thermal:
                require_dict(thermal[key], f"{where}.thermal.{key}")
        if "throttled" in thermal:
            require_texts(thermal["throttled"], f"{where}.thermal.throttled")
    if "clocks" in variant:
        validate_clock_block(variant["clocks"], f"{where}.clocks")
    if "power" in variant:
        power = require_dict(variant["power"], f"{where}.power")
        for key in ("idle_power_w", "active_power_w", "energy_per_inference_j",
                    "sample_rate_hz"):
            if key in power:
                require_number(power[key], f"{where}.power.{key}", minimum=0)
        if "error" in power:
            require_type(power["error"], str, f"{where}.power.error")
    if "output_check" in variant:
        check = require_dict(variant["output_check"], f"{where}.output_check")
        require_type(check.get("ok"), bool, f"{where}.output_check.ok")
        require_number(check.get("max_abs_diff"), f"{where}.output_check.max_abs_diff",
                       minimum=0)
        require_number(check.get("top1_agreement"), f"{where}.output_check.top1_agreement",
                       minimum=0)
        for key in ("rule", "summary"):
            if key in check:
                require_type(check[key], str, f"{where}.output_check.{key}")
    if "accelerator" in variant:
        accelerator = require_dict(variant["accelerator"], f"{where}.accelerator")
        for key in ("requested", "used", "api"):
            require_type(accelerator.get(key), str, f"{where}.accelerator.{key}")
        for key in ("adapter", "delegate"):
            if key in accelerator:
                require_type(accelerator[key], str, f"{where}.accelerator.{key}")
        if "first_run_ms" in accelerator:
            require_number(accelerator["first_run_ms"], f"{where}.accelerator.first_run_ms",
                           minimum=0)
    if "profile" in variant:
        _validate_profile(variant["profile"], f"{where}.profile")
    if "earlier_attempts" in variant:
        attempts = require_list(variant["earlier_attempts"], f"{where}.earlier_attempts")
        for index, attempt in enumerate(attempts):
            require_dict(attempt, f"{where}.earlier_attempts[{index}]")


def _validate_profile(value: object, where: str) -> None:
    """A per-operator profile: one error line, or rows, a by-type summary and totals."""
    profile = require_dict(value, where)
    if "error" in profile:
        require_type(profile["error"], str, f"{where}.error")
        return
    for key in ("ops", "by_type"):
        for index, entry in enumerate(require_list(profile.get(key), f"{where}.{key}")):
            row = require_dict(entry, f"{where}.{key}[{index}]")
            require_type(row.get("op"), str, f"{where}.{key}[{index}].op")
            require_number(row.get("mean_us"), f"{where}.{key}[{index}].mean_us", minimum=0)
            for figure in ("p50_us", "index", "share", "count"):
                if figure in row:
                    require_number(row[figure], f"{where}.{key}[{index}].{figure}", minimum=0)
            for text in ("kernel", "provider"):
                if text in row:
                    require_type(row[text], str, f"{where}.{key}[{index}].{text}")
    total = require_dict(profile.get("total_us"), f"{where}.total_us")
    require_number(total.get("p50"), f"{where}.total_us.p50", minimum=0)
    require_number(profile.get("ops_sum_us"), f"{where}.ops_sum_us", minimum=0)


# JobSettings, PairedSettings, ProtocolError and the settings' constants live in
# device_agent.settings and .checks; the host reaches them here, as it always did.
__all__ = ["ACCELERATORS", "APIS", "DEFAULT_SETTINGS", "JOB_STARTUP_SECONDS", "LATENCY_KEYS",
           "MAX_RAW_SAMPLES", "MAX_RESULT_BYTES", "MIN_TRIPLES", "OPTIONAL_BOARD_TEXT",
           "OPTIONAL_FIGURES", "OPTIONAL_SETTINGS", "RUNTIMES", "SCHEMA_VERSION",
           "SETTING_NAMES", "SIDES", "TEXT_SETTINGS", "VARIANT_STATUSES", "VERDICTS",
           "JobSettings", "PairedSettings", "ProtocolError", "check_setting_names",
           "job_budget_seconds", "job_settings", "make_job", "parse_result", "sha256_file",
           "validate_job", "validate_result"]
