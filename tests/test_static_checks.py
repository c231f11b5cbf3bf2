"""Lint and types are part of the suite, so CI proves them too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *command], cwd=REPO, capture_output=True,
                          text=True, check=False)


def test_ruff_is_clean() -> None:
    result = run("ruff", "check", "toolkit", "device_agent", "tests", "examples")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_package_the_code_imports_is_declared() -> None:
    # torchao and ai-edge-quantizer were imported but arrived only through litert-torch:
    # a release of it that dropped them would have broken edge with no pin to say why.
    result = run("deptry", "toolkit", "device_agent")
    assert result.returncode == 0, result.stdout + result.stderr
