"""Does the runtime load and run a model here?  ``edge doctor``'s check, one per accelerator.

Importing a runtime says little: ai-edge-litert imported fine on a board where it then
crashed (SIGSEGV) on every model.  So ``agent facts`` loads the tiny model the agent
carries (:data:`device_agent.accelerators.PROBE_MODEL`, y = x + x on float32 [1, 4]; for
onnxruntime the same graph in ONNX, :data:`device_agent.ort.PROBE_ONNX`),
runs it once and checks its output, for each accelerator the target names, each in a
forked child with its native output captured: a crash costs that child only and is
named in one line ("killed by signal SIGSEGV in ai-edge-litert 2.3.0").

Example::

    load_checks(find_runtime("auto"), ["cpu"], "interpreter", "", {})
    # [{"accelerator": "cpu", "ok": True, "detail": "ai-edge-litert 2.3.0 ran ..."}]
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import List, Mapping

import numpy as np

from .accelerators import PROBE_MODEL
from .compiled import PROBE_SECONDS, run_in_child
from .ort import PROBE_ONNX
from .runtime import ONNX_RUNTIME, Runtime
from .wire import DelegateOption, LoadCheck

#: What :data:`PROBE_MODEL` is given; it must answer twice this.
PROBE_INPUT = (1.0, 2.0, 3.0, 4.0)


def load_checks(runtime: Runtime, accelerators: List[str], api: str, delegate: str,
                delegate_options: Mapping[str, DelegateOption]) -> List[LoadCheck]:
    """``{"accelerator", "ok", "detail"}`` for each of ``accelerators``: the probe model
    loaded, run once and its output checked, in a child process each."""
    checks: List[LoadCheck] = []
    with tempfile.TemporaryDirectory(prefix="edge-load-check-") as folder:
        onnx = runtime.name == ONNX_RUNTIME
        model_path = Path(folder) / ("probe.onnx" if onnx else "probe.tflite")
        model_path.write_bytes(PROBE_ONNX if onnx else PROBE_MODEL)
        for accelerator in dict.fromkeys(accelerators or ["cpu"]):
            settings = {"accelerator": accelerator, "api": api, "threads": 1,
                        "delegate": delegate, "delegate_options": dict(delegate_options)}
            ok, detail = _in_child(runtime, model_path, settings)
            checks.append({"accelerator": accelerator, "ok": ok, "detail": detail})
    return checks


def _in_child(runtime: Runtime, model_path: Path, settings: Mapping[str, object]
              ) -> tuple[bool, str]:
    named = f"{runtime.name} {runtime.version}"
    started = time.monotonic()
    raw, timed_out, status, _native = run_in_child(
        lambda: {"ok": _load_and_run(runtime, model_path, settings)})
    if timed_out:
        return False, f"{named} did not load and run the model in {PROBE_SECONDS:g} s"
    if os.WIFSIGNALED(status):
        return False, f"killed by signal {_signal_name(os.WTERMSIG(status))} in {named}"
    try:
        answer = json.loads(raw.decode("utf-8"))
    except ValueError:
        return False, f"{named}: the child ended with status {os.WEXITSTATUS(status)}"
    if "error" in answer:
        return False, f"{named} could not run the model: {answer['error']}"
    seconds = time.monotonic() - started
    return True, f"{named} {answer['ok']} ({seconds:.2f} s)"


def _load_and_run(runtime: Runtime, model_path: Path, settings: Mapping[str, object]) -> str:
    """Load, run once, check the output; what ran, or an exception saying what is wrong."""
    from .accelerators import plan_model

    model = plan_model(runtime, model_path, settings).open().model
    model.allocate_tensors()
    given = np.array([PROBE_INPUT], dtype=np.float32)
    model.set_tensor(model.get_input_details()[0]["index"], given)
    model.invoke()
    output = np.asarray(model.get_tensor(model.get_output_details()[0]["index"]))
    if output.shape != given.shape or not np.allclose(output, given + given):
        raise ValueError(f"y = x + x gave {output.ravel().tolist()} for "
                         f"{list(PROBE_INPUT)}")
    return f"loaded and ran y = x + x on {settings['accelerator']}: output right"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time or platform-specific signal has no name
        return str(number)
