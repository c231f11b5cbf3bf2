"""Facts about the board the agent runs on, attached to every result."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from .clocks import clock_state
from .wire import BoardFacts


def board_facts() -> BoardFacts:
    """Hostname, OS, CPU and board model as the board itself reports them, and the CPU
    governor the agent's CPUs are on now."""
    return {
        "hostname": platform.node(),
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count() or 0,
        "cpu_model": _cpu_model(),
        "board_model": _read_text(Path("/proc/device-tree/model")),
        "runtimes": _installed_runtimes(),
        # One kernel, one boot id: boards that share it share a machine (and its CPUs).
        "boot_id": _read_text(Path("/proc/sys/kernel/random/boot_id")),
        "cpu_governor": clock_state()["governor"],
        "agent": agent_package(),
    }


def agent_package() -> str:
    """The agent that answers: the zipapp it runs from, named by its content hash
    (``agent-<sha16>.pyz``), or ``source`` when run from a checkout of edge."""
    archive = Path(__file__).parent.parent
    return archive.name if archive.suffix == ".pyz" else "source"


def _installed_runtimes() -> dict[str, str]:
    """Version of each runtime distribution installed (without importing it)."""
    from importlib import metadata

    from .runtime import ONNX_RUNTIME, RUNTIME_CANDIDATES

    found = {}
    for distribution in [*(name for name, _module in RUNTIME_CANDIDATES), ONNX_RUNTIME]:
        try:
            found[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return found


def _cpu_model() -> str:
    cpuinfo = _read_text(Path("/proc/cpuinfo"))
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        # x86 says "model name"; ARM boards say "Model" or only "Hardware".
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    return platform.processor()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return ""
