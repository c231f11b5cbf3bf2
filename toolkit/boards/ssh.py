"""One SSH connection to one board, layered like fabric: a :class:`Connection`
owns one ``paramiko.SSHClient``, opens lazily, is a context manager, and its
:meth:`~Connection.run` / :meth:`~Connection.put` return results.

Host keys are checked against known_hosts and never added on the fly; the TCP
socket is ours, made with ``TCP_USER_TIMEOUT`` so a dead link breaks a blocked
upload instead of hanging it (plain paramiko waits forever), and the SSH
keepalive makes sure there is traffic to time out on.

The route is the one ``ssh`` would take: through each ``ProxyJump`` host (a
login of its own, host key checked the same way, then a ``direct-tcpip``
channel to the next hop as the socket) or through a ``ProxyCommand``. Only the
first hop's socket is ours, so ``TCP_USER_TIMEOUT`` guards the link to the
first jump host; beyond it, and inside a ProxyCommand, the keepalive on every
hop and the proxy's own settings (``ssh -o ServerAliveInterval=5 -W %h:%p``)
are what notices a dead link.

Example::

    with Connection(load_target("rpi4")) as board:
        print(board.run("uname -m").stdout)      # b'aarch64\\n'
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import logging
import os
import select
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import IO, cast

import paramiko

from device_agent.protocol import MAX_RESULT_BYTES
from toolkit.boards.targets import SshParams, Target, resolve_ssh
from toolkit.errors import AuthError, HostKeyError, InfrastructureError, ResultError

log = logging.getLogger(__name__)

#: A board cannot make the host hold more than this of one command's output in memory.
MAX_STDOUT_BYTES = MAX_RESULT_BYTES
MAX_STDERR_BYTES = 1024 * 1024
# paramiko logs every reset socket at ERROR; without a handler anywhere Python's last-resort
# handler would print those beside our own one-line error. Propagation to the app's is kept.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


def _framed(command: str, frame: str) -> str:
    """``command`` with its stdout between two marker lines unique to this run.

    A login shell that prints on stdout (a ``~/.bashrc`` echo, a ForceCommand banner)
    prints before the frame: :func:`_unframed` drops it, so no board answer is parsed
    from it. The command runs in a subshell, so its own ``exit`` or ``exec`` still lets
    the end marker out; the newline before that marker is the frame's, not the command's.
    """
    return (f"printf '%s\\n' edge-frame-{frame}-start; (\n{command}\n); "
            f"edge_status=$?; printf '\\n%s\\n' edge-frame-{frame}-end; exit $edge_status")


def _unframed(out: bytes, frame: str) -> bytes:
    """What the command printed inside its frame (all of ``out`` if no frame was printed:
    a command that was cut off keeps what it printed after the start marker)."""
    start = f"edge-frame-{frame}-start\n".encode()
    end = f"\nedge-frame-{frame}-end\n".encode()
    at = out.find(start)
    if at < 0:
        return out
    body = out[at + len(start):]
    stop = body.rfind(end)
    return body if stop < 0 else body[:stop]


@dataclass(frozen=True)
class Result:
    """What one remote command did."""

    command: str
    exit_status: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's fingerprint form: ``SHA256:<base64 without padding>``."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _UnknownHostKey(Exception):
    def __init__(self, key: paramiko.PKey) -> None:
        super().__init__("unknown host key")
        self.key = key


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    """Like ``RejectPolicy``, but keeps the offered key so the error can show it."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        raise _UnknownHostKey(key)


def open_socket(hostname: str, port: int, *, timeout: float) -> socket.socket:
    """A connected TCP socket whose unacknowledged data times out after ``timeout``."""
    try:
        sock = socket.create_connection((hostname, port), timeout=timeout)
    except OSError as exc:
        raise InfrastructureError(f"cannot reach {hostname} port {port}: "
                                  f"{exc.strerror or exc}") from None
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(timeout * 1000))
    return sock


def _open_route(target: Target, params: SshParams,
               route: list[paramiko.SSHClient]) -> socket.socket | paramiko.Channel | _ProxyCommand:
    """A stream to the board's sshd: direct, through ``params.jumps`` or a ProxyCommand.

    Each jump host logged into is appended to ``route`` (the caller closes them).
    """
    limit = target.connect_timeout
    if params.proxy_command and not params.jumps:
        try:
            proxy = _ProxyCommand(params.proxy_command)
        except (OSError, ValueError) as exc:
            raise InfrastructureError(f"ProxyCommand for {target.name} ({params.proxy_command}) "
                                      f"could not start: {exc}", target=target.name) from None
        proxy.settimeout(limit)
        return proxy
    if not params.jumps:
        return open_socket(params.hostname, params.port, timeout=limit)
    hops = params.hops()
    stream: socket.socket | paramiko.Channel = open_socket(hops[0].hostname, hops[0].port,
                                                           timeout=limit)
    for hop, following in itertools.pairwise(hops):
        jump = _login(target, hop, stream, where=f"jump host {hop.address} of {target.name}")
        route.append(jump)
        transport = jump.get_transport()
        try:
            if transport is None:
                raise paramiko.SSHException("the connection closed")
            stream = transport.open_channel("direct-tcpip", (following.hostname, following.port),
                                            ("127.0.0.1", 0), timeout=limit)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise InfrastructureError(
                f"jump host {hop.address} of {target.name} could not open a connection to "
                f"{following.hostname} port {following.port}: {exc or type(exc).__name__}",
                target=target.name) from None
    return stream


def _login(target: Target, hop: SshParams, sock: socket.socket | paramiko.Channel | _ProxyCommand,
           *, where: str) -> paramiko.SSHClient:
    """Log in to ``hop`` over ``sock``: its host key checked, never added; one-line errors."""
    limit = target.connect_timeout
    client = paramiko.SSHClient()
    if hop.known_hosts.is_file():
        # load_host_keys, not load_system_host_keys: the file we read is the one we check,
        # and paramiko never writes it because no policy here adds keys.
        client.load_host_keys(str(hop.known_hosts))
    client.set_missing_host_key_policy(_RefuseUnknown())
    trust = f"check it with its owner, then run `edge targets trust {target.name}`"
    try:
        client.connect(hop.hostname, port=hop.port, username=hop.user,
                       key_filename=list(hop.key_filenames) or None,
                       look_for_keys=not hop.key_filenames, allow_agent=hop.agent,
                       sock=sock, timeout=limit, banner_timeout=limit, auth_timeout=limit,
                       channel_timeout=limit)
    except _UnknownHostKey as exc:
        client.close()
        raise HostKeyError(
            f"host key of {where} ({fingerprint(exc.key)}) is not in "
            f"{hop.known_hosts}; {trust}", target=target.name,
            fingerprint=fingerprint(exc.key)) from None
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyError(
            f"host key of {where} CHANGED: now {fingerprint(exc.key)}, recorded "
            f"{fingerprint(exc.expected_key)} in {hop.known_hosts}; refusing to connect",
            target=target.name, fingerprint=fingerprint(exc.key)) from None
    except paramiko.AuthenticationException as exc:
        client.close()
        raise AuthError(f"{where} refused our key ({exc}); {_how_to_log_in(hop)}",
                        target=target.name) from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        client.close()
        reason = str(exc) or type(exc).__name__
        if reason == "No authentication methods available":  # paramiko had no key to offer
            raise AuthError(f"{where}: no key to log in with; {_how_to_log_in(hop)}",
                            target=target.name) from None
        if isinstance(sock, _ProxyCommand) and sock.last_error():
            reason += f" (ProxyCommand said: {sock.last_error()})"
        raise InfrastructureError(f"SSH to {where} failed: {reason}",
                                  target=target.name) from None
    transport = client.get_transport()
    if transport is not None and target.keepalive_seconds:
        transport.set_keepalive(target.keepalive_seconds)
    return client


def _how_to_log_in(hop: SshParams) -> str:
    return ("set identity in the target file, IdentityFile in ~/.ssh/config"
            + ("" if hop.agent else " or ssh_agent = true in the target file"))


class _ProxyCommand(paramiko.ProxyCommand):
    """paramiko's ProxyCommand with a socket's end of file and a reaped child.

    paramiko's own spins on a proxy that exited (an empty read is retried, never
    returned), never reads the command's stderr and splits the command itself; here
    an empty read is the end of the stream, as on a socket, stderr goes to a file the
    error can quote, and ``/bin/sh`` runs the command, as OpenSSH does.
    """

    def __init__(self, command_line: str) -> None:
        # Through the shell, as OpenSSH runs it: configs use pipes, ~ and $VARS in it.
        self.cmd = ["/bin/sh", "-c", f"exec {command_line}"]
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(self.cmd, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0)
        self.timeout: float | None = None
        self._said = ""

    def recv(self, size: int) -> bytes:
        stdout = cast(IO[bytes], self.process.stdout)  # Popen(stdout=PIPE) always sets it
        ready, _, _ = select.select([stdout], [], [], self.timeout)
        if not ready:
            raise TimeoutError("ProxyCommand sent nothing")
        try:
            return os.read(stdout.fileno(), size)
        except OSError as exc:
            raise paramiko.ProxyCommandFailure(" ".join(self.cmd), exc.strerror) from None

    def last_error(self) -> str:
        """The last line the command printed on stderr, for the one-line error."""
        if not self._stderr.closed:
            self._stderr.seek(0)
            lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
            self._said = lines[-1].strip() if lines else ""
        return self._said

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.last_error()  # kept for the error message: paramiko closes us before we see it
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
        self._stderr.close()


class Connection:
    """A lazily opened SSH session to ``target``."""

    def __init__(self, target: Target, *, params: SshParams | None = None) -> None:
        self.target = target
        self.params = params or resolve_ssh(target)
        self._client: paramiko.SSHClient | None = None
        self._route: list[paramiko.SSHClient] = []  # logins to the jump hosts, first first

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def where(self) -> str:
        return f"{self.target.name} ({self.params.user}@{self.params.hostname}:{self.params.port})"

    @property
    def is_open(self) -> bool:
        return self._client is not None

    @property
    def client(self) -> paramiko.SSHClient:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> paramiko.SSHClient:
        route: list[paramiko.SSHClient] = []
        try:
            sock = _open_route(self.target, self.params, route)
            client = _login(self.target, self.params, sock, where=self.where)
        except BaseException:
            for hop in reversed(route):
                hop.close()
            raise
        self._route = route
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        for hop in reversed(self._route):
            hop.close()
        self._route = []

    def run(self, command: str, *, timeout: float | None = None) -> Result:
        """Run one shell command; the whole of it must end within ``timeout`` seconds."""
        limit = self.target.command_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise self._dropped("the connection is closed")
        out, err = bytearray(), bytearray()
        try:
            channel = transport.open_session(timeout=self.target.connect_timeout)
            frame = uuid.uuid4().hex
            channel.exec_command(_framed(command, frame))
            while True:
                if channel.recv_ready():
                    out += channel.recv(65536)
                    if len(out) > MAX_STDOUT_BYTES:
                        channel.close()
                        raise ResultError(f"command on {self.where} printed over "
                                          f"{MAX_STDOUT_BYTES} bytes; not read further",
                                          target=self.target.name)
                elif channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                    del err[:-MAX_STDERR_BYTES]  # only the last lines are ever shown
                elif channel.exit_status_ready():
                    break
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        channel.close()
                        raise InfrastructureError(
                            f"command on {self.where} did not finish within {limit:g} s",
                            target=self.target.name)
                    select.select([channel], [], [], min(remaining, 1.0))
                    if not transport.is_active():
                        raise self._dropped("the connection dropped")
            # Output and exit status can arrive together between the checks above: what is
            # still buffered belongs to the result.
            while channel.recv_ready():
                out += channel.recv(65536)
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
            status = channel.recv_exit_status()
            channel.close()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._dropped(str(exc) or type(exc).__name__) from None
        if status == -1:  # the channel closed without an exit status: the link or sshd died
            raise self._dropped("the command ended without an exit status")
        log.debug("%s: %r -> %d", self.target.name, command, status)
        return Result(command=command, exit_status=status, stdout=_unframed(bytes(out), frame),
                      stderr=bytes(err))

    def put(self, source: IO[bytes], remote_path: str) -> int:
        """Write ``source`` to ``remote_path`` over SFTP; return the bytes sent."""
        try:
            with self.client.open_sftp() as sftp:
                channel = sftp.get_channel()
                if channel is not None:
                    channel.settimeout(self.target.command_timeout)
                attributes = sftp.putfo(source, remote_path, confirm=True)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            reason = f"upload of {remote_path} failed: {exc or type(exc).__name__}"
            transport = self._client.get_transport() if self._client else None
            if transport is not None and transport.is_active():
                # The board refused the write (a full disk, say) but the link is fine: keep
                # it, so the caller can remove the partial file.
                raise InfrastructureError(f"SSH to {self.where}: {reason}",
                                          target=self.target.name) from None
            raise self._dropped(reason) from None
        return int(attributes.st_size or 0)

    def _dropped(self, reason: str) -> InfrastructureError:
        self.close()
        return InfrastructureError(f"SSH to {self.where}: {reason}", target=self.target.name)


def fetch_host_key(target: Target, params: SshParams | None = None) -> paramiko.PKey:
    """The host key the board (``params``' host) offers, read without logging in to it.

    The route there is taken as for a login, so the jump hosts on the way must be
    trusted already (:meth:`SshParams.hops` gives each hop with its own route).
    """
    params = params or resolve_ssh(target)
    route: list[paramiko.SSHClient] = []
    try:
        sock = _open_route(target, params, route)
        transport = paramiko.Transport(sock)
        transport.banner_timeout = target.connect_timeout
        try:
            transport.start_client(timeout=target.connect_timeout)
            key = transport.get_remote_server_key()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise InfrastructureError(f"cannot read the host key of {target.name} "
                                      f"({params.address}): {exc}", target=target.name) from None
        finally:
            transport.close()
    finally:
        for hop in reversed(route):
            hop.close()
    return key


def known_host_key(params: SshParams, key_type: str) -> paramiko.PKey | None:
    """The key of ``key_type`` recorded for the board, if any."""
    if not params.known_hosts.is_file():
        return None
    keys = paramiko.HostKeys(str(params.known_hosts)).lookup(params.host_key_name)
    return keys.get(key_type) if keys is not None else None


def record_host_key(params: SshParams, key: paramiko.PKey) -> None:
    """Append the key to known_hosts in OpenSSH's format (existing lines untouched)."""
    params.known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(params.known_hosts, "a", encoding="utf-8") as handle:
        handle.write(f"{params.host_key_name} {key.get_name()} {key.get_base64()}\n")


__all__: list[str] = ["Connection", "Result", "fetch_host_key", "fingerprint",
                      "known_host_key", "record_host_key"]
