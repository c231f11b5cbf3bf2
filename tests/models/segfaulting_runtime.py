"""A stand-in for tflite-runtime whose ``Interpreter`` segfaults when it loads a model.

    python tests/models/segfaulting_runtime.py FOLDER

Writes ``FOLDER/tflite_runtime/`` and its ``dist-info`` (so the agent finds
"tflite-runtime 0+segfaults-on-load" installed and importable): put FOLDER first on a
Python's path and every ``Interpreter(...)`` reads address 0 through ctypes, a real null
read, so the process is killed by SIGSEGV as a broken runtime build kills it (issue 27:
a board's ai-edge-litert imported fine, then crashed on every model).  Importing the
package does not crash: only loading a model does.
"""

from __future__ import annotations

import sys
from pathlib import Path

VERSION = "0+segfaults-on-load"
_INTERPRETER = '''"""Stand-in: loading a model reads address 0 (SIGSEGV)."""
import ctypes


class Interpreter:
    def __init__(self, *args, **kwargs):
        ctypes.string_at(0)
'''


def write_segfaulting_runtime(folder: Path) -> Path:
    """FOLDER, holding the stand-in package and its metadata."""
    package = folder / "tflite_runtime"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "interpreter.py").write_text(_INTERPRETER)
    info = folder / f"tflite_runtime-{VERSION}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: tflite-runtime\nVersion: {VERSION}\n")
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/models/segfaulting_runtime.py FOLDER")
    write_segfaulting_runtime(Path(sys.argv[1]))
