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
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Protocol

from .agent_package import build_agent_package
from .errors import AgentError, TargetError
from .targets import Target

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
        timeout = AGENT_OVERHEAD_SECONDS + len(job["variants"]) * float(
            job["settings"]["variant_timeout_seconds"])
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


def open_transport(target: Target) -> Transport:
    if target.transport == "local":
        return LocalTransport(target)
    raise TargetError(f"target {target.name}: no transport {target.transport!r}",
                      target=target.name)
