"""Keep third-party chatter (absl, MLIR progress, converter logs) off the user's terminal."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

_NOISY_LOGGERS = ("absl", "torchao", "litert_torch", "ai_edge_torch", "jax", "torch._export",
                  "torch.export", "torch._dynamo")


def silence_library_logging() -> None:
    """Lower the noisy loggers once, before the converters are imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GLOG_minloglevel", "3")
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(torchao|litert_torch|torch\.export|jax)")


@contextlib.contextmanager
def captured_native_output() -> Iterator[list[str]]:
    """Redirect stdout and stderr, Python's and file descriptors 1 and 2 (C++ logs), into a buffer.

    Yields a list that holds the captured lines once the block ends, so a
    caller can quote them when the wrapped step fails.
    """
    captured: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    python_level = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stdout(python_level), contextlib.redirect_stderr(python_level):
                yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            captured.extend(python_level.getvalue().splitlines())
            captured.extend(sink.read().decode("utf-8", "replace").splitlines())
