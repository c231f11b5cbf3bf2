"""What a bare board needs before the agent can run, checked and (when asked) installed.

The agent needs Python 3.8 or newer, numpy and a TFLite runtime (onnxruntime for ``.onnx``
files, with the execution providers the deploy asks for: :meth:`BoardPython.require_providers`).
:func:`probe` asks the board's Python (the venv in the work folder if ``edge targets setup``
made one, else the target's ``python``); :func:`setup` makes that venv and
installs what is missing with pip, from the package index or from wheels the
host pushes (``wheelhouse``, see :mod:`toolkit.boards.wheelhouse`) for air-gapped labs.
Setup changes the board, so it holds the board's lease (:func:`toolkit.boards.lease.hold_lease`)
from before its first change to its end, as a deploy does: a board another job holds
is :class:`~toolkit.errors.BoardBusyError` and nothing on it is touched (pip running
beside a measurement skews it, and a venv changed under a running agent breaks it).
A board that cannot reach the index is named offline within seconds.

**A venv is changed whole or not at all.**  Setup builds the new venv beside the one in
use (``WORK/venvs/ID``: a copy of it, or a new one), installs into that, and checks it:
``pip check`` (a runtime switch that downgrades numpy under a package that needs numpy 2),
the agent's own needs, and those of every *other* target file in the search path whose
venv this is (same SSH address and route, same work folder): what would break one of
them (``numpy 2.1.3 would not satisfy numpy<2`` for a tflite-runtime target; pip check
cannot see that one) is refused in one line naming that target file.  Only a venv that
passes is put in place, by one rename of the ``WORK/venv`` symlink; a refusal, an error
or an interrupted setup leaves the venv in use as it was.  Building aside was chosen over
``pip install --dry-run --report``: the check runs on the installed result itself (pip's
own ``pip check``, the packages' metadata as installed), and it needs nothing of the
board's pip (``--dry-run`` and ``--report`` came in pip 22.2; Ubuntu 22.04, JetPack 6,
ships 22.0.2); it costs a copy of the venv on the board's disk while setup runs.

Example::

    with Connection(target) as board:
        facts = probe(board)          # BoardPython(python='.edge/venv/bin/python', ...)
        facts.require()               # raises BoardSetupError naming `edge targets setup`
"""

from __future__ import annotations

import json
import logging
import posixpath
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from device_agent import OLDEST_PYTHON
from toolkit.boards.lease import hold_lease
from toolkit.boards.targets import Target, available_targets, load_target, resolve_ssh
from toolkit.boards.transfer import upload
from toolkit.boards.wheelhouse import (
    board_requirements,
    check_index,
    offline_cause,
    offline_error,
    requirements,
)
from toolkit.errors import BoardSetupError, InfrastructureError, TargetError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from toolkit.boards.board import Board, Shell
    from toolkit.boards.lease import Held

#: The folder of ``WORK`` that holds the venvs setup builds; ``WORK/venv`` is a symlink to
#: the one in use.
VENVS = "venvs"
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
        if self.version[:2] < OLDEST_PYTHON:
            problems.append(f"Python {'.'.join(map(str, self.version))} is older than "
                            f"{'.'.join(map(str, OLDEST_PYTHON))}")
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


def probe(board: Shell, python: str | None = None) -> BoardPython:
    """What the board's Python has; one command (the venv's Python if setup made one, or
    ``python`` when given)."""
    venv = shlex.quote(f"{board.target.work_dir}/venv/bin/python")
    plain = shlex.quote(board.target.python)
    choose = (f"if [ -x {venv} ]; then p={venv}; else p={plain}; fi; " if python is None
              else f"p={shlex.quote(python)}; ")
    result = board.run(f'{choose}printf "%s\\n" "$p"; exec "$p" -c {shlex.quote(_PROBE)}')
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


def setup(board: Board, *, wheelhouse: Path | None = None, system_site_packages: bool = False,
          targets_dir: str | Path | None = None) -> BoardPython:
    """Make ``WORK/venv`` with the target's Python and pip-install what the agent needs,
    holding the board's lease throughout (busy: :class:`~toolkit.errors.BoardBusyError`,
    nothing changed).

    The new venv is built beside the one in use and swapped in only when it passes; a
    refusal changes nothing on the board (see the module's docstring).  ``targets_dir``:
    the target files searched for others that use the same venv.
    """
    sharing = venv_sharers(board.target, targets_dir)
    with hold_lease(board) as held:
        return _setup(board, held, wheelhouse=wheelhouse,
                      system_site_packages=system_site_packages, sharing=sharing)


def venv_sharers(target: Target, targets_dir: str | Path | None = None) -> list[Target]:
    """The other target files in the search path whose venv is ``target``'s: the same SSH
    address and route, and the same work folder (a relative one: for the same login)."""
    ours = _venv_key(target)
    if ours is None:
        return []
    found = []
    for name in available_targets(targets_dir):
        if name == target.name:
            continue
        try:
            other = load_target(name, targets_dir)
        except TargetError:  # a broken target file uses no venv
            continue
        if _venv_key(other) == ours:
            found.append(other)
    return found


def _venv_key(target: Target) -> tuple[object, ...] | None:
    """What names a target's venv from this machine: where SSH lands, and the folder."""
    if target.transport != "ssh":
        return None
    try:
        params = resolve_ssh(target)
    except TargetError:
        return None
    work = posixpath.normpath(target.work_dir)
    route = tuple((hop.hostname, hop.port) for hop in params.jumps)
    login = "" if work.startswith("/") else params.user  # a relative folder is per home
    return params.hostname, params.port, route, params.proxy_command, login, work


def _setup(board: Board, held: Held, *, wheelhouse: Path | None,
           system_site_packages: bool, sharing: list[Target]) -> BoardPython:
    target = board.target
    work = target.work_dir
    venv = f"{work}/venv"
    base = probe_base(board)
    needs = board_requirements(target, base)  # refuses a Python too old, before any change
    python = f"{venv}/bin/python"
    # Before the venv (a minute on a slow board): the base Python's pip, if it has one,
    # knows the same index settings; an existing venv's pip is asked instead.
    has_venv = board.run(f"test -x {shlex.quote(python)}").ok
    checked = wheelhouse is not None or check_index(board, python if has_venv
                                                    else target.python)
    held.confirm()  # a host paused since the acquire changes nothing
    fresh = f"{work}/{VENVS}/{held.token[:12]}"
    fresh_python = f"{fresh}/bin/python"
    _make_candidate(board, fresh, system_site_packages=system_site_packages)
    remote_wheels = f"{work}/wheelhouse"
    try:
        tolerated = _pip_problems(board, fresh_python) if system_site_packages else []
        if tolerated:
            log.warning("%s: the board's own packages already conflict: %s", target.name,
                        "; ".join(tolerated))
        before = {other.name: _runtime_problems(board, fresh_python, other.runtime, base)
                  for other in sharing}
        try:
            if wheelhouse is None:
                if not checked:
                    check_index(board, fresh_python)
                source = ""  # pip's own index configuration
            else:
                source = _push_wheels(board, wheelhouse, remote_wheels)
            held.confirm()
            _pip_install(board, fresh_python, source, needs)
        finally:
            if wheelhouse is not None:  # they served this install only; the disk is the board's
                _remove_wheels(board, remote_wheels)
        _pip_check(board, fresh_python, tolerated=tolerated, sharing=sharing)
        for other in sharing:
            broken = [problem
                      for problem in _runtime_problems(board, fresh_python, other.runtime, base)
                      if problem not in before[other.name]]
            if broken:
                raise BoardSetupError(
                    f"{target.name}: refused: the install would break target {other.name} "
                    f"({other.source}), which uses the same venv {venv} on this board: "
                    f"{broken[0]}; nothing was changed (give one of them a work_dir of its "
                    "own)", target=target.name)
        probe(board, fresh_python).require()
        held.confirm()  # the swap is the one change: not from a host paused past its lease
        _swap_in(board, fresh)
    except BaseException:
        _remove_candidate(board, fresh)
        raise
    return probe(board)


def _make_candidate(board: Shell, fresh: str, *, system_site_packages: bool) -> None:
    """``fresh``: a copy of the venv in use, or a new venv when there is none; copies that
    earlier setups left (cut off before their swap) are removed first."""
    target = board.target
    work = shlex.quote(target.work_dir)
    flags = " --system-site-packages" if system_site_packages else ""
    made = board.run(
        f'w={work}; n={shlex.quote(fresh)}; mkdir -p -- "$w/{VENVS}" && '
        f'cur=$(cd -P -- "$w/venv" 2>/dev/null && pwd -P); '
        f'for d in "$w/{VENVS}"/*; do [ -d "$d" ] || continue; '
        '[ "$(cd -P -- "$d" && pwd -P)" = "$cur" ] || rm -rf -- "$d"; done; '
        'if [ -n "$cur" ] && [ -x "$w/venv/bin/python" ]; then cp -a -- "$cur" "$n"; '
        f'else {shlex.quote(target.python)} -m venv{flags} -- "$n"; fi', timeout=600)
    if not made.ok:
        raise BoardSetupError(f"{target.name}: could not make a venv: "
                              f"{made.stderr.decode('utf-8', 'replace').strip()[-200:]}",
                              target=target.name)


#: Run by the new venv's Python before the swap: its scripts and pyvenv.cfg name the venv's
#: stable path (WORK/venv), not the folder it was built in, which the next setup removes.
_RELOCATE = (
    "import os, sys\n"
    "final = os.path.join(os.path.dirname(os.path.dirname(sys.prefix)), 'venv')\n"
    "names = {sys.prefix, os.path.realpath(sys.prefix)}\n"
    "paths = [os.path.join(sys.prefix, 'pyvenv.cfg')] + [\n"
    "    os.path.join(sys.prefix, 'bin', f) for f in os.listdir(os.path.join(sys.prefix, 'bin'))]\n"
    "for path in paths:\n"
    "    if os.path.islink(path) or not os.path.isfile(path):\n"
    "        continue\n"
    "    with open(path, 'rb') as handle:\n"
    "        data = handle.read()\n"
    "    if b'\\0' in data[:4096]:\n"
    "        continue\n"
    "    new = data\n"
    "    for name in names:\n"
    "        new = new.replace(name.encode(), final.encode())\n"
    "    if new != data:\n"
    "        with open(path, 'wb') as handle:\n"
    "            handle.write(new)\n"
)

#: ``os.replace``: one rename(2) of a symlink over the symlink in use (``mv`` would move
#: it into the folder the old one points at).
_REPLACE = "import os, sys; os.replace(sys.argv[1], sys.argv[2])"


def _swap_in(board: Shell, fresh: str) -> None:
    """Make ``WORK/venv`` point at ``fresh`` (a relative symlink) and remove the venv it
    replaces.  Over a symlink (a venv an earlier setup swapped in) this is one rename;
    over the folder older versions made, two (the lease keeps every job off meanwhile)."""
    target = board.target
    name = fresh.rsplit("/", 1)[1]
    python = shlex.quote(f"{fresh}/bin/python")
    aside = f'"$w/{VENVS}/replaced-{name}"'
    swapped = board.run(
        f'w={shlex.quote(target.work_dir)}; {python} -c {shlex.quote(_RELOCATE)} || exit 1; '
        'top=$(cd -P -- "$w" && pwd -P) || exit 1; '
        'old=$(cd -P -- "$w/venv" 2>/dev/null && pwd -P); '
        f'rm -f -- "$w/venv.swap" && ln -s -- {VENVS}/{name} "$w/venv.swap" || exit 1; '
        'if [ -L "$w/venv" ] || [ ! -e "$w/venv" ]; then '
        f'{python} -c {shlex.quote(_REPLACE)} "$w/venv.swap" "$w/venv" || exit 1; '
        f'else mv -- "$w/venv" {aside} || exit 1; '
        f'mv -- "$w/venv.swap" "$w/venv" || {{ mv -- {aside} "$w/venv"; exit 1; }}; fi; '
        # What it replaced: removed only if edge made it (a venv of the user's stays).
        f'case $old in "$top"/{VENVS}/*) rm -rf -- "$old";; esac; rm -rf -- {aside}; exit 0',
        timeout=600)
    if not swapped.ok:
        raise BoardSetupError(f"{target.name}: could not put the new venv in place: "
                              f"{swapped.stderr.decode('utf-8', 'replace').strip()[-200:]}",
                              target=target.name)


def _remove_candidate(board: Shell, fresh: str) -> None:
    """The venv that was not swapped in (a link that broke during the swap may have seen
    it swapped in: then it stays); a board we cannot reach keeps it until the next setup
    removes it."""
    venv = shlex.quote(f"{board.target.work_dir}/venv")
    quoted = shlex.quote(fresh)
    try:
        board.run(f'[ "$(cd -P -- {venv} 2>/dev/null && pwd -P)" = '
                  f'"$(cd -P -- {quoted} 2>/dev/null && pwd -P)" ] || rm -rf -- {quoted}',
                  timeout=600)
    except InfrastructureError as exc:  # the error that ended setup matters more
        log.warning("%s: an unused venv was left in %s: %s", board.target.name, fresh, exc)


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


def _pip_check(board: Shell, python: str, *, tolerated: list[str],
               sharing: list[Target]) -> None:
    """Refuse a venv whose installed packages contradict each other.

    Switching a board's runtime can downgrade numpy under a package that needs a newer
    one (``ml-dtypes`` of ai-edge-litert under tflite-runtime's ``numpy<2``); pip
    installs it with a warning and the agent would crash later. ``tolerated``: the
    complaints about the board's own packages (``--system-site-packages``) that were
    there before this install and are not its doing; ``sharing``: the other target files
    that use this venv, named in the refusal.
    """
    target = board.target
    problems = [line for line in _pip_problems(board, python) if line not in tolerated]
    if not problems:
        return
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    shared = "".join(f"; target {other.name} ({other.source}) uses the same venv"
                     for other in sharing)
    raise BoardSetupError(
        f"{target.name}: refused: the install would leave the venv broken: "
        f"{problems[0]}{more}{shared}; nothing was changed", target=target.name)


#: Run by a venv's Python with a runtime preference and :func:`requirements` (JSON): what
#: a target with that preference would miss in it, one line each (JSON list). ``auto``
#: uses ai-edge-litert when it is there, else tflite-runtime, as the agent does.
_RUNTIME_CHECK = (
    "import json, re, sys\n"
    "from importlib import metadata\n"
    "try:\n"
    "    from pip._vendor.packaging.requirements import Requirement\n"
    "except ImportError:\n"
    "    Requirement = None\n"
    "def version(name):\n"
    "    try:\n"
    "        return metadata.version(name)\n"
    "    except Exception:\n"
    "        return None\n"
    "preference, needs = sys.argv[1], json.loads(sys.argv[2])\n"
    "if preference == 'auto':\n"
    "    preference = 'tflite-runtime' if version('tflite-runtime') and not "
    "version('ai-edge-litert') else 'ai-edge-litert'\n"
    "problems = []\n"
    "for text in needs[preference]:\n"
    "    name = re.match(r'[A-Za-z0-9._-]+', text).group(0)\n"
    "    have = version(name)\n"
    "    if have is None:\n"
    "        problems.append(name + ' would be missing')\n"
    "    elif Requirement is not None and not Requirement(text).specifier.contains(\n"
    "            have, prereleases=True):\n"
    "        problems.append(f'{name} {have} would not satisfy {text}')\n"
    "print(json.dumps(problems))\n"
)


def _runtime_problems(board: Shell, python: str, runtime: str,
                      version: Sequence[int]) -> list[str]:
    """What a target preferring ``runtime`` would miss in the venv of ``python`` (Python
    ``version``)."""
    needs = json.dumps(requirements(version))
    answer = board.run(f"{shlex.quote(python)} -c {shlex.quote(_RUNTIME_CHECK)} "
                       f"{shlex.quote(runtime)} {shlex.quote(needs)}")
    lines = answer.stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        problems = json.loads(lines[-1]) if answer.ok and lines else None
    except ValueError:
        problems = None
    if not isinstance(problems, list):
        raise BoardSetupError(f"{board.target.name}: cannot check the venv for {runtime}: "
                              f"{answer.stderr.decode('utf-8', 'replace').strip()[-200:]}",
                              target=board.target.name)
    return [str(problem) for problem in problems]


def probe_base(board: Shell) -> tuple[int, ...]:
    """The version of the target's own ``python`` (not the venv's)."""
    result = board.run(f"{shlex.quote(board.target.python)} -c "
                       + shlex.quote("import sys; print(*sys.version_info[:3])"))
    if not result.ok:
        raise BoardSetupError(f"{board.target.name}: cannot run {board.target.python} on the "
                              "board; set python in the target file", target=board.target.name)
    return tuple(int(part) for part in result.stdout.split())
