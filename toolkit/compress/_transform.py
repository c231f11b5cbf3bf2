"""Transforms of the torch module before conversion: pruning, distillation, and the
fine-tuning half of ``qat``.

Every transform works on a copy, fine-tunes with the model file's
``train_data()`` and reports progress per epoch.

Example::

    student = apply_transform(copy, PruneConfig(sparsity=0.8), context)
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from toolkit.compress._convert import check_sample, qat_quantizer
from toolkit.compress._recipes import (
    ChannelPruneConfig,
    ClusterConfig,
    DistillConfig,
    FineTune,
    PruneConfig,
    QatConfig,
    TransformConfig,
)
from toolkit.errors import CompressError, ModelError

if TYPE_CHECKING:
    import torch
    from torch.utils.hooks import RemovableHandle

    from toolkit.model.load import DataFunction, Inputs

Progress = Callable[[str], None]
#: Switches a module between training and evaluation (dropout, fake quantizers).
SetTraining = Callable[["torch.nn.Module", bool], None]


@dataclass(frozen=True)
class TransformContext:
    """What transforms need besides the module: the teacher, the data, a progress sink."""

    teacher: torch.nn.Module
    example: Inputs
    train_data: DataFunction | None
    progress: Progress


def apply_transform(module: torch.nn.Module, config: TransformConfig,
                    context: TransformContext) -> torch.nn.Module:
    """Return the transformed module (``module`` itself may be changed in place)."""
    if isinstance(config, ClusterConfig):
        return _cluster(module, config, context)
    _require_train_data(config, context)
    if isinstance(config, PruneConfig):
        return _prune_unstructured(module, config, context)
    if isinstance(config, ChannelPruneConfig):
        return _prune_channels(module, config, context)
    return _fine_tune(module, config, context, teacher=context.teacher)


def _require_train_data(config: FineTune, context: TransformContext) -> None:
    if context.train_data is None:
        raise ModelError(f"{config.recipe} fine-tunes the model: the model file must define "
                         "train_data() yielding (inputs, label)")


def quantization_aware_training(module: torch.nn.Module, config: QatConfig,
                                context: TransformContext) -> torch.nn.Module:
    """The PT2E graph of ``module`` with fake quantizers, fine-tuned; ``convert`` finishes it.

    Batch norms are folded into their convolutions first (their statistics stay frozen while
    fine-tuning), and the batch dimension is exported dynamic so training batches fit.
    """
    import torch
    from torchao.quantization.pt2e import (
        move_exported_model_to_eval,
        move_exported_model_to_train,
    )
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    _require_train_data(config, context)
    # A batch of one would be specialised by export (0/1 specialisation): trace with two.
    doubled = tuple(torch.cat([value, value]) for value in context.example)
    exported = torch.export.export(
        module.eval(), doubled,
        dynamic_shapes=tuple({0: torch.export.Dim.AUTO} for _ in doubled)).module()
    # The PTQ path (prepare_pt2e) folds the same way; prepare_qat_pt2e would need the
    # quantizer's conv+bn patterns, which fail under torch 2.13.
    _fuse_conv_bn_(exported)
    prepared = prepare_qat_pt2e(exported, qat_quantizer(config))

    def set_training(graph: torch.nn.Module, training: bool) -> None:
        # A prepared graph refuses .train()/.eval(); these switch dropout and fake quantizers.
        (move_exported_model_to_train if training else move_exported_model_to_eval)(graph)

    return _fine_tune(prepared, config, context, teacher=None, set_training=set_training)


def _set_training(module: torch.nn.Module, training: bool) -> None:
    module.train(training)


def _prune_unstructured(module: torch.nn.Module, config: PruneConfig,
                        context: TransformContext) -> torch.nn.Module:
    import torch
    from torch.nn.utils import prune

    targets = [(layer, "weight") for layer in module.modules()
               if isinstance(layer, torch.nn.Conv2d | torch.nn.Linear)]
    if not targets:
        raise CompressError("prune: the model has no Conv2d or Linear layer to prune",
                            recipe=config.recipe)
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured,
                              amount=config.sparsity)
    # The masks stay attached while fine-tuning, so pruned weights stay zero.
    _fine_tune(module, config, context, teacher=None)
    for layer, name in targets:
        prune.remove(layer, name)
    return module


def _prune_channels(module: torch.nn.Module, config: ChannelPruneConfig,
                    context: TransformContext) -> torch.nn.Module:
    import torch
    import torch_pruning as tp

    linears = [layer for layer in module.modules() if isinstance(layer, torch.nn.Linear)]
    convs = [layer for layer in module.modules() if isinstance(layer, torch.nn.Conv2d)]
    # The layer that produces the output keeps its width: the output shape is the contract.
    last = linears[-1] if linears else (convs[-1] if convs else None)
    if last is None:
        raise CompressError("prune-channels: the model has no Conv2d or Linear layer",
                            recipe=config.recipe)
    module.eval()
    pruner = tp.pruner.MagnitudePruner(
        module, context.example, importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=config.ratio, ignored_layers=[last])
    pruner.step()
    return _fine_tune(module, config, context, teacher=None)


def _cluster(module: torch.nn.Module, config: ClusterConfig,
             context: TransformContext) -> torch.nn.Module:
    import torch
    from torch.nn.utils import parametrize

    _fold_batch_norms(module)
    layers = [layer for layer in module.modules()
              if isinstance(layer, torch.nn.Conv1d | torch.nn.Conv2d | torch.nn.Conv3d
                            | torch.nn.ConvTranspose2d | torch.nn.Linear)]
    if not layers:
        raise CompressError("cluster: the model has no convolution or Linear layer to cluster",
                            recipe=config.recipe)
    clustered_weight = _clustered_class()
    clustered = []
    for layer in layers:
        weight = layer.weight.detach()
        kept = weight != 0
        if not bool(kept.any()):
            continue  # pruned away entirely: zero is its one value already
        centroids, index = kmeans_1d(weight[kept], config.clusters)
        full_index = torch.zeros(weight.shape, dtype=torch.long)
        full_index[kept] = index
        parametrize.register_parametrization(layer, "weight",
                                             clustered_weight(centroids, full_index, kept))
        clustered.append(layer)
    if context.train_data is not None and config.epochs > 0:
        _fine_tune(module, config, context, teacher=None)
    else:
        context.progress(f"{config.recipe}: centroids not fine-tuned (the model file defines "
                         "no train_data())")
    for layer in clustered:
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    return module


def _fold_batch_norms(module: torch.nn.Module) -> None:
    """Fold each batch norm that follows a convolution in a Sequential into its weights.

    The converter folds them anyway, scaling every output channel by its own factor: done
    after clustering, that would turn a layer's K shared values into K per channel.  Folded
    first, the clustered weights are the weights the file holds.
    """
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for parent in module.modules():
        if not isinstance(parent, torch.nn.Sequential):
            continue
        children = list(parent.named_children())
        for (name, layer), (next_name, following) in itertools.pairwise(children):
            if isinstance(layer, torch.nn.Conv2d) and isinstance(following,
                                                                 torch.nn.BatchNorm2d):
                setattr(parent, name, fuse_conv_bn_eval(layer.eval(), following.eval()))
                setattr(parent, next_name, torch.nn.Identity())


def kmeans_1d(values: torch.Tensor, clusters: int, *,
              iterations: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on a 1-D tensor from centroids spread evenly between its extremes
    (TF-MOT's ``LINEAR`` initialisation, which keeps the rare large weights their own
    clusters): ``(centroids, index of each value's centroid)``."""
    import torch

    centroids = torch.linspace(float(values.min()), float(values.max()), clusters)
    for _ in range(iterations):
        index = torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2)
        sums = torch.zeros(clusters).index_add_(0, index, values)
        counts = torch.bincount(index, minlength=clusters)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    return centroids, torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2)


@functools.cache
def _clustered_class() -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.nn.Module]:
    """The parametrization class, made on first use: torch is imported only when needed."""
    import torch

    class Clustered(torch.nn.Module):
        """weight = centroids[index] where the weight was non-zero, else 0; only the
        centroids train."""

        def __init__(self, centroids: torch.Tensor, index: torch.Tensor,
                     kept: torch.Tensor) -> None:
            super().__init__()
            self.centroids = torch.nn.Parameter(centroids.clone())
            self.index: torch.Tensor
            self.kept: torch.Tensor
            self.register_buffer("index", index)
            self.register_buffer("kept", kept)

        def forward(self, _original: torch.Tensor) -> torch.Tensor:
            return torch.where(self.kept, self.centroids[self.index],
                               torch.zeros((), dtype=self.centroids.dtype))

    return Clustered


def _batches(context: TransformContext, size: int) -> list[tuple[Inputs, torch.Tensor]]:
    import torch

    assert context.train_data is not None  # checked by apply_transform
    samples = list(context.train_data())
    if not samples:
        raise ModelError("train_data() yielded no samples")
    for inputs, _label in samples[:1]:
        check_sample(tuple(inputs), context.example, "train_data()")
    batches = []
    for start in range(0, len(samples), size):
        chunk = samples[start:start + size]
        inputs = tuple(torch.cat([sample[0][i] for sample in chunk])
                       for i in range(len(chunk[0][0])))
        # train_data() labels every sample: fine-tuning has no other target.
        labels = torch.as_tensor([int(cast("int", sample[1])) for sample in chunk])
        batches.append((inputs, labels))
    return batches


def _fine_tune(module: torch.nn.Module, config: FineTune, context: TransformContext, *,
               teacher: torch.nn.Module | None,
               set_training: SetTraining = _set_training) -> torch.nn.Module:
    if config.epochs == 0:
        return module
    hooks = _keep_zero_weights(module)
    try:
        batches = _batches(context, config.batch_size)
        return _train(module, config, context, batches, teacher, set_training)
    except MemoryError:
        raise _out_of_memory(config, "MemoryError") from None
    except RuntimeError as exc:  # torch's allocator: "can't allocate memory: you tried ..."
        if "allocate memory" not in str(exc):
            raise
        raise _out_of_memory(config, " ".join(str(exc).split())[:200]) from None
    finally:
        for hook in hooks:
            hook.remove()


def _out_of_memory(config: FineTune, what: str) -> CompressError:
    """Fine-tuning did not fit in this machine's memory: say that the batch is the knob.

    Activations for the backward pass grow with the batch (a Swin-T at 224 x 224 in
    batches of 32 took 22.8 GB); the kernel may also kill the process before any error
    is raised, with nothing said: the batch is the knob then too.
    """
    smaller = max(1, config.batch_size // 4)
    return CompressError(
        f"{config.recipe}: fine-tuning ran out of memory in batches of {config.batch_size} "
        f"samples ({what}); a smaller batch needs less: add :batch=N to the step, e.g. "
        f"{_step_text(config, batch=smaller)}", recipe=config.recipe)


def _step_text(config: FineTune, *, batch: int) -> str:
    """``prune-channels:0.5:batch=8``: the step as a recipe names it, with ``batch``."""
    values: dict[type, str] = {PruneConfig: "sparsity", ChannelPruneConfig: "ratio",
                               ClusterConfig: "clusters"}
    value = values.get(type(config))
    shown = f":{getattr(config, value):g}" if value else ""
    return f"{config.recipe}{shown}:batch={batch}"


def _keep_zero_weights(module: torch.nn.Module) -> list[RemovableHandle]:
    """Hold weights that are exactly zero at zero while fine-tuning; the hooks to remove.

    Zero weights are pruned ones (``prune:0.8+distill``, ``prune:0.8+qat``): without this
    the fine-tuning after pruning trains them back and the sparsity is lost.  A zero
    gradient keeps them zero under Adam, and zero quantizes to zero.
    """
    hooks = []
    for parameter in module.parameters():
        if parameter.dim() > 1 and not bool(parameter.all()):
            kept = parameter.detach() != 0
            hooks.append(parameter.register_hook(lambda grad, kept=kept: grad * kept))
    return hooks


def _train(module: torch.nn.Module, config: FineTune, context: TransformContext,
           batches: list[tuple[Inputs, torch.Tensor]], teacher: torch.nn.Module | None,
           set_training: SetTraining) -> torch.nn.Module:
    import torch
    from torch.nn import functional

    optimizer = torch.optim.Adam(module.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(0)
    if teacher is not None:
        teacher = copy.deepcopy(teacher).eval()
    for epoch in range(config.epochs):
        set_training(module, True)
        total = 0.0
        for index in torch.randperm(len(batches), generator=generator).tolist():
            inputs, labels = batches[index]
            optimizer.zero_grad()
            logits = _first(module(*inputs))
            loss = functional.cross_entropy(logits, labels)
            if isinstance(config, DistillConfig) and teacher is not None:
                with torch.no_grad():
                    soft = _first(teacher(*inputs)) / config.temperature
                kl = functional.kl_div(functional.log_softmax(logits / config.temperature, 1),
                                       functional.log_softmax(soft, 1), log_target=True,
                                       reduction="batchmean")
                loss = (config.alpha * kl * config.temperature ** 2
                        + (1 - config.alpha) * loss)
            loss.backward()
            optimizer.step()
            total += loss.item()
        context.progress(f"{config.recipe}: fine-tune epoch {epoch + 1}/{config.epochs}, "
                         f"loss {total / len(batches):.4f}")
    set_training(module, False)
    return module


def _first(outputs: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The output fine-tuning trains: the first, the one accuracy is read from.  A model of
    several outputs returns them as a flat tuple (:mod:`toolkit.model.outputs`)."""
    return outputs[0] if isinstance(outputs, tuple) else outputs
