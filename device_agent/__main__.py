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
``run`` forks its children, see :mod:`device_agent.proc`).

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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import protocol
from .board import board_facts
from .proc import Heartbeat, Zygote, heartbeat_file

if TYPE_CHECKING:  # at run time _measure imports it where it is used
    from .runtime import Runtime

USAGE = ("usage: agent run JOB.json [--pid-file PATH] [--lease-file PATH --lease-token TOKEN]"
         " | agent measure JOB.json VARIANT"
         " | agent facts [SENSOR] [--runtime RUNTIME] [--accelerator LIST] [--api API]"
         " [--delegate PATH] [--delegate-options JSON]")
#: The child's first stderr line names its runtime, so a crash can still say which one died.
RUNTIME_MARK = "edge-agent runtime: "
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
        return _measure(Path(args[1]), args[2])
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

    from .power import SensorLost, SensorUnavailable, open_power_reader
    from .runtime import RuntimeNotFound, find_runtime
    from .thermal import thermal_state

    facts: dict[str, Any] = {"board": board_facts(), "thermal": thermal_state(),
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


def _load_job(job_path: Path) -> dict[str, Any]:
    with open(job_path, encoding="utf-8") as handle:
        return protocol.validate_job(json.load(handle))


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


def _raise_stopped(signum: int, _frame: Any) -> None:
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
            job = _load_job(job_path)
        except (OSError, ValueError) as exc:
            print(f"agent: bad job {job_path}: {exc}", file=sys.stderr)
            return 2
        with heartbeat:  # beats while the job runs; the host watches it
            result = _run_job(job_path, job, started, fence)
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


def _run_job(job_path: Path, job: dict[str, Any], started: float,
             fence: _Fence | None = None) -> dict[str, Any]:
    """Every variant in the zygote's children, within the job's deadline and its lease."""
    settings = protocol.job_settings(job)
    budget = protocol.job_budget_seconds(job)
    deadline = started + budget
    timeout = float(settings["variant_timeout_seconds"])
    _preload(settings["runtime"])
    # Forked before anything else grows this process: every child starts from this image.
    zygote = Zygote(lambda name: _measure(job_path, name))
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
        variants = []
        for index, variant in enumerate(job["variants"]):
            late = f"not started: the job's deadline ({budget:g} s) had passed"
            if time.monotonic() >= deadline:
                variants.append(_failed(variant["name"], late))
                continue
            cooldown = _cool_down(settings, first=index == 0, deadline=deadline)
            left = deadline - time.monotonic()
            if left <= 0:
                variants.append(_failed(variant["name"], late))
                continue
            check()
            measured = _measure_in_child(zygote, variant["name"], timeout, left, budget)
            earlier: list[dict[str, Any]] = []
            while _unsteady_only(measured) and len(earlier) + 1 < int(settings["attempts"]) \
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
            variants.append(measured)
    finally:
        zygote.close()
    return {
        "schema_version": protocol.SCHEMA_VERSION,
        "job_id": job["job_id"],
        "board": board_facts(),
        "variants": variants,
    }


def _run_pairs(zygote: Zygote, job: dict[str, Any], settings: dict[str, Any], deadline: float,
               budget: float, check: Callable[[], None]) -> list[dict[str, Any]]:
    """Each pair in a child of its own: a crash of one file fails that pair only."""
    timeout = float(settings["variant_timeout_seconds"])
    pairs = []
    for index, pair in enumerate(job["pairs"]):
        if time.monotonic() >= deadline:
            pairs.append(_failed(pair["name"], f"not started: the job's deadline ({budget:g} s) "
                                               "had passed"))
            continue
        _cool_down(settings, first=index == 0, deadline=deadline)
        left = deadline - time.monotonic()
        check()
        pairs.append(_measure_in_child(zygote, pair["name"], timeout, left, budget))
    return pairs


def _unsteady_only(measured: dict[str, Any]) -> bool:
    """True when a measurement is INVALID for the spread of its runs and nothing else."""
    verdict = measured.get("verdict") or {}
    return measured.get("status") == "ok" and bool(verdict.get("unsteady_only"))


def _attempt_summary(measured: dict[str, Any]) -> dict[str, Any]:
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


def _preload(preference: str) -> None:
    """Import numpy, the runtime and the measuring code once; forked children inherit them."""
    from . import measure  # noqa: F401 - imported for the children
    from .runtime import RuntimeNotFound, find_runtime

    try:
        find_runtime(preference)
    except RuntimeNotFound:
        pass  # each child reports it as its variant's failure, with the runtime's message


def _cool_down(settings: dict[str, Any], *, first: bool, deadline: float) -> dict[str, Any]:
    """Pause before a variant (not the first) and wait for the board to cool if asked,
    never past the job's deadline."""
    from .thermal import parse_zones, wait_until_cool

    done: dict[str, Any] = {}
    if not first and settings["cooldown_seconds"] > 0:
        pause = max(0.0, min(float(settings["cooldown_seconds"]), deadline - time.monotonic()))
        time.sleep(pause)
        done["paused_s"] = pause
    if settings["cooldown_to_c"] > 0:
        limit = min(float(settings["cooldown_max_seconds"]), deadline - time.monotonic())
        done.update(wait_until_cool(float(settings["cooldown_to_c"]),
                                    max_seconds=max(0.0, limit),
                                    zones=parse_zones(settings["thermal_zones"])))
    return done


def _measure_in_child(zygote: Zygote, name: str, timeout: float, left: float,
                      budget: float) -> dict[str, Any]:
    """One variant in a child of the zygote, killed after ``timeout`` or at the deadline."""
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


def _measure(job_path: Path, name: str) -> int:
    from .accelerators import AcceleratorError
    from .measure import measure_variant
    from .outputs import load_reference
    from .power import SensorUnavailable, open_power_reader
    from .thermal import parse_zones, thermal_state

    job = _load_job(job_path)
    pair = next((p for p in job.get("pairs") or () if p["name"] == name), None)
    if pair is not None:
        return _measure_pair(job_path, job, pair)
    variant = next(v for v in job["variants"] if v["name"] == name)
    settings = protocol.job_settings(job)
    runtime = _announced_runtime_of(settings)
    if runtime is None:
        return 1
    model_path = _runnable_file(job_path, variant, runtime)
    if model_path is None:
        return 1
    if "threads" in variant:
        settings["threads"] = variant["threads"]
    if "accelerator" in variant:
        settings["accelerator"] = variant["accelerator"]
    try:
        reader = open_power_reader(settings["power_sensor"], rail=settings["power_rail"],
                                   command=settings["power_command"])
    except SensorUnavailable as exc:
        print(f"power sensor {settings['power_sensor']!r} not available: {exc}",
              file=sys.stderr)
        return 1
    reference = None
    if "reference" in variant:
        try:
            reference = load_reference(job_path.parent / variant["reference"])
        except (OSError, ValueError, KeyError) as exc:
            print(f"reference {variant['reference']} is unreadable: {exc}", file=sys.stderr)
            return 1
    zones = parse_zones(settings["thermal_zones"])
    try:
        figures = measure_variant(runtime, model_path, settings, power_reader=reader,
                                  reference=reference,
                                  thermal=lambda: thermal_state(zones=zones))
    except AcceleratorError as exc:  # already one line naming what is missing
        api = "compiled" if settings["accelerator"].startswith("gpu") else settings["api"]
        print(f"accelerator {settings['accelerator']} (api {api}): {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the runtime's own message is the useful part
        print(f"{runtime.name} {runtime.version} could not run {variant['file']}: "
              f"{type(exc).__name__}: {_first_line(str(exc))}", file=sys.stderr)
        return 1
    figures["runtime_choice"] = runtime.choice
    print(json.dumps(figures))
    return 0


def _measure_pair(job_path: Path, job: dict[str, Any], pair: dict[str, Any]) -> int:
    """A pair's baseline, control and candidate in this child (see device_agent.paired)."""
    from .measure import _measuring_inputs
    from .outputs import load_reference
    from .paired import PairedSettings, measure_pair, open_models

    files = {v["name"]: v for v in job["variants"]}
    settings = protocol.job_settings(job)
    runtime = _announced_runtime_of(settings)
    if runtime is None:
        return 1
    paths = {}
    for side, variant in (("baseline", files[pair["baseline"]]),
                          ("candidate", files[pair["candidate"]])):
        path = _runnable_file(job_path, variant, runtime)
        if path is None:
            return 1
        paths[side] = path
    paths["control"] = paths["baseline"]
    candidate = files[pair["candidate"]]
    for key in ("threads", "accelerator"):  # one sweep cell: both sides measured in it
        if key in candidate:
            settings[key] = candidate[key]
    reference = None
    if "reference" in candidate:  # both sides are fed the candidate's real input
        try:
            reference = load_reference(job_path.parent / candidate["reference"])
        except (OSError, ValueError, KeyError) as exc:
            print(f"reference {candidate['reference']} is unreadable: {exc}", file=sys.stderr)
            return 1
    paired = PairedSettings.from_dict(job.get("paired"))
    try:
        models = open_models(runtime, paths, settings,
                             lambda interpreter: _measuring_inputs(interpreter, reference)[0])
        figures = measure_pair(models, paired)
        energy = _pair_energy(models, settings, paired)
    except Exception as exc:  # the runtime's own message is the useful part
        print(f"{runtime.name} {runtime.version} could not run the pair {pair['name']}: "
              f"{type(exc).__name__}: {_first_line(str(exc))}", file=sys.stderr)
        return 1
    if energy is not None:
        figures["energy"] = energy
    figures.update(status="ok", runtime=runtime.describe(), threads=int(settings["threads"]),
                   accelerator=settings["accelerator"])
    print(json.dumps(figures))
    return 0


def _announced_runtime_of(settings: dict[str, Any]) -> Runtime | None:
    """The runtime the settings choose, named on stderr first (RUNTIME_MARK: a crash can
    still say which one died); None with the reason on stderr when there is none."""
    from .runtime import RuntimeNotFound, find_runtime

    try:
        runtime = find_runtime(settings["runtime"])
    except RuntimeNotFound as exc:
        print(str(exc), file=sys.stderr)
        return None
    print(RUNTIME_MARK + json.dumps(runtime.describe()), file=sys.stderr, flush=True)
    return runtime


def _runnable_file(job_path: Path, variant: dict[str, Any], runtime: Runtime) -> Path | None:
    """The variant's file beside the job, or None (the reason on stderr) when it must not
    run: not byte for byte the one the host built, or a file this runtime cannot run."""
    path = job_path.parent / variant["file"]
    if protocol.sha256_file(path) != variant["sha256"]:
        print(f"{variant['file']} does not match its sha256 {variant['sha256']}; not run",
              file=sys.stderr)
        return None
    refusal = _unsupported(runtime, path)
    if refusal:
        print(f"{runtime.name} {runtime.version} cannot run {variant['file']}: {refusal}",
              file=sys.stderr)
        return None
    return path


def _pair_energy(models: dict[str, Any], settings: dict[str, Any], paired: Any
                 ) -> dict[str, Any] | None:
    """The pair's energy pass (device_agent.paired.measure_energy), after its latency rounds,
    when the job's power sensor opens; None without one.  The sensor is opened only now
    (tegrastats, a process of its own, must not run beside the latency rounds); a sensor
    that cannot be opened costs the energy figure, never the latency verdict."""
    from .paired import measure_energy
    from .power import PowerSampler, SensorUnavailable, open_power_reader

    sensor = settings["power_sensor"]
    try:
        reader = open_power_reader(sensor, rail=settings["power_rail"],
                                   command=settings["power_command"])
    except SensorUnavailable as exc:
        return {"sensor": {"kind": sensor, "misses": ""},
                "error": f"power sensor {sensor!r} not available: {exc}"}
    if reader is None:
        return None
    rate = float(settings["power_rate_hz"])
    energy = measure_energy(models, PowerSampler(reader, rate_hz=rate), paired, rate_hz=rate)
    energy["sensor"] = reader.describe()
    return energy


def _unsupported(runtime: Runtime, model_path: Path) -> str:
    """Why ``runtime`` must not be given this file at all ("" if it may).

    tflite-runtime has no int4 kernels, and does not always say so: on an int4 file it
    refused a DEQUANTIZE node, crashed with SIGSEGV, or ran and computed garbage, from one
    run to the next.  The file's own tensor types decide before anything runs.
    """
    from .tflite_file import int4_tensors

    if runtime.name != "tflite-runtime":
        return ""
    count = int4_tensors(model_path.read_bytes())
    return (f"the file holds {count} int4 tensors and tflite-runtime has no int4 kernels "
            "(it crashes or computes garbage on them); int4 weights need ai-edge-litert "
            "(the target's runtime setting)") if count else ""


def _failed(name: str, error: str, runtime: dict[str, str] | None = None) -> dict[str, Any]:
    failed: dict[str, Any] = {"name": name, "status": "failed", "error": error}
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


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def _last_line(raw: bytes) -> str:
    lines = raw.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else ""


if __name__ == "__main__":
    sys.exit(main())
