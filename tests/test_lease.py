"""The board lease: one per physical board, and closed on anything it cannot read.

- one board reached with an rsa-first and an ed25519 known_hosts, and by two logins, is one
  lease (it was one per negotiated host key and per login's home);
- an owner file that cannot be read, a broken /dev/null, a missing flock(1) are errors that
  name what is wrong, never a free board; a failed release is one warning line.
"""

from __future__ import annotations

import logging
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolkit.board import LocalBoard, SshBoard
from toolkit.errors import BoardBusyError, InfrastructureError
from toolkit.lock import board_lock, lease_dir
from toolkit.ssh import Result
from toolkit.targets import Target, load_target

from .lab import Sshd

REPO = Path(__file__).resolve().parent.parent
PEER = "edge-lease-peer"


def local_target(tmp_path: Path, name: str = "here") -> Target:
    folder = tmp_path / "targets"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.toml").write_text('transport = "local"\n')
    return load_target(name, folder)


def lease_folder(board: LocalBoard | SshBoard) -> Path:
    return Path(board.run("pwd").stdout.decode().strip()) / lease_dir(board)


# --- one lease per physical board -------------------------------------------------------


@pytest.fixture(scope="module")
def peer_login() -> Iterator[str | None]:
    """A second login on this machine (root only: ``useradd``), removed afterwards."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        yield None
        return
    made = False
    try:
        pwd.getpwnam(PEER)
    except KeyError:
        subprocess.run(["useradd", "-M", "-d", "/nonexistent", "-s", "/bin/sh", PEER],
                       check=True, capture_output=True)
        made = True
    # A new user's password is locked, and sshd (UsePAM no) refuses a locked account.
    subprocess.run(["usermod", "-p", "*", PEER], check=True, capture_output=True)
    yield PEER
    if made:
        subprocess.run(["userdel", PEER], check=False, capture_output=True)


@pytest.fixture(scope="module")
def two_key_sshd(peer_login: str | None) -> Iterator[Sshd]:
    """A server offering ed25519 and rsa host keys, in a folder every login can read."""
    folder = Path(tempfile.mkdtemp(prefix="edge-lease-", dir="/tmp"))
    folder.chmod(0o755)
    server = Sshd.create(folder / "sshd", host_keys=("ed25519", "rsa"),
                         users=(peer_login,) if peer_login else (),
                         lease_root=folder / "leases")
    yield server
    server.kill()
    shutil.rmtree(folder, ignore_errors=True)


def test_one_board_is_one_lease_whichever_host_key_or_login_reaches_it(
        two_key_sshd: Sshd, peer_login: str | None, tmp_path: Path) -> None:
    sshd = two_key_sshd
    ed25519 = sshd.known_hosts.read_text().split()
    rsa = (sshd.folder / "host_rsa.pub").read_text().split()[:2]
    # As ssh-keyscan writes it: rsa first, so SSH negotiates rsa.
    scanned = tmp_path / "known_hosts.scanned"
    scanned.write_text(f"{ed25519[0]} {' '.join(rsa)}\n{' '.join(ed25519)}\n")
    sshd.write_target(tmp_path / "targets", "trusted", tmp_path / "w1")
    sshd.write_target(tmp_path / "targets", "scanned", tmp_path / "w2",
                      known_hosts=str(scanned))
    names = ["trusted", "scanned"]
    if peer_login:
        sshd.write_target(tmp_path / "targets", "peer", Path("/tmp"), user=peer_login)
        names.append("peer")
    boards = [SshBoard(load_target(name, tmp_path / "targets")) for name in names]
    try:
        kinds = [b.connection.client.get_transport().get_remote_server_key().get_name()
                 for b in boards]
        assert kinds[:2] == ["ssh-ed25519", "ssh-rsa"]
        assert len({b.identity() for b in boards}) == 1
        for holder in boards:
            with board_lock(holder, seconds=60) as owner:
                for other in boards:
                    if other is not holder:
                        with pytest.raises(BoardBusyError, match="locked by"):
                            with board_lock(other, seconds=60):
                                pass
            assert owner
        if peer_login:  # the peer's edge wrote into the lease folder root's edge made
            folder = lease_folder(boards[0])
            assert oct(folder.stat().st_mode & 0o7777) == "0o777"
            assert oct(folder.parent.stat().st_mode & 0o7777) == "0o1777"
    finally:
        for board in boards:
            board.close()


def test_the_local_board_and_an_ssh_login_to_this_machine_share_one_name(
        sshd: Sshd, tmp_path: Path) -> None:
    sshd.write_target(tmp_path / "targets", "lab", tmp_path / "board")
    with SshBoard(load_target("lab", tmp_path / "targets")) as remote:
        assert remote.identity() == LocalBoard(local_target(tmp_path)).identity()
        assert remote.lease_root() == str(sshd.lease_root)


# --- fail closed -------------------------------------------------------------------------


def test_an_owner_file_that_cannot_be_read_is_never_a_free_board(tmp_path: Path) -> None:
    board = LocalBoard(local_target(tmp_path))
    owner = lease_folder(board) / "owner"
    owner.parent.mkdir(parents=True)
    owner.mkdir()  # not a file: sed fails, which used to read as "no expiry": free
    with pytest.raises(InfrastructureError, match=r"cannot read the lease file .*owner"):
        with board_lock(board, seconds=60):
            pass
    assert owner.is_dir() and not list(owner.iterdir())
    owner.rmdir()
    owner.write_text("someone\n")  # no expiry line
    with pytest.raises(InfrastructureError, match="is not a lease"):
        with board_lock(board, seconds=60):
            pass
    assert owner.read_text() == "someone\n"


def broken_dev_null_board(target: Target, home: Path) -> LocalBoard:
    """A local board whose commands see a read-only regular file as /dev/null, in a mount
    namespace of their own (this machine's /dev/null is never touched)."""
    fake = home / "not-a-device"
    fake.write_text("")

    class Broken(LocalBoard):
        def run(self, command: str, *, timeout: float | None = None) -> Result:
            wrapped = (f"mount --bind {shlex.quote(str(fake))} /dev/null && "
                       'mount -o remount,ro,bind /dev/null && exec sh -c "$0"')
            return super().run("exec unshare --mount --propagation private sh -c "
                               f"{shlex.quote(wrapped)} {shlex.quote(command)}",
                               timeout=timeout)

    return Broken(target)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare(1) for a private mount namespace")
def test_a_broken_dev_null_is_named_and_never_reads_as_a_free_board(tmp_path: Path) -> None:
    target = local_target(tmp_path)
    board = broken_dev_null_board(target, tmp_path)
    assert board.run("[ -c /dev/null ] || echo broken").stdout == b"broken\n"
    assert Path("/dev/null").is_char_device()
    with pytest.raises(InfrastructureError, match="/dev/null on the board is not a character "
                                                  "device") as raised:
        with board_lock(board, seconds=60):
            pass
    assert "flock" not in str(raised.value)
    # Held by another job meanwhile: still an error, never a take-over.
    with board_lock(LocalBoard(target), seconds=60) as owner:
        with pytest.raises(InfrastructureError, match="/dev/null"):
            with board_lock(board, seconds=60):
                pass
        assert (lease_folder(board) / "owner").read_text().startswith(owner)


def test_a_board_without_flock_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    for folder in ("/usr/local/bin", "/usr/bin", "/bin"):
        for tool in Path(folder).iterdir() if Path(folder).is_dir() else ():
            if tool.name != "flock" and not (tools / tool.name).exists():
                (tools / tool.name).symlink_to(tool)
    monkeypatch.setenv("PATH", str(tools))
    with pytest.raises(InfrastructureError, match=r"flock\(1\) is not installed"):
        with board_lock(LocalBoard(local_target(tmp_path)), seconds=60):
            pass


def test_a_failed_release_is_one_warning_line(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    board = LocalBoard(local_target(tmp_path))

    def dropped(command: str, *, timeout: float | None = None) -> Result:
        raise InfrastructureError("SSH to here: the connection dropped")

    with caplog.at_level(logging.WARNING, logger="toolkit.lock"):
        with board_lock(board, seconds=60):
            board.run = dropped  # type: ignore[method-assign]
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1, warned
    assert "could not release the lease on here" in warned[0]
    assert "connection dropped" in warned[0] and "\n" not in warned[0]
