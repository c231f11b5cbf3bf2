"""A board lab on this machine: a private OpenSSH server on a free loopback port.

Each :class:`Sshd` has its own host key (or keys), accepts one client key for the
user running the tests, and writes the known_hosts line a user would have after
`edge targets trust`. Nothing of the user's ``~/.ssh`` is read or written. Every
server is one machine (one machine id): each gets a lease folder of its own
(``$EDGE_LEASE_ROOT`` through sshd's ``SetEnv``), as separate boards would have.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def keygen(path: Path, kind: str = "ed25519") -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "edge-test", "-f",
                    str(path)], check=True, capture_output=True)
    return Path(f"{path}.pub").read_text().strip()


def children_of(pid: int) -> list[int]:
    """Every descendant of ``pid`` (sshd forks a session child per connection)."""
    found: list[int] = []
    parents = {pid}
    changed = True
    while changed:
        changed = False
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in found:
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid in parents:
                found.append(int(entry.name))
                parents.add(int(entry.name))
                changed = True
    return found


@dataclass
class Sshd:
    folder: Path
    port: int
    user: str
    client_key: Path
    host_public_key: str
    known_hosts: Path
    lease_root: Path
    process: subprocess.Popen[bytes] | None = None
    address: str = "127.0.0.1"
    netns: str | None = None
    _log: IO[bytes] | None = None

    @classmethod
    def create(cls, folder: Path, *, address: str = "127.0.0.1", netns: str | None = None,
               extra_config: tuple[str, ...] = (), host_keys: tuple[str, ...] = ("ed25519",),
               users: tuple[str, ...] = (), lease_root: Path | None = None) -> Sshd:
        """``extra_config``: more sshd_config lines, e.g. ``AllowTcpForwarding yes`` for a
        jump host or ``SetEnv PIP_INDEX_URL=...`` for a board's environment. ``host_keys``:
        the kinds offered (the first is the one known_hosts lists); ``users``: more logins
        allowed besides ours; ``lease_root``: the board's lease folder (default: its own)."""
        folder.mkdir(parents=True, exist_ok=True)
        host_pub = keygen(folder / f"host_{host_keys[0]}", host_keys[0])
        for kind in host_keys[1:]:
            keygen(folder / f"host_{kind}", kind)
        client_pub = keygen(folder / "client_ed25519")
        (folder / "authorized_keys").write_text(client_pub + "\n")
        port = free_port()
        user = getpass.getuser()
        lease_root = lease_root or folder / "leases"
        # sshd takes the first SetEnv line only: ours joins the caller's.
        setenv = [line for line in extra_config if line.startswith("SetEnv ")]
        extra = [line for line in extra_config if not line.startswith("SetEnv ")]
        setenv_line = " ".join([*(setenv[:1] or ["SetEnv"]), f"EDGE_LEASE_ROOT={lease_root}"])
        # sshd takes the first value of a keyword: the extra lines go first to win.
        (folder / "sshd_config").write_text("\n".join([
            *extra, setenv_line, f"ListenAddress {address}", f"Port {port}",
            *(f"HostKey {folder / f'host_{kind}'}" for kind in host_keys),
            f"PidFile {folder / 'sshd.pid'}",
            f"AuthorizedKeysFile {folder / 'authorized_keys'}",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
            "PermitRootLogin prohibit-password", f"AllowUsers {' '.join([user, *users])}",
            "StrictModes no",
            "Subsystem sftp internal-sftp", "MaxStartups 100", "LogLevel ERROR", ""]))
        known = folder / "known_hosts"
        known.write_text(f"[{address}]:{port} {' '.join(host_pub.split()[:2])}\n")
        sshd = cls(folder=folder, port=port, user=user, client_key=folder / "client_ed25519",
                   host_public_key=host_pub, known_hosts=known, lease_root=lease_root,
                   address=address, netns=netns)
        sshd.start()
        return sshd

    def start(self) -> None:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(exist_ok=True)
        self._log = open(self.folder / "sshd.log", "ab")  # closed by kill()
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.process = subprocess.Popen(
            [*prefix, SSHD, "-D", "-e", "-f", str(self.folder / "sshd_config")],
            stdout=subprocess.DEVNULL, stderr=self._log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("sshd exited: " + (self.folder / "sshd.log").read_text())
            try:
                socket.create_connection((self.address, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen on port {self.port} within 10 s")

    def log(self) -> str:
        return (self.folder / "sshd.log").read_text(errors="replace")

    @property
    def fingerprint(self) -> str:
        """``SHA256:...`` of the host key, as ``edge targets trust`` shows it."""
        out = subprocess.run(["ssh-keygen", "-l", "-f", str(self.folder / "host_ed25519.pub")],
                             check=True, capture_output=True, text=True).stdout
        return out.split()[1]

    def authorize(self, public_key_file: Path) -> None:
        """Let one more client key log in (e.g. the board's key on a jump host)."""
        with open(self.folder / "authorized_keys", "a") as handle:
            handle.write(Path(public_key_file).read_text().strip() + "\n")

    def kill(self) -> None:
        """Kill the server and every session it forked, as a crash or power cut would."""
        if self.process is None:
            return
        for pid in [self.process.pid, *children_of(self.process.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=10)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def write_target(self, folder: Path, name: str, work_dir: Path, **extra: object) -> Path:
        """A target file that reaches this server, with ``extra`` keys added."""
        fields: dict[str, object] = {
            "transport": "ssh", "host": self.address, "port": self.port, "user": self.user,
            "identity": str(self.client_key), "known_hosts": str(self.known_hosts),
            "python": sys.executable, "work_dir": str(work_dir), "connect_timeout": 5.0,
            "command_timeout": 30.0, "retries": 0, **extra}
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.toml"
        path.write_text("".join(f"{key} = {_toml(value)}\n" for key, value in fields.items()))
        return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Board:
    """A board as a network namespace joined to this machine by a veth pair.

    Addresses are a /30 in 10.231.0.0/16 that only these namespaces use; ``link_down``
    drops the host end, as a pulled cable would (no FIN, no RST: packets just vanish).
    """

    def __init__(self, tag: str) -> None:
        index = (os.getpid() * 7 + sum(map(ord, tag))) % 16000
        self.name = f"edge-{os.getpid() % 100000}-{tag}"[:30]
        self.host_if = f"eh{index}"
        self.board_if = f"eb{index}"
        base = 4 * index
        self.host_address = f"10.231.{base // 256}.{base % 256 + 1}"
        self.address = f"10.231.{base // 256}.{base % 256 + 2}"
        self._ip("netns", "add", self.name)
        try:
            self._ip("link", "add", self.host_if, "type", "veth", "peer", "name",
                     self.board_if, "netns", self.name)
            self._ip("addr", "add", f"{self.host_address}/30", "dev", self.host_if)
            self._ip("link", "set", self.host_if, "up")
            inside = ["-n", self.name]
            self._ip(*inside, "addr", "add", f"{self.address}/30", "dev", self.board_if)
            self._ip(*inside, "link", "set", self.board_if, "up")
            self._ip(*inside, "link", "set", "lo", "up")
        except subprocess.CalledProcessError:
            self.destroy()
            raise

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def link_down(self) -> None:
        self._ip("link", "set", self.host_if, "down")

    def destroy(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
