"""One job runner for every board: check, lease, upload, start, deadline, cancel, clean up.

``deploy`` and ``bench`` run each job through :class:`JobRunner`, for the local
board and for SSH boards alike (:mod:`toolkit.boards.board`):

1. **check** (:func:`check_boards`, also run for every target before anything is
   converted): connect, host key, the board's Python >= 3.8 with numpy and the
   runtime; nothing is uploaded before it passes;
2. **lease** the board (:mod:`toolkit.boards.lease`);
3. **upload** the agent, the artifacts and the job, content-addressed and verified;
4. **start** the agent in a session of its own whose id goes to the job's pid file in
   the lease folder, so its whole process group and session can be killed; the agent
   gets the lease's fencing token and stops by itself once the board's lease is no
   longer that token's (nothing is uploaded or started once a renewal found the lease
   taken over: :class:`~toolkit.errors.LeaseLostError`);
5. wait until the agent answers, the **deadline** (:func:`job_budget_seconds`)
   passes, or the job is **cancelled** (Ctrl-C, SIGTERM, SIGHUP: see
   :func:`toolkit.run.cancel.cancel_on_signals`; a bench's other boards:
   :func:`toolkit.run.cancel.cancel_running_jobs`);
6. on any way out, **kill the job's group and session and wait until they are gone,
   before the lease is released**.

Example::

    raw = JobRunner(load_target("local")).run_job(job, {"<sha>.tflite": path})
"""

from __future__ import annotations

import json
import logging
import random
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from device_agent import protocol
from device_agent.proc import HEARTBEAT_SECONDS, heartbeat_file
from device_agent.wire import Job
from toolkit.artifacts.agent_package import build_agent_package
from toolkit.boards.board import Board, open_board
from toolkit.boards.bootstrap import BoardPython, probe
from toolkit.boards.lease import JOB_FUNCTIONS, LEASE_LOST_EXIT, Held, hold_lease
from toolkit.boards.ssh import Result
from toolkit.boards.targets import Target, check_name
from toolkit.boards.transfer import prune_cache, upload_all
from toolkit.errors import (
    AgentError,
    BoardBusyError,
    EdgeError,
    InfrastructureError,
    LeaseLostError,
)
from toolkit.run.cancel import allow_jobs, cancel_on_signals, cancel_requested, cancel_running_jobs

log = logging.getLogger(__name__)

#: Time for the agent to start and report, on top of every variant's own limit.
AGENT_OVERHEAD_SECONDS = 60.0
#: After SIGTERM, how long the agent's group has to end before it is killed.
STOP_GRACE_SECONDS = 2.0
#: How long the host waits without a new heartbeat from the agent before it ends the job
#: as an infrastructure failure: six of the agent's beats
#: (:data:`device_agent.proc.HEARTBEAT_SECONDS`), so a loaded board that misses a few is
#: not given up on, while an agent that died with its output held open (or a frozen
#: board) costs tens of seconds, not the job's budget (1,323 s for two variants).
HEARTBEAT_TIMEOUT_SECONDS = 30.0
#: How often the host reads the heartbeat: one small command on the open connection.
HEARTBEAT_CHECK_SECONDS = 5.0

#: Puts the calling process in a session (and process group) of its own, writes its id to
#: argv[1] and becomes argv[2:]: the job's whole process tree can then be killed as a group.
#: Python rather than setsid(1): the board's Python is checked, setsid -w is not everywhere.
_START_IN_SESSION = ("import os, sys; os.setsid(); "
                     "open(sys.argv[1], 'w').write(str(os.getpid()) + chr(10)); "
                     "os.execv(sys.argv[2], sys.argv[2:])")


def job_budget_seconds(job: Job) -> float:
    """How long the host waits for the whole job: the agent's own deadline
    (``protocol.job_budget_seconds``, cool-down waits included) plus the agent's start-up
    and answer on top, so the agent's deadline is always the first to strike."""
    return AGENT_OVERHEAD_SECONDS + protocol.job_budget_seconds(job)


def check_board(target: Target, threads: Sequence[int] | None = None,
                onnx_accelerators: Sequence[str] | None = None) -> BoardPython:
    """Connect, check the host key and the board's Python; raise what is wrong, upload nothing.

    Warns (one line) when the target's thread count, or any of ``threads``, exceeds the
    board's cores.  ``onnx_accelerators`` (None: no ``.onnx`` is deployed; empty: the
    target's own accelerator): the execution providers the board's onnxruntime must have.
    """
    with open_board(target) as board:
        facts = probe(board)
    facts.require()
    if onnx_accelerators is not None:
        facts.require_providers(list(onnx_accelerators) or [target.accelerator])
    warning = facts.thread_warning(max(threads or [target.threads]))
    if warning:
        log.warning("%s", warning)
    return facts


def check_boards(targets: Sequence[Target], threads: Sequence[int] | None = None,
                 onnx_accelerators: Sequence[str] | None = None
                 ) -> dict[str, BoardPython | EdgeError]:
    """:func:`check_board` on every target at once: the facts, or the error, per target name."""
    def one(target: Target) -> BoardPython | EdgeError:
        try:
            return check_board(target, threads, onnx_accelerators)
        except EdgeError as exc:  # reported per board by the caller
            return exc

    if not targets:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(targets)),
                            thread_name_prefix="check") as pool:
        return dict(zip([t.name for t in targets], pool.map(one, targets), strict=True))


class JobRunner:
    """Runs jobs on one target's board; infrastructure failures are retried with backoff.

    A failing agent is a job error and is not retried; a busy board is the caller's
    to wait for (:class:`~toolkit.errors.BoardBusyError`).
    """

    def __init__(self, target: Target,
                 open_board: Callable[[Target], Board] | None = None) -> None:
        self.target = target
        #: None: this module's ``open_board``, looked up at each attempt (not bound here).
        self._open_board = open_board

    def run_job(self, job: Job, files: dict[str, Path]) -> bytes:
        """Place ``files`` beside the job on the board, run the agent, return its stdout."""
        # Names first: a hostile name is refused before anything reaches the board.
        for name in files:
            check_name(name, "artifact name")
        check_name(job["job_id"], "job id")
        for attempt in range(self.target.retries + 1):
            self._raise_if_cancelled()
            board = (self._open_board or open_board)(self.target)
            try:
                return self._run_once(board, job, files)
            except (BoardBusyError, LeaseLostError):
                raise  # waiting for a held board is the caller's policy (--busy-wait)
            except InfrastructureError as exc:
                if attempt == self.target.retries:
                    raise
                log.warning("%s (attempt %d of %d); retrying", exc, attempt + 1,
                            self.target.retries + 1)
                # Exponential backoff with jitter: hosts retrying one board spread out.
                time.sleep(min(2.0 ** attempt, 10.0) * random.uniform(0.5, 1.0))
            finally:
                board.close()
        raise AssertionError("unreachable: the loop returns or raises")

    def _run_once(self, board: Board, job: Job, files: dict[str, Path]) -> bytes:
        facts = probe(board)
        facts.require()  # before the lease and before any upload
        with hold_lease(board) as held:
            work = self.target.work_dir
            cache = f"{work}/cache"
            agent = build_agent_package()
            held.confirm()  # a host paused since the acquire uploads nothing
            job_name = f"job-{job['job_id']}.json"
            upload_all(board, [(work, agent.name, agent.data),
                               *((cache, name, path) for name, path in files.items()),
                               (cache, job_name, json.dumps(job).encode())])
            prune_cache(board, cache, [*files, job_name], self.target.cache_max_mb * 1024 * 1024)
            job_file = shlex.quote(f"cache/{job_name}")
            pid_file = held.pid_file
            python = shlex.quote(facts.python_in(work))
            # The job file goes in the same command: no extra round trip, and gone on every
            # exit. The token is checked on the board right before the agent starts, and by
            # the agent itself from then on.
            command = (f"pid_file={shlex.quote(pid_file)}; cd {shlex.quote(work)} && "
                       f"{{ {held.still_ours()} || {{ echo 'the lease passed to another job; "
                       f"the agent was not started' >&2; exit {LEASE_LOST_EXIT}; }}; "
                       f'{python} -c {shlex.quote(_START_IN_SESSION)} "$pid_file" '
                       f"{python} {shlex.quote(agent.name)} run {job_file} --lease-file "
                       f"{shlex.quote(held.owner_file)} --lease-token {held.token}; "
                       f"status=$?; rm -f -- {job_file}; "
                       # Anything the agent left in its group goes with it.
                       f'pid=$(cat "$pid_file" 2>/dev/null); {JOB_FUNCTIONS}'
                       'if [ "$pid" -gt 1 ] 2>/dev/null; then signal_job KILL; fi; '
                       'rm -f -- "$pid_file"; '
                       "exit $status; }")
            result = self._wait(board, command, pid_file, job_budget_seconds(job), held,
                                heartbeat=f"{work}/{heartbeat_file(f'cache/{job_name}')}")
            if result.exit_status == LEASE_LOST_EXIT:
                held.lost.set()
                raise held.error()
        if not result.ok:
            lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
            reason = lines[-1] if lines else f"exit status {result.exit_status}"
            raise AgentError(f"agent on {self.target.name} failed: {reason}",
                             target=self.target.name)
        return result.stdout

    def _wait(self, board: Board, command: str, pid_file: str, budget: float,
              held: Held, *, heartbeat: str | None = None) -> Result:
        """Run ``command`` until it ends, the budget is spent, the job is cancelled, the
        lease is lost (another job's token in it), or the agent's ``heartbeat`` file (a
        path on the board) goes unchanged for :data:`HEARTBEAT_TIMEOUT_SECONDS`.

        It runs in a thread of its own so that this one can watch the clock, the
        cancellation and the heartbeat; on any way out but a normal end, the job's group
        is killed here, before the caller releases the lease.
        """
        finished: list[Result] = []
        failed: list[BaseException] = []

        def work() -> None:
            try:
                # The board's own limit is later than ours: our deadline kills the group first.
                finished.append(board.run(command, timeout=budget + 30))
            except BaseException as exc:  # noqa: BLE001  (re-raised by the waiting thread)
                failed.append(exc)

        runner = threading.Thread(target=work, name=f"job-{self.target.name}", daemon=True)
        deadline = time.monotonic() + budget
        pulse = _Pulse(board, heartbeat) if heartbeat else None
        runner.start()
        try:
            while runner.is_alive():
                runner.join(0.1)
                self._raise_if_cancelled()
                held.raise_if_lost()  # another job's lease now: stop ours at once
                if runner.is_alive() and time.monotonic() > deadline:
                    raise AgentError(f"agent on {self.target.name} did not finish within "
                                     f"{budget:g} s", target=self.target.name)
                if pulse is not None and runner.is_alive():
                    silent = pulse.silent_for()
                    if silent > HEARTBEAT_TIMEOUT_SECONDS:
                        raise InfrastructureError(
                            f"agent on {self.target.name} went silent: no heartbeat for "
                            f"{silent:.0f} s (it beats every {HEARTBEAT_SECONDS:g} s); "
                            "the job was stopped", target=self.target.name)
        except BaseException:
            stop_job(board, pid_file)
            runner.join(STOP_GRACE_SECONDS + 5)
            raise
        if failed:
            stop_job(board, pid_file)
            raise failed[0]
        return finished[0]

    def _raise_if_cancelled(self) -> None:
        if cancel_requested():
            raise KeyboardInterrupt(f"job on {self.target.name} cancelled")


class _Pulse:
    """The agent's heartbeat as the host hears it: read every
    :data:`HEARTBEAT_CHECK_SECONDS`, timed on this host's monotonic clock (the board's
    clock may differ or step: only whether the count changed matters)."""

    def __init__(self, board: Board, path: str) -> None:
        self._board, self._command = board, f"cat -- {shlex.quote(path)} 2>/dev/null"
        self._last: bytes | None = None
        self._heard = self._checked = time.monotonic()  # the start counts as heard

    def silent_for(self) -> float:
        """Seconds since the count last changed (reads the board when a check is due)."""
        now = time.monotonic()
        if now - self._checked >= HEARTBEAT_CHECK_SECONDS:
            self._checked = now
            try:
                beat = self._board.run(self._command, timeout=HEARTBEAT_CHECK_SECONDS).stdout
            except InfrastructureError:
                beat = b""  # not heard; the job's own command notices a dead link
            if beat.strip() and beat != self._last:
                self._last, self._heard = beat, now
        return now - self._heard


def stop_job(board: Board, pid_file: str) -> None:
    """SIGTERM the job's process group, SIGKILL what is left after a grace, wait until gone.

    A dead link cannot be helped here: the lease then expires, and the next job's
    acquire kills the group before it starts (:mod:`toolkit.boards.lease`).
    """
    if not board.is_open:
        log.warning("the link to %s is gone; the job there ends when its lease expires and "
                    "the next job takes the board", board.where)
        return
    ticks = int(STOP_GRACE_SECONDS / 0.05)
    # SIGTERM to the agent's group first: the agent then ends its own children as it should.
    script = (f'f={shlex.quote(pid_file)}; [ -f "$f" ] || exit 0; pid=$(cat "$f"); '
              f'[ "$pid" -gt 1 ] 2>/dev/null || exit 0; {JOB_FUNCTIONS}'
              f'kill -TERM "-$pid" 2>/dev/null; wait_job {ticks}; signal_job KILL; '
              'wait_job 100; rm -f -- "$f"')
    try:
        board.run(script, timeout=STOP_GRACE_SECONDS + 10)
    except InfrastructureError as exc:
        log.warning("could not stop the job on %s (%s); the next job's lease will", board.where,
                    exc)


__all__ = ["AGENT_OVERHEAD_SECONDS", "HEARTBEAT_CHECK_SECONDS", "HEARTBEAT_TIMEOUT_SECONDS",
           "JobRunner", "allow_jobs", "cancel_on_signals",
           "cancel_running_jobs", "check_board", "check_boards", "job_budget_seconds",
           "stop_job"]
