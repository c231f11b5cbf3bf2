"""The JSON shapes of the job (host -> board) and the answer (board -> host), one type each.

The one place that knows what each document and block holds: :mod:`device_agent.protocol`
checks documents against these shapes, the agent builds its answer in them, and the host
reads them.  Keys that an older agent or host may leave out are optional (``total=False``);
``protocol``'s module docstring says which arrived when.

These bodies are evaluated at run time on the board's Python (3.8 or 3.9): ``typing.List``,
``Dict`` and ``Optional`` inside them, never ``list[int]`` or ``X | Y``.

Example::

    variant: JobVariant = {"name": "fp32", "file": "fp32.tflite", "sha256": "..."}
    answer: Answer = protocol.parse_result(raw, job)
    answer["variants"][0]["latency_ms"]["p50"]
"""

from __future__ import annotations

from typing import Dict, List, Optional, TypedDict, Union

#: A value that really is arbitrary JSON (a delegate's options, a child's raw answer).
JsonValue = Union[None, bool, int, float, str, List["JsonValue"], Dict[str, "JsonValue"]]
#: What one ``delegate_options`` entry may be: the delegate receives it as text.
DelegateOption = Union[str, int, float, bool]
#: The job's ``settings`` as they travel: see :class:`device_agent.settings.JobSettings`.
SettingValue = Union[int, float, str, Dict[str, DelegateOption]]
SettingsDict = Dict[str, SettingValue]

#: Raw samples shipped per variant at most: a microsecond model reaching the time floor runs
#: hundreds of thousands of times; the summary is computed from every run on the board,
#: and an evenly spaced subset this large is plenty for plots and the bootstrap of edge check.
MAX_RAW_SAMPLES = 50_000
VARIANT_STATUSES = ("ok", "failed")
VERDICTS = ("VALID", "INVALID")
#: The keys of every latency summary (:class:`LatencySummary`).
LATENCY_KEYS = ("p50", "p90", "p99", "mean", "std", "min", "max")


# --- the job ---------------------------------------------------------------------------------


class _JobVariantRequired(TypedDict):
    name: str
    file: str
    sha256: str


class JobVariant(_JobVariantRequired, total=False):
    """One file of a job: per-variant overrides of a ``--threads`` or ``--accelerator`` sweep,
    and the host's reference ``.npz`` beside it."""

    threads: int
    accelerator: str
    reference: str


class JobPair(TypedDict):
    """Two variants of a paired job, measured interleaved in one child."""

    name: str
    baseline: str
    candidate: str


class _JobRequired(TypedDict):
    schema_version: int
    job_id: str
    variants: List[JobVariant]
    settings: SettingsDict


class Job(_JobRequired, total=False):
    pairs: List[JobPair]
    #: :class:`device_agent.settings.PairedSettings` by name.
    paired: Dict[str, float]


# --- blocks of the answer --------------------------------------------------------------------


class RuntimeFacts(TypedDict):
    name: str
    version: str


class BoardFacts(TypedDict, total=False):
    hostname: str
    system: str
    release: str
    machine: str
    python: str
    cpu_count: int
    cpu_model: str
    board_model: str
    runtimes: Dict[str, str]
    boot_id: str
    #: The governor of the CPU clusters the agent runs on, ``mixed`` when they differ,
    #: ``not exposed`` without cpufreq (:mod:`device_agent.clocks`).
    cpu_governor: str
    #: The agent's own package, ``agent-<sha16>.pyz`` (its content hash), or ``source``.
    agent: str


class _Percentiles(TypedDict):
    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float


class LatencySummary(_Percentiles, total=False):
    cv: float
    robust_cv: float


class Verdict(TypedDict, total=False):
    status: str
    reasons: List[str]
    conditions: List[str]
    unsteady_only: bool


class ThermalState(TypedDict, total=False):
    zones_c: Dict[str, float]
    cpu_mhz: Dict[str, float]
    throttled_raw: str
    throttled_flags: List[str]
    throttled_now: bool


class ClusterClock(TypedDict, total=False):
    """One CPU cluster (a cpufreq policy): its CPUs, governor and clocks in MHz; a clock
    file the kernel does not expose is left out."""

    cpus: List[int]
    governor: str
    cur_mhz: float
    min_mhz: float
    max_mhz: float
    cpuinfo_max_mhz: float


class JetsonClocks(TypedDict, total=False):
    """A Jetson's power mode (and where it was read), and whether ``jetson_clocks`` looks
    applied (every cluster's minimum clock at its maximum)."""

    nvpmodel: str
    nvpmodel_source: str
    jetson_clocks: bool


class ClockState(TypedDict, total=False):
    """The clock policy at one moment (:func:`device_agent.clocks.clock_state`)."""

    governor: str
    clusters: List[ClusterClock]
    jetson: JetsonClocks


class ClockBlock(TypedDict, total=False):
    before: ClockState
    after: ClockState


class ThermalBlock(TypedDict, total=False):
    before: ThermalState
    after: ThermalState
    throttled: List[str]


class Cooldown(TypedDict, total=False):
    """The pause before a variant and the wait for the board to cool."""

    paused_s: float
    target_c: float
    waited_s: float
    start_c: Optional[float]
    end_c: Optional[float]
    reached: Optional[bool]


class SensorFacts(TypedDict):
    kind: str
    misses: str


class PowerFigures(TypedDict, total=False):
    """A variant's energy pass; ``error`` instead of the figures when there are none."""

    sensor: SensorFacts
    rate_hz_asked: float
    runs: int
    wall_seconds: float
    latency_mean_ms: float
    latency_p50_ms: float
    active_power_w: float
    energy_per_inference_j: float
    sample_rate_hz: float
    active_samples: float
    idle_power_w: float
    energy_above_idle_per_inference_j: float
    error: str


class OutputComparison(TypedDict):
    """What :func:`device_agent.outputs.compare_outputs` found."""

    ok: bool
    rule: str
    samples: int
    max_abs_diff: float
    max_steps: Optional[float]
    max_relative_error: float
    sqnr_db: Optional[float]
    top1_agreement: float
    min_cosine: float
    metric: str
    degenerate: str
    summary: str


class OutputCheck(OutputComparison, total=False):
    atol: float
    min_top1: float


class AcceleratorFacts(TypedDict, total=False):
    """What ran (see :mod:`device_agent.accelerators`): asked for, used, and how."""

    requested: str
    used: str
    api: str
    kernels: str
    delegate: str
    delegate_options: Dict[str, str]
    delegate_partitions: int
    xnnpack_partitions: int
    fully_accelerated: bool
    fallback: str
    adapter: str
    adapter_type: str
    backend: str
    software: bool
    note: str
    probe_seconds: float
    timing: str
    precision: str
    create_ms: float
    first_run_ms: float
    #: ONNX Runtime: the execution providers the session registered, in ORT's order.
    providers: List[str]


class ProfileRow(TypedDict, total=False):
    """One operator as it ran (``ops``), or one operator type (``by_type``)."""

    index: int
    op: str
    kernel: str
    source: str
    #: ONNX Runtime: the execution provider that really ran the node.
    provider: str
    p50_us: float
    mean_us: float
    count: int
    share: float
    node: int
    node_op: str
    version: Optional[int]
    output_shape: Optional[List[int]]


class Profile(TypedDict, total=False):
    """A per-operator profile (:mod:`device_agent.profiler`), or the ``error`` why none."""

    error: str
    runs: int
    ops: List[ProfileRow]
    by_type: List[ProfileRow]
    total_us: Dict[str, float]
    ops_sum_us: float
    coverage: float
    nodes_mapped: int
    method: str
    runtime: RuntimeFacts
    threads: int
    baseline_us: float
    overhead: Optional[float]


class Attempt(TypedDict):
    """An earlier measurement of a variant, INVALID only for its spread."""

    verdict: Verdict
    latency_ms: LatencySummary
    runs: int
    wall_seconds: Optional[float]


class VariantFigures(TypedDict, total=False):
    """One variant's measurement (``status: ok``), or why it failed (``error``)."""

    status: str
    error: str
    runtime: RuntimeFacts
    runtime_choice: str
    threads: int
    load_ms: float
    model_load_ms: float
    allocate_ms: float
    first_inference_ms: float
    warmup_runs_done: int
    runs: int
    measured_seconds: float
    wall_seconds: float
    latency_ms: LatencySummary
    latency_samples_ms: List[float]
    latency_samples_every: int
    inputs: str
    peak_rss_bytes: int
    load_rss_growth_bytes: int
    thermal: ThermalBlock
    clocks: ClockBlock
    accelerator: AcceleratorFacts
    power: PowerFigures
    output_check: OutputCheck
    profile: Profile
    verdict: Verdict
    earlier_attempts: List[Attempt]
    cooldown: Cooldown


class VariantAnswer(VariantFigures):
    name: str


# --- blocks of a paired answer ---------------------------------------------------------------

#: Per side (``baseline``, ``control``, ``candidate``), one figure per block.
SideBlocks = Dict[str, List[float]]


class Judgement(TypedDict, total=False):
    """:func:`device_agent.paired.judge`'s verdict on log ratios of one figure."""

    verdict: str
    ratio: float
    control_ratio: float
    triples: int
    confidence_each_look: float
    floor: float
    interval: List[float]
    reason: str


class PairEnergy(TypedDict, total=False):
    """A pair's energy pass: ``block_energy_mj`` per side, or the ``error`` why none."""

    sensor: SensorFacts
    error: str
    block_seconds: float
    rate_hz_asked: float
    rounds: int
    seconds: float
    block_energy_mj: SideBlocks
    samples: int
    board_verdict: Judgement
    runs: Dict[str, int]


class PairFigures(TypedDict, total=False):
    """One pair's interleaved measurement, or why it failed (``error``)."""

    status: str
    error: str
    runtime: RuntimeFacts
    threads: int
    accelerator: str
    block_runs: int
    rounds: int
    seconds: float
    block_median_ms: SideBlocks
    block_p90_ms: SideBlocks
    latency_ms: Dict[str, LatencySummary]
    board_verdicts: Dict[str, Judgement]
    #: The clock policy just before the pair's first run and just after its last latency round.
    clocks: ClockBlock
    energy: PairEnergy


class PairAnswer(PairFigures):
    name: str


# --- the answer ------------------------------------------------------------------------------


class _AnswerRequired(TypedDict):
    schema_version: int
    job_id: str
    board: BoardFacts
    variants: List[VariantAnswer]


class Answer(_AnswerRequired, total=False):
    pairs: List[PairAnswer]


# --- ``agent facts``: what ``edge doctor`` asks of a board -----------------------------------


class AcceleratorCheck(TypedDict):
    name: str
    ok: bool
    detail: str
    warning: bool


class LoadCheck(TypedDict):
    accelerator: str
    ok: bool
    detail: str


class BoardHealth(TypedDict, total=False):
    board: BoardFacts
    thermal: ThermalState
    clocks: ClockState
    cwd: str
    free_bytes: int
    runtime: RuntimeFacts
    runtime_choice: str
    runtime_error: str
    accelerators: List[AcceleratorCheck]
    model_loads: List[LoadCheck]
    power_sensor: Optional[SensorFacts]
    power_watts: Optional[float]
    power_error: str
    time: float
