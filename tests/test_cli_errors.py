"""Mistakes that used to end in a traceback: each is one line on stderr and exit 2 (or 3).

A model file's data function yielding the wrong form, and every ``-o``/``--junit``/
``--markdown`` output onto a location that cannot be written. Read-only locations are
made for real (a tmpfs mounted read-only: root writes through chmod 0555, not through a
read-only mount), and so is a full disk (a tiny tmpfs).
"""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.cli.main import main
from toolkit.results.store import ResultsStore

from .records import make_run, record


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def one_error_line(result, exit_code: int) -> str:
    """The single ``edge: error:`` line of a command that failed with ``exit_code``."""
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge: error: "), result.stderr
    return lines[0]


MODEL = """
import torch

def build_model():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 2)

def example_input():
    return (torch.zeros(1, 4),)

def {name}():
    for _ in range(8):
        {body}
"""


@pytest.mark.parametrize(("command", "name", "body", "what"), [
    ("compress", "calibration_data", "yield torch.rand(1, 4)",
     "calibration_data() yielded a Tensor of shape (1, 4)"),
    ("deploy", "calibration_data", "yield torch.rand(1, 4)",
     "calibration_data() yielded a Tensor of shape (1, 4)"),
    ("deploy", "eval_data", "yield torch.rand(1, 4), 1",
     "eval_data() yielded a pair whose inputs are a Tensor of shape (1, 4), not a tuple"),
    ("compress", "train_data", "yield (torch.rand(1, 4),)",
     "train_data() yielded a tuple of 1 items"),
    ("compress", "calibration_data", "raise RuntimeError('no dataset here')",
     "calibration_data() failed: RuntimeError: no dataset here"),
])
def test_a_data_function_of_the_wrong_form_is_named_in_one_line(
        command: str, name: str, body: str, what: str, tmp_path: Path) -> None:
    model = tmp_path / "model.py"
    model.write_text(MODEL.format(name=name, body=body))
    out = tmp_path / "out"
    args = ["-o", str(out), "--recipe", "fp32,int8"]
    if command == "deploy":
        args += ["--conversion-cache", str(tmp_path / "cache")]
    line = one_error_line(invoke(command, str(model), *args), 2)
    assert line == f"edge: error: {model}: {what}" + (
        "" if what.endswith("failed: RuntimeError: no dataset here") else
        "; it must yield (inputs, label) pairs, inputs a tuple of tensors as example_input() "
        "returns and label an int or None, e.g. `yield (image,), label`")
    assert not out.exists()


def mount_tmpfs(folder: Path, options: str) -> None:
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root needed): {mounted.stderr.strip()}")


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "read-only"
    mount_tmpfs(folder, "size=1m,ro")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def full_folder(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "full"
    mount_tmpfs(folder, "size=16k")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def store_file(tmp_path: Path) -> Path:
    path = tmp_path / "results.sqlite"
    with ResultsStore(path) as store:
        store.add_run(make_run("r1", [record("fp32", n=20_000)],
                               created_at="2026-01-01T00:00:00+00:00"))
        store.add_run(make_run("r2", [record("fp32", n=20_000, seed=1)],
                               created_at="2026-01-02T00:00:00+00:00"))
    return path


def writing(command: str, output: Path, store: Path) -> list[str]:
    """``edge COMMAND`` writing its output to ``output``."""
    return {
        "runs export": ["runs", "export", "r2", "-o", str(output)],
        "report": ["report", "r2", "--format", "md", "-o", str(output)],
        "check --junit": ["check", "--baseline", "r1", "r2", "--junit", str(output)],
        "check --markdown": ["check", "--baseline", "r1", "r2", "--markdown", str(output)],
    }[command] + ["--store", str(store)]


COMMANDS = ("runs export", "report", "check --junit", "check --markdown")


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_on_a_read_only_file_system_is_one_line_exit_2(
        command: str, read_only_folder: Path, store_file: Path) -> None:
    output = read_only_folder / "out.txt"
    line = one_error_line(invoke(*writing(command, output, store_file)), 2)
    assert line == f"edge: error: cannot write {output}: Read-only file system"
    assert list(read_only_folder.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_under_a_file_is_one_line_exit_2(command: str, tmp_path: Path,
                                                   store_file: Path) -> None:
    (tmp_path / "a-file").write_text("")
    output = tmp_path / "a-file" / "out.txt"
    line = one_error_line(invoke(*writing(command, output, store_file)), 2)
    assert line == f"edge: error: cannot write {output}: Not a directory"
    assert (tmp_path / "a-file").read_text() == ""


def test_an_output_on_a_full_disk_is_one_line_exit_3_and_leaves_nothing(
        full_folder: Path, store_file: Path) -> None:
    output = full_folder / "baseline.json"
    line = one_error_line(invoke(*writing("runs export", output, store_file)), 3)
    assert line == f"edge: error: cannot write {output}: No space left on device"
    assert list(full_folder.iterdir()) == []  # the partial file is gone too


@pytest.mark.skipif(os.geteuid() != 0, reason="making a character device needs root")
@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_onto_a_character_device_leaves_it_a_device(command: str, tmp_path: Path,
                                                               store_file: Path) -> None:
    # A null device of the test's own: renaming over the real /dev/null breaks the machine.
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    result = invoke(*writing(command, null, store_file))
    assert result.exit_code in (0, 1), result.output  # check: a regression or not
    assert stat.S_ISCHR(null.stat().st_mode) and null.stat().st_rdev == os.makedev(1, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null", "results.sqlite"]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_onto_a_fifo_is_written_into_it(command: str, tmp_path: Path,
                                                  store_file: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = invoke(*writing(command, fifo, store_file))
    reader.join(timeout=30)
    assert result.exit_code in (0, 1), result.output
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert received and len(received[0]) > 100


def test_an_output_onto_a_folder_is_one_line_exit_2(tmp_path: Path) -> None:
    from toolkit.cli.runs import write_output
    from toolkit.errors import OutputError

    with pytest.raises(OutputError, match="it is a folder"):
        write_output(tmp_path, "text")
