"""Entry point on the board.

``run JOB``: validate the job, measure each variant in its own child process
(so peak memory is per variant and a crash takes down only that variant), and
print one result document on standard output.

``measure JOB NAME``: the child; prints one variant's figures.

``facts [SENSOR]``: what ``edge doctor`` asks of a board: board facts, the runtime,
thermal and throttle state, the power sensor found, free disk here and the clock.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import protocol
from .board import board_facts

USAGE = "usage: agent run JOB.json | agent measure JOB.json VARIANT | agent facts [SENSOR]"
#: The child's first stderr line names its runtime, so a crash can still say which one died.
RUNTIME_MARK = "edge-agent runtime: "
#: Where the ``device_agent`` package is importable from: a zipapp or a source folder.
IMPORT_ROOT = str(Path(__file__).resolve().parent.parent)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "run":
        return _run(Path(args[1]))
    if len(args) == 3 and args[0] == "measure":
        return _measure(Path(args[1]), args[2])
    if 1 <= len(args) <= 2 and args[0] == "facts":
        return _facts(args[1] if len(args) == 2 else "auto")
    print(USAGE, file=sys.stderr)
    return 2


def _facts(sensor: str) -> int:
    """One JSON line of board health facts; a missing part is reported, never fatal."""
    import os
    import shutil

    from .power import SensorUnavailable, open_power_reader
    from .runtime import RuntimeNotFound, find_runtime
    from .thermal import thermal_state

    facts: dict[str, Any] = {"board": board_facts(), "thermal": thermal_state(),
                             "cwd": os.getcwd(), "free_bytes": shutil.disk_usage(".").free}
    try:
        facts["runtime"] = find_runtime().describe()
    except RuntimeNotFound as exc:
        facts["runtime_error"] = str(exc)
    try:
        reader = open_power_reader(sensor)
        facts["power_sensor"] = reader.describe() if reader else None
        if reader:
            reader.close()
    except (SensorUnavailable, OSError) as exc:
        facts["power_error"] = str(exc)
    facts["time"] = time.time()
    json.dump(facts, sys.stdout)
    sys.stdout.write("\n")
    return 0


def _load_job(job_path: Path) -> dict[str, Any]:
    with open(job_path, encoding="utf-8") as handle:
        return protocol.validate_job(json.load(handle))


def _run(job_path: Path) -> int:
    try:
        job = _load_job(job_path)
    except (OSError, ValueError) as exc:
        print(f"agent: bad job {job_path}: {exc}", file=sys.stderr)
        return 2
    settings = {**protocol.OPTIONAL_SETTINGS, **protocol.TEXT_SETTINGS, **job["settings"]}
    timeout = float(settings["variant_timeout_seconds"])
    _preload()
    variants = []
    for index, variant in enumerate(job["variants"]):
        cooldown = _cool_down(settings, first=index == 0)
        measured = _measure_in_child(job_path, variant["name"], timeout)
        if cooldown:
            measured["cooldown"] = cooldown
        variants.append(measured)
    result = {
        "schema_version": protocol.SCHEMA_VERSION,
        "job_id": job["job_id"],
        "board": board_facts(),
        "variants": variants,
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


def _preload() -> None:
    """Import numpy, the runtime and the measuring code once; forked children inherit them."""
    from . import measure  # noqa: F401 - imported for the children
    from .runtime import RuntimeNotFound, find_runtime

    try:
        find_runtime()
    except RuntimeNotFound:
        pass  # each child reports it as its variant's failure, with the runtime's message


def _cool_down(settings: dict[str, Any], *, first: bool) -> dict[str, Any]:
    """Pause before a variant (not the first) and wait for the board to cool if asked."""
    from .thermal import parse_zones, wait_until_cool

    done: dict[str, Any] = {}
    if not first and settings["cooldown_seconds"] > 0:
        time.sleep(float(settings["cooldown_seconds"]))
        done["paused_s"] = float(settings["cooldown_seconds"])
    if settings["cooldown_to_c"] > 0:
        done.update(wait_until_cool(float(settings["cooldown_to_c"]),
                                    max_seconds=float(settings["cooldown_max_seconds"]),
                                    zones=parse_zones(settings["thermal_zones"])))
    return done


def _measure_in_child(job_path: Path, name: str, timeout: float) -> dict[str, Any]:
    child = (_forked if hasattr(os, "fork") else _spawned)(job_path, name, timeout)
    runtime = _announced_runtime(child.stderr)
    if child.timed_out:
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


class _Child:
    """How a measuring child ended: exit code (negative: killed by that signal), its output."""

    def __init__(self, returncode: int, stdout: bytes, stderr: bytes, timed_out: bool) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr
        self.timed_out = timed_out


def _forked(job_path: Path, name: str, timeout: float) -> _Child:
    """Measure in a forked child: the parent's imported numpy and runtime come for free.

    A fresh interpreter per variant would import them again, which costs a second or
    more of CPU on a small board; a fork keeps the isolation (own address space, own
    peak memory, a crash kills only the child) without that cost.
    """
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: measure, then leave without running the parent's cleanup
        code = 1
        try:
            os.close(out_read)
            os.close(err_read)
            os.dup2(out_write, 1)
            os.dup2(err_write, 2)
            code = _measure(job_path, name)
        except BaseException:  # whatever happens, the forked child must not return
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(out_write)
    os.close(err_write)
    chunks: dict[int, list[bytes]] = {out_read: [], err_read: []}
    open_fds = [out_read, err_read]
    deadline = time.monotonic() + timeout
    timed_out = False
    while open_fds:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            os.kill(pid, signal.SIGKILL)
            timed_out = True
            break
        ready, _, _ = select.select(open_fds, [], [], remaining)
        for fd in ready:
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                open_fds.remove(fd)
    for fd in (out_read, err_read):
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return _Child(code, b"".join(chunks[out_read]), b"".join(chunks[err_read]), timed_out)


def _spawned(job_path: Path, name: str, timeout: float) -> _Child:
    """Measure in a fresh interpreter, where there is no fork."""
    command = [sys.executable, "-c",
               "import sys; sys.path.insert(0, sys.argv[1]); "
               "from device_agent.__main__ import main; sys.exit(main(sys.argv[2:]))",
               IMPORT_ROOT, "measure", str(job_path), name]
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        return _Child(-9, b"", exc.stderr or b"", timed_out=True)
    return _Child(done.returncode, done.stdout, done.stderr, timed_out=False)


def _measure(job_path: Path, name: str) -> int:
    from .measure import measure_variant
    from .outputs import load_reference
    from .power import SensorUnavailable, open_power_reader
    from .runtime import RuntimeNotFound, find_runtime
    from .thermal import parse_zones, thermal_state

    job = _load_job(job_path)
    variant = next(v for v in job["variants"] if v["name"] == name)
    try:
        runtime = find_runtime()
    except RuntimeNotFound as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(RUNTIME_MARK + json.dumps(runtime.describe()), file=sys.stderr, flush=True)
    model_path = job_path.parent / variant["file"]
    # A file that is not byte for byte the one the host built must never be measured.
    if protocol.sha256_file(model_path) != variant["sha256"]:
        print(f"{variant['file']} does not match its sha256 {variant['sha256']}; not run",
              file=sys.stderr)
        return 1
    settings = {**protocol.TEXT_SETTINGS, **job["settings"]}
    if "threads" in variant:
        settings["threads"] = variant["threads"]
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
    except Exception as exc:  # the runtime's own message is the useful part
        print(f"{runtime.name} {runtime.version} could not run {variant['file']}: "
              f"{type(exc).__name__}: {_first_line(str(exc))}", file=sys.stderr)
        return 1
    print(json.dumps(figures))
    return 0


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
