"""Recipe configs and the chain grammar (``prune-channels:0.5+distill+int8``).

A chain is zero or more model *transforms* (pruning, distillation) applied to
the torch module, then exactly one *conversion* to ``.tflite`` (``fp32`` when
none is named; ``qat`` fine-tunes as it converts, ``int8-mixed`` measures as it
converts).  Each step is one frozen config; the chain serialises to a dict
for the manifest.

Example::

    [chain] = parse_recipes("prune:0.8+int8")
    chain.transforms   # (PruneConfig(sparsity=0.8, ...),)
    chain.conversion   # Int8StaticConfig(...)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from toolkit.errors import UsageError

if TYPE_CHECKING:
    from toolkit.compress._manifest import ChainDict


class _Config:
    recipe: str
    #: The distributions this step uses, building from a PyTorch model, besides the
    #: converter (``toolkit.compress._toolchain``): what a variant's record names as its
    #: toolchain.  A ``.tflite`` or an ``.onnx`` given is rewritten by other tools.
    TOOLS: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True, kw_only=True)
class Fp32Config(_Config):
    """The float baseline: the model as litert-torch converts it."""

    recipe: str = "fp32"


@dataclass(frozen=True, kw_only=True)
class Fp16Config(_Config):
    """float16 weights, float32 compute (weights are dequantized once at load)."""

    recipe: str = "fp16"
    TOOLS = ("ai-edge-quantizer",)


@dataclass(frozen=True, kw_only=True)
class Int8DynamicConfig(_Config):
    """Dynamic range: int8 weights, float activations quantized on the fly.

    Linear layers use per-tensor weights: per-channel Linear emits FULLY_CONNECTED
    version 12, which tflite-runtime 2.14 refuses to load.  Convolutions stay
    per-channel (per-tensor depthwise computes garbage).
    """

    recipe: str = "int8-dynamic"
    TOOLS = ("ai-edge-quantizer",)


@dataclass(frozen=True, kw_only=True)
class Int4WeightConfig(_Config):
    """4-bit weights for linear-heavy models: Linear weights int4 in blocks of
    ``block_size`` along the input (one scale per block), embedding tables int4 per row;
    activations stay float.  Runtimes without int4 kernels (tflite-runtime 2.14) refuse it.
    """

    recipe: str = "int4-weight"
    TOOLS = ("ai-edge-quantizer",)
    block_size: int = 32

    def __post_init__(self) -> None:
        if self.block_size not in INT4_BLOCK_SIZES:
            raise UsageError(f"int4-weight:{self.block_size}: the block size is one of "
                             f"{', '.join(map(str, INT4_BLOCK_SIZES))}")


#: Block sizes ai-edge-quantizer offers for blockwise weights.
INT4_BLOCK_SIZES = (32, 64, 128, 256)


@dataclass(frozen=True, kw_only=True)
class Int8StaticConfig(_Config):
    """Full-integer static PTQ (PT2E): int8 weights per channel, int8 activations and I/O."""

    recipe: str = "int8"
    TOOLS = ("torchao",)
    calibration_samples: int = 128
    per_channel: bool = True

    def __post_init__(self) -> None:
        if self.calibration_samples < 1:
            raise UsageError("int8 needs at least 1 calibration sample")


@dataclass(frozen=True, kw_only=True)
class FineTune(_Config):
    """Shared fine-tuning settings of the transforms that retrain."""

    recipe: str = ""
    epochs: int = 4
    learning_rate: float = 1e-3
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.learning_rate <= 0 or self.batch_size < 1:
            raise UsageError(f"{self.recipe}: epochs >= 0, learning_rate > 0 and "
                             "batch_size >= 1 are required")


@dataclass(frozen=True, kw_only=True)
class PruneConfig(FineTune):
    """Global unstructured magnitude pruning to ``sparsity``, then fine-tuning with the mask."""

    recipe: str = "prune"
    sparsity: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.sparsity < 1.0:
            raise UsageError(f"prune:{self.sparsity}: sparsity must be between 0 and 1, "
                             "for example prune:0.8")


@dataclass(frozen=True, kw_only=True)
class ChannelPruneConfig(FineTune):
    """Structured, dependency-aware channel pruning (torch-pruning), then fine-tuning."""

    recipe: str = "prune-channels"
    TOOLS = ("torch-pruning",)
    ratio: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.ratio < 1.0:
            raise UsageError(f"prune-channels:{self.ratio}: ratio must be between 0 and 1, "
                             "for example prune-channels:0.5")


@dataclass(frozen=True, kw_only=True)
class DistillConfig(FineTune):
    """Fine-tune the student against the original model: T^2 * KL(soft) * alpha + CE * (1-alpha)."""

    recipe: str = "distill"
    temperature: float = 4.0
    alpha: float = 0.7
    epochs: int = 6

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temperature <= 0 or not 0.0 <= self.alpha <= 1.0:
            raise UsageError("distill: temperature must be > 0 and alpha within [0, 1]")


@dataclass(frozen=True, kw_only=True)
class ClusterConfig(FineTune):
    """Weight clustering, TF-MOT's ``cluster_weights``: each Conv and Linear layer's weights
    become ``clusters`` shared values (1-D k-means from a linear initialisation), with
    weights that are exactly zero (pruned) kept zero; then, when the model file defines
    ``train_data()``, the centroids are fine-tuned with the assignments fixed.

    The file stays as large (float32, or int8 after ``+int8``) but compresses: a layer
    holds at most ``clusters`` distinct values (plus zero).  Batch norms that follow a
    convolution are folded into it first, and a following ``int8`` quantizes weights per
    tensor: a scale per channel, the converter's own or a folded norm's, would spread a
    layer's shared values over up to ``clusters`` x channels codes, which deflate cannot
    pack (``prune:0.5+cluster:16+int8``, gzip of fp32's: digits CNN 0.128 against 0.151,
    MobileNetV2-96 0.126 against 0.158).
    """

    recipe: str = "cluster"
    clusters: int = 16
    epochs: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.clusters, bool) or not isinstance(self.clusters, int) \
                or not 2 <= self.clusters <= 256:
            raise UsageError(f"cluster:{self.clusters}: the number of clusters must be a whole "
                             "number from 2 to 256, for example cluster:16")


@dataclass(frozen=True, kw_only=True)
class QatConfig(FineTune):
    """Quantization-aware fine-tuning (PT2E fake quantization), then full-integer int8.

    A lower learning rate than the transforms: the weights are already trained and only
    have to settle onto the int8 grid.
    """

    recipe: str = "qat"
    TOOLS = ("torchao",)
    epochs: int = 3
    learning_rate: float = 1e-4
    per_channel: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epochs < 1:
            # The fake quantizers learn their ranges only while training.
            raise UsageError("qat needs at least 1 epoch of fine-tuning")


@dataclass(frozen=True, kw_only=True)
class Int8MixedConfig(_Config):
    """Static int8 with the layers most sensitive to quantization kept in float.

    Layers are made float, most sensitive first, until the eval metric (accuracy, or
    top-1 agreement with the float model without labels) is at most ``max_drop`` points
    below fp32's and not below plain int8's.  ``keep_float`` names layers (module paths,
    e.g. ``"classifier.3"``) that stay float whatever the measurement.
    """

    recipe: str = "int8-mixed"
    TOOLS = ("torchao",)
    max_drop: float = 0.5
    calibration_samples: int = 128
    per_channel: bool = True
    keep_float: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_drop < 100.0:
            raise UsageError(f"int8-mixed:{self.max_drop}: the budget is points of accuracy "
                             "below fp32, from 0 to 100, for example int8-mixed:0.5")
        if self.calibration_samples < 1:
            raise UsageError("int8-mixed needs at least 1 calibration sample")


ConversionConfig = (Fp32Config | Fp16Config | Int8DynamicConfig | Int4WeightConfig
                    | Int8StaticConfig | QatConfig | Int8MixedConfig)
TransformConfig = PruneConfig | ChannelPruneConfig | DistillConfig | ClusterConfig
RecipeConfig = ConversionConfig | TransformConfig


def _ratio(name: str, argument: str | None) -> float:
    if argument is None:
        raise UsageError(f"{name} needs a value, for example {name}:0.5")
    try:
        return float(argument)
    except ValueError:
        raise UsageError(f"{name}:{argument}: the value must be a number, "
                         f"for example {name}:0.5") from None


def _count(name: str, argument: str | None) -> int:
    if argument is None:
        raise UsageError(f"{name} needs a number of clusters, for example {name}:16")
    try:
        return int(argument)
    except ValueError:
        raise UsageError(f"{name}:{argument}: the number of clusters must be a whole number, "
                         f"for example {name}:16") from None


def _block_size(argument: str) -> int:
    try:
        return int(argument)
    except ValueError:
        raise UsageError(f"int4-weight:{argument}: the block size must be one of "
                         f"{', '.join(map(str, INT4_BLOCK_SIZES))}") from None


RECIPES: dict[str, Callable[[str | None], RecipeConfig]] = {
    "fp32": lambda _: Fp32Config(),
    "fp16": lambda _: Fp16Config(),
    "int8-dynamic": lambda _: Int8DynamicConfig(),
    "int4-weight": lambda arg: Int4WeightConfig(
        block_size=Int4WeightConfig.block_size if arg is None else _block_size(arg)),
    "int8": lambda _: Int8StaticConfig(),
    "prune": lambda arg: PruneConfig(sparsity=_ratio("prune", arg)),
    "prune-channels": lambda arg: ChannelPruneConfig(ratio=_ratio("prune-channels", arg)),
    "distill": lambda _: DistillConfig(),
    "cluster": lambda arg: ClusterConfig(clusters=_count("cluster", arg)),
    "qat": lambda _: QatConfig(),
    "int8-mixed": lambda arg: Int8MixedConfig(
        max_drop=Int8MixedConfig.max_drop if arg is None else _ratio("int8-mixed", arg)),
}
_CONVERSIONS = (Fp32Config, Fp16Config, Int8DynamicConfig, Int4WeightConfig, Int8StaticConfig,
                QatConfig, Int8MixedConfig)


#: The runtimes a model file's variants are built for (``--runtime``): TFLite (a
#: ``.tflite``, converted by litert-torch; the default) and ONNX Runtime (an ``.onnx``,
#: exported by torch.onnx and quantized by onnxruntime.quantization).
TFLITE, ONNX_RUNTIME = "tflite", "onnxruntime"
RUNTIMES = (TFLITE, ONNX_RUNTIME)
#: What an ONNX Runtime variant's name ends with, so one run holds both runtimes' variants
#: of one recipe apart: ``fp32`` (TFLite) beside ``fp32-ort``.
ORT_SUFFIX = "-ort"


@dataclass(frozen=True, kw_only=True)
class Chain:
    """One variant: transforms applied in order, then one conversion, for one runtime."""

    recipe: str
    transforms: tuple[TransformConfig, ...] = ()
    conversion: ConversionConfig = dataclasses.field(default_factory=Fp32Config)
    #: The runtime a model file's variant is built for (:data:`RUNTIMES`).
    runtime: str = TFLITE

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise UsageError(f"unknown runtime {self.runtime!r}; one of {', '.join(RUNTIMES)}")

    @property
    def variant(self) -> str:
        """The variant's name in a run: the recipe, ``-ort`` after it for ONNX Runtime."""
        return self.recipe + (ORT_SUFFIX if self.runtime == ONNX_RUNTIME else "")

    @property
    def suffix(self) -> str:
        """The built file's suffix."""
        return ".onnx" if self.runtime == ONNX_RUNTIME else ".tflite"

    @property
    def file_stem(self) -> str:
        return self.variant.replace(":", "-").replace("=", "-")

    @property
    def needs_training_data(self) -> bool:
        return bool(self.transforms) or isinstance(self.conversion, QatConfig)

    @property
    def needs_eval_data(self) -> bool:
        return isinstance(self.conversion, Int8MixedConfig)

    @property
    def tools(self) -> tuple[str, ...]:
        """The distributions the chain's steps use besides the converter, in step order."""
        return tuple(dict.fromkeys(tool for step in (*self.transforms, self.conversion)
                                   for tool in step.TOOLS))

    def to_dict(self) -> ChainDict:
        chain: ChainDict = {"recipe": self.recipe, "steps": [
            step.to_dict() for step in (*self.transforms, self.conversion)]}
        if self.runtime != TFLITE:  # a TFLite chain's dict (and cache key) as before
            chain["runtime"] = self.runtime
        return chain


#: Options a step takes after its value (``prune:0.8:epochs=12:lr=5e-4``): the name in a
#: recipe -> the config field, for the steps that fine-tune.
STEP_OPTIONS = {"epochs": "epochs", "lr": "learning_rate", "batch": "batch_size",
                "temperature": "temperature", "alpha": "alpha"}


def parse_step(part: str, text: str) -> RecipeConfig:
    """``"prune:0.8:epochs=12"`` -> its config: a name, at most one value, then options."""
    name, *tokens = part.strip().split(":")
    if name not in RECIPES:
        raise UsageError(f"unknown recipe {name!r} in {text!r}; known recipes: "
                         f"{', '.join(RECIPES)} (chain them with +)")
    values = [token for token in tokens if "=" not in token]
    if len(values) > 1 or (values and tokens[0] != values[0]):
        raise UsageError(f"{part!r}: a step takes one value first, then KEY=VALUE options, "
                         "e.g. prune:0.8:epochs=12")
    config = RECIPES[name](values[0] if values and values[0] else None)
    options: dict[str, Any] = {}
    known = [key for key, field in STEP_OPTIONS.items()
             if field in {f.name for f in dataclasses.fields(config)}]
    for token in tokens:
        if "=" not in token:
            continue
        key, _, raw = token.partition("=")
        if key not in known:
            allowed = f"it takes {', '.join(known)}" if known else "it takes no options"
            raise UsageError(f"{part!r}: unknown option {key!r}; {allowed}")
        field = STEP_OPTIONS[key]
        whole = isinstance(getattr(config, field), int)
        try:
            options[field] = int(raw) if whole else float(raw)
        except ValueError:
            raise UsageError(f"{part!r}: {key} must be a {'whole ' if whole else ''}number, "
                             f"got {raw!r}") from None
    return dataclasses.replace(config, **options) if options else config


def parse_chain(text: str) -> Chain:
    """``"prune-channels:0.5+distill:epochs=20+int8"`` -> a :class:`Chain`."""
    steps: list[RecipeConfig] = [parse_step(part, text) for part in text.split("+")]
    conversions = [step for step in steps if isinstance(step, _CONVERSIONS)]
    if len(conversions) > 1 or (conversions and steps[-1] is not conversions[0]):
        raise UsageError(f"{text!r}: a chain ends with at most one of fp32, fp16, "
                         "int8-dynamic, int4-weight, int8, qat, int8-mixed")
    transforms = tuple(step for step in steps if not isinstance(step, _CONVERSIONS))
    conversion = conversions[0] if conversions else Fp32Config()
    if isinstance(conversion, Int8StaticConfig) and any(
            isinstance(step, ClusterConfig) for step in transforms):
        conversion = dataclasses.replace(conversion, per_channel=False)
    return Chain(recipe=text.strip(), transforms=transforms,  # type: ignore[arg-type]
                 conversion=conversion)  # type: ignore[arg-type]


def parse_recipes(text: str) -> list[Chain]:
    """``"fp32,int8,prune:0.8+int8"`` -> one :class:`Chain` per comma-separated variant."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UsageError("--recipe is empty; give for example fp32,int8")
    if len(set(names)) != len(names):
        raise UsageError(f"--recipe names a recipe twice: {text}")
    return [parse_chain(name) for name in names]


def parse_runtimes(text: str) -> tuple[str, ...]:
    """``"tflite,onnxruntime"`` -> ``("tflite", "onnxruntime")``: distinct :data:`RUNTIMES`."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in RUNTIMES]
    if not names or unknown or len(set(names)) != len(names):
        raise UsageError(f"--runtime {text!r}: give distinct runtimes from "
                         f"{', '.join(RUNTIMES)}, e.g. tflite,onnxruntime")
    return names


def for_runtimes(chains: Sequence[Chain], runtimes: Sequence[str]) -> list[Chain]:
    """Each chain once per runtime, runtime by runtime (every TFLite variant, then every
    ONNX Runtime one, as the tables list them)."""
    return [dataclasses.replace(chain, runtime=runtime)
            for runtime in runtimes for chain in chains]
