"""Boards without the package index: say so early, and fetch their wheels on the host.

A board with no route to the index makes pip retry for minutes and then report
``No matching distribution found for numpy``, which hides the cause.
:func:`check_index` asks the board's pip for one index page with one retry and
a short time-out and names the network error in one line, with the way on:
:func:`download_wheels` (``edge targets wheelhouse NAME -o DIR``) downloads on
this machine exactly the wheels the board can install — its Python version,
its architecture and every manylinux tag its glibc accepts (``pip download
--platform manylinux2014_aarch64`` alone misses tflite-runtime 2.14, which is
``manylinux_2_34``) — and ``edge targets setup NAME --wheelhouse DIR`` pushes them.

Example::

    with Connection(target) as board:
        platform = probe_platform(board)     # BoardPlatform(python=(3, 11), arch='aarch64', ...)
    download_wheels(target, platform, Path("wheels"))
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from device_agent import OLDEST_PYTHON
from toolkit.boards.targets import Target
from toolkit.errors import BoardSetupError, InfrastructureError, OutputError

if TYPE_CHECKING:
    from toolkit.boards.board import Shell

#: Packages per runtime preference on Python 3.9 and newer; tflite-runtime 2.14 fails to
#: import with numpy 2.
REQUIREMENTS = {
    "ai-edge-litert": ["numpy", "ai-edge-litert"],
    "tflite-runtime": ["numpy<2", "tflite-runtime"],
    "auto": ["numpy", "ai-edge-litert"],
    # A target that runs .onnx files only.
    "onnxruntime": ["numpy", "onnxruntime"],
}
#: The same on Python 3.8 (JetPack 5): bounded by the last lines with cp38 wheels, so that
#: pip never walks back through releases that lack them.  ``auto`` takes tflite-runtime, as
#: ai-edge-litert has no cp38 wheel at all (:func:`board_requirements` refuses it by name;
#: its entry serves the venv check of another target sharing the venv).  ``<=2.14.0``, not
#: ``==``: an aarch64 glibc older than 2.34 (JetPack 5 has 2.31) only gets 2.13.0.
REQUIREMENTS_PY38 = {
    "ai-edge-litert": ["numpy<1.25", "ai-edge-litert"],
    "tflite-runtime": ["numpy<1.25", "tflite-runtime<=2.14.0"],
    "auto": ["numpy<1.25", "tflite-runtime<=2.14.0"],
    "onnxruntime": ["numpy<1.25", "onnxruntime<=1.19.2"],
}
#: The oldest glibc a manylinux wheel may ask for (manylinux2014 = manylinux_2_17).
OLDEST_GLIBC_MINOR = 17
# What the socket layer says when there is no route to the index (glibc's resolver,
# the kernel, urllib3); the first one found in pip's output is shown to the user.
_NETWORK_ERRORS = (
    "Temporary failure in name resolution", "Name or service not known",
    "No address associated with hostname", "Network is unreachable", "No route to host",
    "Connection refused", "Connection timed out", "timed out", "Connection reset by peer",
)
_PLATFORM_PROBE = (
    "import json, os, struct, sys, sysconfig\n"
    "try:\n"
    "    libc = os.confstr('CS_GNU_LIBC_VERSION') or ''\n"
    "except (AttributeError, ValueError, OSError):\n"
    "    libc = ''\n"
    "print(json.dumps({'python': list(sys.version_info[:2]),\n"
    "                  'implementation': sys.implementation.name,\n"
    "                  'platform': sysconfig.get_platform(),\n"
    "                  'bits': struct.calcsize('P') * 8, 'libc': libc}))\n"
)


@dataclass(frozen=True)
class BoardPlatform:
    """What decides which binary wheels a board's Python can install."""

    python: tuple[int, int]
    arch: str
    glibc: tuple[int, int]

    def platform_tags(self) -> list[str]:
        """Every manylinux tag the board accepts, newest first, as ``pip --platform`` takes.

        >>> BoardPlatform(python=(3, 11), arch="aarch64", glibc=(2, 19)).platform_tags()
        ['manylinux_2_19_aarch64', 'manylinux_2_18_aarch64', 'manylinux_2_17_aarch64', \
'manylinux2014_aarch64']
        """
        major, minor = self.glibc
        if major != 2 or minor < OLDEST_GLIBC_MINOR:
            raise BoardSetupError(f"glibc {major}.{minor} is older than 2.17: no manylinux "
                                  "wheel of numpy or a TFLite runtime installs there")
        tags = [f"manylinux_2_{m}_{self.arch}" for m in range(minor, OLDEST_GLIBC_MINOR - 1, -1)]
        return [*tags, f"manylinux2014_{self.arch}"]

    @property
    def abi(self) -> str:
        return f"cp{self.python[0]}{self.python[1]}"

    def describe(self) -> str:
        return (f"CPython {self.python[0]}.{self.python[1]}, {self.arch}, "
                f"glibc {self.glibc[0]}.{self.glibc[1]}")


def requirements(python: Sequence[int]) -> dict[str, list[str]]:
    """The packages per runtime preference for a board whose Python is ``python``.

    >>> requirements((3, 8, 10))["auto"]
    ['numpy<1.25', 'tflite-runtime<=2.14.0']
    """
    return REQUIREMENTS_PY38 if tuple(python[:2]) < (3, 9) else REQUIREMENTS


def board_requirements(target: Target, python: Sequence[int]) -> list[str]:
    """What ``target`` needs installed on a board whose Python is ``python``; a Python the
    agent or the target's runtime cannot run on is :class:`BoardSetupError`, one line."""
    version = ".".join(map(str, python))
    if tuple(python[:2]) < OLDEST_PYTHON:
        raise BoardSetupError(f"{target.name}: {target.python} is Python {version}; the agent "
                              f"needs {'.'.join(map(str, OLDEST_PYTHON))} or newer: install "
                              "one and set python in the target file", target=target.name)
    if target.runtime == "ai-edge-litert" and tuple(python[:2]) < (3, 9):
        raise BoardSetupError(f"{target.name}: ai-edge-litert has no wheels for Python "
                              f"{version} (its oldest is 3.9): set runtime = \"tflite-runtime\" "
                              f"in {target.source or 'the target file'}, or python to a "
                              "3.9 or newer",
                              target=target.name)
    return requirements(python)[target.runtime]


def probe_platform(board: Shell) -> BoardPlatform:
    """Ask the Python that ``edge targets setup`` uses (the venv's, else the target's)."""
    target = board.target
    venv = shlex.quote(f"{target.work_dir}/venv/bin/python")
    plain = shlex.quote(target.python)
    result = board.run(f"if [ -x {venv} ]; then p={venv}; else p={plain}; fi; "
                       f'exec "$p" -c {shlex.quote(_PLATFORM_PROBE)}')
    if not result.ok:
        raise BoardSetupError(f"{target.name}: cannot run {target.python} on the board; "
                              "set python in the target file", target=target.name)
    try:
        facts = json.loads(result.stdout.decode("utf-8").strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise InfrastructureError(f"{target.name}: the platform probe printed nothing readable",
                                  target=target.name) from None
    return platform_from_facts(target.name, facts)


def platform_from_facts(name: str, facts: dict[str, object]) -> BoardPlatform:
    """The probe's answer as a :class:`BoardPlatform` (refusing what has no wheels)."""
    if facts.get("implementation") != "cpython":
        raise BoardSetupError(f"{name}: the board's Python is {facts.get('implementation')}; "
                              "numpy and TFLite runtime wheels exist for CPython only",
                              target=name)
    libc = str(facts.get("libc") or "")
    found = re.fullmatch(r"glibc (\d+)\.(\d+).*", libc)
    if not found:
        raise BoardSetupError(f"{name}: the board's C library is {libc or 'not glibc'}; "
                              "manylinux wheels need glibc", target=name)
    platform = str(facts.get("platform", ""))
    if not platform.startswith("linux-"):
        raise BoardSetupError(f"{name}: the board's platform is {platform}, not Linux",
                              target=name)
    arch = platform.removeprefix("linux-").replace("-", "_").replace(".", "_")
    if facts.get("bits") == 32:  # a 32-bit userland on a 64-bit kernel, as packaging reads it
        arch = {"x86_64": "i686", "aarch64": "armv8l"}.get(arch, arch)
    version = facts.get("python")
    if not isinstance(version, list) or len(version) != 2:
        raise InfrastructureError(f"{name}: the platform probe gave no Python version",
                                  target=name)
    return BoardPlatform(python=(int(version[0]), int(version[1])), arch=arch,
                         glibc=(int(found[1]), int(found[2])))


def download_command(platform: BoardPlatform, packages: list[str], dest: Path) -> list[str]:
    """``pip download`` on this machine for the board's platform (binary wheels only)."""
    platforms = itertools.chain.from_iterable(("--platform", tag)
                                              for tag in platform.platform_tags())
    return [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
            "--only-binary=:all:", "--implementation", "cp",
            "--python-version", f"{platform.python[0]}.{platform.python[1]}",
            "--abi", platform.abi, *platforms, "--dest", str(dest), *packages]


def download_wheels(target: Target, platform: BoardPlatform, dest: Path) -> list[Path]:
    """Download numpy and the target's runtime (with their dependencies) into ``dest``."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot make {dest}: {exc.strerror or exc}", path=dest) from None
    command = download_command(platform, board_requirements(target, platform.python), dest)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise BoardSetupError(f"{target.name}: pip download for {platform.describe()} failed: "
                              f"{lines[-1] if lines else done.returncode}", target=target.name)
    return sorted(dest.glob("*.whl"))


def offline_cause(pip_output: str) -> str | None:
    """The network error in pip's output (``index.example: Network is unreachable``), if any."""
    for phrase in _NETWORK_ERRORS:
        if phrase.lower() in pip_output.lower():
            host = re.search(r"host='([^']+)'", pip_output)
            return f"{host[1]}: {phrase}" if host else phrase
    return None


def offline_error(name: str, cause: str) -> BoardSetupError:
    return BoardSetupError(
        f"{name}: the board cannot reach the package index ({cause}): it is offline for pip; "
        f"on this machine run `edge targets wheelhouse {name} -o DIR`, then "
        f"`edge targets setup {name} --wheelhouse DIR`", target=name)


def check_index(board: Shell, python: str) -> bool:
    """Raise at once if the board's pip cannot reach its index (one retry, 5 s time-out).

    ``pip index versions`` fetches one index page with the board's own pip settings
    (index URLs, proxies, certificates). False: ``python`` has no pip, or one too old
    for the command, so nothing was checked.
    """
    result = board.run(f"{shlex.quote(python)} -m pip index versions numpy --retries 1 "
                       "--timeout 5 --disable-pip-version-check", timeout=60)
    if result.ok:
        return True
    said = result.stderr.decode("utf-8", "replace")
    cause = offline_cause(said)
    if cause is not None:
        raise offline_error(board.target.name, cause)
    return "No module named pip" not in said and "unknown command" not in said


__all__ = ["REQUIREMENTS", "REQUIREMENTS_PY38", "BoardPlatform", "board_requirements",
           "check_index", "download_command", "download_wheels", "offline_cause",
           "offline_error", "platform_from_facts", "probe_platform", "requirements"]
