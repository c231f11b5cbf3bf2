"""Stage 1: load what the user deploys.

Either a Python file following the model protocol (``build_model()``,
``example_input()``, optionally ``calibration_data()``, ``eval_data()`` and ``train_data()`` for
recipes that fine-tune; a label may be ``None`` for models without labels), or
an existing ``.tflite`` or ``.onnx`` file that is deployed as it is.

Example::

    source = load_model_source("examples/digits_cnn.py")
    source.module, source.example_input
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import os
import sys
import sysconfig
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, TypeAlias, TypeGuard, TypeVar, cast

from device_agent.protocol import sha256_file
from toolkit._quiet import captured_native_output
from toolkit.errors import ModelError, UsageError
from toolkit.model.onnx_file import check_onnx
from toolkit.model.tflite_ops import check_custom_ops

if TYPE_CHECKING:
    import numpy as np
    import torch
    from numpy.typing import NDArray

#: The inputs of one forward pass, as ``example_input()`` gives them: one tensor per
#: argument of the model's ``forward``.
Inputs: TypeAlias = "tuple[torch.Tensor, ...]"
#: What a data function yields: the inputs and a label (an int, or None without labels).
LabelledSample: TypeAlias = "tuple[Inputs, int | None]"
#: ``calibration_data``, ``eval_data`` or ``train_data`` of the model file.
DataFunction: TypeAlias = "Callable[[], Iterable[LabelledSample]]"
_T = TypeVar("_T")


@dataclass(frozen=True)
class ModelSource:
    """A loaded model: a torch module with its example input, or a ready .tflite or .onnx
    file."""

    path: Path
    sha256: str
    module: torch.nn.Module | None = None
    example_input: Inputs = ()
    calibration_data: DataFunction | None = None
    eval_data: DataFunction | None = None
    train_data: DataFunction | None = None
    #: Files outside the Python installation that loading the model read (its weights,
    #: a helper module beside it) with their sha256 then: part of the conversion cache key.
    loaded_files: tuple[tuple[Path, str], ...] = ()
    #: The names of the torch module's outputs in the order it returns them (``logits``,
    #: ``boxes``; see :mod:`toolkit.model.outputs`); empty for a file deployed as given.
    output_names: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def as_given(self) -> bool:
        """A ready file (``.tflite`` or ``.onnx``), deployed as it is: no torch module.

        Told by the file's suffix: a model file's source stays one after
        :meth:`without_module`."""
        return self.path.suffix != ".py"

    def without_module(self) -> ModelSource:
        """This source without its torch module and data functions: what a run needs once
        its variants are built (names and hashes), without a large model's weights."""
        return dataclasses.replace(self, module=None, calibration_data=None, eval_data=None,
                                   train_data=None)

    @property
    def is_tflite(self) -> bool:
        return self.as_given and self.path.suffix == ".tflite"

    @property
    def is_onnx(self) -> bool:
        return self.as_given and self.path.suffix == ".onnx"


def load_model_source(path: str | Path, *, calibration: Path | None = None) -> ModelSource:
    """Load a model file, checking that its model accepts its own example input.

    ``calibration``: a folder of calibration inputs for a ``.tflite`` or ``.onnx``
    (:mod:`toolkit.model.calibration`); a model file's own ``calibration_data()`` is its."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(_folder_given(path), path=path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist", path=path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if path.suffix not in (".tflite", ".onnx", ".py"):
        raise ModelError(f"model file {path} must be a .py model file, a .tflite file or an "
                         ".onnx file", path=path)
    if path.suffix == ".py" and calibration is not None:
        raise UsageError(f"--calibration is for a .tflite or .onnx; {path.name} calibrates "
                         "with its own calibration_data()")
    if path.suffix in (".tflite", ".onnx"):
        if path.suffix == ".tflite":
            check_tflite(path, data)
            check_custom_ops(path, data)
        else:
            check_onnx(path, data)
        from toolkit.model.calibration import calibration_inputs

        return ModelSource(path=path, sha256=digest, calibration_data=calibration_inputs(
            calibration) if calibration is not None else None)
    with _reads_recorded() as read, _folder_importable(path) as helpers:
        namespace = _import_file(path, digest)
        build_model = _required(namespace, "build_model", path)
        example_input = _required(namespace, "example_input", path)
        module = _call(build_model, path, "build_model()")
        if not _is_torch_module(module):
            raise ModelError(f"{path}: build_model() must return a torch.nn.Module, "
                             f"got {type(module).__name__}", path=path)
        given = _call(example_input, path, "example_input()")
    # The protocol's tensors: running the module on them below is their check.
    example = cast("Inputs", given if isinstance(given, tuple) else (given,))
    outputs = _check_accepts(module.eval(), example, path)
    from toolkit.model.outputs import FlatOutputs, is_flat, output_names

    names = output_names(outputs, path)
    if not is_flat(outputs):
        module = FlatOutputs(module).eval()
    data_functions = {name: _data_function(namespace, name, path)
                      for name in ("calibration_data", "eval_data", "train_data")}
    return ModelSource(
        path=path, sha256=digest, module=module, example_input=example, **data_functions,
        loaded_files=tuple((file, sha256_file(file))
                           for file in sorted((read | helpers) - {path.resolve()})),
        output_names=names,
    )


#: What a folder given as the model is searched for, for the message that names them.
MODEL_FILE_KINDS = "a .py model file with build_model(), a .tflite file or an .onnx file"


def _folder_given(folder: Path) -> str:
    """The message for a folder given as the model: the model files in it, if any."""
    found = sorted(str(file) for file in folder.iterdir() if file.is_file() and (
        file.suffix in (".tflite", ".onnx") or (file.suffix == ".py" and _defines_model(file))))
    if not found:
        return (f"{folder} is a folder, not a model file, and has no model file in it "
                f"({MODEL_FILE_KINDS})")
    shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    return f"{folder} is a folder, not a model file; the model files in it: {shown}"


def _defines_model(file: Path) -> bool:
    try:
        return "def build_model(" in file.read_text(encoding="utf-8", errors="replace")
    except OSError:  # unreadable: not one to suggest
        return False


#: Header of a TFLite flatbuffer: 4 bytes root offset, then the file identifier.
TFLITE_IDENTIFIER = b"TFL3"


def check_tflite(path: Path, data: bytes) -> None:
    """Refuse, in one line, a ``.tflite`` that is empty, truncated or not a TFLite model.

    Checked on the host before anything is built, stored or sent: a broken file is the
    user's to fix (exit 2), not a variant that "failed on the board".  The flatbuffer is
    walked in pure Python (every table, vector and buffer the runtime would read), so a
    malformed file raises here instead of crashing an interpreter.
    """
    if not data:
        raise ModelError(f"{path} is empty (0 bytes): not a TFLite model", path=path)
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        if len(data) < 8 and TFLITE_IDENTIFIER.startswith(data[4:8]):
            raise ModelError(f"{path} is truncated: {len(data)} bytes, shorter than a "
                             "TFLite header", path=path)
        raise ModelError(f"{path} is not a TFLite model: no {TFLITE_IDENTIFIER.decode()} "
                         f"flatbuffer identifier at bytes 4..8 (found {data[4:8]!r})", path=path)
    try:
        problem = _tflite_structure_problem(data)
    except Exception:  # noqa: BLE001 - struct, index and numpy errors all mean "past the end"
        problem = (f"is truncated or corrupt: a table or vector runs past the end of its "
                   f"{len(data)} bytes")
    if problem:
        raise ModelError(f"{path} {problem}", path=path)


def _tflite_structure_problem(data: bytes) -> str | None:
    """What is wrong with the model's structure, or None; raises when a read leaves the file."""
    from ai_edge_litert import schema_py_generated as schema

    size = len(data)
    root = int.from_bytes(data[:4], "little")
    if root >= size:
        return (f"is truncated or corrupt: its root table offset {root} is past the end of "
                f"its {size} bytes")
    model = schema.Model.GetRootAs(data, 0)
    model.Version()
    codes = model.OperatorCodesLength()
    for index in range(codes):
        code = model.OperatorCodes(index)
        code.BuiltinCode(), code.DeprecatedBuiltinCode(), code.Version(), code.CustomCode()
    buffers = model.BuffersLength()
    for index in range(buffers):
        buffer = model.Buffers(index)
        if buffer.DataLength():
            buffer.DataAsNumpy()  # numpy refuses a vector that runs past the end
        if buffer.Offset() > 1 and buffer.Offset() + buffer.Size() > size:
            return (f"is truncated: buffer {index} ends at byte "
                    f"{buffer.Offset() + buffer.Size()} of {size}")
    if model.SubgraphsLength() == 0:
        return "is not a usable TFLite model: it has no subgraph"
    for number in range(model.SubgraphsLength()):
        graph = model.Subgraphs(number)
        tensors = graph.TensorsLength()
        for index in range(tensors):
            tensor = graph.Tensors(index)
            tensor.Type(), tensor.Name()
            if tensor.ShapeLength():
                tensor.ShapeAsNumpy()
            if tensor.Buffer() >= max(buffers, 1):
                return f"is corrupt: tensor {index} names buffer {tensor.Buffer()} of {buffers}"
        indices = [*_indices(graph.InputsAsNumpy, graph.InputsLength()),
                   *_indices(graph.OutputsAsNumpy, graph.OutputsLength())]
        for index in range(graph.OperatorsLength()):
            operator = graph.Operators(index)
            if operator.OpcodeIndex() >= codes:
                return (f"is corrupt: operator {index} names operator code "
                        f"{operator.OpcodeIndex()} of {codes}")
            indices += [*_indices(operator.InputsAsNumpy, operator.InputsLength()),
                        *_indices(operator.OutputsAsNumpy, operator.OutputsLength())]
        bad = [i for i in indices if i >= tensors or i < -1]
        if bad:
            return f"is corrupt: subgraph {number} names tensor {bad[0]} of {tensors}"
    return None


def _indices(read: Callable[[], NDArray[np.int32]], length: int) -> list[int]:
    return [int(i) for i in read()] if length else []


@contextlib.contextmanager
def _folder_importable(path: Path) -> Iterator[set[Path]]:
    """The model file's folder first on ``sys.path`` meanwhile, as ``python model.py`` has
    it: ``from layers import Block`` finds ``layers.py`` beside it.

    Yields a set that, at the end, holds the source files of the modules imported
    meanwhile from outside the Python installation: they are part of what the model
    loaded, though the import reads their cached bytecode, not the source, when it can.
    The modules imported from the folder are then taken out of ``sys.modules`` (the
    objects made from them keep theirs): another model's ``layers.py`` loaded later in
    this process must not be answered with this one's.
    """
    folder = os.path.dirname(os.path.realpath(path))
    before = set(sys.modules)
    helpers: set[Path] = set()
    sys.path.insert(0, folder)
    try:
        yield helpers
    finally:
        with contextlib.suppress(ValueError):  # the model file took it off itself
            sys.path.remove(folder)
        # A finder lists a folder once: files written beside the model before a later
        # load in this process must be seen then.
        sys.path_importer_cache.pop(folder, None)
        for name in set(sys.modules) - before:
            file = getattr(sys.modules[name], "__file__", None)
            if not isinstance(file, str) or name.startswith(_USER_MODEL_PREFIX):
                continue
            real = os.path.realpath(file)
            if real.startswith(_INSTALLATION) or not os.path.isfile(real):
                continue
            helpers.add(Path(real))
            if real.startswith(folder + os.sep):
                del sys.modules[name]


#: The start of the name the model file is imported under (see :func:`_import_file`).
_USER_MODEL_PREFIX = "edge_user_model_"


def _import_file(path: Path, digest: str) -> ModuleType:
    # The module name ends up in the converted file (tensor names carry the class path), so
    # it comes from the file's content: the same model gives the same bytes on every deploy.
    # Loading the same content twice replaces the entry; the first load's objects keep theirs.
    module_name = f"{_USER_MODEL_PREFIX}{digest[:16]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"model file {path} cannot be imported", path=path)
    namespace = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = namespace  # dataclasses and pickling look modules up here
    try:
        # What its imports print goes (transformers imports torchao, which reports the
        # CUDA kernels it cannot load, on every run): the converters' chatter, not the user's.
        with captured_native_output():
            spec.loader.exec_module(namespace)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise ModelError(f"{path} failed to import: {_one_line(exc)}", path=path) from exc
    return namespace


def _callable(namespace: ModuleType, name: str, path: Path) -> Callable[[], object] | None:
    """The function ``name`` of the model file, None when it defines none."""
    value = getattr(namespace, name, None)
    if value is None:
        return None
    if not callable(value):
        raise ModelError(f"{path}: {name} must be a function", path=path)
    return value


def _required(namespace: ModuleType, name: str, path: Path) -> Callable[[], object]:
    function = _callable(namespace, name, path)
    if function is None:
        raise ModelError(f"{path} defines no {name}(); a model file needs build_model() "
                         "and example_input()", path=path)
    return function


#: What every data function must yield, for the message that says so.
SAMPLE_FORM = ("(inputs, label) pairs, inputs a tuple of tensors as example_input() returns "
               "and label an int or None, e.g. `yield (image,), label`")


#: The end of a data function's samples (``None`` may be one).
_END = object()


def _data_function(namespace: ModuleType, name: str,
                   path: Path) -> Callable[[], Iterator[LabelledSample]] | None:
    """``name`` from the model file, each sample checked for the ``(inputs, label)`` form.

    Its first sample is read now, so that a data function yielding something else (a
    bare tensor, say) is refused in one line before anything is built; every consumer
    (calibration, accuracy, the conversion cache's key) then gets well-formed samples.
    """
    function = _callable(namespace, name, path)
    if function is None:
        return None

    def produced() -> Iterator[object]:
        # Each sample is made with the model's folder importable, as at load: a data
        # function may import a module beside the model file when it runs.
        with _folder_importable(path):
            made = iter(cast("Iterable[object]", function()))
        while True:
            with _folder_importable(path):
                sample = next(made, _END)
            if sample is _END:
                return
            yield sample

    @functools.wraps(function)
    def samples() -> Generator[LabelledSample, None, None]:
        # Whatever it returns is checked here, sample by sample (a non-iterable fails
        # as any error of the function does).
        for sample in produced():
            if not isinstance(sample, tuple | list) or len(sample) != 2:
                problem = _describe(sample)
            elif not isinstance(sample[0], tuple | list):
                problem = f"a pair whose inputs are {_describe(sample[0])}, not a tuple"
            else:
                yield tuple(sample[0]), sample[1]
                continue
            raise ModelError(f"{path}: {name}() yielded {problem}; it must yield {SAMPLE_FORM}",
                             path=path)

    first = samples()
    try:
        next(first, None)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{path}: {name}() failed: {_one_line(exc)}", path=path) from exc
    finally:
        first.close()
    return samples


def _describe(value: object) -> str:
    """``a Tensor of shape (1, 1, 8, 8)``, ``a tuple of 3 items``, ``an int``."""
    kind = type(value).__name__
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    if hasattr(value, "shape"):
        return f"{article} {kind} of shape {tuple(value.shape)}"
    if isinstance(value, tuple | list):
        return f"{article} {kind} of {len(value)} items"
    return f"{article} {kind}"


def _call(function: Callable[[], _T], path: Path, what: str) -> _T:
    try:
        return function()
    except Exception as exc:
        raise ModelError(f"{path}: {what} failed: {_one_line(exc)}", path=path) from exc


def _is_torch_module(value: object) -> TypeGuard[torch.nn.Module]:
    import torch

    return isinstance(value, torch.nn.Module)


def _check_accepts(module: torch.nn.Module, example: Inputs, path: Path) -> object:
    """What the module returns for ``example``; a :class:`ModelError` when it fails."""
    import torch

    try:
        with torch.no_grad():
            return module(*example)
    except Exception as exc:
        raise ModelError(f"{path}: the model rejects example_input(): {_one_line(exc)}",
                         path=path) from exc


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


_recording = threading.local()
#: Reads here are the toolchain's or edge's own (both part of the cache key), not the model's.
_INSTALLATION = tuple({os.path.realpath(p) + os.sep for p in (
    sys.prefix, sys.base_prefix, sys.exec_prefix, *sysconfig.get_paths().values(),
    str(Path(__file__).parents[1]), str(Path(__file__).parents[2] / "device_agent"))})
_SYSTEM = ("/proc/", "/sys/", "/dev/")


def _record_open(event: str, args: tuple[object, ...]) -> None:
    files = getattr(_recording, "files", None)
    if files is None or event != "open":
        return
    name, mode = args[0], args[1]
    if not isinstance(name, str | os.PathLike) or (
            isinstance(mode, str) and any(flag in mode for flag in "wax+")):
        return
    real = os.path.realpath(os.fsdecode(name))
    if (real.startswith(_INSTALLATION) or real.startswith(_SYSTEM)
            or real.endswith(".pyc") or not os.path.isfile(real)
            or (real.endswith(".py") and _on_stack(real))):
        return
    files.add(Path(real))


def _on_stack(real: str) -> bool:
    """Whether ``real`` is the source of a running frame: read for a traceback (torch
    formats the caller's stack when first imported), not loaded by the model."""
    frame = sys._getframe(2)
    while frame is not None:
        if os.path.realpath(frame.f_code.co_filename) == real:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


@functools.cache
def _install_hook() -> None:
    """Audit hooks cannot be removed: one, installed once, records only while a model loads."""
    sys.addaudithook(_record_open)


@contextlib.contextmanager
def _reads_recorded() -> Iterator[set[Path]]:
    """The files this thread opens for reading meanwhile, seen through an audit hook.

    It sees ``open()``, ``io.open_code`` (imports) and ``torch.load``'s opens.
    """
    _install_hook()
    files: set[Path] = set()
    _recording.files = files
    try:
        yield files
    finally:
        _recording.files = None
