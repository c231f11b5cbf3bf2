"""``edge targets``: list, show, trust and set up boards.

Example::

    edge targets list
    edge targets show rpi4
    edge targets trust rpi4 --fingerprint SHA256:abc...
    edge targets setup rpi4 --wheelhouse wheels/
    edge targets wheelhouse rpi4 -o wheels/      # for a board without the package index
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from toolkit.cli.options import busy_wait_option, targets_dir_option
from toolkit.errors import HostKeyError, TargetError
from toolkit.safe_text import one_line, printable

if TYPE_CHECKING:
    from toolkit.boards.targets import SshParams, Target

@click.group()
def targets() -> None:
    """Boards that edge can run on (target files)."""


@targets.command("list")
@targets_dir_option
def list_targets(targets_dir: Path | None) -> None:
    """List every known target with how it is reached."""
    from toolkit.boards.targets import available_targets, load_target

    for name in available_targets(targets_dir):
        try:
            target = load_target(name, targets_dir)
        except TargetError as exc:
            click.echo(printable(f"{name:20} (broken: {one_line(exc)})"))
            continue
        where = "this machine" if target.transport == "local" else f"ssh {target.host}"
        click.echo(printable(f"{name:20} {where:28} {target.description}"))


@targets.command("show")
@click.argument("name")
@targets_dir_option
def show(name: str, targets_dir: Path | None) -> None:
    """Show NAME's settings, with the SSH settings resolved through ~/.ssh/config."""
    from toolkit.boards.targets import load_target, resolve_ssh

    target = load_target(name, targets_dir)
    document = target.to_dict()
    if target.transport == "ssh":
        params = resolve_ssh(target)
        document["resolved_ssh"] = {
            "hostname": params.hostname, "port": params.port, "user": params.user,
            "identities": list(params.key_filenames), "known_hosts": str(params.known_hosts),
            "ssh_agent": params.agent, "jumps": [hop.address for hop in params.jumps],
            "proxy_command": params.proxy_command}
    click.echo(json.dumps(document, indent=2))


@targets.command("trust")
@click.argument("name")
@click.option("--fingerprint", "expected", multiple=True,
              help="Record a key only if it has this SHA256:... fingerprint (for CI); "
                   "repeat it for each jump host on the way.")
@targets_dir_option
def trust(name: str, expected: tuple[str, ...], targets_dir: Path | None) -> None:
    """Show the host key fingerprints on the way to NAME (its jump hosts, then the board)
    and record each in known_hosts once confirmed.

    Example: edge targets trust rpi4 --fingerprint SHA256:Yx3...
    """
    from toolkit.boards.targets import load_target, resolve_ssh

    target = load_target(name, targets_dir)
    hops = resolve_ssh(target).hops()
    for index, hop in enumerate(hops):
        label = name if index == len(hops) - 1 else f"jump host {hop.address}"
        _trust_hop(target, hop, label, {value.strip() for value in expected})


def _trust_hop(target: Target, hop: SshParams, name: str, expected: set[str]) -> None:
    """Trust one host of the route (``name`` in messages); the hosts before it are trusted."""
    from toolkit.boards.ssh import fetch_host_key, fingerprint, known_host_key, record_host_key

    key = fetch_host_key(target, hop)
    offered = fingerprint(key)
    recorded = known_host_key(hop, key.get_name())
    if recorded is not None:
        if fingerprint(recorded) == offered:
            click.echo(f"{name}: {key.get_name()} {offered} is already trusted")
            return
        raise HostKeyError(
            f"{name} now offers {offered} but {hop.known_hosts} records "
            f"{fingerprint(recorded)}; if the host was really reinstalled, remove the old "
            f"line with `ssh-keygen -R '{hop.host_key_name}' -f {hop.known_hosts}`",
            target=target.name, fingerprint=offered)
    click.echo(f"{name} ({hop.host_key_name}) offers {key.get_name()} {offered}")
    if expected:
        if offered not in expected:
            raise HostKeyError(f"{name} offers {offered}, not the expected "
                               f"{', '.join(sorted(expected))}; nothing recorded",
                               target=target.name, fingerprint=offered)
    elif not click.confirm("Record this key as trusted?", default=False):
        raise HostKeyError(f"{name}: key not confirmed; nothing recorded", target=target.name,
                           fingerprint=offered)
    record_host_key(hop, key)
    click.echo(f"recorded in {hop.known_hosts}")


@targets.command("setup")
@click.argument("name")
@busy_wait_option
@click.option("--wheelhouse", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Install from these wheels (pushed to the board), not from the index.")
@click.option("--system-site-packages", is_flag=True,
              help="Let the venv see the board's own packages (e.g. a vendor numpy).")
@targets_dir_option
def setup(name: str, busy_wait: float, wheelhouse: Path | None, system_site_packages: bool,
          targets_dir: Path | None) -> None:
    """Make a venv in NAME's work folder with numpy and a TFLite runtime, using pip.

    Holds the board's lease while it works; a board another job holds is waited for
    (--busy-wait), as a deploy waits.  The venv is built aside and put in place only if
    it passes pip check and breaks no other target file (in the search path) that uses
    it; otherwise nothing changes and one line says why.

    Example: edge targets setup jetson-nano --wheelhouse wheels/aarch64
    """
    from toolkit.boards.board import SshBoard
    from toolkit.boards.bootstrap import BoardPython
    from toolkit.boards.bootstrap import setup as setup_board
    from toolkit.boards.targets import load_target
    from toolkit.run.boards import NamedBoard

    target = load_target(name, targets_dir)
    if target.transport != "ssh":
        raise TargetError(f"target {name} is not a board reached over SSH", target=name)

    def on_board(target: Target) -> BoardPython:
        with SshBoard(target) as board:
            return setup_board(board, wheelhouse=wheelhouse,
                               system_site_packages=system_site_packages,
                               targets_dir=targets_dir)

    def status(message: str, ready: bool) -> None:
        if message:
            click.echo(printable(f"{name}: {message}"), err=True)

    facts = NamedBoard(target).run(on_board, busy_wait_seconds=busy_wait, on_status=status)
    runtimes = ", ".join(f"{k} {v}" for k, v in facts.runtimes.items())
    click.echo(printable(f"{name}: {facts.python} (Python {'.'.join(map(str, facts.version))}), "
                         f"numpy {facts.numpy}, {runtimes}"))


@targets.command("wheelhouse")
@click.argument("name")
@click.option("-o", "--output", "output", type=click.Path(path_type=Path, file_okay=False),
              required=True, help="Folder to download the wheels into.")
@targets_dir_option
def wheelhouse(name: str, output: Path, targets_dir: Path | None) -> None:
    """Download on this machine the wheels NAME needs (its Python, architecture and glibc),
    for `edge targets setup NAME --wheelhouse DIR` on a board without the package index.

    Example: edge targets wheelhouse rpi4 -o wheels/rpi4
    """
    from toolkit.boards.ssh import Connection
    from toolkit.boards.targets import load_target
    from toolkit.boards.wheelhouse import board_requirements, download_wheels, probe_platform

    target = load_target(name, targets_dir)
    if target.transport != "ssh":
        raise TargetError(f"target {name} is not a board reached over SSH", target=name)
    with Connection(target) as board:
        platform = probe_platform(board)
    click.echo(printable(f"{name}: {platform.describe()}; wheels for "
                         f"{' '.join(board_requirements(target, platform.python))}"))
    wheels = download_wheels(target, platform, output)
    for wheel in wheels:
        click.echo(f"  {wheel.name}")
    click.echo(f"next: edge targets setup {name} --wheelhouse {output}")
