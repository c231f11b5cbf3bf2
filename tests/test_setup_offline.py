"""Boards without the package index: named offline in seconds, set up from a wheelhouse
the host downloaded for the board's own platform, and never left with a broken venv.

The offline board is a loopback sshd whose sessions get ``PIP_INDEX_URL`` of a closed
loopback port and no pip configuration files (sshd's ``SetEnv``), so the board's pip
can reach no index at all.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.boards.board import SshBoard
from toolkit.boards.bootstrap import VENVS, setup, venv_sharers
from toolkit.boards.lease import board_lock
from toolkit.boards.targets import load_target
from toolkit.boards.wheelhouse import (
    BoardPlatform,
    download_command,
    offline_cause,
    platform_from_facts,
)
from toolkit.cli.main import main
from toolkit.errors import BoardBusyError, BoardSetupError, ExitCode

from .lab import Sshd, free_port


@pytest.fixture(scope="module")
def offline_board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    closed = free_port()
    server = Sshd.create(tmp_path_factory.mktemp("offline"), extra_config=(
        f"SetEnv PIP_CONFIG_FILE=/dev/null PIP_INDEX_URL=http://127.0.0.1:{closed}/simple",))
    yield server
    server.kill()


#: The lab target's command timeout: pip on a slow board needs it.
COMMAND_TIMEOUT = 120.0


def targets_dir(board: Sshd, tmp_path: Path, **extra: object) -> str:
    board.write_target(tmp_path / "targets", "lab", tmp_path / "board",
                       command_timeout=COMMAND_TIMEOUT, **extra)
    return str(tmp_path / "targets")


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args))


def test_setup_on_an_offline_board_says_so_in_seconds(offline_board: Sshd,
                                                      tmp_path: Path) -> None:
    folder = targets_dir(offline_board, tmp_path, runtime="tflite-runtime")
    started = time.monotonic()
    result = invoke("targets", "setup", "lab", "--targets-dir", folder)
    elapsed = time.monotonic() - started
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in result.output
    assert "offline" in message and "Connection refused" in message
    assert "edge targets wheelhouse lab -o DIR" in message
    assert "edge targets setup lab --wheelhouse DIR" in message
    # Asked before the venv is made (which alone can take a minute on a slow board).
    assert not (tmp_path / "board" / "venv").exists()
    # A hang guard, not a figure: an offline board is named at once, not after pip waited
    # out the target's command timeout (half of it is the bound: room for a loaded machine).
    assert elapsed < COMMAND_TIMEOUT / 2, elapsed


@pytest.mark.parametrize("pip_says, cause", [
    ("WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) "
     "after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection."
     "HTTPSConnection object at 0x7f>: Failed to establish a new connection: [Errno -3] "
     "Temporary failure in name resolution')': /simple/numpy/\n"
     "ERROR: No matching distribution found for numpy",
     "Temporary failure in name resolution"),
    ("after connection broken by 'NewConnectionError(\"HTTPSConnection(host='pypi.org', "
     "port=443): Failed to establish a new connection: [Errno 101] Network is unreachable\")'",
     "pypi.org: Network is unreachable"),
    ("ERROR: No matching distribution found for numpy", None),
])
def test_the_network_cause_is_read_from_pips_output(pip_says: str, cause: str | None) -> None:
    assert offline_cause(pip_says) == cause


def test_platform_tags_for_an_aarch64_glibc_236_python_311_board() -> None:
    board = platform_from_facts("pi5", {"python": [3, 11], "implementation": "cpython",
                                        "platform": "linux-aarch64", "bits": 64,
                                        "libc": "glibc 2.36"})
    assert board == BoardPlatform(python=(3, 11), arch="aarch64", glibc=(2, 36))
    tags = board.platform_tags()
    assert tags[0] == "manylinux_2_36_aarch64" and tags[-1] == "manylinux2014_aarch64"
    # tflite-runtime 2.14 is manylinux_2_34, ai-edge-litert 2.3 manylinux_2_27.
    assert {"manylinux_2_34_aarch64", "manylinux_2_27_aarch64"} <= set(tags)
    assert tags[-2] == "manylinux_2_17_aarch64" and len(tags) == 36 - 17 + 1 + 1
    command = download_command(board, ["numpy", "ai-edge-litert"], Path("w"))
    assert command[command.index("--python-version") + 1] == "3.11"
    assert command[command.index("--abi") + 1] == "cp311"
    assert command[command.index("--implementation") + 1] == "cp"
    assert "--only-binary=:all:" in command
    given = [command[i + 1] for i, word in enumerate(command) if word == "--platform"]
    assert given == tags


@pytest.mark.parametrize("facts, message", [
    ({"libc": "", "platform": "linux-aarch64"}, "not glibc"),
    ({"libc": "glibc 2.12", "platform": "linux-x86_64"}, "older than 2.17"),
    ({"implementation": "pypy"}, "CPython only"),
])
def test_boards_without_manylinux_wheels_are_named(facts: dict[str, object],
                                                   message: str) -> None:
    base: dict[str, object] = {"python": [3, 11], "implementation": "cpython",
                               "platform": "linux-x86_64", "bits": 64, "libc": "glibc 2.36"}
    with pytest.raises(BoardSetupError, match=message):
        platform_from_facts("b", {**base, **facts}).platform_tags()


def test_a_32_bit_userland_on_a_64_bit_kernel_gets_32_bit_wheels() -> None:
    board = platform_from_facts("pi", {"python": [3, 9], "implementation": "cpython",
                                       "platform": "linux-aarch64", "bits": 32,
                                       "libc": "glibc 2.31"})
    assert board.arch == "armv8l" and board.abi == "cp39"


@pytest.fixture(scope="module")
def board_wheels(offline_board: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``edge targets wheelhouse`` for the loopback board (this machine: x86_64, cp311)."""
    root = tmp_path_factory.mktemp("wheels")
    folder = targets_dir(offline_board, root, runtime="tflite-runtime")
    result = invoke("targets", "wheelhouse", "lab", "--targets-dir", folder, "-o",
                    str(root / "wheels"))
    assert result.exit_code == 0, result.output
    assert "x86_64" in result.stdout and "next: edge targets setup lab --wheelhouse" in \
        result.stdout
    return root / "wheels"


@pytest.mark.slow
@pytest.mark.parametrize("venv_options", [[], ["--system-site-packages"]])
def test_wheelhouse_then_setup_installs_on_the_offline_board(
        offline_board: Sshd, board_wheels: Path, tmp_path: Path,
        venv_options: list[str]) -> None:
    names = sorted(wheel.name for wheel in board_wheels.glob("*.whl"))
    assert any(name.startswith("numpy-1.") and "cp311" in name for name in names), names
    assert any(name.startswith("tflite_runtime-2.14.0-cp311") for name in names), names
    folder = targets_dir(offline_board, tmp_path, runtime="tflite-runtime")
    result = invoke("targets", "setup", "lab", "--targets-dir", folder, "--wheelhouse",
                    str(board_wheels), *venv_options)
    assert result.exit_code == 0, result.output
    assert "tflite-runtime 2.14.0" in result.stdout and "numpy 1." in result.stdout
    assert not (tmp_path / "board" / "wheelhouse").exists()  # removed from the board


def venv_numpy(venv: Path) -> str:
    return subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import importlib.metadata as m; print(m.version('numpy'))"],
                          check=True, capture_output=True, text=True).stdout.strip()


def leftovers(work: Path) -> list[str]:
    """Venvs setup built in ``work`` that are not the one in use (none once it is done)."""
    current = (work / "venv").resolve()
    built = work / VENVS
    return sorted(p.name for p in built.iterdir() if p.resolve() != current) \
        if built.is_dir() else []


def local_wheel(folder: Path, name: str, dependencies: list[str]) -> Path:
    """A real wheel of a tiny local project (no index needed to build it)."""
    project = folder / f"src-{name}"
    package = name.replace("-", "_")
    (project / package).mkdir(parents=True)
    (project / package / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{name}"\nversion = "1.0"\ndependencies = {dependencies!r}\n'
        .replace("'", '"'))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(folder), str(project)], check=True)
    return next(folder.glob(f"{package}-1.0-*.whl"))


@pytest.mark.slow
def test_switching_runtime_under_a_package_that_needs_numpy_2_is_refused(
        offline_board: Sshd, board_wheels: Path, tmp_path: Path) -> None:
    """The venv held numpy 2 and a package needing it (as ml-dtypes of ai-edge-litert does);
    tflite-runtime's numpy<2 downgrades it: pip installs, pip check says broken."""
    extra = tmp_path / "extra"
    extra.mkdir()
    needs = local_wheel(extra, "edge-needs-numpy2", ["numpy>=2"])
    numpy2 = extra / "numpy2"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--only-binary=:all:", "-d", str(numpy2), "numpy>=2,<2.2"], check=True)
    venv = tmp_path / "board" / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index",
                    "--find-links", str(numpy2), str(needs)], check=True)
    folder = targets_dir(offline_board, tmp_path, runtime="tflite-runtime")
    result = invoke("targets", "setup", "lab", "--targets-dir", folder, "--wheelhouse",
                    str(board_wheels))
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "would leave the venv broken" in message
    assert "edge-needs-numpy2 1.0 has requirement numpy>=2" in message
    assert message.endswith("nothing was changed")
    assert not (tmp_path / "board" / "wheelhouse").exists()
    # Nothing was changed: the venv in use still has numpy 2 under the package needing it.
    assert not venv.is_symlink() and venv_numpy(venv).startswith("2.")
    assert leftovers(tmp_path / "board") == []


@pytest.mark.parametrize("busy_wait, gave_up", [("0", "--busy-wait 0: not waiting"),
                                                ("1", "gave up after waiting 1 s")])
def test_setup_on_a_board_another_job_holds_says_busy_and_changes_nothing(
        offline_board: Sshd, tmp_path: Path, busy_wait: str, gave_up: str) -> None:
    """Setup takes the board's lease as a deploy does: pip beside a measurement skews it,
    a venv changed under a running agent breaks it."""
    folder = targets_dir(offline_board, tmp_path, runtime="tflite-runtime")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    local_wheel(wheels, "edge-setup-probe", [])
    work = tmp_path / "board"
    work.mkdir(exist_ok=True)
    before = sorted(work.rglob("*"))
    with SshBoard(load_target("lab", Path(folder))) as other, \
            board_lock(other, seconds=60) as owner:
        result = invoke("targets", "setup", "lab", "--targets-dir", folder, "--busy-wait",
                        busy_wait, "--wheelhouse", str(wheels))
    assert result.exit_code == int(ExitCode.INCOMPLETE), result.output
    last = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.output
    assert f"lab is busy: locked by {owner}" in last and gave_up in last
    if busy_wait != "0":  # said while it waited, as a deploy says it
        assert f"lab: waiting: lab is busy: locked by {owner}" in result.stderr
    assert sorted(work.rglob("*")) == before  # no venv, no pushed wheels


def test_setup_itself_takes_the_lease(offline_board: Sshd, tmp_path: Path) -> None:
    """The library call, not only the command: a held board raises before any change."""
    target = load_target("lab", Path(targets_dir(offline_board, tmp_path)))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    local_wheel(wheels, "edge-setup-probe", [])
    with SshBoard(target) as holder, board_lock(holder, seconds=60), SshBoard(target) as board:
        with pytest.raises(BoardBusyError, match="lab is busy: locked by"):
            setup(board, wheelhouse=wheels)
    assert not (tmp_path / "board" / "venv").exists()
    assert not (tmp_path / "board" / "wheelhouse").exists()


# --- a venv shared by two target files -----------------------------------------------------


def test_target_files_that_reach_one_venv_are_found_from_their_address_and_folder(
        tmp_path: Path) -> None:
    folder = tmp_path / "targets"
    folder.mkdir()

    def write(name: str, **fields: object) -> None:
        entries = {"transport": "ssh", "host": "pi.lab", "user": "pi", "work_dir": ".edge",
                   "runtime": "tflite-runtime", **fields}
        (folder / f"{name}.toml").write_text("".join(f"{k} = {v!r}\n".replace("'", '"')
                                                      for k, v in entries.items()))

    write("us")
    write("same", runtime="ai-edge-litert")
    write("spelt", work_dir="./.edge/")  # the same folder, written otherwise
    write("other-login", user="ci")  # a relative folder is in another home
    write("other-port", port=2222)
    write("other-folder", work_dir=".edge-litert")
    write("absolute", work_dir="/srv/edge")
    write("absolute-ci", work_dir="/srv/edge", user="ci")
    write("local", transport="local")
    (folder / "broken.toml").write_text("transport = [\n")
    found = [t.name for t in venv_sharers(load_target("us", folder), folder)]
    assert found == ["same", "spelt"]
    found = [t.name for t in venv_sharers(load_target("absolute", folder), folder)]
    assert found == ["absolute-ci"]


@pytest.mark.slow
def test_setup_that_would_break_another_target_on_the_same_venv_changes_nothing(
        offline_board: Sshd, board_wheels: Path, tmp_path: Path) -> None:
    """tflite-runtime 2.14 needs numpy<2, which pip check cannot see (the wheel asks only
    numpy>=1.23.2): a target switching the shared venv to a runtime that brings numpy 2
    would break the tflite-runtime target file at import. Refused, naming it."""
    work = tmp_path / "board"
    folder = Path(targets_dir(offline_board, tmp_path, runtime="tflite-runtime"))
    (folder / "lab.toml").rename(folder / "old.toml")
    result = invoke("targets", "setup", "old", "--targets-dir", str(folder), "--wheelhouse",
                    str(board_wheels))
    assert result.exit_code == 0, result.output
    venv = work / "venv"
    assert venv.is_symlink() and venv_numpy(venv).startswith("1.")
    built = venv.resolve()
    # Its scripts name the venv's lasting path, not the folder it was built in.
    pip = venv / "bin" / "pip"
    assert pip.read_text().startswith(f"#!{work}/venv/bin/python")
    # A runtime whose wheelhouse brings numpy 2 (a stand-in for ai-edge-litert: a local
    # wheel of that name that needs numpy>=2), for a second target file on the same venv.
    newer = tmp_path / "newer"
    newer.mkdir()
    local_wheel(newer, "ai-edge-litert", ["numpy>=2"])
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--only-binary=:all:", "-d", str(newer), "numpy>=2,<2.2"], check=True)
    (folder / "new.toml").write_text((folder / "old.toml").read_text().replace(
        '"tflite-runtime"', '"ai-edge-litert"'))
    result = invoke("targets", "setup", "new", "--targets-dir", str(folder), "--wheelhouse",
                    str(newer))
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in result.output
    assert message.startswith("edge: error: new: refused: the install would break target "
                              f"old ({folder / 'old.toml'}), which uses the same venv")
    assert "numpy 2." in message and "would not satisfy numpy<2" in message
    assert message.endswith("nothing was changed (give one of them a work_dir of its own)")
    assert venv.resolve() == built and venv_numpy(venv).startswith("1.")
    assert leftovers(work) == []
    # Without the other target file, the same setup goes through and swaps the venv.
    (folder / "old.toml").unlink()
    result = invoke("targets", "setup", "new", "--targets-dir", str(folder), "--wheelhouse",
                    str(newer))
    assert result.exit_code == 0, result.output
    assert venv.resolve() != built and not built.exists() and venv_numpy(venv).startswith("2.")
    assert leftovers(work) == []
    assert subprocess.run([str(pip), "--version"], check=False,
                          capture_output=True).returncode == 0


def test_setup_that_fails_midway_leaves_the_venv_as_it_was(offline_board: Sshd,
                                                           tmp_path: Path) -> None:
    """pip fails (a wheelhouse without numpy): the venv in use is not touched, and the one
    being built is removed."""
    folder = targets_dir(offline_board, tmp_path, runtime="tflite-runtime")
    venv = tmp_path / "board" / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    before = sorted(str(p.relative_to(venv)) for p in venv.rglob("*"))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    local_wheel(wheels, "edge-setup-probe", [])
    result = invoke("targets", "setup", "lab", "--targets-dir", folder, "--wheelhouse",
                    str(wheels))
    assert result.exit_code == 2, result.output
    assert "pip failed" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not venv.is_symlink()
    assert sorted(str(p.relative_to(venv)) for p in venv.rglob("*")) == before
    assert leftovers(tmp_path / "board") == []
