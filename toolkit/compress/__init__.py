"""Stage 2: turn the torch model into deployable ``.tflite`` variants (and, for
``--runtime onnxruntime``, ``.onnx`` ones: :mod:`._to_onnx`, :mod:`._ort_recipes`).

A recipe is a chain (``prune-channels:0.5+distill+int8``): transforms of the
torch module (:mod:`._transform`), then one conversion (:mod:`._convert`;
``int8-mixed`` and its per-layer sensitivity analysis in :mod:`._mixed`).
One frozen config class per step, found through :data:`RECIPES` by the name the
user writes; every chain serialises to a dict for the manifest, where each variant's
entries have the types of :mod:`._manifest`.

Example::

    [chain] = parse_recipes("prune:0.8+int8")
    variant = compress(source, chain, out_dir)
    manifest = compress_to_folder("examples/digits_cnn.py", "fp32,int8", Path("out"))
    table = analyze_to_folder("examples/digits_cnn.py", Path("out"))  # out/sensitivity.json
"""

from typing import TYPE_CHECKING

from toolkit._lazy import attach
from toolkit.defaults import BUDGET_CANDIDATES, compress_budget_candidates

if TYPE_CHECKING:
    from toolkit.compress._build import (
        CompressedVariant,
        build_artifacts,
        compress,
        compress_to_folder,
        model_counts,
    )
    from toolkit.compress._mixed import (
        LayerSensitivity,
        Sensitivity,
        analyze_sensitivity,
        analyze_to_folder,
    )
    from toolkit.compress._recipes import (
        RECIPES,
        RUNTIMES,
        Chain,
        ChannelPruneConfig,
        ClusterConfig,
        DistillConfig,
        Fp16Config,
        Fp32Config,
        Int4WeightConfig,
        Int8DynamicConfig,
        Int8MixedConfig,
        Int8StaticConfig,
        PruneConfig,
        QatConfig,
        for_runtimes,
        parse_chain,
        parse_recipes,
        parse_runtimes,
    )

#: Every name is imported on first use: converting needs torch and litert-torch, and
#: ``import toolkit`` (every ``edge`` command, ``--help`` too) imports this package.
__getattr__, __dir__ = attach(__name__, {
    **dict.fromkeys(("CompressedVariant", "build_artifacts", "compress", "compress_to_folder",
                     "model_counts"), "_build"),
    **dict.fromkeys(("LayerSensitivity", "Sensitivity", "analyze_sensitivity",
                     "analyze_to_folder"), "_mixed"),
    **dict.fromkeys(("RECIPES", "Chain", "ChannelPruneConfig", "ClusterConfig",
                     "DistillConfig", "Fp16Config", "Fp32Config", "Int4WeightConfig",
                     "Int8DynamicConfig", "Int8MixedConfig", "Int8StaticConfig",
                     "PruneConfig", "QatConfig", "RUNTIMES", "for_runtimes", "parse_chain",
                     "parse_recipes", "parse_runtimes"), "_recipes"),
}, globals())

__all__ = [
    "BUDGET_CANDIDATES",
    "RECIPES",
    "RUNTIMES",
    "Chain",
    "ChannelPruneConfig",
    "ClusterConfig",
    "CompressedVariant",
    "DistillConfig",
    "Fp16Config",
    "Fp32Config",
    "Int4WeightConfig",
    "Int8DynamicConfig",
    "Int8MixedConfig",
    "Int8StaticConfig",
    "LayerSensitivity",
    "PruneConfig",
    "QatConfig",
    "Sensitivity",
    "analyze_sensitivity",
    "analyze_to_folder",
    "build_artifacts",
    "compress",
    "compress_budget_candidates",
    "compress_to_folder",
    "for_runtimes",
    "model_counts",
    "parse_chain",
    "parse_recipes",
    "parse_runtimes",
]
