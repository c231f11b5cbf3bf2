"""One board interface for this machine and for boards reached over SSH.

:class:`LocalBoard` (this machine: ``sh -c`` in subprocesses, files by copy) and
:class:`SshBoard` (a :class:`~toolkit.ssh.Connection`) have the same methods, so
the lease (:mod:`toolkit.lock`), the verified uploads (:mod:`toolkit.transfer`),
the Python probe (:mod:`toolkit.bootstrap`), the job runner (:mod:`toolkit.runner`)
and ``edge doctor`` are one piece of code for both: ``--target local`` exercises
exactly what a remote board runs.

Every command runs relative to the board's login folder (an SSH login's home; for
the local board ``$EDGE_LOCAL_BOARD``, else ``~/.cache/edge/local-board``) and
cannot outlive its time limit: the board itself kills the command's whole process
group when it is up (``timeout -s KILL``; the local board kills the session), so a
command cut off on the host does not go on running beside a retry.

Example::

    with open_board(load_target("local")) as board:
        board.run("uname -m").stdout          # b'x86_64\\n'
        board.identity()                      # 'local'
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Protocol

from .errors import InfrastructureError, TargetError
from .ssh import Connection, Result
from .targets import Target

#: The local board's login folder, for tests and for users who want it elsewhere.
LOCAL_BOARD_ENV = "EDGE_LOCAL_BOARD"
#: Exit status of a command the board killed at its time limit (128 + SIGKILL).
_KILLED = 128 + signal.SIGKILL
#: The host waits this much longer than the board's own limit before it gives up on the link.
_LINK_GRACE_SECONDS = 5.0


class Shell(Protocol):
    """What uploads and the Python probe need: commands and files (a bare Connection has it)."""

    target: Target

    @property
    def where(self) -> str:
        """The board as an error message names it."""

    @property
    def is_open(self) -> bool:
        """Whether a session is open (a dead link closes it)."""

    def run(self, command: str, *, timeout: float | None = None) -> Result:
        """Run one shell command in the login folder; its processes die at ``timeout``."""

    def put(self, source: IO[bytes], remote_path: str) -> int:
        """Write ``source`` to ``remote_path``; return the bytes written."""



class Board(Shell, Protocol):
    """What the lease and the job runner need as well: who the board is, and an end."""

    def identity(self) -> str:
        """A name for the board itself, the same whichever target file reaches it."""

    def close(self) -> None:
        """End the session."""


def local_board_home() -> Path:
    """``$EDGE_LOCAL_BOARD``, else ``~/.cache/edge/local-board``."""
    chosen = os.environ.get(LOCAL_BOARD_ENV)
    return Path(chosen).expanduser() if chosen else Path.home() / ".cache/edge/local-board"


class LocalBoard:
    """This machine as a board: commands in ``sh -c`` with the board's login folder as cwd.

    The target's ``python`` is the board's Python; left at its default (``python3``)
    it is the Python running edge, which has numpy and a runtime by construction.
    """

    def __init__(self, target: Target, *, home: Path | None = None) -> None:
        if target.python == _DEFAULT_PYTHON:
            target = dataclasses.replace(target, python=sys.executable)
        self.target = target
        self.home = home or local_board_home()
        self._open = False

    def __enter__(self) -> LocalBoard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def where(self) -> str:
        return f"{self.target.name} (this machine, {self.home})"

    @property
    def is_open(self) -> bool:
        return self._open

    def identity(self) -> str:
        return "local"

    def run(self, command: str, *, timeout: float | None = None) -> Result:
        limit = self.target.command_timeout if timeout is None else timeout
        self.home.mkdir(parents=True, exist_ok=True)
        self._open = True
        # A session of its own: at the time limit the whole group goes, not just the shell.
        process = subprocess.Popen(["sh", "-c", command], cwd=self.home, start_new_session=True,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        try:
            out, err = process.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            process.communicate()
            raise InfrastructureError(f"command on {self.where} did not finish within "
                                      f"{limit:g} s", target=self.target.name) from None
        except BaseException:
            _kill_group(process.pid)
            process.communicate()
            raise
        return Result(command=command, exit_status=process.returncode, stdout=out, stderr=err)

    def put(self, source: IO[bytes], remote_path: str) -> int:
        path = self.home / remote_path
        try:
            with open(path, "wb") as handle:
                shutil.copyfileobj(source, handle)
                return handle.tell()
        except OSError as exc:
            raise InfrastructureError(f"cannot write {path} on {self.where}: {exc.strerror}",
                                      target=self.target.name) from None

    def close(self) -> None:
        self._open = False


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class SshBoard:
    """A board reached over SSH; every command is bounded by ``timeout(1)`` on the board."""

    def __init__(self, target: Target, *, connection: Connection | None = None) -> None:
        self.target = target
        self.connection = connection or Connection(target)

    def __enter__(self) -> SshBoard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def where(self) -> str:
        return self.connection.where

    @property
    def is_open(self) -> bool:
        return self.connection.is_open

    def identity(self) -> str:
        """``ssh-`` and 16 hex digits of the board's host key's sha256.

        The host key is what a board is to SSH: two target files naming one board (by
        address and by alias, with different work folders or runtimes) get the same name,
        and two servers sharing one file system (test labs, namespaces) do not.
        """
        transport = self.connection.client.get_transport()
        if transport is None:
            raise InfrastructureError(f"SSH to {self.where}: the connection is closed",
                                      target=self.target.name)
        key = transport.get_remote_server_key()
        return "ssh-" + hashlib.sha256(key.asbytes()).hexdigest()[:16]

    def run(self, command: str, *, timeout: float | None = None) -> Result:
        limit = self.target.command_timeout if timeout is None else timeout
        seconds = max(1, math.ceil(limit))
        quoted = shlex.quote(command)
        # timeout(1) puts the command in a process group of its own and kills that group at
        # the limit (exit 137); without timeout(1) (a minimal board) only the host limit holds.
        wrapped = (f"if command -v timeout >/dev/null 2>&1; then "
                   f"timeout -s KILL {seconds} sh -c {quoted}; else sh -c {quoted}; fi")
        started = time.monotonic()
        result = self.connection.run(wrapped, timeout=seconds + _LINK_GRACE_SECONDS)
        if result.exit_status == _KILLED and time.monotonic() - started >= seconds - 0.5:
            raise InfrastructureError(f"command on {self.where} did not finish within "
                                      f"{limit:g} s", target=self.target.name)
        return dataclasses.replace(result, command=command)

    def put(self, source: IO[bytes], remote_path: str) -> int:
        return self.connection.put(source, remote_path)

    def close(self) -> None:
        self.connection.close()


_DEFAULT_PYTHON = next(f.default for f in dataclasses.fields(Target) if f.name == "python")


def open_board(target: Target) -> LocalBoard | SshBoard:
    """The board ``target`` describes (nothing is connected until the first command)."""
    if target.transport == "local":
        return LocalBoard(target)
    if target.transport == "ssh":
        return SshBoard(target)
    raise TargetError(f"target {target.name}: no transport {target.transport!r}",
                      target=target.name)


__all__ = ["Board", "LOCAL_BOARD_ENV", "LocalBoard", "Shell", "SshBoard", "local_board_home",
           "open_board"]
