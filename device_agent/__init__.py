"""The board side of edge: runs ``.tflite`` models and measures them.

Needs only Python 3.8+ (JetPack 5 ships 3.8), numpy and a TFLite runtime (ai-edge-litert or
tflite-runtime).  The host ships this package to the board as a zipapp and runs
``python agent.pyz run job.json`` over SSH (or in a subprocess for the local
target); the result is one JSON document on standard output, in the schema of
:mod:`device_agent.protocol`.
"""

from .protocol import SCHEMA_VERSION

#: The oldest Python the agent runs on; the host refuses a board's Python below it.
OLDEST_PYTHON = (3, 8)

__all__ = ["OLDEST_PYTHON", "SCHEMA_VERSION"]
