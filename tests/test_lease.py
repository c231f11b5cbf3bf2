"""The board lease: one per physical board, fenced, and closed on anything it cannot read.

- one board reached with an rsa-first and an ed25519 known_hosts, and by two logins, is one
  lease (it was one per negotiated host key and per login's home);
- a host paused past its lease's expiry stops itself when it resumes and starts no agent
  (it used to start one over the new holder's job, then kill that job through a shared
  ``job.pid``); an agent measures only while the lease names its token;
- an owner file that cannot be read, a broken /dev/null, a missing flock(1) are errors that
  name what is wrong, never a free board; a failed release is one warning line;
- expiry is measured on the board's uptime and boot id: a board clock stepped an hour
  forward (NTP on a board without a real-time clock) ends no job (it used to let the next
  job take the board over), one stepped back keeps no dead host's lease, a reboot frees it.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolkit.boards.board import LocalBoard, SshBoard
from toolkit.boards.lab import board_status
from toolkit.boards.lease import board_lock, hold_lease, lease_dir, read_lease
from toolkit.boards.ssh import Result
from toolkit.boards.targets import Target, load_target
from toolkit.errors import BoardBusyError, InfrastructureError
from toolkit.run.runner import JobRunner

from .fakeboard import FakeBoard
from .lab import Sshd
from .test_ssh_netns import job_for

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
    board = FakeBoard(local_target(tmp_path), tmp_path / "board")
    with caplog.at_level(logging.WARNING, logger="toolkit.boards.lease"):
        with board_lock(board, seconds=60):
            board.script("", error=InfrastructureError("SSH to here: the connection dropped"))
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1, warned
    assert "could not release the lease on here" in warned[0]
    assert "connection dropped" in warned[0] and "\n" not in warned[0]


# --- fencing -----------------------------------------------------------------------------


def agent_cmdlines(marker: str) -> list[str]:
    """Command lines of live processes that mention ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in line and state != "Z":
            found.append(line)
    return found


def agents_of(job_id: str) -> list[str]:
    """Live agents (argv ``python agent-<hash>.pyz run cache/job-<job_id>.json ...``) of one
    job, not the shell whose command line would start one once it checked the lease."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and any(
                word.endswith(".pyz") and argv[i + 1:i + 3] == ["run", f"cache/job-{job_id}.json"]
                for i, word in enumerate(argv)):
            found.append(" ".join(argv))
    return found


#: A job whose host stops itself (SIGSTOP) at one point of the job, as a paused laptop or
#: VM would: ``build`` is right after it took the lease, ``prune`` after its uploads. The
#: lease length is argv[1].
PAUSED_HOST = """
import json, os, signal, sys
from pathlib import Path
import toolkit.boards.lease as lock, toolkit.run.runner as runner
from toolkit.boards.targets import load_target
lock.LEASE_SECONDS = float(sys.argv[1])
name = {"build": "build_agent_package", "prune": "prune_cache"}[sys.argv[4]]
real = getattr(runner, name)
def paused(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGSTOP)
    return real(*args, **kwargs)
setattr(runner, name, paused)
job = json.loads(sys.argv[2])
files = {name: Path(path) for name, path in json.loads(sys.argv[3]).items()}
try:
    runner.JobRunner(load_target("local")).run_job(job, files)
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
    sys.exit(3)
print("measured")
"""


def local_job(job: dict[str, object], files: dict[str, Path]) -> list[str] | str:
    """The statuses of ``job``'s variants run on the local board, or its error in one line
    (the tests run it in a thread, beside what they do to the board)."""
    try:
        out = JobRunner(load_target("local")).run_job(job, files)
    except Exception as exc:  # noqa: BLE001  (reported, not raised)
        return f"{type(exc).__name__}: {exc}"
    return [v["status"] for v in json.loads(out)["variants"]]


def stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def paused_host_trial(model: Path, name: str, pause_at: str = "build",
                      lease_seconds: float = 2.0) -> dict[str, object]:
    """One paused-host scenario on the local board (``$EDGE_LEASE_ROOT`` and
    ``$EDGE_LOCAL_BOARD`` name this trial's folders): a job pauses itself at ``pause_at``
    right after taking a lease of ``lease_seconds``; once the lease is over a second job
    takes over and measures; the first is resumed while the second measures.

    Returns the paused job's exit status and stderr, ``overlap`` (its agent was ever seen
    running), ``holder_killed`` (the second job's agent was gone when it should still have
    run) and ``holder`` (the second job's statuses, or its error).
    """
    paused_job, files = job_for(model, f"{name}-paused", seconds=1)
    job, _ = job_for(model, f"{name}-holder", seconds=4)
    paused = subprocess.Popen(
        [sys.executable, "-c", PAUSED_HOST, str(lease_seconds), json.dumps(paused_job),
         json.dumps({n: str(path) for n, path in files.items()}), pause_at],
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    seen: list[str] = []
    watching = threading.Event()

    def watch() -> None:  # any agent of the paused job, at any time
        while not watching.is_set():
            seen.extend(agents_of(f"{name}-paused"))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    answer: dict[str, object] = {}

    holder = threading.Thread(target=lambda: answer.update(holder=local_job(job, files)))
    try:
        deadline = time.monotonic() + 60
        while not stopped(paused.pid):
            assert paused.poll() is None, paused.communicate()
            assert time.monotonic() < deadline, "the paused host never took the lease"
            time.sleep(0.02)
        time.sleep(int(lease_seconds) + 2.5)  # its lease (one more second on the board) is over
        holder.start()
        deadline = time.monotonic() + 60
        while not agents_of(f"{name}-holder"):
            assert holder.is_alive() and time.monotonic() < deadline, answer
            time.sleep(0.02)
        time.sleep(0.5)
        os.kill(paused.pid, signal.SIGCONT)
        _, err = paused.communicate(timeout=60)
        answer["holder_killed"] = not agents_of(f"{name}-holder")
        holder.join(120)
    finally:
        if paused.poll() is None:
            os.kill(paused.pid, signal.SIGCONT)
            paused.kill()
            paused.wait()
        watching.set()
        watcher.join()
    return {"status": paused.returncode, "stderr": err.decode(errors="replace"),
            "overlap": sorted(set(seen)), **answer}


@pytest.mark.slow
@pytest.mark.parametrize("pause_at", ["build", "prune"])
def test_a_host_paused_past_its_lease_stops_itself_and_starts_no_agent(
        tflite_copy: Path, pause_at: str) -> None:
    outcome = paused_host_trial(tflite_copy, "t", pause_at)
    assert outcome["status"] == 3, outcome
    assert "LeaseLostError: the lease on local passed to another job" in str(outcome["stderr"])
    assert (outcome["overlap"], outcome["holder_killed"], outcome["holder"]) == (
        [], False, ["ok"])
    log = (lease_folder(LocalBoard(load_target("local"))) / "lock.log").read_text()
    assert [line.split(" ", 2)[1] for line in log.splitlines()] == [
        "acquire", "takeover", "release"]


def run_agent(tmp_path: Path, job: dict[str, object], files: dict[str, Path], owner: Path,
              token: str, python: str = sys.executable) -> subprocess.Popen[bytes]:
    work = tmp_path / "agent"
    work.mkdir(exist_ok=True)
    for name, path in files.items():
        shutil.copyfile(path, work / name)
    (work / "job.json").write_text(json.dumps(job))
    return subprocess.Popen([python, "-m", "device_agent", "run", "job.json",
                             "--lease-file", str(owner), "--lease-token", token],
                            cwd=work, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_an_agent_measures_only_while_the_lease_names_its_token(
        tflite_copy: Path, tmp_path: Path, agent_python: str) -> None:
    owner = tmp_path / "owner"
    owner.write_text("someone else\n99\n1\nTHEIRS\n")
    job, files = job_for(tflite_copy, "fenced", seconds=20)
    agent = run_agent(tmp_path, job, files, owner, "OURS", agent_python)
    out, err = agent.communicate(timeout=60)
    assert (agent.returncode, out) == (76, b""), err
    assert b"no longer this job's" in err
    # Taken over while measuring: the agent and its child stop within a second or so.
    owner.write_text("us\n99\n1\nOURS\n")
    agent = run_agent(tmp_path, job, files, owner, "OURS", agent_python)
    time.sleep(4)  # started, and measuring its 20 s
    assert agent.poll() is None, agent.communicate()
    owner.write_text("another job\n99\n1\nTHEIRS\n")
    taken = time.monotonic()
    out, err = agent.communicate(timeout=30)
    assert time.monotonic() - taken < 5
    assert (agent.returncode, out) == (76, b""), err


def test_each_acquire_takes_a_new_token_and_a_pid_file_of_its_own(tmp_path: Path) -> None:
    board = LocalBoard(local_target(tmp_path))
    tokens = []
    for _ in range(2):
        with hold_lease(board, seconds=60) as held:
            owner = (lease_folder(board) / "owner").read_text().splitlines()
            assert owner[3] == held.token and len(held.token) == 32
            assert held.pid_file == f"{lease_folder(board)}/job-{held.token}.pid"
            tokens.append(held.token)
    assert tokens[0] != tokens[1]


# --- expiry on a clock that does not step ---------------------------------------------------


def stepping_date(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put a ``date`` on the local board's PATH that runs an hour ahead once the returned
    file exists: NTP stepping the clock of a board without a real-time clock."""
    real = shutil.which("date")
    assert real is not None
    tools = tmp_path / "clock-bin"
    tools.mkdir()
    stepped = tmp_path / "clock-stepped"
    (tools / "date").write_text(
        f'#!/bin/sh\nif [ -e {shlex.quote(str(stepped))} ]; then\n'
        f'  exec {real} -d "@$(( $({real} +%s) + 3600 ))" "$@"\nfi\nexec {real} "$@"\n')
    (tools / "date").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    return stepped


def board_date(board: LocalBoard) -> int:
    return int(board.run("date +%s").stdout)


def test_a_clock_stepped_an_hour_forward_does_not_end_a_held_lease(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Measured on the date, the step made the lease look 59 minutes over, and the next
    job took the board over."""
    stepped = stepping_date(tmp_path, monkeypatch)
    board = LocalBoard(local_target(tmp_path))
    with hold_lease(board, seconds=60) as held:
        stepped.touch()
        assert board_date(board) > time.time() + 3500  # the board's clock is an hour ahead
        with pytest.raises(BoardBusyError, match=f"locked by {held.owner}"):
            with board_lock(LocalBoard(local_target(tmp_path)), seconds=60):
                pass
        lease, clock = read_lease(board)
        assert lease is not None and lease.token == held.token and lease.live
        assert lease.expires < clock.wall  # by the date alone it would be over
        held.confirm()  # still ours
    assert not held.lost.is_set()
    log = (lease_folder(board) / "lock.log").read_text().splitlines()
    assert [line.split(" ", 2)[1] for line in log] == ["acquire", "release"]


def owner_lines(board: LocalBoard, *, until_wall: int, boot: str, until_uptime: int) -> str:
    return f"someone@elsewhere pid 1\n{until_wall}\n{until_wall - 60}\nTHEIRS\n{boot}\n" \
           f"{until_uptime}\n"


def test_a_lease_ends_by_the_boards_uptime_and_with_its_boot_never_by_its_date(
        tmp_path: Path) -> None:
    board = LocalBoard(local_target(tmp_path))
    folder = lease_folder(board)
    folder.mkdir(parents=True)
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    uptime = int(float(Path("/proc/uptime").read_text().split()[0]))
    now = int(time.time())
    owner = folder / "owner"
    # The date says it ended an hour ago (a clock stepped forward): uptime says it holds.
    owner.write_text(owner_lines(board, until_wall=now - 3600, boot=boot,
                                 until_uptime=uptime + 60))
    with pytest.raises(BoardBusyError, match="locked by someone@elsewhere"):
        with board_lock(board, seconds=60):
            pass
    assert board_status(local_target(tmp_path)).state == "held"
    # The date says another hour (a clock stepped back): uptime says it is over.
    owner.write_text(owner_lines(board, until_wall=now + 3600, boot=boot,
                                 until_uptime=uptime - 5))
    assert board_status(local_target(tmp_path)).state == "free"
    with board_lock(board, seconds=60):
        pass
    # From an earlier boot: over, whatever its uptime said (its jobs died with the reboot).
    owner.write_text(owner_lines(board, until_wall=now + 3600, boot="another-boot",
                                 until_uptime=uptime + 3600))
    with board_lock(board, seconds=60) as ours:
        assert owner.read_text().splitlines()[0] == ours
    log = (folder / "lock.log").read_text().splitlines()
    assert [line.split(" ", 2)[1] for line in log] == ["takeover", "release"] * 2
    # An older edge's lease (four lines) still ends by its date.
    owner.write_text(f"old edge\n{now + 3600}\n{now}\nOLD\n")
    with pytest.raises(BoardBusyError, match="locked by old edge"):
        with board_lock(board, seconds=60):
            pass


@pytest.mark.parametrize("text, message", [
    ("someone\n{future}\n1\nTOKEN\n{boot}\n", "line 6 is not an uptime"),
    ("someone\n{future}\n1\nTOKEN\n{boot}\nsoon\n", "line 6 is not an uptime"),
])
def test_a_lease_with_a_broken_uptime_line_is_never_a_free_board(
        tmp_path: Path, text: str, message: str) -> None:
    board = LocalBoard(local_target(tmp_path))
    owner = lease_folder(board) / "owner"
    owner.parent.mkdir(parents=True)
    written = text.format(future=int(time.time()) - 10,
                          boot=Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    owner.write_text(written)
    with pytest.raises(InfrastructureError, match=message):
        with board_lock(board, seconds=60):
            pass
    assert owner.read_text() == written
    with pytest.raises(InfrastructureError, match="is not a lease"):
        read_lease(board)


def test_a_login_shell_that_prints_does_not_break_the_lease(tmp_path: Path) -> None:
    """``edge lab status`` read the first line of the answer as the board's clock.

    (The board's identity is read by :mod:`toolkit.boards.board`, quietly here.)"""
    quiet = LocalBoard(local_target(tmp_path))

    class Chatty(LocalBoard):
        def identity(self) -> str:
            return quiet.identity()

        def lease_root(self) -> str:
            return quiet.lease_root()

        def run(self, command: str, *, timeout: float | None = None) -> Result:
            return super().run(f"echo 'Welcome to the lab board!'; echo 42; {command}",
                               timeout=timeout)

    board = Chatty(local_target(tmp_path))
    assert read_lease(board)[0] is None
    with board_lock(board, seconds=60) as owner:
        lease, _ = read_lease(board)
        assert lease is not None and lease.owner == owner and lease.live
        with pytest.raises(BoardBusyError, match=f"locked by {owner}$"):
            with board_lock(Chatty(local_target(tmp_path)), seconds=60):
                pass


@pytest.mark.slow
def test_a_board_clock_stepped_an_hour_forward_mid_job_does_not_end_the_job(
        tflite_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deploy measuring on the local board; NTP steps the board's clock an hour forward;
    the next job that asks for the board is told it is busy, and the first one finishes."""
    stepped = stepping_date(tmp_path, monkeypatch)
    job, files = job_for(tflite_copy, "stepped", seconds=4)
    answer: dict[str, object] = {}
    first = threading.Thread(target=lambda: answer.update(statuses=local_job(job, files)))
    first.start()
    deadline = time.monotonic() + 60
    while not agents_of("stepped"):
        assert first.is_alive() and time.monotonic() < deadline, answer
        time.sleep(0.02)
    stepped.touch()
    board = LocalBoard(load_target("local"))
    assert board_date(board) > time.time() + 3500
    with pytest.raises(BoardBusyError, match="local is busy"):
        with board_lock(board, seconds=60):
            pass
    assert agents_of("stepped")  # still measuring
    first.join(120)
    assert answer["statuses"] == ["ok"]
    log = (lease_folder(board) / "lock.log").read_text().splitlines()
    assert [line.split(" ", 2)[1] for line in log] == ["acquire", "release"]
