"""One board interface for this machine and for boards reached over SSH.

:class:`LocalBoard` (this machine: ``sh -c`` in subprocesses, files by hard link or copy) and
:class:`SshBoard` (a :class:`~toolkit.boards.ssh.Connection`) have the same methods, so
the lease (:mod:`toolkit.boards.lease`), the verified uploads (:mod:`toolkit.boards.transfer`),
the Python probe (:mod:`toolkit.boards.bootstrap`), the job runner (:mod:`toolkit.run.runner`)
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
        board.identity()                      # 'b-3f0c...' (this machine's id, hashed)

Which board a lease belongs to (:meth:`SshBoard.identity`, :meth:`LocalBoard.identity`)
is read *from the board*, once per session, never from the SSH connection: the
board's ``/etc/machine-id`` (else ``/var/lib/dbus/machine-id``), else its hostname
with every SSH host public key in ``/etc/ssh``, sorted.  So the key type a
known_hosts file made SSH negotiate (rsa first, as ``ssh-keyscan`` writes it, or
ed25519) and the login used do not matter: one physical board, one name.  The
id is hashed before it leaves the board's lease folder name (``machine-id(5)``
asks that it not be exposed as is).  Two boards that share an id (an SD card
cloned without a fresh machine id) share a lease: one job waits, none overlap.
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
from typing import IO, Protocol, cast

from toolkit.boards.ssh import Connection, Result
from toolkit.boards.targets import Target
from toolkit.errors import InfrastructureError, TargetError
from toolkit.links import place

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
        """A name for the board itself, the same whichever target file or login reaches it."""

    def lease_root(self) -> str:
        """The board's folder of leases (absolute), shared by every login."""

    def close(self) -> None:
        """End the session."""


#: Where leases live on a board unless its environment names another folder in
#: ``$EDGE_LEASE_ROOT`` (for every login alike: sshd's ``SetEnv``; tests and namespace labs
#: give each server its own). /tmp: every login can write there, and a reboot, which ends
#: every job, also clears every lease.
DEFAULT_LEASE_ROOT = "/tmp/edge-leases"
LEASE_ROOT_ENV = "EDGE_LEASE_ROOT"

#: Prints the lease root, then what names the board: its machine id, else its hostname and
#: every host public key sorted (not the one this connection negotiated).
_IDENTITY_SCRIPT = (
    f'printf "%s\\n" "${{{LEASE_ROOT_ENV}:-{DEFAULT_LEASE_ROOT}}}"; '
    "for f in /etc/machine-id /var/lib/dbus/machine-id; do "
    'if [ -r "$f" ] && id=$(cat -- "$f") && [ -n "$id" ]; then '
    'printf "machine-id %s\\n" "$id"; exit 0; fi; done; '
    'printf "host %s\\n" "$(uname -n)"; '
    "for f in /etc/ssh/ssh_host_*_key.pub; do "
    '[ -r "$f" ] && cut -d " " -f 1,2 -- "$f"; done | sort; exit 0')


def read_identity(shell: Shell) -> tuple[str, str]:
    """``(lease root, board name)`` as the board tells them (see the module's docstring)."""
    answer = shell.run(_IDENTITY_SCRIPT)
    root, _, rest = answer.stdout.decode("utf-8", "replace").partition("\n")
    if not answer.ok or not root.startswith("/") or not rest.strip():
        reason = answer.stderr.decode("utf-8", "replace").strip() or "no answer"
        raise InfrastructureError(f"cannot tell which board {shell.where} is (machine id, "
                                  f"lease folder): {reason}", target=shell.target.name)
    name = hashlib.sha256(b"edge board\0" + rest.strip().encode()).hexdigest()[:16]
    return root.rstrip("/") or "/", f"b-{name}"


def local_board_home() -> Path:
    """``$EDGE_LOCAL_BOARD``, else ``~/.cache/edge/local-board``."""
    chosen = os.environ.get(LOCAL_BOARD_ENV)
    return Path(chosen).expanduser() if chosen else Path.home() / ".cache/edge/local-board"


class _IdentityOnce:
    """The board's name and lease root, read from the board (:func:`read_identity`) once
    per session, for :class:`LocalBoard` and :class:`SshBoard` alike."""

    _identity: tuple[str, str] | None

    def identity(self) -> str:
        """``b-`` and 16 hex digits naming the board itself, read from it once per session.

        Not the host key an SSH connection negotiated: a known_hosts listing the board's
        rsa key first gave another name than one with its ed25519 key, and so a second
        lease; this machine gets the name an SSH login to it gets as well.
        """
        return self._read_once()[1]

    def lease_root(self) -> str:
        return self._read_once()[0]

    def _read_once(self) -> tuple[str, str]:
        if self._identity is None:
            # Mixed into the two Shells only: self runs the board's commands.
            self._identity = read_identity(cast("Shell", self))
        return self._identity


class LocalBoard(_IdentityOnce):
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
        self._identity: tuple[str, str] | None = None

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

    def put_file(self, source: Path, remote_path: str) -> int:
        """Place the file ``source`` at ``remote_path``: a hard link where both are on one
        file system (this machine's disk holds the bytes once), else a copy; the bytes.

        Safe for the board's cache (:mod:`toolkit.boards.transfer`): its files are named by
        their sha256 and never written in place there (renamed, touched, hashed, read by
        the agent, removed), nor in the run folder or conversion cache they come from.
        """
        path = self.home / remote_path
        try:
            place(source, path)
            # A link shares the file's mtime, maybe days old: the sweep of stale temporary
            # uploads (an hour) must not take it for one.
            os.utime(path)
            return path.stat().st_size
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


class SshBoard(_IdentityOnce):
    """A board reached over SSH; every command is bounded by ``timeout(1)`` on the board."""

    def __init__(self, target: Target, *, connection: Connection | None = None) -> None:
        self.target = target
        self.connection = connection or Connection(target)
        self._identity: tuple[str, str] | None = None

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


__all__ = ["Board", "DEFAULT_LEASE_ROOT", "LEASE_ROOT_ENV", "LOCAL_BOARD_ENV", "LocalBoard",
           "Shell", "SshBoard", "local_board_home", "open_board", "read_identity"]
