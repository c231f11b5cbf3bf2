"""Child processes of the agent: where each variant is measured, and how it is stopped.

Why a *zygote*: a measuring child forked from the agent itself inherits the
agent's memory, and the agent grows with every result it holds, so a variant's
peak resident memory (VmHWM) depended on its position in the job (an MLP: 38.5 MiB
measured first, 47.7 MiB last).  The agent forks one zygote right after the
imports (numpy, the runtime, the measuring code), before anything else happens;
the zygote only ever forks measuring children, so each starts from the same
image and its peak is the model's own.  Forking keeps what a fresh interpreter
would cost (a second or more of imports per variant on a small board) away.

Why process groups: a measuring child may start processes of its own (a
``tegrastats`` power sampler); each child leads its own process group and the
whole group is killed on a timeout, at the job's deadline, when the agent is
told to stop, and after the child ends (nothing it started outlives it).  If the
agent is killed outright, the zygote and then the child are killed by the kernel
(``PR_SET_PDEATHSIG``).

Example::

    zygote = Zygote(lambda name: measure(name))      # forks now
    ended = zygote.run("fp32", timeout=300.0)        # ended.returncode, .stdout, .stderr
    zygote.close()
"""

from __future__ import annotations

import array
import os
import select
import signal
import socket
import sys
import threading
import time
from typing import Callable

#: How long the agent waits for the zygote to answer once the child's group is killed.
_REAP_SECONDS = 10.0
#: How often a running agent rewrites its heartbeat file; the host gives up on a job
#: whose heartbeat has not changed for ``toolkit.run.runner.HEARTBEAT_TIMEOUT_SECONDS``.
HEARTBEAT_SECONDS = 5.0
#: Beside the job file ``cache/job-ID.json``: ``cache/job-ID.json.alive``.
HEARTBEAT_SUFFIX = ".alive"


def heartbeat_file(job_path: str) -> str:
    """Where the agent running ``job_path`` beats (the host reads it there)."""
    return job_path + HEARTBEAT_SUFFIX


class Heartbeat:
    """Rewrites ``path`` with a growing count every ``every`` seconds, from a thread.

    The host reads the file over its own connection while it waits for the answer: a
    count that stops changing means the agent is gone or its board is stuck (an agent
    killed while a process it started holds the output open, a frozen board), and the
    host ends the job long before the job's whole budget.  A thread, so that it beats
    through imports, cool-down waits and a variant child's whole measurement; it proves
    the agent process lives, and the job's deadline still bounds what it does.  Forked
    children (the zygote, measuring children) do not inherit the thread.

    Example::

        with Heartbeat("cache/job-1.json.alive"):
            run_the_job()
    """

    def __init__(self, path: str, every: float = HEARTBEAT_SECONDS) -> None:
        self.path, self.every = path, every
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self.beat()  # at once: the host's first look finds it
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(self.every + 1)
        for path in (self.path, self.path + ".tmp"):
            try:
                os.remove(path)
            except OSError:
                pass

    def beat(self) -> None:
        """One beat: the new count replaces the old whole (a reader never sees half)."""
        self.count += 1
        try:
            with open(self.path + ".tmp", "w") as handle:
                handle.write("{} {}\n".format(self.count, os.getpid()))
            os.replace(self.path + ".tmp", self.path)
        except OSError:
            pass  # a full disk: the host hears nothing and says so; the job goes on

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.beat()


class Ended:
    """How a measuring child ended: exit code (negative: killed by that signal), its output."""

    def __init__(self, returncode: int, stdout: bytes, stderr: bytes, timed_out: bool) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr
        self.timed_out = timed_out


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; else nothing)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return


def kill_group(pgid: int) -> None:
    """SIGKILL every process of group ``pgid``; a group already gone is fine."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def send_fds(channel: socket.socket, data: bytes, fds: list[int]) -> None:
    """Send ``data`` and the file descriptors ``fds`` in one message (``SCM_RIGHTS``).

    What ``socket.send_fds`` does, written out because it came in Python 3.9 and
    JetPack 5 boards have 3.8; ``sendmsg`` with ancillary data is there since 3.3.
    """
    channel.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])


def recv_fds(channel: socket.socket, size: int, most: int) -> tuple[bytes, list[int]]:
    """One message of at most ``size`` bytes and the (at most ``most``) fds sent with it."""
    fds = array.array("i")
    data, ancillary, _flags, _address = channel.recvmsg(
        size, socket.CMSG_LEN(most * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            # A truncated message carries a partial last integer: only whole fds count.
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)


class Zygote:
    """A process forked now, from which every measuring child is forked later.

    ``work(argument)`` runs in each child with standard output and error sent
    to the agent; its return value is the child's exit code.
    """

    def __init__(self, work: Callable[[str], int]) -> None:
        self._work = work
        self._current = 0  # the running child's pid (= its process group), 0: none
        ours, theirs = socket.socketpair()
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the zygote: serve until the agent closes its end, never return
            code = 1
            try:
                ours.close()
                # The agent's stop handlers are not ours: a signal here ends us (and, by
                # PR_SET_PDEATHSIG, the child), quietly.
                for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                    signal.signal(number, signal.SIG_DFL)
                die_with_parent()
                if os.getppid() != parent:  # the agent died before the line above
                    os._exit(1)
                code = self._serve(theirs)
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        theirs.close()
        self.pid = pid
        self._socket = ours
        self._answers = b""

    def run(self, argument: str, timeout: float) -> Ended:
        """Run ``work(argument)`` in a new child; kill its process group after ``timeout`` s."""
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            send_fds(self._socket, argument.encode("utf-8") + b"\n", [out_write, err_write])
        finally:
            os.close(out_write)
            os.close(err_write)
        deadline = time.monotonic() + timeout
        chunks: dict[int, list[bytes]] = {out_read: [], err_read: []}
        open_fds = [out_read, err_read]
        status: int | None = None
        timed_out = False
        control = self._socket.fileno()
        try:
            self._current = int(self._answer("pid", deadline + _REAP_SECONDS))
            while status is None or open_fds:
                if status is None and b"\n" in self._answers:  # came with the pid's line
                    status = int(self._answer("exit", time.monotonic()))
                    continue
                wait = deadline - time.monotonic()
                if wait <= 0 and status is None and not timed_out:
                    kill_group(self._current)
                    timed_out = True
                if timed_out or status is not None:  # the group is dead: its pipes close
                    wait = _REAP_SECONDS
                ready, _, _ = select.select([*open_fds, *([control] if status is None else [])],
                                            [], [], wait)
                if not ready and wait == _REAP_SECONDS:
                    raise OSError("the measuring process group did not end once killed")
                for fd in ready:
                    if fd == control:
                        status = int(self._answer("exit", time.monotonic() + _REAP_SECONDS))
                        continue
                    data = os.read(fd, 65536)
                    if data:
                        chunks[fd].append(data)
                    else:
                        open_fds.remove(fd)
        finally:
            if status is None:  # interrupted (a stop signal) or lost: nothing may outlive us
                self.kill_current()
            self._current = 0
            os.close(out_read)
            os.close(err_read)
        return Ended(status, b"".join(chunks[out_read]), b"".join(chunks[err_read]), timed_out)

    def kill_current(self) -> None:
        """Kill the running child's whole process group, if a child is running."""
        if self._current:
            kill_group(self._current)

    def close(self) -> None:
        """Stop the zygote (and any child it runs); wait for it."""
        self.kill_current()
        self._socket.close()
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass

    def _answer(self, word: str, deadline: float) -> str:
        """The zygote's next line, which must start with ``word``."""
        while b"\n" not in self._answers:
            ready, _, _ = select.select([self._socket], [], [],
                                        max(0.0, deadline - time.monotonic()))
            data = self._socket.recv(4096) if ready else b""
            if not data:
                raise OSError("the zygote stopped answering")
            self._answers += data
        line, _, self._answers = self._answers.partition(b"\n")
        got, _, value = line.decode("ascii").partition(" ")
        if got != word:
            raise OSError(f"the zygote said {line!r}, expected {word!r}")
        return value

    def _serve(self, channel: socket.socket) -> int:
        """The zygote's loop: one request (argument + two fds) -> one child, reported back."""
        while True:
            message, fds = recv_fds(channel, 65536, 2)
            if not message:
                return 0  # the agent closed its end: the job is over
            argument = message.decode("utf-8").rstrip("\n")
            pid = os.fork()
            if pid == 0:
                channel.close()
                self._child(argument, fds)
            try:
                os.setpgid(pid, pid)  # also done in the child: whichever runs first
            except OSError:
                pass  # the child already did it, or already ended
            for fd in fds:
                os.close(fd)
            channel.sendall(f"pid {pid}\n".encode("ascii"))
            # Wait without reaping, kill what the child left in its group while its pid
            # still holds the group id (no reuse possible), then reap.
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            kill_group(pid)
            _, status = os.waitpid(pid, 0)
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            channel.sendall(f"exit {code}\n".encode("ascii"))

    def _child(self, argument: str, fds: list[int]) -> None:
        """A measuring child: own process group, output to the agent's pipes; never returns."""
        code = 1
        try:
            os.setpgid(0, 0)
            die_with_parent()
            os.dup2(fds[0], 1)
            os.dup2(fds[1], 2)
            for fd in fds:
                os.close(fd)
            code = self._work(argument)
        except BaseException:  # whatever happens, the forked child must not return
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
