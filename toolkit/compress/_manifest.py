"""What compressing writes into a variant's entry of ``manifest.json``, key by key.

:func:`toolkit.artifacts.bundle.describe_artifact` takes these as they are: ``config``
(:class:`ChainDict`), ``details`` (:class:`ConversionDetails`, each recipe filling its own
keys; ``calibration`` is :class:`Calibration`), ``accuracy`` and ``eval_samples``
(:class:`Accuracy`).  The entry's ``fidelity`` and ``runtime_compat`` are the results'
types (:class:`toolkit.results.facts.Fidelity`, :class:`~toolkit.results.facts.RuntimeCheck`),
the manifest's ``selection`` the bundle's (:class:`toolkit.artifacts.bundle.Selection`).

Example::

    details: ConversionDetails = {"weights": "float16", "tool": "ai-edge-quantizer"}
"""

from __future__ import annotations

from typing import NotRequired, TypedDict


class ChainDict(TypedDict):
    """A chain as :meth:`Chain.to_dict` writes it: the recipe as given, each step's config,
    and the runtime when it is not TFLite (``onnxruntime``)."""

    recipe: str
    steps: list[dict[str, object]]
    runtime: NotRequired[str]


class Accuracy(TypedDict):
    """Top-1 accuracy (0-1) of a file over the labelled eval samples."""

    accuracy: float
    eval_samples: int


class Calibration(TypedDict):
    """How static int8 was calibrated."""

    samples_requested: int
    samples_used: int
    source: str
    method: str


class Budget(TypedDict):
    """``int8-mixed``'s budget in points: fp32's and all-int8's metric, the floor it kept."""

    max_drop_points: float
    fp32: float
    int8: float
    floor: float
    within: bool


class LayerPrecision(TypedDict):
    """One layer of an ``int8-mixed`` file: the precision planned and, when confirmed, the
    operator and weight type the file holds for it."""

    layer: str
    type: str
    precision: str
    confirmed: bool
    tflite_op: NotRequired[str]
    tflite_weights: NotRequired[str]


class IoTypes(TypedDict):
    """The dtypes of a file's inputs and outputs; ``note`` when not all are int8."""

    inputs: list[str]
    outputs: list[str]
    note: NotRequired[str]


class SensitivityTable(TypedDict):
    """:meth:`Sensitivity.to_dict`: the metric in points for fp32, all-int8 and each layer
    quantized alone (``layers``: rows of :class:`LayerSensitivity`)."""

    metric: str
    units: str
    fp32: float
    int8: float
    int8_sqnr_db: float | None
    layers: list[dict[str, object]]


class Clustering(TypedDict):
    """A chain that clusters: K, and the distinct weight values each layer holds."""

    clusters: int
    unique_weights_per_layer: dict[str, int]


class ConversionDetails(TypedDict, total=False):
    """``details``: what the conversion did; each recipe fills its own keys."""

    weights: str
    activations: str
    tool: str
    #: ONNX Runtime variants of a model file: how the float .onnx was exported (and its
    #: opset); ``format`` of a static int8 file (QDQ: QuantizeLinear/DequantizeLinear pairs).
    exporter: str
    format: str
    #: How litert-torch converted: its low-memory mode for models of 1 GiB and more.
    conversion: str
    #: int4-weight: Linear layers whose input is not a whole number of blocks.
    per_channel_linear: int
    calibration: Calibration
    # int8-mixed; each row of ``tried`` has the metric under its own name.
    metric: str
    budget: Budget
    float_layers: list[str]
    tried: list[dict[str, object]]
    layers: list[LayerPrecision]
    io: IoTypes
    sensitivity: SensitivityTable
    clustering: Clustering
