"""Stage 1: load what the user deploys.

Either a Python file following the model protocol (``build_model()``,
``example_input()``, optionally ``calibration_data()``, ``eval_data()`` and ``train_data()`` for
recipes that fine-tune; a label may be ``None`` for models without labels), or
an existing ``.tflite`` file that is deployed as it is.

Example::

    source = load_model_source("examples/digits_cnn.py")
    source.module, source.example_input
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelError

LabelledSample = tuple[tuple[Any, ...], Any]


@dataclass(frozen=True)
class ModelSource:
    """A loaded model: a torch module with its example input, or a ready .tflite file."""

    path: Path
    sha256: str
    module: Any = None
    example_input: tuple[Any, ...] = ()
    calibration_data: Callable[[], Iterable[LabelledSample]] | None = None
    eval_data: Callable[[], Iterable[LabelledSample]] | None = None
    train_data: Callable[[], Iterable[LabelledSample]] | None = None

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def is_tflite(self) -> bool:
        return self.module is None


def load_model_source(path: str | Path) -> ModelSource:
    """Load a model file, checking that its model accepts its own example input."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist", path=path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if path.suffix == ".tflite":
        return ModelSource(path=path, sha256=digest)
    if path.suffix != ".py":
        raise ModelError(f"model file {path} must be a .py model file or a .tflite file",
                         path=path)
    namespace = _import_file(path)
    build_model = _callable(namespace, "build_model", path, required=True)
    example_input = _callable(namespace, "example_input", path, required=True)
    module = _call(build_model, path, "build_model()")
    if not _is_torch_module(module):
        raise ModelError(f"{path}: build_model() must return a torch.nn.Module, "
                         f"got {type(module).__name__}", path=path)
    example = _call(example_input, path, "example_input()")
    if not isinstance(example, tuple):
        example = (example,)
    _check_accepts(module.eval(), example, path)
    return ModelSource(
        path=path, sha256=digest, module=module, example_input=example,
        calibration_data=_callable(namespace, "calibration_data", path, required=False),
        eval_data=_callable(namespace, "eval_data", path, required=False),
        train_data=_callable(namespace, "train_data", path, required=False),
    )


def _import_file(path: Path) -> Any:
    module_name = f"edge_user_model_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"model file {path} cannot be imported", path=path)
    namespace = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = namespace  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(namespace)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise ModelError(f"{path} failed to import: {_one_line(exc)}", path=path) from exc
    return namespace


def _callable(namespace: Any, name: str, path: Path, *, required: bool) -> Any:
    value = getattr(namespace, name, None)
    if value is None:
        if required:
            raise ModelError(f"{path} defines no {name}(); a model file needs build_model() "
                             "and example_input()", path=path)
        return None
    if not callable(value):
        raise ModelError(f"{path}: {name} must be a function", path=path)
    return value


def _call(function: Callable[[], Any], path: Path, what: str) -> Any:
    try:
        return function()
    except Exception as exc:
        raise ModelError(f"{path}: {what} failed: {_one_line(exc)}", path=path) from exc


def _is_torch_module(value: Any) -> bool:
    import torch

    return isinstance(value, torch.nn.Module)


def _check_accepts(module: Any, example: tuple[Any, ...], path: Path) -> None:
    import torch

    try:
        with torch.no_grad():
            module(*example)
    except Exception as exc:
        raise ModelError(f"{path}: the model rejects example_input(): {_one_line(exc)}",
                         path=path) from exc


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
