"""The JSON shapes a result record is made of, typed: one ``TypedDict`` per block, here only.

A record (:class:`toolkit.results.record.ResultRecord`) keeps three kinds of facts, each in
the shape it travels in, so that what the store and the reports read back is exactly what
was written:

- :class:`ArtifactFacts`: what is known about a file before it runs, as
  :meth:`toolkit.artifacts.bundle.Artifact.to_dict` writes it (the manifest's entry of a
  variant is :class:`ArtifactEntry`: the same with its name), with the host's
  :class:`Fidelity`, its :class:`RuntimeCheck` per runtime and the file's :class:`OpVersion`.
- :class:`BoardFacts`: the board as the agent reports it (``result.board``).
- :class:`Measurements`: the agent's figures for one variant (``result.variants[i]`` less
  its name, status, error and thread count): :class:`LatencySummary`, :class:`Verdict`,
  :class:`ThermalFacts`, the clocks (the wire's ``ClockBlock``), :class:`PowerFacts`,
  :class:`OutputCheck`, :class:`AcceleratorFacts`, :class:`Profile`, ...

:mod:`device_agent.protocol` defines and validates the wire format on both sides; these are
the host's types for what it reads of it.  A block is ``total=False`` where the protocol
has the key optional (older agents, boards without a sensor, older stored records).  A key
a newer agent adds that no type here names rides along in the same dict at run time and
is written back unchanged; only the keys named here are read.

The readers (``*_of``) type a decoded JSON object that was checked where it entered: an
agent's answer by :func:`device_agent.protocol.validate_result`, a stored record when it
was stored (the store keeps only records :meth:`ResultRecord.to_dict` wrote), the host's
own checks of a file (:func:`fidelity_of`, :func:`runtime_check_of`) as
:mod:`toolkit.compress` built them.

Example::

    board = board_of(result["board"])
    board.get("cpu_model")                    # str | None
    figures = measurements_of({"latency_ms": {"p50": 0.4}})
    figures["latency_ms"].get("p50")          # float | None
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Required, TypedDict, cast

# The clock block is read as the agent writes it: one definition, the wire's.
from device_agent.wire import ClockBlock

# --- the artifact's facts -------------------------------------------------------------


class Fidelity(TypedDict, total=False):
    """The file's outputs against the float model's on the host
    (:func:`toolkit.compress.evaluate.tflite_fidelity`, with how it was judged)."""

    top1_agreement: float | None
    cosine_similarity: float | None
    sqnr_db: float | None
    fidelity_samples: int
    #: ``top1`` for a classifier, ``cosine`` for a model without labels (an embedding).
    agreement_metric: str
    inputs_from: str
    reference: str
    #: Outputs without a signal on either side, when found: the figures judge nothing.
    degenerate: str


class RuntimeCheck(TypedDict, total=False):
    """One runtime the file was loaded and run under on the host (``runtime_compat``)."""

    name: str
    version: str
    loads: bool
    ok: bool
    error: str
    top1_agreement: float
    top1_agreement_with_source: float
    top1_agreement_with_host: float
    cosine_with_source: float
    degenerate: str
    #: The host ran the file on the runtime's built-in kernels (a file of 1 GiB or more).
    kernels: str


class OpVersion(TypedDict):
    """One operator code of the file: ``{"op": "CONV_2D", "version": 3}``."""

    op: str
    version: int


class ArtifactFacts(TypedDict, total=False):
    """What a record keeps of its file: :meth:`Artifact.to_dict` without the name."""

    file: str
    sha256: str
    size_bytes: int
    gzip_bytes: int | None
    #: The recipe as built, serialised by :mod:`toolkit.compress` (its own shape).
    config: Mapping[str, object]
    accuracy: float
    eval_samples: int
    compress_seconds: float | None
    details: Mapping[str, object]
    parameters: int | None
    nonzero_parameters: int | None
    macs: int | None
    fidelity: Fidelity | None
    calibration: Mapping[str, object] | None
    runtime_compat: list[RuntimeCheck]
    ops: list[OpVersion]
    oldest_runtime: str | None
    #: The version of each package that built the file, and edge's: ``{"edge": "0.1.0",
    #: "torch": "2.13.0", "litert-torch": "0.10.0", ...}`` (absent from older records).
    toolchain: dict[str, str]


class ArtifactEntry(ArtifactFacts, total=False):
    """A variant's entry in ``manifest.json``: its facts with its name and recipe."""

    variant: Required[str]
    recipe: Required[str]


# --- the board's facts ----------------------------------------------------------------


class BoardFacts(TypedDict, total=False):
    """The board as the agent reports it; only the first four are required by the protocol."""

    hostname: Required[str]
    machine: Required[str]
    system: Required[str]
    python: Required[str]
    release: str
    cpu_count: int
    cpu_model: str
    board_model: str
    #: Version of each TFLite runtime installed on the board, by distribution.
    runtimes: dict[str, str]
    #: The kernel's boot id: boards that share it share a machine (and its CPUs).
    boot_id: str
    cpu_governor: str
    #: The agent that measured: ``agent-<sha16>.pyz`` (named by its content), or ``source``.
    agent: str


# --- the agent's measurements ---------------------------------------------------------


class RuntimeFacts(TypedDict):
    """The runtime that ran the variant: ``{"name": "ai-edge-litert", "version": "2.3.0"}``."""

    name: str
    version: str


class LatencySummary(TypedDict, total=False):
    """Milliseconds per run: the protocol's ``LATENCY_KEYS``, and the spread when sent."""

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    cv: float
    #: MAD / median: what the board judges the spread of the runs by.
    robust_cv: float


class Verdict(TypedDict, total=False):
    """The board's judgement of its own measurement."""

    status: Required[str]  # VALID or INVALID
    reasons: list[str]
    #: Named conditions beside the status (``stalls: ...``).
    conditions: list[str]
    #: True when the spread of the runs was the only reason for INVALID.
    unsteady_only: bool


class ThermalSnapshot(TypedDict, total=False):
    """Temperatures (C) per thermal zone and clocks (MHz) per CPU at one moment."""

    zones_c: dict[str, float]
    cpu_mhz: dict[str, float]


class ThermalFacts(TypedDict, total=False):
    before: ThermalSnapshot
    after: ThermalSnapshot
    #: The throttling the board reported during the runs, one line each.
    throttled: list[str]


class PowerFacts(TypedDict, total=False):
    """The power sensor's figures (absent without a sensor), or why there are none."""

    sensor: Mapping[str, object]
    idle_power_w: float
    active_power_w: float
    energy_per_inference_j: float
    sample_rate_hz: float
    runs: int
    wall_seconds: float
    error: str


class OutputCheck(TypedDict, total=False):
    """The board's outputs against the host's reference outputs."""

    ok: bool
    max_abs_diff: float
    top1_agreement: float
    #: The rule of :func:`device_agent.outputs.compare_outputs` that judged them.
    rule: str
    summary: str
    degenerate: str


class AcceleratorFacts(TypedDict, total=False):
    """What ran the variant (see :mod:`device_agent.accelerators`)."""

    requested: str
    used: str
    api: str
    adapter: str
    delegate: str
    #: Why a compiled model fell back to the CPU, when it did.
    fallback: str
    fully_accelerated: bool
    delegate_partitions: int
    first_run_ms: float


class ProfileRow(TypedDict, total=False):
    """One operator of a per-operator profile (``ops``) or one op type (``by_type``)."""

    op: Required[str]
    mean_us: Required[float]
    p50_us: float
    index: int
    share: float
    count: int
    kernel: str
    #: ONNX Runtime: the execution provider that really ran the node.
    provider: str
    node: int
    node_op: str
    #: The node's output tensor name, read from the file by the host.
    node_name: str
    version: int
    output_shape: list[int]


class Profile(TypedDict, total=False):
    """The per-operator profile of :mod:`device_agent.profiler`, or ``{"error": ...}``."""

    error: str
    method: str
    runs: int
    ops: list[ProfileRow]
    by_type: list[ProfileRow]
    total_us: LatencySummary
    ops_sum_us: float
    #: The profiled pass's total against the unprofiled p50, as a fraction.
    overhead: float
    #: The share of the profiled run the operators account for.
    coverage: float
    runtime: RuntimeFacts


class EarlierAttempt(TypedDict, total=False):
    """A measurement of the variant that was INVALID for its spread and measured again."""

    verdict: Verdict
    latency_ms: LatencySummary


class Measurements(TypedDict, total=False):
    """The agent's figures for one measured variant, and what the host adds to them."""

    runtime: RuntimeFacts
    load_ms: float
    first_inference_ms: float
    measured_seconds: float
    runs: int
    peak_rss_bytes: int
    latency_ms: LatencySummary
    latency_samples_ms: list[float]
    #: k: the raw samples are every k-th run (absent: every run).
    latency_samples_every: int
    model_load_ms: float
    allocate_ms: float
    warmup_runs_done: int
    wall_seconds: float
    load_rss_growth_bytes: int
    runtime_choice: str
    #: What the timed runs were fed: the host's first reference input, or synthetic values.
    inputs: str
    verdict: Verdict
    thermal: ThermalFacts
    #: The governor and clocks per CPU cluster before and after the runs.
    clocks: ClockBlock
    power: PowerFacts
    output_check: OutputCheck
    accelerator: AcceleratorFacts
    profile: Profile
    earlier_attempts: list[EarlierAttempt]
    cooldown: Mapping[str, object]
    #: Added by the host: ``edge deploy --against``'s paired measurement of this variant
    #: (:meth:`toolkit.gate.paired.PairedOutcome.for_variant`, its own shape).
    paired: Mapping[str, object]


# --- the stored record ----------------------------------------------------------------


class StoredRecord(ArtifactFacts, Measurements, total=False):
    """A record as the store keeps it (``record_version`` 2): its own keys, beside the
    artifact's facts and the measurements, flat; the board's facts under ``board``.

    :meth:`toolkit.results.record.ResultRecord.to_dict` writes it and ``from_dict`` reads it
    back, with every older shape (see that module).
    """

    record_version: int
    target: Required[str]
    #: The recipe, or in a ``--threads`` sweep ``recipe-tTHREADS``.
    variant: Required[str]
    recipe: str
    status: str
    threads: int
    stage: str
    error: str
    error_class: str
    board: BoardFacts
    chosen: str
    measured_beside: list[str]


# --- readers --------------------------------------------------------------------------


def board_of(data: Mapping[str, object]) -> BoardFacts:
    """A checked ``board`` object (an agent's answer's, or a stored record's), typed."""
    return cast(BoardFacts, dict(data))


def measurements_of(data: Mapping[str, object]) -> Measurements:
    """A checked variant's figures (an agent's answer's, or a stored record's), typed."""
    return cast(Measurements, dict(data))


def fidelity_of(data: Mapping[str, object]) -> Fidelity:
    """The host's fidelity figures as :mod:`toolkit.compress` computed them, typed."""
    return cast(Fidelity, dict(data))


def runtime_check_of(data: Mapping[str, object]) -> RuntimeCheck:
    """One runtime's check of a file as :mod:`toolkit.compress` made it, typed."""
    return cast(RuntimeCheck, dict(data))


def artifact_facts_of(data: Mapping[str, object]) -> ArtifactFacts:
    """The :data:`ARTIFACT_KEYS` of a stored record (or a manifest entry), typed."""
    return cast(ArtifactFacts, {k: v for k, v in data.items() if k in ARTIFACT_KEYS})


#: The keys :class:`ArtifactFacts` names: what a stored record holds of its file.
ARTIFACT_KEYS = frozenset(ArtifactFacts.__annotations__)
#: The keys of a :class:`StoredRecord` that are the record's own (neither the artifact's
#: nor a measurement).
RECORD_KEYS = (frozenset(StoredRecord.__annotations__) - ARTIFACT_KEYS
               - frozenset(Measurements.__annotations__))
