"""The board agent, run as the zipapp the host ships, on real .tflite files."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from device_agent import protocol
from toolkit.agent_package import build_agent_package

REPO = Path(__file__).resolve().parent.parent
FAST = {"warmup_runs": 2, "min_runs": 10, "min_seconds": 0.05}


def run_agent(folder: Path, variants: list[dict[str, str]],
              settings: dict | None = None) -> dict:
    """Run the agent on ``variants``; a variant without a sha256 gets its file's real one."""
    variants = [{"sha256": hashlib.sha256((folder / v["file"]).read_bytes()).hexdigest(), **v}
                for v in variants]
    agent = build_agent_package()
    (folder / agent.name).write_bytes(agent.data)
    job = protocol.make_job(job_id="t", variants=variants, settings={**FAST, **(settings or {})})
    (folder / "job.json").write_text(json.dumps(job))
    completed = subprocess.run([sys.executable, str(folder / agent.name), "run",
                                str(folder / "job.json")], capture_output=True, check=True)
    return protocol.parse_result(completed.stdout, job)


def test_agent_package_is_reproducible() -> None:
    assert build_agent_package() == build_agent_package()


def test_agent_measures_a_real_model(tflite_copy: Path) -> None:
    result = run_agent(tflite_copy.parent, [{"name": "fp32", "file": tflite_copy.name}])
    measured = result["variants"][0]
    assert measured["status"] == "ok"
    assert measured["runs"] >= FAST["min_runs"]
    assert measured["runtime"]["name"] in ("ai-edge-litert", "tflite-runtime")
    assert measured["peak_rss_bytes"] > 10 * 2**20


def test_a_broken_model_fails_alone_with_the_runtimes_message(tflite_copy: Path) -> None:
    broken = tflite_copy.parent / "broken.tflite"
    broken.write_bytes(b"\x00" * 64)
    result = run_agent(tflite_copy.parent, [
        {"name": "broken", "file": broken.name},
        {"name": "fp32", "file": tflite_copy.name},
    ])
    failed, ok = result["variants"]
    assert failed["status"] == "failed"
    assert "could not run broken.tflite" in failed["error"]
    assert ok["status"] == "ok"


def test_a_file_that_does_not_match_its_hash_is_never_run(tflite_copy: Path) -> None:
    result = run_agent(tflite_copy.parent, [
        {"name": "tampered", "file": tflite_copy.name, "sha256": "0" * 64},
        {"name": "fp32", "file": tflite_copy.name},
    ])
    tampered, ok = result["variants"]
    assert tampered["status"] == "failed" and "does not match its sha256" in tampered["error"]
    assert ok["status"] == "ok"


def test_each_variant_over_the_time_limit_is_killed_on_its_own(
        tflite_copy: Path) -> None:
    slow = {"name": "slow", "file": tflite_copy.name}
    # The limit (2 s) ends runs that ask for 30 s; the second variant gets its own 2 s.
    result = run_agent(tflite_copy.parent, [slow, {"name": "fp32", "file": tflite_copy.name}],
                       settings={"variant_timeout_seconds": 2, "min_seconds": 30,
                                 "max_seconds": 60, "min_runs": 10**9, "max_runs": 10**9,
                                 "cooldown_seconds": 0})
    killed, measured = result["variants"]
    assert killed["status"] == "failed" and killed["error"].startswith("timed out after 2 s")
    assert measured["status"] == "failed" and measured["error"].startswith("timed out after 2 s")
def test_agent_imports_only_stdlib_numpy_and_a_runtime(tflite_copy: Path) -> None:
    """Measure a model in a clean interpreter and list every top-level package it loaded."""
    probe = (
        "import sys, json; sys.path.insert(0, sys.argv[1]);"
        "from device_agent.measure import measure_variant;"
        "from device_agent.runtime import find_runtime;"
        "from device_agent.__main__ import main; from device_agent.board import board_facts;"
        "from device_agent.protocol import DEFAULT_SETTINGS;"
        "measure_variant(find_runtime(), sys.argv[2], dict(DEFAULT_SETTINGS, min_runs=1,"
        " min_seconds=0)); board_facts();"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = json.loads(subprocess.run(
        [sys.executable, "-c", probe, str(REPO), str(tflite_copy)],
        capture_output=True, check=True, text=True).stdout)
    # Whatever a bare interpreter loads at start-up (site .pth hooks) is not the agent's doing.
    at_startup = set(json.loads(subprocess.run(
        [sys.executable, "-c", "import sys, json; print(json.dumps(list(sys.modules)))"],
        capture_output=True, check=True, text=True).stdout))
    stdlib = set(sys.stdlib_module_names) | at_startup | {"cython_runtime"}
    third_party = {name for name in loaded if name not in stdlib and not name.startswith("_")}
    allowed = {"device_agent", "numpy", "ai_edge_litert", "tflite_runtime"}
    assert third_party <= allowed, third_party - allowed


def test_a_named_power_sensor_that_is_missing_fails_the_variant_with_the_reason(
        tflite_copy: Path) -> None:
    agent = build_agent_package()
    (tflite_copy.parent / agent.name).write_bytes(agent.data)
    job = protocol.make_job(job_id="t", settings={**FAST, "power_sensor": "ina219-hwmon"},
                            variants=[{"name": "fp32", "file": tflite_copy.name,
                                       "sha256": hashlib.sha256(tflite_copy.read_bytes())
                                       .hexdigest()}])
    (tflite_copy.parent / "job.json").write_text(json.dumps(job))
    completed = subprocess.run([sys.executable, str(tflite_copy.parent / agent.name), "run",
                                str(tflite_copy.parent / "job.json")], capture_output=True,
                               check=True)
    failed = protocol.parse_result(completed.stdout, job)["variants"][0]
    assert failed["status"] == "failed"
    assert "power sensor 'ina219-hwmon' not available: no ina219 hwmon device" in failed["error"]


def test_an_unreadable_reference_fails_the_variant_with_the_reason(tflite_copy: Path) -> None:
    (tflite_copy.parent / "ref.npz").write_bytes(b"not a zip")
    result = run_agent(tflite_copy.parent, [{"name": "fp32", "file": tflite_copy.name,
                                             "reference": "ref.npz"}])
    failed = result["variants"][0]
    assert failed["status"] == "failed"
    assert failed["error"].startswith("reference ref.npz is unreadable")
