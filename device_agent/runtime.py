"""Find the runtime the job asks for and say which one it is, and why.

ai-edge-litert is preferred (the maintained successor); tflite-runtime 2.14 is
the floor many Raspberry Pi and Jetson images carry.  A target may name one
(its ``runtime`` setting): then that one runs or the variants fail saying it is
missing, never the other one silently.  With ``auto`` the choice is explained
(:attr:`Runtime.choice`), because a board with both installed runs only one.
Every figure the agent reports names the runtime that produced it.

An ``.onnx`` file runs on ONNX Runtime (:data:`ONNX_RUNTIME`, through
:class:`device_agent.ort.OrtSession`), whatever ``auto`` would pick for a ``.tflite``:
:func:`runtime_for` chooses by the file, and refuses in one line a file the target's
runtime cannot read.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Callable

from .wire import RuntimeFacts

if TYPE_CHECKING:
    from .interp import Model

#: (distribution name, module that holds ``Interpreter``), in order of preference.
RUNTIME_CANDIDATES = (
    ("ai-edge-litert", "ai_edge_litert.interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter"),
)


#: The distribution (and module) that runs ``.onnx`` files.
ONNX_RUNTIME = "onnxruntime"
#: The suffix of the files ONNX Runtime runs.
ONNX_SUFFIX = ".onnx"


class RuntimeNotFound(RuntimeError):
    """The runtime asked for (or, with ``auto``, any runtime) cannot be imported here."""


@dataclass(frozen=True)
class Runtime:
    name: str
    version: str
    interpreter_class: Callable[..., Model]
    #: Why this runtime, e.g. "auto: ai-edge-litert 2.3.0 preferred; tflite-runtime 2.14.0
    #: also installed" or "tflite-runtime 2.14.0, as the target asks".
    choice: str = ""

    def describe(self) -> RuntimeFacts:
        return {"name": self.name, "version": self.version}


def runtime_for(preference: str, file_name: str) -> Runtime:
    """The runtime that runs ``file_name`` under the target's ``preference``: ONNX Runtime
    for an ``.onnx`` (with ``auto`` or ``onnxruntime``), else :func:`find_runtime`."""
    onnx = file_name.endswith(ONNX_SUFFIX)
    if onnx and preference not in ("auto", ONNX_RUNTIME):
        raise RuntimeNotFound(f"{file_name} is an ONNX model and runtime {preference} (the "
                              "target's runtime setting) runs .tflite files; set runtime = "
                              f'"{ONNX_RUNTIME}" or "auto"')
    if not onnx and preference == ONNX_RUNTIME:
        raise RuntimeNotFound(f"{file_name} is a TFLite model and runtime {ONNX_RUNTIME} (the "
                              "target's runtime setting) runs .onnx files; set runtime = "
                              '"auto" or a TFLite runtime')
    return find_runtime(ONNX_RUNTIME if onnx else preference)


def find_runtime(preference: str = "auto") -> Runtime:
    """The runtime ``preference`` names ("auto": the first importable TFLite candidate)."""
    if preference == ONNX_RUNTIME:
        return _onnxruntime()
    names = [distribution for distribution, _module in RUNTIME_CANDIDATES]
    if preference != "auto" and preference not in names:
        raise RuntimeNotFound(f"unknown runtime {preference!r}; one of auto, "
                              + ", ".join([*names, ONNX_RUNTIME]))
    if preference != "auto":
        module_name = dict(RUNTIME_CANDIDATES)[preference]
        version = _installed_version(preference)
        if version is None:
            others = _installed(exclude=preference)
            raise RuntimeNotFound(
                f"runtime {preference} (the target's runtime setting) is not installed here"
                + (f"; installed: {others}" if others else "; no TFLite runtime is installed"))
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # a broken install (e.g. numpy 2 under 2.14)
            raise RuntimeNotFound(f"runtime {preference} {version} (the target's runtime "
                                  f"setting) does not import: {_one_line(exc)}") from None
        return Runtime(preference, version, module.Interpreter,
                       f"{preference} {version}, as the target's runtime setting asks")
    failures: list[tuple[str, str]] = []
    for distribution, module_name in RUNTIME_CANDIDATES:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # a broken install is not fatal while another may work
            failures.append((distribution, _one_line(exc)))
            continue
        version = _installed_version(distribution) or "unknown"
        return Runtime(distribution, version, module.Interpreter,
                       _auto_choice(distribution, version, failures))
    raise RuntimeNotFound("no TFLite runtime importable ("
                          + "; ".join(f"{name}: {why}" for name, why in failures) + ")")


def _onnxruntime() -> Runtime:
    """ONNX Runtime, its sessions behind the Interpreter calls (device_agent.ort)."""
    version = _installed_version(ONNX_RUNTIME)
    if version is None:
        raise RuntimeNotFound(f"runtime {ONNX_RUNTIME} (for .onnx files) is not installed "
                              "here; pip install onnxruntime")
    try:
        importlib.import_module(ONNX_RUNTIME)
    except Exception as exc:  # a broken install (a wheel for another numpy)
        raise RuntimeNotFound(f"runtime {ONNX_RUNTIME} {version} does not import: "
                              f"{_one_line(exc)}") from None
    from .ort import OrtSession

    return Runtime(ONNX_RUNTIME, version, OrtSession, f"{ONNX_RUNTIME} {version}, for .onnx files")


def _auto_choice(chosen: str, version: str, failures: list[tuple[str, str]]) -> str:
    """"auto: X preferred; Y also installed" or "auto: Y (X not installed)"."""
    why = [f"{name} not installed" if _installed_version(name) is None
           else f"{name} does not import: {error}" for name, error in failures]
    others = _installed(exclude=chosen, skip=[name for name, _error in failures])
    text = f"auto: {chosen} {version}" + (" preferred" if not failures else "")
    if why:
        text += " (" + "; ".join(why) + ")"
    if others:
        text += f"; {others} also installed"
    return text


def _installed(exclude: str, skip: list[str] | None = None) -> str:
    """The other runtime distributions installed, read from metadata (never imported:
    two TFLite runtimes in one process may clash)."""
    found = []
    for distribution, _module in RUNTIME_CANDIDATES:
        if distribution == exclude or distribution in (skip or []):
            continue
        version = _installed_version(distribution)
        if version is not None:
            found.append(f"{distribution} {version}")
    return ", ".join(found)


def _installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())
