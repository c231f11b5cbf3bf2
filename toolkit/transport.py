"""Stage 4: bring the agent and the artifacts to the board, run the job, return its answer.

Every transport has the same interface, :meth:`Transport.run_job`; the local
transport treats this machine as the board (a fresh work folder, the agent as
a zipapp in a subprocess), so it exercises the same job protocol, agent
package and validation as a remote board does.

Example::

    raw = open_transport(target).run_job(job, {"<sha>.tflite": path})
"""

from __future__ import annotations

import json
import logging
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from .agent_package import build_agent_package
from .bootstrap import probe
from .errors import AgentError, InfrastructureError, TargetError
from .lock import board_lock
from .ssh import Connection
from .targets import Target, check_name
from .transfer import prune_cache, upload_all

log = logging.getLogger(__name__)

#: Time for the agent to start and report, on top of every variant's own limit.
AGENT_OVERHEAD_SECONDS = 60.0


class Transport(Protocol):
    def run_job(self, job: dict[str, Any], files: dict[str, Path]) -> bytes:
        """Place ``files`` beside the job on the board, run the agent, return its stdout."""


class LocalTransport:
    """This machine as the board."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def run_job(self, job: dict[str, Any], files: dict[str, Path]) -> bytes:
        agent = build_agent_package()
        timeout = _job_timeout(job)
        with tempfile.TemporaryDirectory(prefix="edge-local-board-") as work:
            work_dir = Path(work)
            (work_dir / agent.name).write_bytes(agent.data)
            for name, path in files.items():
                shutil.copyfile(path, work_dir / name)
            job_path = work_dir / "job.json"
            job_path.write_text(json.dumps(job), encoding="utf-8")
            try:
                completed = subprocess.run(
                    [sys.executable, str(work_dir / agent.name), "run", str(job_path)],
                    capture_output=True, timeout=timeout, cwd=work_dir, check=False)
            except subprocess.TimeoutExpired:
                raise AgentError(f"agent on {self.target.name} did not finish within "
                                 f"{timeout:g} s", target=self.target.name) from None
        if completed.returncode != 0:
            lines = completed.stderr.decode("utf-8", "replace").strip().splitlines()
            reason = lines[-1] if lines else f"exit status {completed.returncode}"
            raise AgentError(f"agent on {self.target.name} failed: {reason}",
                             target=self.target.name)
        return completed.stdout


def _job_timeout(job: dict[str, Any]) -> float:
    return AGENT_OVERHEAD_SECONDS + len(job["variants"]) * float(
        job["settings"]["variant_timeout_seconds"])


class SshTransport:
    """A board reached over SSH: the agent runs through SSH exec, no port is opened.

    The agent zipapp goes to the work folder and the artifacts to ``cache/`` in
    it, both content-addressed (sent only when missing); the job file sits
    beside the artifacts because the agent finds them next to it. The board's
    lock is held from the first upload to the end of the run.
    Infrastructure failures are retried ``target.retries`` times; a failing
    agent is a job error and is not.
    """

    def __init__(self, target: Target) -> None:
        self.target = target

    def run_job(self, job: dict[str, Any], files: dict[str, Path]) -> bytes:
        # Names first: a hostile name is refused before anything reaches the board.
        for name in files:
            check_name(name, "artifact name")
        check_name(job["job_id"], "job id")
        for attempt in range(self.target.retries + 1):
            try:
                with Connection(self.target) as board:
                    return self._run_once(board, job, files)
            except InfrastructureError as exc:
                if attempt == self.target.retries:
                    raise
                log.warning("%s (attempt %d of %d); retrying", exc, attempt + 1,
                            self.target.retries + 1)
                # Exponential backoff with jitter: hosts retrying one board spread out.
                time.sleep(min(2.0 ** attempt, 10.0) * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable: the loop returns or raises")

    def _run_once(self, board: Connection, job: dict[str, Any],
                  files: dict[str, Path]) -> bytes:
        work = self.target.work_dir
        # A short lease, renewed while the job runs: a crashed host frees the board soon.
        with board_lock(board, work):
            return self._run_locked(board, job, files)

    def _run_locked(self, board: Connection, job: dict[str, Any],
                    files: dict[str, Path]) -> bytes:
        work = self.target.work_dir
        cache = f"{work}/cache"
        agent = build_agent_package()
        job_name = f"job-{job['job_id']}.json"
        upload_all(board, [(work, agent.name, agent.data),
                           *((cache, name, path) for name, path in files.items()),
                           (cache, job_name, json.dumps(job).encode())])
        prune_cache(board, cache, [*files, job_name], self.target.cache_max_mb * 1024 * 1024)
        facts = probe(board)
        facts.require()
        python = facts.python_in(work)
        job_file = shlex.quote(f"cache/{job_name}")
        # The job file goes in the same command: no extra round trip, and gone on every exit.
        command = (f"cd {shlex.quote(work)} && {{ {shlex.quote(python)} "
                   f"{shlex.quote(agent.name)} run {job_file}; status=$?; rm -f -- {job_file}; "
                   "exit $status; }")
        result = board.run(command, timeout=_job_timeout(job))
        if not result.ok:
            lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
            reason = lines[-1] if lines else f"exit status {result.exit_status}"
            raise AgentError(f"agent on {self.target.name} failed: {reason}",
                             target=self.target.name)
        return result.stdout


def open_transport(target: Target) -> Transport:
    if target.transport == "local":
        return LocalTransport(target)
    if target.transport == "ssh":
        return SshTransport(target)
    raise TargetError(f"target {target.name}: no transport {target.transport!r}",
                      target=target.name)
