"""Build variants: apply a chain to a copy of the model, convert, measure, and bundle.

Example::

    manifest = compress_to_folder("examples/digits_cnn.py", "fp32,prune:0.8+int8", Path("out"))
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import logging
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from device_agent.runtime import runtime_for
from toolkit._quiet import captured_native_output, silence_library_logging
from toolkit.artifacts.bundle import (
    ARTIFACT_MODE,
    Artifact,
    FailedVariant,
    describe_artifact,
    write_manifest,
)
from toolkit.compress._cache import DEFAULT_MAX_BYTES, CacheKeys, ConversionCache
from toolkit.compress._convert import (
    check_sample,
    compress_failure,
    convert,
    forget_last_export,
)
from toolkit.compress._given import record_failure
from toolkit.compress._mixed import int8_mixed, require_measuring_data
from toolkit.compress._ort_recipes import require_ort_recipes
from toolkit.compress._recipes import (
    ONNX_RUNTIME,
    TFLITE,
    Chain,
    ClusterConfig,
    ConversionConfig,
    Int8MixedConfig,
    Int8StaticConfig,
    QatConfig,
    TransformConfig,
    for_runtimes,
    parse_chain,
    parse_recipes,
)
from toolkit.compress._to_onnx import OnnxExport, compress_onnx
from toolkit.compress._toolchain import TORCH_TO_ONNX, TORCH_TO_TFLITE, built_with
from toolkit.compress._transform import (
    TransformContext,
    apply_transform,
    quantization_aware_training,
)
from toolkit.compress._usable import agrees, check_loads
from toolkit.compress._variant import CompressedVariant
from toolkit.compress.compat import runtime_compat
from toolkit.compress.evaluate import (
    builtin_kernels_only,
    tflite_accuracy,
    tflite_fidelity,
)
from toolkit.errors import CompressError, ModelError, OutputError, UsageError
from toolkit.model.load import ModelSource, load_model_source
from toolkit.results.choose import budget_verdict
from toolkit.results.facts import runtime_check_of
from toolkit.run.cancel import interrupts_deferred, raise_if_interrupted

if TYPE_CHECKING:
    import torch

    from toolkit.artifacts.bundle import Candidate, Selection
    from toolkit.compress._manifest import Accuracy, ConversionDetails
    from toolkit.model.load import Inputs

_log = logging.getLogger(__name__)
Progress = Callable[[str], None]
FIDELITY_SAMPLES = 256
#: The seed of every chain's random number generators (see ``_seeded``).
CHAIN_SEED = 0
COMPAT_SAMPLES = 64



def _quiet(_: str) -> None:
    """The default progress sink: library callers get no output."""


def compress(source: ModelSource, recipe: Chain | ConversionConfig | TransformConfig | str,
             out_dir: Path, *, progress: Progress = _quiet) -> CompressedVariant:
    """Produce ``out_dir/<recipe>.tflite`` from ``source`` following the recipe chain."""
    chain = _as_chain(recipe)
    if source.module is None:  # a .tflite or .onnx, deployed as given
        raise UsageError(f"{source.path} is already a {source.path.suffix} file; it is "
                         "deployed as it is")
    silence_library_logging()
    target = out_dir / f"{chain.file_stem}.tflite"
    started = time.perf_counter()
    # A copy of the weights (the model's size again in memory) only for the steps that
    # change them: the fp32-based converters read the module and leave it as it was.
    module = (copy.deepcopy(source.module) if changes_module(chain) else source.module).eval()
    context = TransformContext(teacher=source.module, example=source.example_input,
                               train_data=source.train_data, progress=progress)
    log: list[str] = []
    try:
        # Fine-tuning prints nothing of its own: only the converters' output is captured,
        # so progress lines reach the terminal.
        with warnings.catch_warnings(), _seeded(CHAIN_SEED):
            warnings.simplefilter("ignore")
            for step in chain.transforms:
                progress(f"{chain.recipe}: {step.recipe}")
                module = apply_transform(module, step, context)
            float_module = module
            if isinstance(chain.conversion, QatConfig):
                progress(f"{chain.recipe}: quantization-aware fine-tuning")
                module = quantization_aware_training(module, chain.conversion, context)
            progress(f"{chain.recipe}: converting ({chain.conversion.recipe})")
            # Ctrl-C is held until the converter returns: raised inside it, it was either
            # swallowed (the deploy measured and stored on) or aborted the process from a
            # native callback (SIGABRT, staging left behind).
            if isinstance(chain.conversion, Int8MixedConfig):
                # Measures between conversions and captures each one itself.
                with interrupts_deferred():
                    details = int8_mixed(module, source, chain.conversion, target,
                                         progress=progress)
            else:
                with interrupts_deferred(), captured_native_output() as log:
                    details = convert(module, source.example_input, chain.conversion,
                                      source.calibration_data, target)
    except (UsageError, CompressError):
        raise_if_interrupted()
        raise
    except Exception as exc:
        raise_if_interrupted()  # a library that turned the interrupt into its own error
        raise compress_failure(chain.recipe, exc, source.path) from exc
    finally:
        forget_last_export()
    raise_if_interrupted()  # one swallowed during fine-tuning
    if not target.is_file():
        raise CompressError(f"{chain.recipe}: converter wrote no file; its log ended with: "
                            f"{log[-1] if log else '(nothing)'}", recipe=chain.recipe)
    target.chmod(ARTIFACT_MODE)  # ai-edge-quantizer writes its files executable (0755)
    check_loads(target, chain.recipe)
    details = {**details, **_clustering_details(chain, float_module)}
    # After qat the module is a PT2E graph: counts come from the float module it was made
    # from, the same architecture.
    return CompressedVariant(name=chain.recipe, path=target, config=chain.to_dict(),
                             seconds=time.perf_counter() - started, details=details,
                             module=float_module)


def changes_module(chain: Chain) -> bool:
    """Whether building ``chain`` changes the torch module it starts from: a transform
    (pruning, fine-tuning) or a PT2E conversion (int8, qat, int8-mixed) does."""
    return bool(chain.transforms) or isinstance(
        chain.conversion, Int8StaticConfig | QatConfig | Int8MixedConfig)


def _clustering_details(chain: Chain, module: torch.nn.Module) -> ConversionDetails:
    """For a chain that clusters: K, and the distinct weight values each layer holds."""
    steps = [step for step in chain.transforms if isinstance(step, ClusterConfig)]
    if not steps:
        return {}
    import torch

    unique = {name: int(torch.unique(weight.detach()).numel())
              for name, layer in module.named_modules()
              if isinstance(weight := getattr(layer, "weight", None), torch.Tensor)
              and weight.dim() > 1}
    return {"clustering": {"clusters": steps[-1].clusters, "unique_weights_per_layer": unique}}


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Every random number generator a chain may draw from, seeded; the caller's restored.

    Dropout while fine-tuning, a shuffling ``train_data()``, torch-pruning: whatever a chain
    draws starts from the same state, so one model and one recipe give one file whatever
    ran before in the process.
    """
    import random

    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def _as_chain(recipe: Chain | ConversionConfig | TransformConfig | str) -> Chain:
    if isinstance(recipe, Chain):
        return recipe
    return parse_chain(recipe if isinstance(recipe, str) else recipe.recipe)


def model_counts(module: torch.nn.Module, example: Inputs) -> dict[str, int]:
    """Parameters, non-zero parameters and multiply-accumulates of one forward pass.

    MACs are half the FLOPs torch's own ``FlopCounterMode`` counts on the ATen ops that
    run (matmul, bmm, attention, every convolution kind and grouping), divided by the
    example's batch: a hook per ``Conv2d`` and ``Linear`` missed attention's matmuls,
    Conv1d/3d and transposed convolutions.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    # The CPU kernel of scaled-dot-product attention is not in torch's table (torch 2.13):
    # without this, a multi-head attention's two matmuls count as nothing.
    counter = FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops})
    # Autograd on: in eval under no_grad, nn.MultiheadAttention (and so TransformerEncoder)
    # takes a fused fast path the counter does not see (it counted 0 MACs there).
    with torch.enable_grad(), counter:
        module.eval()(*example)
    parameters = [p.detach() for p in module.parameters()]
    first = example[0] if example else None
    batch = int(first.shape[0]) if first is not None and first.ndim else 1
    return {"parameters": sum(int(p.numel()) for p in parameters),
            "nonzero_parameters": sum(int(p.count_nonzero()) for p in parameters),
            "macs": int(counter.get_total_flops()) // 2 // max(1, batch)}


def _attention_flops(query_shape: tuple[int, ...], key_shape: tuple[int, ...],
                     value_shape: tuple[int, ...], *_args: object, **_kwargs: object) -> int:
    """FLOPs of softmax(Q K^T) V over (batch, heads, length, dim) shapes: two matmuls."""
    batch, heads, queries, dim = query_shape
    keys, value_dim = key_shape[-2], value_shape[-1]
    return 2 * batch * heads * queries * keys * (dim + value_dim)


def _fidelity_inputs(source: ModelSource) -> tuple[list[Inputs], str]:
    for name, data in (("eval_data()", source.eval_data),
                       ("calibration_data()", source.calibration_data)):
        if data is not None:
            inputs = [tuple(sample) for sample, _ in itertools.islice(data(), FIDELITY_SAMPLES)]
            for sample in inputs[:1]:
                check_sample(sample, source.example_input, name)
            if inputs:
                return inputs, name
    return [source.example_input], "example_input()"


def _has_labels(source: ModelSource) -> bool:
    if source.eval_data is None:
        return False
    first = next(iter(source.eval_data()), None)
    return first is not None and first[1] is not None


def build_artifacts(source: ModelSource, chains: list[Chain], folder: Path, *,
                    progress: Progress = _quiet,
                    compat_pythons: Sequence[Path] = (),
                    cache_dir: Path | None = None,
                    cache_max_bytes: int = DEFAULT_MAX_BYTES,
                    failed: list[FailedVariant] | None = None) -> list[Artifact]:
    """Compress every chain into ``folder`` and describe each file with its measured quality.

    ``compat_pythons``: other Pythons (e.g. a venv with tflite-runtime 2.14) under whose
    runtime every file must load and compute what the host runtime computes.
    ``cache_dir``: a conversion cache (:mod:`._cache`, at most ``cache_max_bytes``); a
    chain found there is copied with its manifest entry instead of converted.
    ``failed``: when given, a chain that cannot be built for this model (its conversion
    fails, its file does not load, or it needs data the model file lacks) is appended
    there with its reason and the other chains are still built; without it, the first
    such failure is raised.
    """
    if source.is_onnx:
        from toolkit.compress._from_onnx import build_from_onnx

        return build_from_onnx(source, chains, folder, progress=progress, failed=failed)
    if source.is_tflite:
        from toolkit.compress._from_tflite import build_from_tflite

        return build_from_tflite(source, chains, folder, progress=progress, failed=failed)
    cache = ConversionCache(cache_dir, max_bytes=cache_max_bytes) if cache_dir else None
    keys = CacheKeys(source)
    inputs = _fidelity_inputs(source)
    build = _Build(source, folder, progress, inputs, OnnxExport(source, folder))
    artifacts = []
    try:
        for chain in chains:
            raise_if_interrupted()
            try:
                artifacts.append(_cached_or_built(build, chain, cache, keys))
            except (CompressError, ModelError) as exc:
                if failed is None:
                    raise
                record_failure(failed, chain, chain.variant, exc, progress)
    finally:
        build.export.discard()
    tflite = [a for a in artifacts if a.path.suffix == ".tflite"]
    for python in compat_pythons:
        progress(f"checking every .tflite file under {python}")
        checked = runtime_compat(python, [a.path for a in tflite], inputs[0][:COMPAT_SAMPLES])
        artifacts = [dataclasses.replace(a, runtime_compat=[
                         *a.runtime_compat, runtime_check_of(checked[a.path.name])])
                     if a in tflite else a for a in artifacts]
    return artifacts


@dataclass(frozen=True)
class _Build:
    """What every chain of one :func:`build_artifacts` call shares."""

    source: ModelSource
    folder: Path
    progress: Progress
    #: The inputs fidelity is measured on, and which data function gave them.
    inputs: tuple[list[Inputs], str]
    #: The model's float .onnx, exported once for the ONNX Runtime chains.
    export: OnnxExport


def _cached_or_built(build: _Build, chain: Chain, cache: ConversionCache | None,
                     keys: CacheKeys) -> Artifact:
    if cache is None:
        return _built(build, chain)
    key = keys.key(chain)
    target = build.folder / f"{chain.file_stem}{chain.suffix}"
    record = cache.fetch(key, target)
    if record is not None:
        _log.info("%s: reused from the conversion cache (%s)", chain.variant, key[:12])
        build.progress(f"{chain.variant}: reused from the conversion cache")
        return Artifact(path=target, **record)
    artifact = _built(build, chain)
    cache.store(key, artifact.path, {f.name: getattr(artifact, f.name)
                                     for f in dataclasses.fields(Artifact) if f.name != "path"})
    return artifact


def _built(build: _Build, chain: Chain) -> Artifact:
    """Convert ``chain`` and measure the file: accuracy, fidelity, counts, the host runtime
    (onnxruntime for an ONNX Runtime chain's ``.onnx``, as on the board)."""
    source, progress, name = build.source, build.progress, chain.variant
    inputs, inputs_from = build.inputs
    progress(f"{name}: start")
    _log.info("%s: converting", name)
    variant = (compress_onnx(source, chain, build.folder, build.export, progress=progress)
               if chain.runtime == ONNX_RUNTIME
               else compress(source, chain, build.folder, progress=progress))
    labelled = source.eval_data is not None and _has_labels(source)
    quality: Accuracy | None = None
    if source.eval_data is not None and labelled:
        progress(f"{name}: evaluating")
        quality = tflite_accuracy(variant.path, source.eval_data())
    # compress() refused a source without a torch module and set the variant's.
    assert source.module is not None and variant.module is not None
    progress(f"{name}: comparing the file with the torch model")
    fidelity = tflite_fidelity(variant.path, source.module.eval(), inputs)
    counts = model_counts(variant.module, source.example_input)
    # The host runtime is judged against the torch model this file was converted from
    # (after pruning and fine-tuning), so a retrained student is not "wrong" for
    # disagreeing with the original; quantization may flip near-ties only.  A model
    # with labels is a classifier (top-1 fits its logits); without, its output is taken
    # as an embedding, whose argmax means nothing: cosine similarity judges it.
    metric = "top1" if labelled else "cosine"
    own = (tflite_fidelity(variant.path, variant.module.eval(), inputs)
           if chain.transforms else fidelity)
    host = {**runtime_for("auto", variant.path.name).describe(), "loads": True,
            **({"kernels": "built-in, without XNNPACK (a file of 1 GiB or more)"}
               if builtin_kernels_only(variant.path) else {}),
            "top1_agreement_with_source": own["top1_agreement"],
            "cosine_with_source": own["cosine_similarity"],
            **({"degenerate": own["degenerate"]} if own.get("degenerate") else {}),
            "ok": agrees(own, metric)}
    progress(f"{name}: hashing and compressing the file (sha256, gzip size)")
    artifact = describe_artifact(
        variant.name, variant.path, config=variant.config,
        accuracy=quality["accuracy"] if quality else None,
        eval_samples=quality["eval_samples"] if quality else None,
        compress_seconds=round(variant.seconds, 3), details=variant.details,
        calibration=variant.details.get("calibration"),
        fidelity={**fidelity, "agreement_metric": metric, "inputs_from": inputs_from,
                  "reference": "torch fp32"},
        runtime_compat=[host], toolchain=built_with(
            TORCH_TO_ONNX if chain.runtime == ONNX_RUNTIME else (*TORCH_TO_TFLITE, *chain.tools)),
        **counts)
    progress(f"{name}: done in {variant.seconds:.1f} s")
    return artifact


def compress_to_folder(model_path: str | Path, recipes: str, out_dir: str | Path, *,
                       progress: Progress = _quiet, compat_pythons: Sequence[Path] = (),
                       max_accuracy_drop: float | None = None,
                       runtimes: Sequence[str] = ()) -> Path:
    """Write each variant's ``.tflite`` and ``manifest.json`` into ``out_dir``; return its path.

    ``runtimes``: the runtimes to build each recipe for (none: TFLite); ONNX Runtime's
    variants are ``.onnx`` files named ``VARIANT-ort``.
    With ``max_accuracy_drop`` (points of accuracy against fp32), ``recipes`` are candidates
    tried in order until one stays within the budget (as INC and NNCF tune): the folder gets
    fp32 and that one, and the manifest's ``selection`` shows everything tried.
    Built in a staging folder beside ``out_dir`` and moved in only on success,
    so a failure leaves nothing half-written.
    """
    chains = for_runtimes(parse_recipes(recipes), runtimes or (TFLITE,))
    require_ort_recipes(chains)
    for python in compat_pythons:
        if not Path(python).is_file():
            raise UsageError(f"--compat-python {python} does not exist; give a Python that "
                             "has tflite-runtime installed, e.g. venv/bin/python")
    source = load_model_source(model_path)
    if source.as_given:
        raise UsageError(f"{source.path} is already a {source.path.suffix} file; compress takes "
                         "a .py model")
    if max_accuracy_drop is not None and not _has_labels(source):
        raise UsageError(f"--max-accuracy-drop needs labelled eval data: {source.path} has no "
                         "eval_data() yielding (inputs, label); compare fidelity with "
                         "edge compress --recipe instead")
    missing = sorted({c.recipe for c in chains if c.needs_training_data} if
                     source.train_data is None and max_accuracy_drop is None else set())
    if missing:
        raise ModelError(f"{missing[0]} fine-tunes the model: {source.path} must define "
                         "train_data() yielding (inputs, label)", path=source.path)
    for chain in chains:
        if chain.needs_eval_data:  # before any work, not after the other variants
            require_measuring_data(source, chain.recipe)
    out_dir = Path(out_dir)
    staging = out_dir.parent / f".{out_dir.name}.staging-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir(parents=True)
    except OSError as exc:
        raise OutputError(f"output folder {out_dir} is not writable: {exc.strerror}",
                          path=out_dir) from None
    try:
        selection: Selection | None = None
        if max_accuracy_drop is None:
            artifacts = build_artifacts(source, chains, staging, progress=progress,
                                        compat_pythons=compat_pythons)
        else:
            artifacts, selection = _within_budget(
                source, chains, max_accuracy_drop, staging, progress, compat_pythons)
        write_manifest(staging, source, artifacts, selection=selection)
        out_dir.mkdir(parents=True, exist_ok=True)
        for item in staging.iterdir():
            item.replace(out_dir / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / "manifest.json"


def _within_budget(source: ModelSource, candidates: list[Chain], max_drop: float,
                   folder: Path, progress: Progress,
                   compat_pythons: Sequence[Path]) -> tuple[list[Artifact], Selection]:
    """fp32 and the first candidate whose accuracy drop is at most ``max_drop`` points."""
    [baseline] = build_artifacts(source, parse_recipes("fp32"), folder, progress=progress,
                                 compat_pythons=compat_pythons)
    assert baseline.accuracy is not None  # labelled eval data was checked by the caller
    tried: list[Candidate] = []
    chosen = baseline
    for chain in candidates:
        if chain.recipe == "fp32":
            continue
        if chain.needs_training_data and source.train_data is None:
            tried.append({"recipe": chain.recipe, "skipped": "needs train_data() to fine-tune"})
            continue
        [artifact] = build_artifacts(source, [chain], folder, progress=progress,
                                     compat_pythons=compat_pythons)
        # The rule edge deploy's --max-accuracy-drop judges by too.
        drop, over = budget_verdict(baseline.accuracy, artifact, max_drop)
        runs_everywhere = all(c.get("ok") for c in artifact.runtime_compat)
        within = over is None
        tried.append({"recipe": chain.recipe, "size_bytes": artifact.size_bytes,
                      "size_ratio": round(artifact.size_bytes / baseline.size_bytes, 4),
                      "accuracy": artifact.accuracy,
                      "drop_points": None if drop is None else round(drop, 3),
                      "runs_on_every_runtime": runs_everywhere, "within_budget": within})
        progress(f"{chain.recipe}: " + (over or f"accuracy drop {drop:.2f} points (within "
                                                f"the {max_drop:g}-point budget)"))
        if within:
            chosen = artifact
            break
        artifact.path.unlink()  # only the chosen file ships
    selection: Selection = {
        "max_accuracy_drop_points": max_drop, "baseline_accuracy": baseline.accuracy,
        "tried": tried, "chosen": str(chosen.config.get("recipe", chosen.variant))}
    return ([baseline] if chosen is baseline else [baseline, chosen]), selection
