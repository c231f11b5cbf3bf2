"""``agent facts`` loads and runs the agent's tiny model, in a child, and names a crash.

The crashing runtime is a stand-in (``tests/models/segfaulting_runtime.py``) whose
``Interpreter`` reads address 0 when it loads a model: the agent must survive it and
name the runtime and the signal in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .models.segfaulting_runtime import VERSION, write_segfaulting_runtime

REPO = Path(__file__).resolve().parent.parent


def agent_facts(*args: str, path: list[Path] | None = None,
                python: str = sys.executable) -> dict:
    pythonpath = os.pathsep.join(str(p) for p in [*(path or []), REPO])
    done = subprocess.run([python, "-m", "device_agent", "facts", *args],
                          capture_output=True, text=True, timeout=180, check=False,
                          env={**os.environ, "PYTHONPATH": pythonpath})
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_runtime_that_segfaults_on_load_is_named_in_one_line(tmp_path: Path,
                                                               agent_python: str) -> None:
    standin = write_segfaulting_runtime(tmp_path / "standin")
    facts = agent_facts("--runtime", "tflite-runtime", path=[standin], python=agent_python)
    assert facts["runtime"] == {"name": "tflite-runtime", "version": VERSION}
    assert facts["model_loads"] == [{
        "accelerator": "cpu", "ok": False,
        "detail": f"killed by signal SIGSEGV in tflite-runtime {VERSION}"}]


def test_the_real_runtime_loads_and_runs_the_model_on_each_accelerator() -> None:
    facts = agent_facts("--runtime", "ai-edge-litert", "--accelerator", "cpu,xnnpack-off")
    loads = facts["model_loads"]
    assert [(c["accelerator"], c["ok"]) for c in loads] == [("cpu", True),
                                                            ("xnnpack-off", True)], loads
    assert all("output right" in c["detail"] for c in loads)


def test_doctor_shows_each_model_load_as_a_check_and_a_crash_fails_it() -> None:
    from toolkit.boards.doctor import _fact_checks
    from toolkit.boards.targets import load_target

    facts = {"free_bytes": 2**40, "runtime": {"name": "tflite-runtime", "version": VERSION},
             "model_loads": [
                 {"accelerator": "cpu", "ok": False,
                  "detail": f"killed by signal SIGSEGV in tflite-runtime {VERSION}"},
                 {"accelerator": "gpu", "ok": True, "detail": "ran"}],
             "thermal": {}, "power_sensor": None, "time": 1.0}
    checks = {c.name: c for c in _fact_checks(load_target("local"), facts, 1.0, 1.0)}
    crashed = checks["runtime loads a model"]
    assert not crashed.ok
    assert crashed.detail == f"killed by signal SIGSEGV in tflite-runtime {VERSION}"
    assert checks["runtime loads a model on gpu"].ok


def test_facts_read_the_power_sensor_once_and_name_a_failed_read(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import device_agent.power
    from device_agent.__main__ import _facts
    from device_agent.power import PowerReader, SensorLost

    class Unreadable(PowerReader):
        kind = "command"
        reads = 0

        def read_watts(self) -> float | None:
            Unreadable.reads += 1
            raise SensorLost("meter: exited 1")

    monkeypatch.setattr(device_agent.power, "open_power_reader", lambda sensor: Unreadable())
    # The model-load check forks, which JAX (imported by other tests of a session) warns
    # against; this test is about the sensor, so the load check answers without a child.
    monkeypatch.setattr("device_agent.load_check.load_checks", lambda *args, **kwargs: [])
    assert _facts("command", "auto", {}) == 0
    facts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert Unreadable.reads == 1
    assert facts["power_error"] == "command: meter: exited 1"
