"""What a bare board needs before the agent can run, checked and (when asked) installed.

The agent needs Python 3.9 or newer, numpy and a TFLite runtime (onnxruntime for ``.onnx``
files, with the execution providers the deploy asks for: :meth:`BoardPython.require_providers`).
:func:`probe` asks the board's Python (the venv in the work folder if ``edge targets setup``
made one, else the target's ``python``); :func:`setup` makes that venv and
installs what is missing with pip, from the package index or from wheels the
host pushes (``wheelhouse``, see :mod:`toolkit.boards.wheelhouse`) for air-gapped labs.
Setup changes the board, so it holds the board's lease (:func:`toolkit.boards.lease.hold_lease`)
from before its first change to its end, as a deploy does: a board another job holds
is :class:`~toolkit.errors.BoardBusyError` and nothing on it is touched (pip running
beside a measurement skews it, and a venv changed under a running agent breaks it).
A board that cannot reach the index is named offline within seconds; a venv that
``pip check`` finds broken after the install is an error, not a success.

Example::

    with Connection(target) as board:
        facts = probe(board)          # BoardPython(python='.edge/venv/bin/python', ...)
        facts.require()               # raises BoardSetupError naming `edge targets setup`
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.boards.lease import hold_lease
from toolkit.boards.transfer import upload
from toolkit.boards.wheelhouse import REQUIREMENTS, check_index, offline_cause, offline_error
from toolkit.errors import BoardSetupError, InfrastructureError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from toolkit.boards.board import Board, Shell
    from toolkit.boards.lease import Held
_PROBE = (
    "import json, os, sys\n"
    "from importlib import metadata\n"
    "facts = {'version': list(sys.version_info[:3]), 'numpy': None, 'runtimes': {},\n"
    "         'cores': os.cpu_count() or 0}\n"
    "for dist, key in (('numpy', None), ('ai-edge-litert', 'ai_edge_litert'),\n"
    "                  ('tflite-runtime', 'tflite_runtime'), ('onnxruntime', 'onnxruntime')):\n"
    "    try:\n"
    "        version = metadata.version(dist)\n"
    "    except Exception:\n"
    "        continue\n"
    "    if key is None:\n"
    "        facts['numpy'] = version\n"
    "    else:\n"
    "        facts['runtimes'][dist] = version\n"
    # Only ORT itself knows its execution providers (a build's own list): imported only
    # when installed, once per deploy, so that a missing one is refused before any work.
    "if 'onnxruntime' in facts['runtimes']:\n"
    "    try:\n"
    "        import onnxruntime\n"
    "        facts['providers'] = list(onnxruntime.get_available_providers())\n"
    "    except Exception as exc:\n"
    "        facts['providers_error'] = ' '.join(str(exc).split())[:200]\n"
    "print(json.dumps(facts))\n"
)


@dataclass(frozen=True)
class BoardPython:
    """The board's Python and what it has."""

    target: str
    python: str
    version: tuple[int, ...]
    numpy: str | None
    runtimes: dict[str, str]
    runtime_preference: str
    #: ``os.cpu_count()`` on the board (0: unknown).
    cores: int = 0
    #: onnxruntime's ``get_available_providers()`` there (empty: not installed, or see
    #: ``providers_error``).
    providers: tuple[str, ...] = ()
    providers_error: str = ""

    def missing(self) -> list[str]:
        problems = []
        if self.version < (3, 9):
            problems.append(f"Python {'.'.join(map(str, self.version))} is older than 3.9")
        if self.numpy is None:
            problems.append("numpy is missing")
        wanted = (list(self.runtimes) if self.runtime_preference == "auto"
                  else [self.runtime_preference])
        if not self.runtimes or not set(wanted) & set(self.runtimes):
            problems.append("onnxruntime is not installed"
                            if self.runtime_preference == "onnxruntime" else
                            f"no TFLite runtime ({self.runtime_preference}) is installed")
        return problems

    def require_providers(self, accelerators: Sequence[str]) -> None:
        """Raise :class:`BoardSetupError` (one line naming the providers the board has) when
        its onnxruntime lacks the execution provider one of ``accelerators`` names."""
        from device_agent.interp import AcceleratorError
        from device_agent.ort import providers_for

        if "onnxruntime" not in self.runtimes:
            raise BoardSetupError(f"{self.target}: onnxruntime is not installed for "
                                  f"{self.python}, and an .onnx runs on it: pip install "
                                  "onnxruntime there", target=self.target)
        if self.providers_error:
            raise BoardSetupError(f"{self.target}: onnxruntime {self.runtimes['onnxruntime']} "
                                  f"does not import: {self.providers_error}", target=self.target)
        for accelerator in accelerators:
            try:
                providers_for(accelerator, self.providers)
            except AcceleratorError as exc:
                raise BoardSetupError(f"{self.target}: {exc}", target=self.target) from None

    def python_in(self, work_dir: str) -> str:
        """The Python to run from inside ``work_dir`` (a relative venv path made local to it)."""
        if self.python == f"{work_dir}/venv/bin/python" and not self.python.startswith("/"):
            return "venv/bin/python"
        return self.python

    def thread_warning(self, threads: int) -> str | None:
        """One line when ``threads`` exceeds the board's cores (the threads then contend)."""
        if self.cores and threads > self.cores:
            return (f"{self.target}: {threads} threads on a board with {self.cores} "
                    f"core{'s' if self.cores != 1 else ''}: latency figures will suffer; "
                    f"set threads <= {self.cores}")
        return None

    def summary(self) -> str:
        """``Python 3.11.2, numpy 1.26.4, ai-edge-litert 2.3.0``."""
        runtimes = ", ".join(f"{name} {version}" for name, version in self.runtimes.items())
        return (f"Python {'.'.join(map(str, self.version))}, numpy {self.numpy or 'missing'}, "
                f"{runtimes or 'no TFLite runtime'}")

    def require(self) -> None:
        problems = self.missing()
        if problems:
            raise BoardSetupError(f"{self.target}: {'; '.join(problems)} for {self.python}; "
                                  f"run `edge targets setup {self.target}`", target=self.target)


def probe(board: Shell) -> BoardPython:
    """What the board's Python has; one command (the venv's Python if setup made one)."""
    venv = shlex.quote(f"{board.target.work_dir}/venv/bin/python")
    plain = shlex.quote(board.target.python)
    result = board.run(f"if [ -x {venv} ]; then p={venv}; else p={plain}; fi; "
                       f'printf "%s\\n" "$p"; exec "$p" -c {shlex.quote(_PROBE)}')
    chosen, _, _ = result.stdout.decode("utf-8", "replace").partition("\n")
    python = chosen.strip() or board.target.python
    if not result.ok:
        raise BoardSetupError(f"{board.target.name}: cannot run {python} on the board "
                              f"({result.stderr.decode('utf-8', 'replace').strip()[-200:]}); "
                              "set python in the target file", target=board.target.name)
    try:
        facts = json.loads(result.stdout.decode("utf-8").strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise InfrastructureError(f"{board.target.name}: the Python probe printed nothing "
                                  "readable", target=board.target.name) from None
    return BoardPython(target=board.target.name, python=python,
                       version=tuple(facts["version"]), numpy=facts["numpy"],
                       runtimes=facts["runtimes"], runtime_preference=board.target.runtime,
                       cores=int(facts.get("cores") or 0),
                       providers=tuple(facts.get("providers") or ()),
                       providers_error=str(facts.get("providers_error") or ""))


def setup(board: Board, *, wheelhouse: Path | None = None,
          system_site_packages: bool = False) -> BoardPython:
    """Make ``WORK/venv`` with the target's Python and pip-install what the agent needs,
    holding the board's lease throughout (busy: :class:`~toolkit.errors.BoardBusyError`,
    nothing changed)."""
    with hold_lease(board) as held:
        return _setup(board, held, wheelhouse=wheelhouse,
                      system_site_packages=system_site_packages)


def _setup(board: Board, held: Held, *, wheelhouse: Path | None,
           system_site_packages: bool) -> BoardPython:
    target = board.target
    work = target.work_dir
    venv = f"{work}/venv"
    base = probe_base(board)
    if base < (3, 9):
        raise BoardSetupError(f"{target.name}: {target.python} is Python "
                              f"{'.'.join(map(str, base))}; the agent needs 3.9 or newer: "
                              "install one and set python in the target file",
                              target=target.name)
    python = f"{venv}/bin/python"
    # Before the venv (a minute on a slow board): the base Python's pip, if it has one,
    # knows the same index settings; an existing venv's pip is asked instead.
    has_venv = board.run(f"test -x {shlex.quote(python)}").ok
    checked = wheelhouse is not None or check_index(board, python if has_venv
                                                    else target.python)
    flags = " --system-site-packages" if system_site_packages else ""
    held.confirm()  # a host paused since the acquire changes nothing
    made = board.run(f"mkdir -p -- {shlex.quote(work)} && test -x "
                     f"{shlex.quote(venv + '/bin/python')} || {shlex.quote(target.python)} "
                     f"-m venv{flags} -- {shlex.quote(venv)}", timeout=300)
    if not made.ok:
        raise BoardSetupError(f"{target.name}: could not make a venv: "
                              f"{made.stderr.decode('utf-8', 'replace').strip()[-200:]}",
                              target=target.name)
    tolerated = _pip_problems(board, python) if system_site_packages else []
    if tolerated:
        log.warning("%s: the board's own packages already conflict: %s", target.name,
                    "; ".join(tolerated))
    remote_wheels = f"{work}/wheelhouse"
    try:
        if wheelhouse is None:
            if not checked:
                check_index(board, python)
            source = ""  # pip's own index configuration
        else:
            source = _push_wheels(board, wheelhouse, remote_wheels)
        held.confirm()
        _pip_install(board, python, source, REQUIREMENTS[target.runtime])
    finally:
        if wheelhouse is not None:  # the wheels served this install only; the disk is the board's
            _remove_wheels(board, remote_wheels)
    _pip_check(board, python, tolerated=tolerated)
    facts = probe(board)
    facts.require()
    return facts


def _push_wheels(board: Shell, wheelhouse: Path, remote_wheels: str) -> str:
    """Upload the wheels; the pip options that install from them alone."""
    wheels = sorted(wheelhouse.glob("*.whl"))
    if not wheels:
        raise BoardSetupError(f"wheelhouse {wheelhouse} holds no .whl files",
                              target=board.target.name)
    for wheel in wheels:
        upload(board, remote_wheels, wheel.name, wheel)
    return f"--no-index --find-links {shlex.quote(remote_wheels)}"


def _remove_wheels(board: Shell, remote_wheels: str) -> None:
    try:
        board.run(f"rm -rf -- {shlex.quote(remote_wheels)}")
    except InfrastructureError as exc:  # the error that ended setup matters more
        log.warning("%s: pushed wheels left in %s: %s", board.target.name, remote_wheels, exc)


def _pip_install(board: Shell, python: str, source: str, packages: list[str]) -> None:
    name = board.target.name
    installed = board.run(f"{shlex.quote(python)} -m pip install --disable-pip-version-check "
                          f"-q {source} {' '.join(shlex.quote(p) for p in packages)}",
                          timeout=1800)
    if installed.ok:
        return
    stderr = installed.stderr.decode("utf-8", "replace")
    cause = offline_cause(stderr) if not source else None
    if cause is not None:
        raise offline_error(name, cause)
    lines = stderr.strip().splitlines()
    raise BoardSetupError(f"{name}: pip failed: {lines[-1] if lines else ''}", target=name)


def _pip_problems(board: Shell, python: str) -> list[str]:
    """``pip check``'s complaints (``x 1.0 has requirement numpy>=2, but you have ...``)."""
    checked = board.run(f"{shlex.quote(python)} -m pip check --disable-pip-version-check",
                        timeout=300)
    if checked.ok:
        return []
    lines = [line.strip() for line in checked.stdout.decode("utf-8", "replace").splitlines()
             if line.strip()]
    return lines or ["pip check failed"]


def _pip_check(board: Shell, python: str, *, tolerated: list[str]) -> None:
    """Refuse a venv whose installed packages contradict each other.

    Switching a board's runtime can downgrade numpy under a package that needs a newer
    one (``ml-dtypes`` of ai-edge-litert under tflite-runtime's ``numpy<2``); pip
    installs it with a warning and the agent would crash later. ``tolerated``: the
    complaints about the board's own packages (``--system-site-packages``) that were
    there before this install and are not its doing.
    """
    target = board.target
    problems = [line for line in _pip_problems(board, python) if line not in tolerated]
    if not problems:
        return
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise BoardSetupError(
        f"{target.name}: the venv is broken after the install: {problems[0]}{more}; remove "
        f"{target.work_dir}/venv on the board and run `edge targets setup {target.name}` again",
        target=target.name)


def probe_base(board: Shell) -> tuple[int, ...]:
    """The version of the target's own ``python`` (not the venv's)."""
    result = board.run(f"{shlex.quote(board.target.python)} -c "
                       + shlex.quote("import sys; print(*sys.version_info[:3])"))
    if not result.ok:
        raise BoardSetupError(f"{board.target.name}: cannot run {board.target.python} on the "
                              "board; set python in the target file", target=board.target.name)
    return tuple(int(part) for part in result.stdout.split())
