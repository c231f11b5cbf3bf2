"""SSH as users have it: ProxyJump, ProxyCommand and the ssh-agent, through real sshds.

The jump hosts are OpenSSH servers of their own on loopback (``AllowTcpForwarding
yes``); the board's host key is checked at the end of the route exactly as for a
direct connection.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.boards.ssh import Connection
from toolkit.boards.targets import Target, load_target, resolve_ssh
from toolkit.boards.transfer import upload
from toolkit.cli.main import main
from toolkit.errors import AuthError, HostKeyError, InfrastructureError

from .lab import Sshd, free_port


def make_jump(folder: Path, forwarding: str = "yes") -> Sshd:
    # DEBUG logs each forward ("server_request_direct_tcpip ... target 127.0.0.1 port N"):
    # the proof that a session went through this host.
    return Sshd.create(folder, extra_config=(f"AllowTcpForwarding {forwarding}",
                                             "LogLevel DEBUG"))


@pytest.fixture(scope="module")
def jump(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    server = make_jump(tmp_path_factory.mktemp("jump"))
    yield server
    server.kill()


def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(text)
    monkeypatch.setenv("EDGE_SSH_CONFIG", str(config))


def jump_entry(alias: str, server: Sshd) -> str:
    return (f"Host {alias}\n  HostName {server.address}\n  Port {server.port}\n"
            f"  User {server.user}\n  IdentityFile {server.client_key}\n"
            f"  UserKnownHostsFile {server.known_hosts}\n")


def board_target(sshd: Sshd, tmp_path: Path, **extra: object) -> Target:
    sshd.write_target(tmp_path / "targets", "lab", tmp_path / "board", **extra)
    return load_target("lab", tmp_path / "targets")


def forwards_to(server: Sshd, port: int) -> int:
    """How many connections ``server`` has forwarded to ``port`` so far."""
    return server.log().count(f"target 127.0.0.1 port {port}")


def test_proxyjump_from_the_ssh_config_goes_through_the_jump_host(
        sshd: Sshd, jump: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path, monkeypatch, jump_entry("bastion", jump)
                 + f"Host lab-board\n  HostName {sshd.address}\n  ProxyJump bastion\n")
    target = board_target(sshd, tmp_path, host="lab-board")
    params = resolve_ssh(target)
    assert [hop.address for hop in params.jumps] == [f"{jump.user}@127.0.0.1:{jump.port}"]
    assert params.jumps[0].key_filenames == (str(jump.client_key),)
    assert params.jumps[0].known_hosts == jump.known_hosts
    before = forwards_to(jump, sshd.port)
    with Connection(target) as board:
        assert board.run("echo through").stdout == b"through\n"
        assert forwards_to(jump, sshd.port) == before + 1  # the jump host carried it
        assert upload(board, str(tmp_path / "board" / "cache"), "f.bin", b"x" * 100_000)
    assert (tmp_path / "board" / "cache" / "f.bin").stat().st_size == 100_000
    shown = CliRunner().invoke(main, ["targets", "show", "lab", "--targets-dir",
                                      str(tmp_path / "targets")], catch_exceptions=False)
    assert f'"jumps": [\n      "{jump.user}@127.0.0.1:{jump.port}"' in shown.stdout


def test_a_jump_host_that_forbids_forwarding_fails_in_one_line(
        sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    closed = make_jump(tmp_path / "closed", forwarding="no")
    try:
        write_config(tmp_path, monkeypatch, jump_entry("bastion", closed))
        target = board_target(sshd, tmp_path, jump="bastion")
        with pytest.raises(InfrastructureError, match=r"jump host .* could not open a "
                                                      r"connection") as caught:
            Connection(target).client  # noqa: B018 - opening is the test
        assert "\n" not in str(caught.value)
    finally:
        closed.kill()


def test_target_jump_setting_with_one_known_hosts_file_and_the_boards_key(
        sshd: Sshd, jump: Sshd, tmp_path: Path) -> None:
    """``jump = "user@host:port"`` needs no SSH config: the jump host uses the board's
    identity and known_hosts file, and the board's own key is still checked."""
    jump.authorize(Path(f"{sshd.client_key}.pub"))
    known = tmp_path / "known_hosts"
    known.write_text(jump.known_hosts.read_text() + sshd.known_hosts.read_text())
    spec = f"{jump.user}@{jump.address}:{jump.port}"
    target = board_target(sshd, tmp_path, jump=spec, known_hosts=str(known))
    with Connection(target) as board:
        assert board.run("echo ok").ok
    # The board's host key is verified at the end of the route: a known_hosts with the
    # jump host alone refuses the board.
    only_jump = tmp_path / "only_jump"
    only_jump.write_text(jump.known_hosts.read_text())
    target = board_target(sshd, tmp_path, jump=spec, known_hosts=str(only_jump))
    with pytest.raises(HostKeyError, match=r"host key of lab \(") as caught:
        Connection(target).client  # noqa: B018
    assert "jump host" not in str(caught.value)


def test_an_unknown_jump_host_key_is_refused_and_trust_records_it(
        sshd: Sshd, jump: Sshd, tmp_path: Path) -> None:
    jump.authorize(Path(f"{sshd.client_key}.pub"))
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts.read_text())  # the board is known, the jump host not
    target = board_target(sshd, tmp_path, jump=f"{jump.user}@{jump.address}:{jump.port}",
                          known_hosts=str(known))
    with pytest.raises(HostKeyError) as caught:
        Connection(target).client  # noqa: B018
    message = str(caught.value)
    assert "\n" not in message and "jump host" in message and jump.fingerprint in message
    assert "edge targets trust lab" in message
    args = ["targets", "trust", "lab", "--targets-dir", str(tmp_path / "targets")]
    wrong = CliRunner().invoke(main, [*args, "--fingerprint", "SHA256:nope"])
    assert wrong.exit_code == 2 and "nothing recorded" in wrong.stderr
    trusted = CliRunner().invoke(main, [*args, "--fingerprint", jump.fingerprint],
                                 catch_exceptions=False)
    assert trusted.exit_code == 0, trusted.output
    assert f"[127.0.0.1]:{jump.port}" in known.read_text()
    assert "lab: ssh-ed25519" in trusted.stdout and "already trusted" in trusted.stdout
    with Connection(target) as board:
        assert board.run("true").ok


def test_a_chain_of_two_jump_hosts(sshd: Sshd, jump: Sshd, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    second = make_jump(tmp_path / "second")
    try:
        write_config(tmp_path, monkeypatch, jump_entry("first", jump)
                     + jump_entry("second", second)
                     + f"Host lab-board\n  HostName {sshd.address}\n  ProxyJump first,second\n")
        target = board_target(sshd, tmp_path, host="lab-board")
        assert [hop.port for hop in resolve_ssh(target).jumps] == [jump.port, second.port]
        before = forwards_to(jump, second.port), forwards_to(second, sshd.port)
        with Connection(target) as board:
            assert board.run("echo two").stdout == b"two\n"
        assert forwards_to(jump, second.port) == before[0] + 1
        assert forwards_to(second, sshd.port) == before[1] + 1
    finally:
        second.kill()


def system_ssh_proxy(jump: Sshd, port: int) -> str:
    """What users write: OpenSSH's own client forwarding stdin/stdout (``-W``); the key
    comes from an environment variable the shell expands, as OpenSSH's ProxyCommand allows."""
    return (f"ssh -F /dev/null -i $EDGE_TEST_JUMP_KEY -o UserKnownHostsFile={jump.known_hosts} "
            "-o StrictHostKeyChecking=yes -o BatchMode=yes -o ServerAliveInterval=5 "
            f"-p {port} -W %h:%p {jump.user}@{jump.address}")


def test_proxycommand_from_the_ssh_config(sshd: Sshd, jump: Sshd, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_TEST_JUMP_KEY", str(jump.client_key))  # the shell expands it
    write_config(tmp_path, monkeypatch, f"Host lab-board\n  HostName {sshd.address}\n"
                 f"  ProxyCommand {system_ssh_proxy(jump, jump.port)}\n")
    target = board_target(sshd, tmp_path, host="lab-board")
    params = resolve_ssh(target)
    assert params.proxy_command and f"-W 127.0.0.1:{sshd.port}" in params.proxy_command
    board = Connection(target)
    assert board.run("echo proxied").stdout == b"proxied\n"
    assert upload(board, str(tmp_path / "board" / "cache"), "g.bin", b"y" * 300_000)
    proxy = board.client.get_transport().sock  # type: ignore[union-attr]
    board.close()
    assert proxy.process.returncode is not None  # the proxy was ended and reaped


def test_a_failing_proxycommand_says_why_in_one_line(
        sshd: Sshd, jump: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_TEST_JUMP_KEY", str(jump.client_key))
    write_config(tmp_path, monkeypatch, f"Host lab-board\n  HostName {sshd.address}\n"
                 f"  ProxyCommand {system_ssh_proxy(jump, free_port())}\n")
    target = board_target(sshd, tmp_path, host="lab-board")
    with pytest.raises(InfrastructureError, match=r"ProxyCommand said: .*refused") as caught:
        Connection(target).client  # noqa: B018
    assert "\n" not in str(caught.value)


def test_jump_none_in_the_target_file_dials_directly(
        sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path, monkeypatch, f"Host {sshd.address}\n  ProxyJump nowhere:1\n")
    target = board_target(sshd, tmp_path, jump="none")
    assert resolve_ssh(target).jumps == ()
    with Connection(target) as board:
        assert board.run("true").ok


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real ssh-agent of the test's own; SSH_AUTH_SOCK points at it, HOME is empty."""
    sock = tmp_path / "agent.sock"
    started = subprocess.run(["ssh-agent", "-a", str(sock), "-s"], check=True,
                             capture_output=True, text=True)
    pid = int(started.stdout.split("SSH_AGENT_PID=")[1].split(";")[0])
    monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # no ~/.ssh/id_* of the user running the tests
    yield sock
    os.kill(pid, 15)


def test_keys_in_the_ssh_agent_are_used_only_when_the_target_opts_in(
        sshd: Sshd, agent: Path, tmp_path: Path) -> None:
    from .lab import keygen

    agent_key = tmp_path / "agent_key"
    keygen(agent_key)
    sshd.authorize(Path(f"{agent_key}.pub"))
    subprocess.run(["ssh-add", str(agent_key)], check=True, capture_output=True,
                   env={**os.environ, "SSH_AUTH_SOCK": str(agent)})
    agent_key.unlink()  # the key now lives in the agent only
    sshd.write_target(tmp_path / "targets", "lab", tmp_path / "board")
    text = (tmp_path / "targets" / "lab.toml").read_text()
    no_identity = "".join(line + "\n" for line in text.splitlines()
                          if not line.startswith("identity"))
    (tmp_path / "targets" / "lab.toml").write_text(no_identity)
    with pytest.raises(AuthError, match="ssh_agent = true"):
        Connection(load_target("lab", tmp_path / "targets")).client  # noqa: B018
    (tmp_path / "targets" / "lab.toml").write_text(no_identity + "ssh_agent = true\n")
    target = load_target("lab", tmp_path / "targets")
    assert resolve_ssh(target).agent
    with Connection(target) as board:
        assert board.run("echo agent").stdout == b"agent\n"


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_a_dead_link_to_the_jump_host_ends_an_upload_within_the_limit(tmp_path: Path) -> None:
    """The first hop's socket is ours (TCP_USER_TIMEOUT): a pulled cable between this machine
    and the jump host breaks an upload to the board behind it instead of hanging it."""
    import io
    import threading
    import time

    from .lab import Board

    limit, command_timeout = 3.0, 60.0
    link = Board("jmp")
    servers: list[Sshd] = []
    try:
        jump_host = Sshd.create(tmp_path / "jump", address=link.address, netns=link.name,
                                extra_config=("AllowTcpForwarding yes",))
        servers.append(jump_host)
        # The board listens on this machine's end of the link: only the jump host's side
        # of the veth pair reaches it the way the route goes.
        board_server = Sshd.create(tmp_path / "board-sshd", address=link.host_address)
        servers.append(board_server)
        jump_host.authorize(Path(f"{board_server.client_key}.pub"))
        known = tmp_path / "known_hosts"
        known.write_text(jump_host.known_hosts.read_text() + board_server.known_hosts.read_text())
        target = board_target(board_server, tmp_path, known_hosts=str(known),
                              jump=f"{jump_host.user}@{link.address}:{jump_host.port}",
                              connect_timeout=limit, keepalive_seconds=1,
                              command_timeout=command_timeout)
        board = Connection(target)
        assert board.run("true").ok
        pulled: list[float] = []

        def pull_the_cable() -> None:
            time.sleep(0.3)
            link.link_down()
            pulled.append(time.monotonic())

        puller = threading.Thread(target=pull_the_cable)
        puller.start()
        try:
            with pytest.raises(InfrastructureError):
                board.put(io.BytesIO(os.urandom(200 * 1024 * 1024)),
                          str(tmp_path / "big.bin"))
        finally:
            puller.join()
            board.close()
        ended = time.monotonic()
        # A hang guard, not a figure: about ``limit`` after the cable went, where an upload
        # without TCP_USER_TIMEOUT hangs for good; half the command timeout is the bound.
        assert pulled and pulled[0] < ended < pulled[0] + command_timeout / 2
    finally:
        for server in servers:
            server.kill()
        link.destroy()
