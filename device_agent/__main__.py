"""Entry point on the board.

``run JOB [--pid-file PATH]``: validate the job, measure each variant in its own
child process (so peak memory is per variant and a crash takes down only that
variant), and print one result document on standard output.  The job has one
deadline (:func:`device_agent.protocol.job_budget_seconds`): variants not started
by then fail with that reason and a running one is killed.  SIGTERM, SIGHUP or
SIGINT kill the running child's process group and end the agent with 128 + the
signal's number, printing no result.  ``--pid-file`` writes the agent's pid
(atomically) for the host, which starts it in a session of its own, and removes
it on exit.  While the job runs the agent rewrites ``JOB.alive`` every few seconds
(:class:`device_agent.proc.Heartbeat`): a host that sees it stop changing ends the job.
``--lease-file PATH --lease-token TOKEN`` fence the job: the agent
measures only while the board's lease file names ``TOKEN`` (its fourth line),
checked before each variant (or pair) is loaded and every half second meanwhile;
once it does not (another job took the lease over, or the file cannot be read),
the running child is killed and the agent exits with :data:`LEASE_LOST_EXIT`,
printing no result.

A job with ``pairs`` is a paired job (:mod:`device_agent.paired`): each pair's baseline and
candidate files are measured interleaved in one child, and the result carries ``pairs``
instead of ``variants``.

``measure JOB NAME``: one variant's figures, in this process (a debugging aid;
``run`` forks its children, see :mod:`device_agent.proc`; each does what
:mod:`device_agent.child` says).

``facts [SENSOR] [--runtime RUNTIME] [--accelerator LIST ...]``: what ``edge doctor``
asks of a board: board facts, the runtime the setting chooses and why, thermal and
throttle state, the power sensor found, free disk here, the clock, whether each
accelerator asked for can run here, and whether the runtime loads and runs the agent's
tiny model on each (in a child each: a crash is named, see :mod:`device_agent.load_check`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import cast

from . import protocol
from .board import board_facts
from .child import RUNTIME_MARK, load_job, measure
from .clocks import GovernorChange
from .proc import Heartbeat, Zygote, heartbeat_file
from .settings import JobSettings
from .wire import Answer, BoardHealth, Cooldown, Job, PairAnswer, VariantAnswer

USAGE = ("usage: agent run JOB.json [--pid-file PATH] [--lease-file PATH --lease-token TOKEN]"
         " | agent measure JOB.json VARIANT"
         " | agent facts [SENSOR] [--runtime RUNTIME] [--accelerator LIST] [--api API]"
         " [--delegate PATH] [--delegate-options JSON]")
#: Signals that stop a job the way Ctrl-C does: the host's kill, a closed terminal, Ctrl-C.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
#: Exit status when the board's lease is no longer this job's (the host's lock module
#: reads it as "lease lost").
LEASE_LOST_EXIT = 76
#: How often a running job re-reads the lease file.
FENCE_SECONDS = 0.5


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    options, args = _options(args, ("--pid-file", "--runtime", "--accelerator", "--api",
                                    "--delegate", "--delegate-options", "--lease-file",
                                    "--lease-token"))
    if options is None:
        print(USAGE, file=sys.stderr)
        return 2
    fenced = {"--lease-file", "--lease-token"}
    if len(args) == 2 and args[0] == "run" and set(options) <= {"--pid-file", *fenced} \
            and len(fenced & set(options)) in (0, 2):
        fence = (_Fence(Path(options["--lease-file"]), options["--lease-token"])
                 if "--lease-file" in options else None)
        return _run(Path(args[1]), options.get("--pid-file"), fence)
    if len(args) == 3 and args[0] == "measure" and not options:
        return measure(Path(args[1]), args[2])
    if 1 <= len(args) <= 2 and args[0] == "facts" and not {"--pid-file", *fenced} & set(options):
        return _facts(args[1] if len(args) == 2 else "auto", options.get("--runtime", "auto"),
                      options)
    print(USAGE, file=sys.stderr)
    return 2


def _options(args: list[str], known: tuple[str, ...]) -> tuple[dict[str, str] | None, list[str]]:
    """Split ``--name VALUE`` options (only ``known`` ones) from positional arguments."""
    options: dict[str, str] = {}
    rest: list[str] = []
    words = iter(args)
    for word in words:
        if word.startswith("--"):
            value = next(words, None)
            if word not in known or value is None:
                return None, rest
            options[word] = value
        else:
            rest.append(word)
    return options, rest


def _facts(sensor: str, runtime_preference: str, options: dict[str, str]) -> int:
    """One JSON line of board health facts; a missing part is reported, never fatal.

    ``--accelerator cpu,gpu`` (``--api``, ``--delegate PATH``, ``--delegate-options JSON``):
    whether each can run here (:func:`device_agent.accelerators.preflight`)."""
    import shutil

    from .clocks import clock_state
    from .power import SensorLost, SensorUnavailable, open_power_reader
    from .runtime import RuntimeNotFound, find_runtime
    from .thermal import thermal_state

    facts: BoardHealth = {"board": board_facts(), "thermal": thermal_state(),
                          "clocks": clock_state(),
                          "cwd": os.getcwd(), "free_bytes": shutil.disk_usage(".").free}
    runtime = None
    try:
        runtime = find_runtime(runtime_preference)
        facts["runtime"] = runtime.describe()
        facts["runtime_choice"] = runtime.choice
    except RuntimeNotFound as exc:
        facts["runtime_error"] = str(exc)
    if "--accelerator" in options or "--api" in options:
        from .accelerators import preflight

        facts["accelerators"] = preflight(
            runtime, [a for a in options.get("--accelerator", "cpu").split(",") if a],
            options.get("--api", "interpreter"), options.get("--delegate", ""),
            json.loads(options.get("--delegate-options", "{}")))
    if runtime is not None:
        from .load_check import load_checks

        facts["model_loads"] = load_checks(
            runtime, [a for a in options.get("--accelerator", "cpu").split(",") if a],
            options.get("--api", "interpreter"), options.get("--delegate", ""),
            json.loads(options.get("--delegate-options", "{}")))
    try:
        reader = open_power_reader(sensor)
        facts["power_sensor"] = reader.describe() if reader else None
        if reader:
            # Read once, as measuring will: a sensor that opens but cannot be read would
            # otherwise be found only after compression and upload, losing the variant.
            try:
                facts["power_watts"] = reader.read_watts()
            finally:
                reader.close()
    except (SensorUnavailable, SensorLost, OSError) as exc:
        facts["power_error"] = f"{sensor}: {exc}"
    facts["time"] = time.time()
    json.dump(facts, sys.stdout)
    sys.stdout.write("\n")
    return 0


class _Stopped(BaseException):
    """A stop signal arrived: unwind, killing what the job started."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _LeaseLost(BaseException):
    """The board's lease names another job's token (or cannot be read): stop measuring."""


class _Fence:
    """The lease token this job runs under; :meth:`holds` reads the lease file each time."""

    def __init__(self, path: Path, token: str) -> None:
        self.path, self.token = path, token
        self.lost = False
        self._stop = threading.Event()

    def holds(self) -> bool:
        """True while the lease file's fourth line is our token; unreadable is not ours."""
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return False
        return len(lines) > 3 and lines[3] == self.token

    def check(self) -> None:
        if not self.holds():
            self.lost = True
            raise _LeaseLost()

    def watch(self) -> None:
        """From now on, a lost lease stops the main thread (as SIGTERM does) within
        ``FENCE_SECONDS``, also while a child is measuring."""
        main = threading.main_thread().ident

        def poll() -> None:
            while not self._stop.wait(FENCE_SECONDS):
                if not self.holds():
                    self.lost = True
                    if main is not None:
                        signal.pthread_kill(main, signal.SIGTERM)
                    return

        threading.Thread(target=poll, name="lease-fence", daemon=True).start()

    def close(self) -> None:
        self._stop.set()


def _lease_lost(fence: _Fence) -> int:
    print(f"agent: stopped: the board's lease ({fence.path}) is no longer this job's; the "
          "running variant and everything it started were killed", file=sys.stderr)
    return LEASE_LOST_EXIT


def _raise_stopped(signum: int, _frame: FrameType | None) -> None:
    for number in STOP_SIGNALS:  # a second signal must not interrupt the clean-up
        signal.signal(number, signal.SIG_IGN)
    raise _Stopped(signum)


def _run(job_path: Path, pid_file: str | None, fence: _Fence | None = None) -> int:
    started = time.monotonic()
    previous = {number: signal.signal(number, _raise_stopped) for number in STOP_SIGNALS}
    heartbeat = Heartbeat(heartbeat_file(str(job_path)))
    try:
        if pid_file:
            _write_pid_file(Path(pid_file))
        if fence:
            fence.check()
        try:
            job = load_job(job_path)
        except (OSError, ValueError) as exc:
            print(f"agent: bad job {job_path}: {exc}", file=sys.stderr)
            return 2
        # Created before it writes anything: an interrupt part-way still restores.
        change = GovernorChange(protocol.job_settings(job).set_governor)
        try:
            if change.asked:
                change.apply()
            with heartbeat:  # beats while the job runs; the host watches it
                result = _run_job(job_path, job, started, fence, change.condition)
        finally:
            _restore(change)
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
        return 0
    except _LeaseLost:
        return _lease_lost(fence) if fence else LEASE_LOST_EXIT  # only a fence raises it
    except _Stopped as stopped:
        if fence and fence.lost:
            return _lease_lost(fence)
        print(f"agent: stopped by {_signal_name(stopped.signum)}; the running variant "
              "and everything it started were killed", file=sys.stderr)
        return 128 + stopped.signum
    finally:
        if fence:
            fence.close()
        if pid_file:
            _remove(Path(pid_file))
        for number, handler in previous.items():
            signal.signal(number, handler)


def _restore(change: GovernorChange) -> None:
    """Put the governors back; a stop signal waits until they are (it must not leave a
    board on the job's governor)."""
    if not change.previous:
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        change.restore()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _run_job(job_path: Path, job: Job, started: float,
             fence: _Fence | None = None, condition: str = "") -> Answer:
    """Every variant in the zygote's children, within the job's deadline and its lease;
    ``condition`` (the governor could not be set) is named in each measured verdict."""
    settings = protocol.job_settings(job)
    budget = protocol.job_budget_seconds(job)
    deadline = started + budget
    timeout = float(settings.variant_timeout_seconds)
    _preload(settings.runtime, [variant["file"] for variant in job["variants"]])
    # Forked before anything else grows this process: every child starts from this image.
    zygote = Zygote(lambda name: measure(job_path, name))
    # Checked before each child loads its file, and polled while it measures. The poller
    # starts after the fork: the zygote is forked from a process without threads.
    check = fence.check if fence else (lambda: None)
    if fence:
        fence.watch()
    if job.get("pairs"):
        try:
            return {"schema_version": protocol.SCHEMA_VERSION, "job_id": job["job_id"],
                    "board": board_facts(), "variants": [],
                    "pairs": _run_pairs(zygote, job, settings, deadline, budget, check)}
        finally:
            zygote.close()
    try:
        variants: list[VariantAnswer] = []
        for index, variant in enumerate(job["variants"]):
            late = f"not started: the job's deadline ({budget:g} s) had passed"
            if time.monotonic() >= deadline:
                variants.append(cast(VariantAnswer, _failed(variant["name"], late)))
                continue
            cooldown = _cool_down(settings, first=index == 0, deadline=deadline)
            left = deadline - time.monotonic()
            if left <= 0:
                variants.append(cast(VariantAnswer, _failed(variant["name"], late)))
                continue
            check()
            measured = _measure_in_child(zygote, variant["name"], timeout, left, budget)
            earlier: list[dict[str, object]] = []
            while _unsteady_only(measured) and len(earlier) + 1 < int(settings.attempts) \
                    and deadline - time.monotonic() > timeout:
                earlier.append(_attempt_summary(measured))
                _cool_down(settings, first=False, deadline=deadline)
                check()
                measured = _measure_in_child(zygote, variant["name"], timeout,
                                             deadline - time.monotonic(), budget)
            if earlier:
                measured["earlier_attempts"] = earlier
            if cooldown:
                measured["cooldown"] = cooldown
            verdict = measured.get("verdict")
            if condition and isinstance(verdict, dict):
                verdict["conditions"] = [*verdict.get("conditions", []), condition]
            # The child's own JSON, relayed: the host checks it (protocol.validate_result).
            variants.append(cast(VariantAnswer, measured))
    finally:
        zygote.close()
    return {
        "schema_version": protocol.SCHEMA_VERSION,
        "job_id": job["job_id"],
        "board": board_facts(),
        "variants": variants,
    }


def _run_pairs(zygote: Zygote, job: Job, settings: JobSettings, deadline: float,
               budget: float, check: Callable[[], None]) -> list[PairAnswer]:
    """Each pair in a child of its own: a crash of one file fails that pair only."""
    timeout = float(settings.variant_timeout_seconds)
    pairs: list[PairAnswer] = []
    for index, pair in enumerate(job["pairs"]):
        if time.monotonic() >= deadline:
            pairs.append(cast(PairAnswer, _failed(
                pair["name"], f"not started: the job's deadline ({budget:g} s) had passed")))
            continue
        _cool_down(settings, first=index == 0, deadline=deadline)
        left = deadline - time.monotonic()
        check()
        pairs.append(cast(PairAnswer, _measure_in_child(zygote, pair["name"], timeout, left,
                                                        budget)))
    return pairs


def _unsteady_only(measured: Mapping[str, object]) -> bool:
    """True when a measurement is INVALID for the spread of its runs and nothing else."""
    verdict = measured.get("verdict")
    return measured.get("status") == "ok" and isinstance(verdict, dict) \
        and bool(verdict.get("unsteady_only"))


def _attempt_summary(measured: Mapping[str, object]) -> dict[str, object]:
    """What the result keeps of an attempt measured again: its verdict and latency figures."""
    return {"verdict": measured["verdict"], "latency_ms": measured["latency_ms"],
            "runs": measured["runs"], "wall_seconds": measured.get("wall_seconds")}


def _write_pid_file(path: Path) -> None:
    """Write this pid so that a reader sees the whole number or no file, never half."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(f"{os.getpid()}\n", encoding="ascii")
    os.replace(partial, path)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _preload(preference: str, files: list[str]) -> None:
    """Import numpy, the runtimes ``files`` need and the measuring code once; forked children
    inherit them."""
    from . import measure  # noqa: F401 - imported for the children
    from .runtime import RuntimeNotFound, runtime_for

    # The runtime depends on the file's suffix alone: one file of each suffix loads each.
    for name in {Path(name).suffix: name for name in files}.values():
        try:
            runtime_for(preference, name)
        except RuntimeNotFound:
            pass  # each child reports it as its variant's failure, with the runtime's message


def _cool_down(settings: JobSettings, *, first: bool, deadline: float) -> Cooldown:
    """Pause before a variant (not the first) and wait for the board to cool if asked,
    never past the job's deadline."""
    from .thermal import parse_zones, wait_until_cool

    done: Cooldown = {}
    if not first and settings.cooldown_seconds > 0:
        pause = max(0.0, min(float(settings.cooldown_seconds), deadline - time.monotonic()))
        time.sleep(pause)
        done["paused_s"] = pause
    if settings.cooldown_to_c > 0:
        limit = min(float(settings.cooldown_max_seconds), deadline - time.monotonic())
        done.update(wait_until_cool(float(settings.cooldown_to_c),
                                    max_seconds=max(0.0, limit),
                                    zones=parse_zones(settings.thermal_zones)))
    return done


def _measure_in_child(zygote: Zygote, name: str, timeout: float, left: float,
                      budget: float) -> dict[str, object]:
    """One variant (or pair) in a child of the zygote, killed after ``timeout`` or at the
    deadline: the child's answer with its name, or why there is none."""
    try:
        child = zygote.run(name, min(timeout, left))
    except OSError as exc:
        return _failed(name, f"could not start its measuring process: {exc}")
    runtime = _announced_runtime(child.stderr)
    if child.timed_out:
        if left < timeout:
            return _failed(name, f"killed at the job's deadline ({budget:g} s){_in(runtime)}",
                           runtime)
        return _failed(name, f"timed out after {timeout:g} s{_in(runtime)}", runtime)
    if child.returncode < 0:
        # A crash inside the runtime (e.g. SIGSEGV on a malformed model) or an OOM kill.
        return _failed(name, f"killed by signal {_signal_name(-child.returncode)}"
                             f"{_in(runtime)}", runtime)
    if child.returncode != 0:
        return _failed(name, _last_line(child.stderr) or f"exit status {child.returncode}",
                       runtime)
    try:
        figures = json.loads(child.stdout.decode("utf-8").strip().splitlines()[-1])
    except (ValueError, IndexError):
        return _failed(name, "measurement printed no result: " + _last_line(child.stderr),
                       runtime)
    return {"name": name, **figures}


def _failed(name: str, error: str, runtime: dict[str, str] | None = None
            ) -> dict[str, object]:
    failed: dict[str, object] = {"name": name, "status": "failed", "error": error}
    if runtime is not None:
        failed["runtime"] = runtime
    return failed


def _announced_runtime(stderr: bytes) -> dict[str, str] | None:
    """The runtime the child said it loaded (see RUNTIME_MARK), or None if it died before."""
    for line in stderr.decode("utf-8", "replace").splitlines():
        if line.startswith(RUNTIME_MARK):
            try:
                described = json.loads(line[len(RUNTIME_MARK):])
            except ValueError:
                return None
            return described if isinstance(described, dict) else None
    return None


def _in(runtime: dict[str, str] | None) -> str:
    return f" in {runtime.get('name')} {runtime.get('version')}" if runtime else ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time or platform-specific signal has no name
        return str(number)


def _last_line(raw: bytes) -> str:
    lines = raw.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else ""


if __name__ == "__main__":
    sys.exit(main())
