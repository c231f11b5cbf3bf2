"""Find the TFLite runtime installed on the board and say which one it is.

ai-edge-litert is preferred (the maintained successor); tflite-runtime 2.14 is
the floor many Raspberry Pi and Jetson images carry.  Every figure the agent
reports names the runtime that produced it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable

#: (distribution name, module that holds ``Interpreter``), in order of preference.
RUNTIME_CANDIDATES = (
    ("ai-edge-litert", "ai_edge_litert.interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter"),
)


class RuntimeNotFound(RuntimeError):
    """No supported TFLite runtime can be imported on this machine."""


@dataclass(frozen=True)
class Runtime:
    name: str
    version: str
    interpreter_class: Callable[..., Any]

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


def find_runtime() -> Runtime:
    """Return the first importable runtime of :data:`RUNTIME_CANDIDATES`."""
    failures = []
    for distribution, module_name in RUNTIME_CANDIDATES:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # a broken install (e.g. numpy 2 under 2.14) is not fatal
            failures.append(f"{distribution}: {type(exc).__name__}: {exc}")
            continue
        try:
            version = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            version = "unknown"
        return Runtime(distribution, version, module.Interpreter)
    raise RuntimeNotFound("no TFLite runtime importable (" + "; ".join(failures) + ")")
