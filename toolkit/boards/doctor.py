"""Is a board fit to measure on?  ``edge doctor`` and the health gate of ``edge bench``.

Per board, in order (a failed step says why and stops the ones that need it):
reachable, host key known, login, Python >= 3.8 with numpy and a TFLite runtime,
then the agent's own ``facts`` (so the board is read by the code that measures):
free disk in the work folder, the accelerators and API the target asks for (GPU:
Vulkan present, the adapter and whether it is software, the library loads), the
runtime loading and running a tiny model once per accelerator (in a child on the
board, so a runtime that crashes on load is named: "killed by signal SIGSEGV in ..."),
temperature and throttling, the power sensor the target names, and the clock's
offset to the host.  As in LAVA's health checks, a
board that fails is left out of a bench with the reason shown.

A labgrid selector (``tag:board=rpi4``) is checked place by place
(:func:`diagnose_place`): first the place's health on the coordinator (edge marks a
place bad when its board stopped answering, see :mod:`toolkit.labgrid.health`), then
the board at its NetworkService's address, so one sees whether a bad board is back.

Example::

    health = diagnose(load_target("rpi4"))
    health.healthy, health.reason   # (False, "reachable: SSH to pi@rpi4:22: ...")
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, TypedDict

from device_agent.clocks import NOT_EXPOSED, STEADY_GOVERNOR, clock_summary
from device_agent.wire import ClockState
from toolkit.artifacts.agent_package import build_agent_package
from toolkit.boards.board import open_board
from toolkit.boards.bootstrap import BoardPython, probe
from toolkit.boards.targets import Target
from toolkit.boards.transfer import upload_all
from toolkit.errors import AuthError, BoardSetupError, ExitCode, HostKeyError, InfrastructureError

if TYPE_CHECKING:
    from toolkit.labgrid.health import PlaceHealth

#: Less free space than this in the work folder fails the disk check.
MIN_FREE_BYTES = 100 * 1024 * 1024
#: A board clock further off than this fails the clock check (lease expiry uses it).
MAX_CLOCK_OFFSET_SECONDS = 30.0


class RuntimeFacts(TypedDict):
    """The runtime the agent takes on this board (``ai-edge-litert``, ``2.3.0``)."""

    name: str
    version: str


class AcceleratorFacts(TypedDict):
    """One accelerator's preflight (:func:`device_agent.accelerators.preflight`)."""

    name: str
    ok: bool
    detail: str
    warning: bool


class ModelLoadFacts(TypedDict):
    """The tiny model loaded and run once on one accelerator, in a child on the board."""

    accelerator: str
    ok: bool
    detail: str


class ThermalFacts(TypedDict, total=False):
    """Temperatures now (:func:`device_agent.thermal.thermal_state`); the throttle flags
    only where ``vcgencmd`` answers."""

    zones_c: dict[str, float]
    cpu_mhz: dict[str, float]
    throttled_raw: str
    throttled_flags: list[str]
    throttled_now: bool


class SensorFacts(TypedDict):
    """The power sensor the agent opened, and what it does not see (``rail VDD_IN only``)."""

    kind: str
    misses: str


class AgentFacts(TypedDict, total=False):
    """The agent's ``facts`` answer: one JSON line (``device_agent/__main__.py``).  A part
    the board could not give is missing, or replaced by its ``*_error``."""

    board: dict[str, object]
    thermal: ThermalFacts
    clocks: ClockState
    cwd: str
    free_bytes: int
    runtime: RuntimeFacts
    runtime_choice: str
    runtime_error: str
    accelerators: list[AcceleratorFacts]
    model_loads: list[ModelLoadFacts]
    power_sensor: SensorFacts | None
    power_watts: float
    power_error: str
    time: float


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    #: Passed, but figures from this board need a second look (e.g. threads beyond its cores).
    warning: bool = False


#: A failed check -> the exit code of the error ``edge deploy`` raises for it.
_EXIT_CODES = {"reachable": ExitCode.INCOMPLETE, "labgrid place": ExitCode.INCOMPLETE,
               "host key": ExitCode.USAGE, "login": ExitCode.USAGE, "python": ExitCode.USAGE}


@dataclass(frozen=True)
class BoardHealth:
    target: str
    checks: list[Check] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def reason(self) -> str:
        """The first failed check as one line; empty when healthy."""
        failed = next((c for c in self.checks if not c.ok), None)
        return f"{failed.name}: {failed.detail}" if failed else ""

    @property
    def exit_code(self) -> ExitCode:
        """What ``edge doctor`` exits with for this board: what ``edge deploy`` exits with
        for the same failure (an unreachable board is infrastructure, 3; a host key, login
        or Python to fix is usage, 2; any other failed check, 1); OK when healthy."""
        failed = next((c for c in self.checks if not c.ok), None)
        if failed is None:
            return ExitCode.OK
        return _EXIT_CODES.get(failed.name, ExitCode.FAILED)

    @property
    def warnings(self) -> list[str]:
        """Passed checks that need a second look, one line each."""
        return [f"{c.name}: {c.detail}" for c in self.checks if c.warning]

    def to_dict(self) -> dict[str, object]:
        return {"target": self.target, "healthy": self.healthy, "reason": self.reason,
                "warnings": self.warnings, "checks": [asdict(c) for c in self.checks]}


def diagnose(target: Target, accelerators: Sequence[str] | None = None) -> BoardHealth:
    """Every check of the module docstring on ``target``; never raises for a sick board.

    The local board and SSH boards go through the same code (:mod:`toolkit.boards.board`).
    ``accelerators`` (besides the target's own ``accelerator`` and ``api`` when they are
    not the CPU through the Interpreter) get a check each: for ``gpu``, the Vulkan loader,
    the adapter LiteRT selects (a software one is a warning, named as software) and the
    accelerator library, probed in a child on the board (see
    :func:`device_agent.accelerators.preflight`).
    """
    checks: list[Check] = []
    try:
        with open_board(target) as board:
            board.run("true")
            if target.transport == "local":
                checks.append(Check("reachable", True, "this machine"))
            else:
                checks += [Check("reachable", True, board.where),
                           Check("host key", True, "known"), Check("login", True, "key accepted")]
            python = probe(board)
            problems = python.missing()
            checks.append(Check("python", not problems,
                                "; ".join(problems) or f"{python.python}: {python.summary()}"))
            if problems:
                return BoardHealth(target.name, checks)
            checks.append(_cores_check(target, python))
            agent = build_agent_package()
            work = target.work_dir
            upload_all(board, [(work, agent.name, agent.data)])
            started = time.time()
            answer = board.run(f"cd {shlex.quote(work)} && {shlex.quote(python.python_in(work))} "
                               f"{shlex.quote(agent.name)} facts "
                               f"{shlex.quote(target.power_sensor)}{_runtime_option(target)}"
                               f"{_accelerator_options(target, accelerators)}")
            ended = time.time()
            if not answer.ok:
                checks.append(Check("agent", False, _last_line(answer.stderr)))
                return BoardHealth(target.name, checks)
            facts: AgentFacts = json.loads(answer.stdout.decode("utf-8").strip().splitlines()[-1])
            return BoardHealth(target.name, checks + _fact_checks(target, facts, started, ended))
    except HostKeyError as exc:
        checks += [Check("reachable", True, ""), Check("host key", False, str(exc))]
    except AuthError as exc:
        checks += [Check("reachable", True, ""), Check("host key", True, "known"),
                   Check("login", False, str(exc))]
    except (InfrastructureError, BoardSetupError) as exc:
        checks.append(Check("reachable" if not checks else "board", False, str(exc)))
    except (ValueError, IndexError):
        checks.append(Check("agent", False, "the agent's facts were not readable"))
    return BoardHealth(target.name, checks)


def diagnose_place(place: PlaceHealth,
                   accelerators: Sequence[str] | None = None) -> BoardHealth:
    """The place's edge health on the coordinator, then :func:`diagnose` on its board."""
    checks = [Check("labgrid place", not place.bad, place.detail)]
    if place.target is None:
        return BoardHealth(place.place, [*checks, Check("reachable", False, place.problem)])
    return BoardHealth(place.place, [*checks, *diagnose(place.target, accelerators).checks])


def _runtime_option(target: Target) -> str:
    """`` --runtime NAME``: the agent then reads the board with the runtime the target chooses."""
    return f" --runtime {shlex.quote(target.runtime)}"


def _accelerator_options(target: Target, accelerators: Sequence[str] | None) -> str:
    """`` --accelerator gpu --api compiled ...`` when anything but the default is asked for."""
    kinds = list(dict.fromkeys([*([target.accelerator] if target.accelerator != "cpu" else []),
                                *(accelerators or [])]))
    if not kinds and target.api == "interpreter":
        return ""
    options = f" --accelerator {shlex.quote(','.join(kinds) or 'cpu')}" \
              f" --api {shlex.quote(target.api)}"
    if target.delegate:
        options += (f" --delegate {shlex.quote(target.delegate)} --delegate-options "
                    f"{shlex.quote(json.dumps(dict(target.delegate_options)))}")
    return options


def _accelerator_checks(facts: AgentFacts) -> list[Check]:
    return [Check(f"accelerator {c['name']}", bool(c["ok"]), str(c["detail"]),
                  warning=bool(c.get("warning"))) for c in facts.get("accelerators", [])]


def _model_load_checks(facts: AgentFacts) -> list[Check]:
    """The agent's tiny model loaded and run once per accelerator, each in a child: a
    runtime that imports but crashes on every model (SIGSEGV) fails here, in one line."""
    return [Check("runtime loads a model" if c["accelerator"] == "cpu"
                  else f"runtime loads a model on {c['accelerator']}", bool(c["ok"]),
                  str(c["detail"])) for c in facts.get("model_loads", [])]


def _runtime_check(target: Target, facts: AgentFacts) -> Check:
    """The runtime the agent takes on this board, against the one the target file asks for.

    A board with both runtimes installed must run the one the target names: a figure
    labelled tflite-runtime that came from ai-edge-litert compares two different things.
    """
    runtime = facts.get("runtime")
    if runtime is None:
        return Check("runtime", False, str(facts.get("runtime_error")))
    chosen = f"{runtime['name']} {runtime['version']}"
    if target.runtime == "auto":
        return Check("runtime", True, f"{chosen} (target: auto, the agent's choice)")
    if runtime["name"] != target.runtime:
        return Check("runtime", False, f"the agent takes {chosen}, but the target asks for "
                                       f"{target.runtime}")
    return Check("runtime", True, f"{chosen} (target asks {target.runtime})")


def _cores_check(target: Target, python: BoardPython) -> Check:
    """Threads beyond the board's cores contend: a 2-core board ran 4 threads 9x slower."""
    warning = python.thread_warning(target.threads)
    cores = python.cores or "?"
    # A warning, not a failure: the board still measures, and a bench must not leave it out.
    return Check("threads", True, warning or f"{target.threads} of {cores} cores",
                 warning=warning is not None)


def _fact_checks(target: Target, facts: AgentFacts, started: float,
                 ended: float) -> list[Check]:
    checks = []
    free = int(facts.get("free_bytes", 0))
    checks.append(Check("disk", free >= MIN_FREE_BYTES,
                        f"{free / 2**20:,.0f} MiB free in {facts.get('cwd', '?')}"
                        + ("" if free >= MIN_FREE_BYTES else
                           f" (less than {MIN_FREE_BYTES / 2**20:.0f} MiB)")))
    checks.append(_runtime_check(target, facts))
    checks += _accelerator_checks(facts)
    checks += _model_load_checks(facts)
    thermal = facts.get("thermal") or {}
    zones = thermal.get("zones_c") or {}
    hottest = max(zones.values()) if zones else None
    throttled = thermal.get("throttled_flags") or []
    checks.append(Check("thermal", not thermal.get("throttled_now", False),
                        (f"hottest zone {hottest:.1f} C" if hottest is not None
                         else "no thermal zone") +
                        (f"; throttled: {', '.join(throttled)}" if throttled else "")))
    if "clocks" in facts:
        checks.append(_governor_check(target, facts["clocks"]))
    sensor = facts.get("power_sensor")
    wanted = target.power_sensor
    if facts.get("power_error"):
        checks.append(Check("power sensor", False, str(facts["power_error"])))
    else:
        found = sensor["kind"] if sensor else "none"
        checks.append(Check("power sensor", wanted in ("auto", "none") or sensor is not None,
                            f"{found} (target asks {wanted})"))
    # The board read its clock between our two readings: offset within +- half the round trip.
    offset = float(facts["time"]) - (started + ended) / 2
    checks.append(Check("clock", abs(offset) <= MAX_CLOCK_OFFSET_SECONDS,
                        f"offset {offset:+.3f} s +- {(ended - started) / 2:.3f} s to this host"))
    return checks


def _governor_check(target: Target, clocks: ClockState) -> Check:
    """The clock policy the board is on: passes whatever it is (figures are still right
    for it), a warning when jobs would measure on a governor other than ``performance``."""
    governor = clocks.get("governor", NOT_EXPOSED)
    if governor == NOT_EXPOSED:
        return Check("governor", True, "cpufreq not exposed (no governor to read or set)")
    detail = clock_summary(clocks)
    if target.set_governor:
        return Check("governor", True, f"{detail}; jobs set {target.set_governor}",
                     warning=target.set_governor != STEADY_GOVERNOR)
    if governor == STEADY_GOVERNOR:
        return Check("governor", True, detail)
    return Check("governor", True, f"{detail}: figures depend on the load the governor sees; "
                 f'set_governor = "{STEADY_GOVERNOR}" in the target file sets it per job',
                 warning=True)


def _last_line(raw: bytes) -> str:
    lines = raw.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "no message"
