"""Boards, one TOML file per board kind, loaded into a :class:`Target`.

Built-in files live in the repository's ``targets/`` folder (shipped inside
the wheel); a user's own folder (``--targets-dir`` or ``EDGE_TARGETS_DIR``)
is searched first, so a lab can keep its boards beside its models.

An SSH target names a host or an ``~/.ssh/config`` alias; whatever the target
file leaves out (user, port, identity, known_hosts) comes from the SSH config
through :func:`resolve_ssh`, the way ``ssh`` itself would pick it, including the
route: ``ProxyJump`` (a chain of jump hosts, each with its own user, port, identity
and known_hosts from the config) or ``ProxyCommand``; a target's ``jump`` setting
names the jump hosts itself and wins over the config.

Example::

    target = load_target("rpi4")
    params = resolve_ssh(target)   # SshParams(hostname='rpi4.lab', port=22, ...)
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import paramiko

from device_agent.power import POWER_SENSORS
from device_agent.protocol import ACCELERATORS, APIS, RUNTIMES, JobSettings
from device_agent.settings import GOVERNOR_NAME
from toolkit.errors import TargetError

TRANSPORTS = ("local", "ssh")
SSH_CONFIG_ENV = "EDGE_SSH_CONFIG"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: The job settings' defaults: a target file that leaves one out gets the agent's own.
_JOB = JobSettings()


class SshConfigEntry(TypedDict, total=False):
    """What ``~/.ssh/config`` says of one host, as paramiko's lookup gives it (lower-case
    keys, every value text but ``identityfile``); only the keys a target reads."""

    hostname: str
    user: str
    port: str
    identityfile: list[str]
    userknownhostsfile: str
    proxyjump: str
    proxycommand: str


@dataclass(frozen=True, kw_only=True)
class Target:
    """Where and how the agent runs.

    ``host`` is a host name, an address or an ``~/.ssh/config`` alias;
    ``work_dir`` is relative to the login folder unless absolute.
    """

    name: str
    transport: str
    description: str = ""
    host: str | None = None
    user: str | None = None
    port: int | None = None
    identity: str | None = None
    known_hosts: str | None = None
    jump: str | None = None
    ssh_agent: bool = False
    python: str = "python3"
    runtime: str = _JOB.runtime
    #: How the agent runs the models (see :mod:`device_agent.accelerators`): ``cpu``,
    #: ``xnnpack-off``, ``gpu``, ``gpu+cpu`` or ``delegate`` (the ``delegate`` library with
    #: ``delegate_options``), through the ``interpreter`` or the ``compiled`` API; for an
    #: ``.onnx``, ONNX Runtime's ``cpu``, ``xnnpack``, ``cuda`` or ``tensorrt`` provider.
    accelerator: str = _JOB.accelerator
    api: str = _JOB.api
    delegate: str | None = None
    delegate_options: tuple[tuple[str, str | int | float | bool], ...] = ()
    threads: int = _JOB.threads
    power_sensor: str = _JOB.power_sensor
    thermal_zones: tuple[str, ...] = ()
    #: A CPU governor the agent sets for each job where the board user may write
    #: ``scaling_governor`` (``performance``), restoring the previous ones afterwards.
    set_governor: str = _JOB.set_governor
    work_dir: str = ".edge"
    #: The size cap of ``work_dir/cache`` (uploaded models, references): least recently
    #: used files are evicted after a job's uploads; the job's own files always stay.
    cache_max_mb: int = 512
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    keepalive_seconds: int = 5
    retries: int = 2
    source: Path | None = None

    def __post_init__(self) -> None:
        def bad(message: str) -> TargetError:
            return TargetError(f"target {self.name}: {message}", target=self.name)

        if self.transport not in TRANSPORTS:
            raise bad(f"transport {self.transport!r} is not supported; "
                      f"use one of {', '.join(TRANSPORTS)}")
        if self.transport == "ssh" and not self.host:
            raise bad("an ssh target needs a host (a name, an address or an ~/.ssh/config alias)")
        if self.runtime not in RUNTIMES:
            raise bad(f"runtime {self.runtime!r} is not one of {', '.join(RUNTIMES)}")
        if self.accelerator not in ACCELERATORS:
            raise bad(f"accelerator {self.accelerator!r} is not one of {', '.join(ACCELERATORS)}")
        if self.api not in APIS:
            raise bad(f"api {self.api!r} is not one of {', '.join(APIS)}")
        if self.accelerator == "delegate" and not self.delegate:
            raise bad('accelerator "delegate" needs delegate = "/path/on/the/board/lib.so"')
        if not isinstance(self.delegate_options, tuple) or not all(
                isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)
                and isinstance(pair[1], str | int | float | bool)
                for pair in self.delegate_options):
            raise bad("delegate_options must be a table of strings, numbers or booleans")
        if self.power_sensor not in POWER_SENSORS:
            raise bad(f"power_sensor {self.power_sensor!r} is not one of "
                      f"{', '.join(POWER_SENSORS)}")
        for key in ("threads", "retries", "keepalive_seconds", "cache_max_mb"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad(f"{key} must be a whole number >= 0")
        if self.port is not None and (not isinstance(self.port, int) or
                                      not 0 < self.port < 65536):
            raise bad("port must be a whole number from 1 to 65535")
        for key in ("connect_timeout", "command_timeout"):
            value = getattr(self, key)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise bad(f"{key} must be a number of seconds > 0")
        if not isinstance(self.ssh_agent, bool):
            raise bad("ssh_agent must be true or false")
        for key in ("host", "user", "identity", "known_hosts", "jump", "python", "work_dir",
                    "delegate"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()
                                      or "\n" in value or "\x00" in value):
                raise bad(f"{key} must be a non-empty one-line string")
        if not isinstance(self.set_governor, str) or (
                self.set_governor and not GOVERNOR_NAME.fullmatch(self.set_governor)):
            raise bad(f"set_governor {self.set_governor!r} is not a governor name such as "
                      '"performance"')
        if not isinstance(self.thermal_zones, tuple) or not all(
                isinstance(zone, str) for zone in self.thermal_zones):
            raise bad("thermal_zones must be a list of strings")

    def to_dict(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data["thermal_zones"] = list(self.thermal_zones)
        data["delegate_options"] = dict(self.delegate_options)
        data["source"] = str(self.source) if self.source else None
        return data


@dataclass(frozen=True, kw_only=True)
class SshParams:
    """Everything needed to open the connection, after ``~/.ssh/config``."""

    hostname: str
    port: int
    user: str
    key_filenames: tuple[str, ...]
    known_hosts: Path
    agent: bool = False
    #: Jump hosts in the order they are dialled (``ProxyJump a,b``: a first); empty: direct.
    jumps: tuple[SshParams, ...] = ()
    #: ``ProxyCommand`` with its tokens expanded; used only when there are no jumps.
    proxy_command: str | None = None

    @property
    def host_key_name(self) -> str:
        """The host as known_hosts writes it: ``[host]:port`` off port 22."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    @property
    def address(self) -> str:
        """``user@host:port``, as errors name a hop."""
        return f"{self.user}@{self.hostname}:{self.port}"

    def hops(self) -> list[SshParams]:
        """Every host on the way, the board last, each with the jumps that lead to it."""
        leading = [dataclasses.replace(hop, jumps=self.jumps[:index])
                   for index, hop in enumerate(self.jumps)]
        return [*leading, self]


def ssh_config_path() -> Path:
    """``$EDGE_SSH_CONFIG`` or ``~/.ssh/config``."""
    return Path(os.environ.get(SSH_CONFIG_ENV) or "~/.ssh/config").expanduser()


def resolve_ssh(target: Target) -> SshParams:
    """Merge the target file with ``~/.ssh/config``; the target file wins."""
    if target.transport != "ssh" or target.host is None:
        raise TargetError(f"target {target.name} is not reached over SSH", target=target.name)
    config = _ssh_config(target.name)
    looked_up = _lookup(config, target.host)
    user = target.user or looked_up.get("user") or _login_name()
    port = target.port or _config_port(looked_up, target)
    identities = ([target.identity] if target.identity
                  else list(looked_up.get("identityfile", [])))
    known = (target.known_hosts
             or (looked_up.get("userknownhostsfile") or "").split(" ")[0]
             or "~/.ssh/known_hosts")
    board = SshParams(hostname=looked_up.get("hostname", target.host), port=port, user=user,
                      key_filenames=tuple(str(Path(p).expanduser()) for p in identities),
                      known_hosts=Path(known).expanduser(), agent=target.ssh_agent)
    # OpenSSH takes whichever of ProxyJump and ProxyCommand comes first; paramiko's lookup
    # does not keep the order, so a config naming both for one host gets the jump.
    jump = target.jump if target.jump is not None else looked_up.get("proxyjump")
    if jump is not None and jump.strip().lower() != "none":
        hops = tuple(_jump_hop(config, spec, board, target)
                     for spec in jump.split(",") if spec.strip())
        return dataclasses.replace(board, jumps=hops)
    if target.jump is None and looked_up.get("proxycommand"):
        return dataclasses.replace(board, proxy_command=_proxy_command(target, board, looked_up))
    return board


def _proxy_command(target: Target, board: SshParams, looked_up: SshConfigEntry) -> str:
    """The ProxyCommand with ``%p`` and ``%r`` of the port and user we really use.

    paramiko expands the tokens with the config's own values; a port or user set in the
    target file must win there too, as ``ssh -p`` does. A block naming them, put first,
    wins under the config's first-value-wins rule.
    """
    if not (target.port or target.user):
        return str(looked_up["proxycommand"])
    preamble = f"Host {target.host}\n  Port {board.port}\n  User {board.user}\n"
    config = paramiko.SSHConfig.from_text(preamble + ssh_config_path().read_text())
    return str(config.lookup(str(target.host))["proxycommand"])


_JUMP = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\s]+))"
                   r"(?::(?P<port>\d+))?$")


def _jump_hop(config: paramiko.SSHConfig | None, spec: str, board: SshParams,
              target: Target) -> SshParams:
    """One ``[user@]host[:port]`` of a jump list, filled in from its own config entry.

    A jump host without an IdentityFile or UserKnownHostsFile of its own uses the
    board's: one lab key and one known_hosts file for a lab is the common case.
    """
    found = _JUMP.match(spec.strip().removeprefix("ssh://"))
    if not found:
        raise TargetError(f"target {target.name}: jump host {spec.strip()!r} is not "
                          "[user@]host[:port]", target=target.name)
    host = str(found["host"] or found["v6"])
    looked_up = _lookup(config, host)
    identities = looked_up.get("identityfile")
    known = (looked_up.get("userknownhostsfile") or "").split(" ")[0]
    return SshParams(
        hostname=looked_up.get("hostname", host),
        port=int(found["port"]) if found["port"] else _config_port(looked_up, target),
        user=found["user"] or looked_up.get("user") or _login_name(),
        key_filenames=(tuple(str(Path(p).expanduser()) for p in identities) if identities
                       else board.key_filenames),
        known_hosts=Path(known).expanduser() if known else board.known_hosts,
        agent=board.agent)


def _ssh_config(name: str) -> paramiko.SSHConfig | None:
    config_path = ssh_config_path()
    if not config_path.is_file():
        return None
    try:
        return paramiko.SSHConfig.from_path(str(config_path))
    except (OSError, paramiko.ConfigParseError) as exc:
        raise TargetError(f"cannot read {config_path}: {exc}", target=name) from None


def _lookup(config: paramiko.SSHConfig | None, host: str) -> SshConfigEntry:
    return config.lookup(host) if config is not None else {}


def _config_port(looked_up: SshConfigEntry, target: Target) -> int:
    try:
        return int(looked_up.get("port", 22))
    except ValueError:
        raise TargetError(f"{ssh_config_path()}: port of {looked_up.get('hostname')} is not "
                          "a number", target=target.name) from None


def _login_name() -> str:
    import getpass

    return getpass.getuser()


def builtin_targets_dir() -> Path:
    """``toolkit/targets`` inside a wheel, ``<repo>/targets`` in a source checkout."""
    packaged = Path(__file__).parents[1] / "targets"
    return packaged if packaged.is_dir() else Path(__file__).parents[2] / "targets"


def search_dirs(user_dir: str | Path | None = None) -> list[Path]:
    dirs = []
    chosen = user_dir or os.environ.get("EDGE_TARGETS_DIR")
    if chosen:
        dirs.append(Path(chosen).expanduser())
    dirs.append(builtin_targets_dir())
    return dirs


def available_targets(user_dir: str | Path | None = None) -> list[str]:
    names: set[str] = set()
    for folder in search_dirs(user_dir):
        names.update(path.stem for path in folder.glob("*.toml") if _SAFE_NAME.match(path.stem))
    return sorted(names)


def check_name(name: object, what: str = "target name") -> str:
    """Return ``name`` if it is one safe path component (``rpi4``), else raise."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or name.endswith("."):
        raise TargetError(f"{what} {name!r} must be a plain name like rpi4 "
                          "(letters, digits, '.', '_', '-')", target=None)
    return name


def load_target(name: str, user_dir: str | Path | None = None) -> Target:
    """Find ``<name>.toml`` in the search folders and load it."""
    return _parse(name, target_file(name, user_dir))


_FIELDS = {f.name for f in dataclasses.fields(Target)} - {"name", "source"}


def read_target_file(name: str, path: Path) -> dict[str, object]:
    """The raw keys of a target file, for a lab file to build on (see :mod:`toolkit.boards.lab`)."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TargetError(f"target file {path} is not valid TOML: {exc}", target=name) from None


def target_from_mapping(name: str, data: Mapping[str, object], path: Path) -> Target:
    """Validate the keys of a target file (``path`` names it in errors) into a Target."""
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        near = difflib.get_close_matches(unknown[0], sorted(_FIELDS), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise TargetError(f"{path}: target {name}: unknown key {unknown[0]!r}{hint}",
                          target=name)
    if "transport" not in data:
        raise TargetError(f"{path}: target {name} needs a transport key", target=name)
    # The values as the file gave them: Target.__post_init__ checks each one's type.
    settings: dict[str, Any] = dict(data)
    zones, options = data.get("thermal_zones"), data.get("delegate_options")
    if isinstance(zones, list):
        settings["thermal_zones"] = tuple(zones)
    if isinstance(options, dict):
        settings["delegate_options"] = tuple(options.items())
    return Target(name=name, source=path, **settings)


def target_file(name: str, user_dir: str | Path | None = None) -> Path:
    """The file ``load_target(name)`` would read."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
        raise TargetError(f"target name {name!r} must be a plain name like rpi4", target=name)
    for folder in search_dirs(user_dir):
        path = folder / f"{name}.toml"
        if path.is_file():
            return path
    known = ", ".join(available_targets(user_dir)) or "none"
    raise TargetError(f"unknown target {name!r}; known targets: {known}", target=name)


def _parse(name: str, path: Path) -> Target:
    return target_from_mapping(name, read_target_file(name, path), path)
