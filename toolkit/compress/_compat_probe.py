"""Run .tflite files under the TFLite runtime of *this* Python (e.g. tflite-runtime 2.14).

Started by :mod:`toolkit.compress.compat` with another Python (a venv with numpy<2), so it
imports only the standard library, numpy and :mod:`device_agent.runtime`, and runs
on Python 3.9.  Usage: ``python _compat_probe.py JOB.json``; the job lists
``{"file", "inputs", "outputs"}`` per model, with raw input tensors in an .npz
(``s<sample>_i<input>``); raw outputs are written the same way (``s<sample>_o<output>``).
Prints one JSON line: the runtime and, per file, ``loads`` and any error.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from device_agent.runtime import find_runtime


def main(job_path: str) -> None:
    with open(job_path, encoding="utf-8") as handle:
        job = json.load(handle)
    runtime = find_runtime()
    results: dict[str, dict[str, object]] = {}
    for model in job["models"]:
        try:
            interpreter = runtime.interpreter_class(model_path=model["file"])
            interpreter.allocate_tensors()
            inputs = np.load(model["inputs"])
            details_in = interpreter.get_input_details()
            details_out = interpreter.get_output_details()
            outputs = {}
            sample = 0
            while f"s{sample}_i0" in inputs:
                for i, detail in enumerate(details_in):
                    interpreter.set_tensor(detail["index"], inputs[f"s{sample}_i{i}"])
                interpreter.invoke()
                for o, detail in enumerate(details_out):
                    outputs[f"s{sample}_o{o}"] = interpreter.get_tensor(detail["index"])
                sample += 1
            # mypy would match an output's name to savez's allow_pickle: they are s0_o0, ...
            np.savez(model["outputs"], **outputs)  # type: ignore[arg-type]
            results[model["file"]] = {"loads": True}
        except (RuntimeError, ValueError) as exc:  # a file's failure is a result, not a crash
            results[model["file"]] = {"loads": False,
                                      "error": " ".join(f"{type(exc).__name__}: {exc}".split())}
    print(json.dumps({"runtime": runtime.describe(), "results": results}))


if __name__ == "__main__":
    main(sys.argv[1])
