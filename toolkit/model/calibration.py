"""Calibration inputs for a file a user gives (``--calibration DIR``): a ``.tflite`` or an
``.onnx`` carries no data, and full-integer ``int8`` needs real inputs to choose its
activation ranges.

``DIR`` holds one file per sample, read in name order: an ``.npy`` (the model's one input)
or an ``.npz`` (its inputs in the model's order; ``np.savez(f, x, mask)`` keeps that
order).  Each array has the input's shape exactly, batch dimension included: the arrays
are fed as they are, and a shape that differs is one line naming the file.

Example::

    samples = calibration_inputs(Path("calibration"))  # a DataFunction
    for inputs, _label in samples(): ...
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from toolkit.errors import UsageError

if TYPE_CHECKING:  # load imports this module: its type names only
    from toolkit.model.load import DataFunction, Inputs, LabelledSample

__all__ = ["SUFFIXES", "calibration_inputs", "check_shapes"]

#: The files a calibration folder may hold (anything else in it is refused by name).
SUFFIXES = (".npy", ".npz")


def calibration_inputs(folder: Path) -> DataFunction:
    """A data function over ``folder``'s samples (``(inputs, None)``: no labels), each
    file read when it is reached; a :class:`UsageError` now for a folder that is missing,
    empty, holds other files, or a file that does not read as arrays."""
    if not folder.is_dir():
        raise UsageError(f"--calibration {folder} is not a folder; give a folder of .npy "
                         "or .npz files, one per sample")
    files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    others = [p.name for p in files if p.suffix not in SUFFIXES or not p.is_file()]
    if others:
        raise UsageError(f"--calibration {folder} holds {others[0]!r}, which is not an .npy "
                         "or .npz file: keep only the samples in it")
    if not files:
        raise UsageError(f"--calibration {folder} holds no .npy or .npz file; write one per "
                         "sample, e.g. np.save('calibration/0000.npy', x)")
    for path in files:
        _read(path)  # every file checked before any conversion starts

    def samples() -> Iterator[LabelledSample]:
        for path in files:
            # Arrays where a model file's data gives tensors: every reader of a given
            # file's inputs takes them through np.asarray, and torch is not imported for them.
            yield cast("Inputs", _read(path)), None

    return samples


def check_shapes(inputs: tuple[np.ndarray, ...], wanted: list[tuple[tuple[int, ...], str]],
                 where: str) -> None:
    """A :class:`UsageError` naming ``where`` when ``inputs`` are not the model's inputs
    ``wanted`` (shape, name) in number and shape."""
    if len(inputs) != len(wanted):
        raise UsageError(f"{where} holds {len(inputs)} array(s) and the model takes "
                         f"{len(wanted)} input(s) ({', '.join(n for _s, n in wanted)})")
    for array, (shape, name) in zip(inputs, wanted, strict=True):
        if tuple(array.shape) != tuple(shape):
            raise UsageError(f"{where}: input {name!r} has shape {list(array.shape)}; the "
                             f"model takes {list(shape)} (batch dimension included)")


def _read(path: Path) -> tuple[np.ndarray, ...]:
    try:
        if path.suffix == ".npy":
            return (np.load(path, allow_pickle=False),)
        with np.load(path, allow_pickle=False) as arrays:
            return tuple(arrays[name] for name in arrays.files)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"--calibration: {path} does not read as numpy arrays: "
                         f"{first}") from None
