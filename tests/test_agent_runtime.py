"""The target's ``runtime`` setting chooses what runs on the board, and ``auto`` says why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.artifacts.agent_package import build_agent_package

from .test_agent import run_agent


@pytest.fixture
def both_runtimes(tmp_path: Path) -> dict[str, str]:
    """An environment where tflite-runtime 2.14.0 is installed beside ai-edge-litert.

    The two cannot share one real venv (2.14 needs numpy<2), so this one is a stand-in:
    a ``tflite_runtime`` package whose Interpreter is ai-edge-litert's, with its own
    distribution metadata, which is all the agent reads to tell them apart.
    """
    site = tmp_path / "site"
    (site / "tflite_runtime").mkdir(parents=True)
    (site / "tflite_runtime" / "__init__.py").write_text("")
    (site / "tflite_runtime" / "interpreter.py").write_text(
        "from ai_edge_litert.interpreter import Interpreter  # noqa: F401\n")
    (site / "tflite_runtime-2.14.0.dist-info").mkdir()
    (site / "tflite_runtime-2.14.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tflite-runtime\nVersion: 2.14.0\n")
    return {**os.environ, "PYTHONPATH": str(site)}


def test_the_runtime_setting_chooses_what_runs(tflite_copy: Path,
                                               both_runtimes: dict[str, str]) -> None:
    variants = [{"name": "fp32", "file": tflite_copy.name}]
    chosen = run_agent(tflite_copy.parent, variants, {"runtime": "tflite-runtime"},
                       env=both_runtimes)["variants"][0]
    assert chosen["status"] == "ok"
    assert chosen["runtime"] == {"name": "tflite-runtime", "version": "2.14.0"}
    assert chosen["runtime_choice"] == "tflite-runtime 2.14.0, as the target's runtime " \
                                       "setting asks"
    auto = run_agent(tflite_copy.parent, variants, env=both_runtimes)["variants"][0]
    assert auto["runtime"]["name"] == "ai-edge-litert"
    assert auto["runtime_choice"] == (f"auto: ai-edge-litert {auto['runtime']['version']} "
                                      "preferred; tflite-runtime 2.14.0 also installed")


def test_auto_on_the_board_floor_says_what_it_took(tflite_copy: Path,
                                                   floor_python: Path) -> None:
    measured = run_agent(tflite_copy.parent, [{"name": "fp32", "file": tflite_copy.name}],
                         python=str(floor_python))["variants"][0]
    assert measured["runtime"] == {"name": "tflite-runtime", "version": "2.14.0"}
    assert measured["runtime_choice"] == ("auto: tflite-runtime 2.14.0 "
                                          "(ai-edge-litert not installed)")


def test_a_runtime_that_is_not_installed_fails_the_variants_naming_it(
        tflite_copy: Path, floor_python: Path) -> None:
    result = run_agent(tflite_copy.parent, [{"name": "a", "file": tflite_copy.name},
                                            {"name": "b", "file": tflite_copy.name}],
                       {"runtime": "ai-edge-litert"}, python=str(floor_python))
    for failed in result["variants"]:
        assert failed["status"] == "failed"
        assert failed["error"] == ("runtime ai-edge-litert (the target's runtime setting) is "
                                   "not installed here; installed: tflite-runtime 2.14.0")


def test_facts_show_the_runtime_the_setting_chooses(tmp_path: Path,
                                                    both_runtimes: dict[str, str]) -> None:
    agent = build_agent_package()
    (tmp_path / agent.name).write_bytes(agent.data)

    def facts(*args: str) -> dict:
        return json.loads(subprocess.run(
            [sys.executable, str(tmp_path / agent.name), "facts", *args], env=both_runtimes,
            capture_output=True, check=True, text=True).stdout)

    assert facts("none", "--runtime", "tflite-runtime")["runtime"]["name"] == "tflite-runtime"
    auto = facts()
    assert auto["runtime"]["name"] == "ai-edge-litert"
    assert auto["runtime_choice"].endswith("tflite-runtime 2.14.0 also installed")
    missing = dict(both_runtimes, PYTHONPATH="")
    answer = json.loads(subprocess.run(
        [sys.executable, str(tmp_path / agent.name), "facts", "--runtime", "tflite-runtime"],
        env=missing, capture_output=True, check=True, text=True).stdout)
    assert "runtime" not in answer
    assert answer["runtime_error"].startswith("runtime tflite-runtime (the target's runtime "
                                              "setting) is not installed here")
