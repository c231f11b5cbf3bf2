"""Custom operators in a user's ``.tflite``, found on the host before anything is sent.

A ``.tflite`` names each operator by a code; ``CUSTOM`` operators carry a name instead,
and run only where the runtime has a kernel registered under that name. The stock
runtimes a board gets (ai-edge-litert, tflite-runtime) register four
(:data:`STOCK_CUSTOM_OPS`, in ``tensorflow/lite/core/kernels/register.cc``); TensorFlow
ops kept by ``SELECT_TF_OPS`` (``Flex...``) need TensorFlow's own interpreter. A file
with any other custom op loads nowhere edge can measure, so it is refused in one line
before it is built, stored or uploaded, naming the op and what would run it.

Example::

    custom_ops(Path("face_landmark.tflite").read_bytes())  # ['Landmarks2TransformMatrix']
"""

from __future__ import annotations

from pathlib import Path

from toolkit.errors import ModelError

__all__ = ["STOCK_CUSTOM_OPS", "check_custom_ops", "custom_ops"]

#: Custom ops every stock TFLite runtime registers (its ``BuiltinOpResolver``).
STOCK_CUSTOM_OPS = frozenset({"AudioSpectrogram", "Mfcc", "NumericVerify",
                              "TFLite_Detection_PostProcess"})
#: Prefix of the TensorFlow ops a converter kept with ``SELECT_TF_OPS``.
FLEX_PREFIX = "Flex"


def custom_ops(data: bytes) -> list[str]:
    """The names of the file's custom operator codes, in the file's order."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    names = []
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        # Codes above 127 live in builtin_code; older files fill only the deprecated byte.
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == schema.BuiltinOperator.CUSTOM:
            names.append((code.CustomCode() or b"").decode("utf-8", "replace"))
    return names


def check_custom_ops(path: Path, data: bytes) -> None:
    """Refuse, in one line, a ``.tflite`` with a custom op no stock runtime registers."""
    unknown = [name for name in custom_ops(data) if name not in STOCK_CUSTOM_OPS]
    if not unknown:
        return
    flex = [name for name in unknown if name.startswith(FLEX_PREFIX)]
    if flex:
        raise ModelError(
            f"{path} uses TensorFlow ops kept by SELECT_TF_OPS ({_listed(flex)}): they need "
            "TensorFlow's Flex delegate, which tflite-runtime and ai-edge-litert do not have; "
            "convert the model with TFLite builtin ops only", path=path)
    raise ModelError(
        f"{path} uses the custom op{'s' if len(unknown) > 1 else ''} {_listed(unknown)}, which "
        "no stock TFLite runtime registers: it runs only on a runtime built with "
        f"{'those ops' if len(unknown) > 1 else 'that op'} registered (or a delegate that "
        "implements it), and edge's agent loads the stock runtimes", path=path)


def _listed(names: list[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")
