"""The SSH transport against a real OpenSSH server on loopback."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.boards.ssh import Connection, fingerprint
from toolkit.boards.targets import Target, load_target
from toolkit.boards.transfer import upload
from toolkit.cli.main import main
from toolkit.errors import (
    AuthError,
    HostKeyError,
    InfrastructureError,
    ResultError,
    TransferError,
)

from .lab import Sshd, keygen

FAST = ["--min-runs", "20", "--min-seconds", "0.1"]


def lab_target(sshd: Sshd, tmp_path: Path, name: str = "lab", **extra: object) -> Target:
    sshd.write_target(tmp_path / "targets", name, tmp_path / "board", **extra)
    return load_target(name, tmp_path / "targets")


def test_run_returns_output_and_status(sshd: Sshd, tmp_path: Path) -> None:
    with Connection(lab_target(sshd, tmp_path)) as board:
        result = board.run("echo out; echo err >&2; exit 3")
    assert (result.exit_status, result.stdout, result.stderr) == (3, b"out\n", b"err\n")


def test_command_time_limit(sshd: Sshd, tmp_path: Path) -> None:
    with Connection(lab_target(sshd, tmp_path)) as board, \
            pytest.raises(InfrastructureError, match=r"did not finish within 0\.5 s"):
        board.run("sleep 30", timeout=0.5)


def test_a_flood_of_output_is_cut_off_not_held_in_memory(
        sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("toolkit.boards.ssh.MAX_STDOUT_BYTES", 100_000)
    with Connection(lab_target(sshd, tmp_path)) as board, \
            pytest.raises(ResultError, match="printed over 100000 bytes"):
        board.run("yes")


def test_upload_is_verified_and_not_repeated(sshd: Sshd, tmp_path: Path) -> None:
    data = b"model bytes" * 1000
    name = hashlib.sha256(data).hexdigest() + ".tflite"
    folder = str(tmp_path / "board" / "cache")
    with Connection(lab_target(sshd, tmp_path)) as board:
        assert upload(board, folder, name, data) is True
        assert upload(board, folder, name, data) is False
    assert (tmp_path / "board" / "cache" / name).read_bytes() == data
    assert [p.name for p in (tmp_path / "board" / "cache").iterdir()] == [name]


class _CorruptingConnection(Connection):
    """Flips one byte on the way, as a broken link or disk would."""

    def put(self, source, remote_path: str) -> int:  # type: ignore[no-untyped-def]
        data = bytearray(source.read())
        data[len(data) // 2] ^= 0xFF
        return super().put(io.BytesIO(bytes(data)), remote_path)


def test_corrupted_upload_is_never_placed(sshd: Sshd, tmp_path: Path) -> None:
    data = bytes(range(256)) * 100
    name = hashlib.sha256(data).hexdigest() + ".tflite"
    folder = tmp_path / "board" / "cache"
    with _CorruptingConnection(lab_target(sshd, tmp_path)) as board, \
            pytest.raises(TransferError, match="sha256 mismatch"):
        upload(board, str(folder), name, data)
    assert list(folder.iterdir()) == []


def test_unknown_host_key_is_refused_before_anything_runs(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    target = lab_target(sshd, tmp_path, known_hosts=str(empty))
    marker = tmp_path / "ran"
    with pytest.raises(HostKeyError, match="edge targets trust lab") as caught:
        Connection(target).run(f"touch {marker}")
    assert caught.value.exit_code == 2
    assert "\n" not in str(caught.value)
    assert not marker.exists() and empty.read_text() == ""


def test_changed_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other_host_key").split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    before = known.read_bytes()
    marker = tmp_path / "ran"
    with pytest.raises(HostKeyError, match="CHANGED"):
        Connection(lab_target(sshd, tmp_path, known_hosts=str(known))).run(f"touch {marker}")
    assert not marker.exists() and known.read_bytes() == before


def test_wrong_client_key_is_an_auth_error(sshd: Sshd, tmp_path: Path) -> None:
    keygen(tmp_path / "stranger")
    target = lab_target(sshd, tmp_path, identity=str(tmp_path / "stranger"))
    with pytest.raises(AuthError):
        Connection(target).run("true")


def test_closed_port_is_an_infrastructure_error(own_sshd: Sshd, tmp_path: Path) -> None:
    target = lab_target(own_sshd, tmp_path)
    own_sshd.kill()
    # Held, bound and never listening: no other test's server can take the freed port (one
    # did, under parallel suites, and answered with EOF instead of a refusal).
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # The killed server's sessions may hold the port a moment longer (seen beside a CPU
        # burner: EADDRINUSE): wait until it is free, then hold it.
        deadline = time.monotonic() + 60
        while True:
            try:
                holder.bind((own_sshd.address, own_sshd.port))
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        with pytest.raises(InfrastructureError, match="cannot reach"):
            Connection(target).run("true")


def test_trust_records_the_key_only_when_the_fingerprint_matches(
        sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "kh"
    lab_target(sshd, tmp_path, known_hosts=str(known))
    runner = CliRunner()
    args = ["targets", "trust", "lab", "--targets-dir", str(tmp_path / "targets")]
    wrong = runner.invoke(main, [*args, "--fingerprint", "SHA256:nope"])
    assert wrong.exit_code == 2 and "nothing recorded" in wrong.stderr
    assert not known.exists()
    declined = runner.invoke(main, args, input="n\n")
    assert declined.exit_code == 2 and not known.exists()
    import paramiko
    host_key = paramiko.PKey.from_path(sshd.folder / "host_ed25519")
    expected = fingerprint(host_key)
    assert expected in declined.stdout
    good = runner.invoke(main, [*args, "--fingerprint", expected])
    assert good.exit_code == 0, good.output
    with Connection(load_target("lab", tmp_path / "targets")) as board:
        assert board.run("true").ok
    again = runner.invoke(main, [*args, "--fingerprint", expected])
    assert again.exit_code == 0 and "already trusted" in again.stdout


@pytest.mark.slow
def test_deploy_over_ssh_gives_the_local_report_fields(sshd: Sshd, tmp_path: Path,
                                                     tflite_copy: Path) -> None:
    lab_target(sshd, tmp_path, name="lab")
    runner = CliRunner()
    documents = {}
    for name in ("lab", "local"):
        result = runner.invoke(main, ["deploy", str(tflite_copy), "--target", name,
                                      "--targets-dir", str(tmp_path / "targets"),
                                      "-o", str(tmp_path / f"out-{name}"), "--json", *FAST],
                               catch_exceptions=False)
        assert result.exit_code == 0, result.output
        documents[name] = json.loads(result.stdout)
    remote, local = documents["lab"]["results"], documents["local"]["results"]
    assert [r["variant"] for r in remote] == [r["variant"] for r in local] == ["model.tflite"]
    # earlier_attempts is there only when a run was INVALID for its spread and measured
    # again, which a loaded machine decides, not the transport.
    retried = {"earlier_attempts"}
    for ssh_record, local_record in zip(remote, local, strict=True):
        assert set(ssh_record) - retried == set(local_record) - retried
        assert ssh_record["status"] == "ok" and ssh_record["target"] == "lab"
        assert ssh_record["latency_ms"]["p50"] > 0
    # Only the verified artifacts and their output-check references stay in the cache:
    # no job file, no partial upload.
    cache = tmp_path / "board" / "cache"
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        name for r in remote for name in (f"{r['sha256']}.tflite", f"{r['sha256']}.ref.npz"))
    agents = list((tmp_path / "board").glob("agent-*.pyz"))
    assert len(agents) == 1


def test_deploy_to_an_unknown_host_is_one_line_exit_2(sshd: Sshd, tmp_path: Path,
                                                      tflite_copy: Path) -> None:
    empty = tmp_path / "kh"
    empty.write_text("")
    lab_target(sshd, tmp_path, known_hosts=str(empty))
    result = CliRunner().invoke(main, ["deploy", str(tflite_copy), "--target", "lab",
                                       "--targets-dir", str(tmp_path / "targets"),
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "edge targets trust lab" in lines[0]
    assert not (tmp_path / "board").exists() and empty.read_text() == ""
    assert not (tmp_path / "out" / "runs").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_is_an_infrastructure_error_and_leaves_nothing(
        sshd: Sshd, tmp_path: Path) -> None:
    work = tmp_path / "small"
    work.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(work)], check=True)
    try:
        data = bytes(range(256)) * 8192  # 2 MiB into 1 MiB
        name = hashlib.sha256(data).hexdigest() + ".tflite"
        with Connection(lab_target(sshd, tmp_path)) as board, \
                pytest.raises(InfrastructureError):
            upload(board, str(work), name, data)
        assert list(work.iterdir()) == []
    finally:
        subprocess.run(["umount", str(work)], check=True)


def test_trust_refuses_to_overwrite_a_changed_key(sshd: Sshd, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other_host_key").split()
    known = tmp_path / "kh"
    known.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    before = known.read_bytes()
    lab_target(sshd, tmp_path, known_hosts=str(known))
    result = CliRunner().invoke(main, ["targets", "trust", "lab", "--targets-dir",
                                       str(tmp_path / "targets")], input="y\n")
    assert result.exit_code == 2 and "ssh-keygen -R" in result.stderr
    assert known.read_bytes() == before
