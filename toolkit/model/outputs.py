"""A model's outputs as one flat tuple of tensors, each with a name.

A converted file has a flat list of output tensors, and every consumer on the host
(accuracy, fidelity, the board's output check) compares outputs by position.  A model
whose ``forward`` returns a dict (detection heads, Hugging Face models) or nested tuples
is wrapped once, at load, in :class:`FlatOutputs`, which returns its tensors in this
order: a dict's in the insertion order of its keys as the model returns them, a tuple's
or list's depth-first.  Their names say where each came from: ``logits`` and ``boxes``
for a dict's, ``output_0.1`` for the second tensor of a tuple that is the first output,
``output`` for a single tensor.

Example::

    names = output_names(module(*example), path)   # ('logits', 'boxes')
    module = FlatOutputs(module)                    # returns (logits, boxes)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import cast

import torch

from toolkit.errors import ModelError

__all__ = ["FlatOutputs", "OUTPUT_FORM", "flatten", "is_flat", "output_names"]

#: What ``forward`` may return: tensors, alone or in tuples, lists and dicts, nested.
OUTPUT_FORM = "a tensor, or tensors in tuples, lists and dicts"


def output_names(outputs: object, path: Path) -> tuple[str, ...]:
    """The names of ``outputs`` (one ``forward``'s result) in the flat order; a
    :class:`ModelError` naming the first value that is not a tensor."""
    names = []
    for name, value in _leaves(outputs, ""):
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"{path}: forward returns {_kind(value)} as {name}; only "
                             f"{OUTPUT_FORM} can be converted", path=path)
        names.append(name)
    return tuple(names)


def is_flat(outputs: object) -> bool:
    """A tensor or a tuple of tensors: what the converters and the host's checks take as
    they are, so the module needs no wrapper (and its converted file stays as before)."""
    return isinstance(outputs, torch.Tensor) or (
        isinstance(outputs, tuple) and all(isinstance(o, torch.Tensor) for o in outputs))


def flatten(outputs: object) -> tuple[torch.Tensor, ...]:
    """The tensors of ``outputs``, in the order :func:`output_names` names them."""
    return tuple(cast("torch.Tensor", value) for _name, value in _leaves(outputs, ""))


class FlatOutputs(torch.nn.Module):
    """``model`` returning :func:`flatten` of what it returns."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return flatten(self.model(*inputs))


def _leaves(value: object, name: str) -> Iterator[tuple[str, object]]:
    """Depth first: ``(name, leaf)`` for each value that is not a tuple, list or dict."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves(item, f"{name}.{key}" if name else str(key))
    elif isinstance(value, tuple | list):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{name}.{index}" if name else f"output_{index}")
    else:
        yield name or "output", value


def _kind(value: object) -> str:
    if value is None:
        return "None"
    kind = type(value).__name__
    return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"
