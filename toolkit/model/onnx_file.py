"""An ``.onnx`` file a user deploys as given: checked on the host, its operators listed.

:func:`check_onnx` refuses, in one line, a file that is empty, not an ONNX protobuf, or
that ``onnx.checker`` rejects (a node no opset defines, a graph whose edges do not
connect): the user's file to fix (exit 2), never a variant that "failed on the board".

Example::

    check_onnx(Path("model.onnx"), Path("model.onnx").read_bytes())
    onnx_op_versions(Path("model.onnx"))  # [{"op": "MatMul", "version": 17}, ...]
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.errors import ModelError
from toolkit.results.facts import OpVersion

if TYPE_CHECKING:
    import onnx

__all__ = ["check_onnx", "onnx_op_versions"]


def check_onnx(path: Path, data: bytes) -> None:
    """Raise :class:`ModelError` (one line naming the file) unless ``data`` is a valid model."""
    if not data:
        raise ModelError(f"{path} is empty (0 bytes): not an ONNX model", path=path)
    try:
        import onnx
    except ImportError:
        raise ModelError(f"{path}: deploying an .onnx needs the onnx package on this machine: "
                         "pip install 'edge[onnx]'", path=path) from None
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError, ValueError, ...
        raise ModelError(f"{path} is not an ONNX model: {_first_line(exc)}", path=path) from None
    if not model.graph.node:
        raise ModelError(f"{path} is not an ONNX model: its graph has no nodes", path=path)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - ValidationError, or C++ errors as RuntimeError
        raise ModelError(f"{path} fails onnx.checker: {_first_line(exc)}", path=path) from None


def onnx_op_versions(path: Path) -> list[OpVersion]:
    """Each operator type the graph uses, with the opset version of its domain."""
    import onnx

    try:
        model: onnx.ModelProto = onnx.load_model(str(path))
    except Exception:  # noqa: BLE001 - an unreadable file has no operators to list
        return []
    opsets = {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}
    seen: dict[str, int] = {}
    for node in model.graph.node:
        domain = node.domain or "ai.onnx"
        name = node.op_type if domain == "ai.onnx" else f"{domain}.{node.op_type}"
        seen.setdefault(name, opsets.get(domain, 0))
    return [{"op": name, "version": version} for name, version in seen.items()]


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
