"""Boards on Python 3.8 (JetPack 5): the agent's fd passing, the host's floor, their wheels.

The deploys run a real agent under pyenv's 3.8 with the last cp38 runtimes
(:func:`tests.conftest.python38_board`); the rest are unit tests of what the host decides.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from device_agent.proc import recv_fds, send_fds
from toolkit.boards.bootstrap import BoardPython, setup
from toolkit.boards.targets import Target
from toolkit.boards.wheelhouse import (
    REQUIREMENTS,
    BoardPlatform,
    board_requirements,
    download_command,
    requirements,
)
from toolkit.cli.main import main
from toolkit.errors import BoardSetupError

from .fakeboard import FakeBoard, fake_target
from .test_onnx import saved_onnx, tiny_onnx

CLI_FAST = ["--min-runs", "10", "--min-seconds", "0.05"]


def orin(runtime: str) -> Target:
    """A JetPack 5 board's target (Jetson Orin) preferring ``runtime``."""
    return Target(name="orin", transport="ssh", host="orin", runtime=runtime)


def test_fds_sent_with_a_message_arrive_open_on_the_other_side() -> None:
    ours, theirs = socket.socketpair()
    read, write = os.pipe()
    try:
        send_fds(ours, b"fp32\n", [write, read])
        message, fds = recv_fds(theirs, 65536, 2)
        assert message == b"fp32\n" and len(fds) == 2 and not {read, write} & set(fds)
        os.write(fds[0], b"through the copy")
        assert os.read(fds[1], 100) == b"through the copy"
        for fd in fds:
            os.close(fd)
        ours.close()  # the agent's end closed: the zygote reads an empty message, no fds
        assert recv_fds(theirs, 65536, 2) == (b"", [])
    finally:
        for fd in (read, write):
            os.close(fd)
        theirs.close()


@pytest.mark.parametrize("version, problem", [
    ((3, 8, 10), None),
    ((3, 7, 16), "Python 3.7.16 is older than 3.8"),
])
def test_the_board_check_takes_python_38_and_refuses_older(
        version: tuple[int, ...], problem: str | None) -> None:
    board = BoardPython(target="orin", python="python3", version=version, numpy="1.24.4",
                        runtimes={"tflite-runtime": "2.14.0"}, runtime_preference="auto")
    assert board.missing() == ([problem] if problem else [])


def test_setup_picks_the_last_cp38_lines_on_python_38() -> None:
    auto = orin("auto")
    assert board_requirements(auto, (3, 8, 10)) == ["numpy<1.25", "tflite-runtime<=2.14.0"]
    assert board_requirements(orin("onnxruntime"), (3, 8, 10)) == [
        "numpy<1.25", "onnxruntime<=1.19.2"]
    assert board_requirements(auto, (3, 11, 2)) == REQUIREMENTS["auto"]
    # Every preference has an entry for the venv check of a target sharing the venv.
    assert set(requirements((3, 8))) == set(REQUIREMENTS)


@pytest.mark.parametrize("runtime, version, message", [
    ("ai-edge-litert", (3, 8, 10), 'orin: ai-edge-litert has no wheels for Python 3.8.10 (its '
     'oldest is 3.9): set runtime = "tflite-runtime" in the target file, or python to a 3.9 '
     'or newer'),
    ("auto", (3, 7, 5), "orin: python3 is Python 3.7.5; the agent needs 3.8 or newer: install "
     "one and set python in the target file"),
])
def test_a_python_the_runtime_has_no_wheels_for_is_one_line(
        runtime: str, version: tuple[int, ...], message: str) -> None:
    with pytest.raises(BoardSetupError) as raised:
        board_requirements(orin(runtime), version)
    assert str(raised.value) == message


def test_the_wheelhouse_of_a_jetpack_5_board_asks_for_cp38_wheels() -> None:
    jp5 = BoardPlatform(python=(3, 8), arch="aarch64", glibc=(2, 31))
    command = download_command(jp5, board_requirements(orin("auto"), jp5.python), Path("w"))
    assert command[command.index("--python-version") + 1] == "3.8"
    assert command[command.index("--abi") + 1] == "cp38"
    assert command[-2:] == ["numpy<1.25", "tflite-runtime<=2.14.0"]


def board_38(folder: Path, python: Path, runtime: str) -> Path:
    """A targets folder with ``jp5``: this machine as a board whose Python is ``python``."""
    folder.mkdir()
    (folder / "jp5.toml").write_text(f'transport = "local"\npython = "{python}"\n'
                                     f'runtime = "{runtime}"\nthreads = 1\n')
    return folder


def deploy(model: Path, targets: Path, out: Path) -> list[dict]:
    result = CliRunner().invoke(main, ["deploy", str(model), "--targets-dir", str(targets),
                                       "--target", "jp5", "-o", str(out), "--json", *CLI_FAST],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return list(json.loads(result.stdout)["results"])


def test_a_tflite_deploys_to_a_board_on_python_38(tflite_copy: Path, python38_board: Path,
                                                  tmp_path: Path) -> None:
    targets = board_38(tmp_path / "t", python38_board, "auto")
    [record] = deploy(tflite_copy, targets, tmp_path / "out")
    assert record["status"] == "ok" and record["board"]["python"].startswith("3.8.")
    assert record["runtime"] == {"name": "tflite-runtime", "version": "2.14.0"}
    assert record["runtime_choice"] == "auto: tflite-runtime 2.14.0 (ai-edge-litert not installed)"
    assert record["latency_ms"]["p50"] > 0 and record["peak_rss_bytes"] > 0
    assert record["output_check"]["ok"]


def test_an_onnx_deploys_to_a_board_on_python_38(python38_board: Path, tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "mlp.onnx")
    [record] = deploy(model, board_38(tmp_path / "t", python38_board, "onnxruntime"),
                      tmp_path / "out")
    assert record["status"] == "ok" and record["board"]["python"].startswith("3.8.")
    assert record["runtime"] == {"name": "onnxruntime", "version": "1.19.2"}
    assert record["output_check"]["ok"]


def tiny_conv_onnx(path: Path) -> Path:
    """A convolution then a linear layer, x float32 [1, 1, 6, 6], y [1, 4], seeded weights."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    kernel = numpy_helper.from_array(rng.standard_normal((2, 1, 3, 3)).astype(np.float32), "k")
    weights = numpy_helper.from_array(rng.standard_normal((32, 4)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, 32], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "k"], ["c"]),
         helper.make_node("Reshape", ["c", "shape"], ["f"]),
         helper.make_node("MatMul", ["f", "w"], ["y"])],
        "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [kernel, weights, shape])
    return saved_onnx(graph, path)


def test_int8_dynamic_of_a_convolution_runs_on_a_python_38_boards_onnxruntime(
        python38_board: Path, tmp_path: Path) -> None:
    # onnxruntime 1.19.2 has no ConvInteger kernel for int8 weights: uint8 ones run there.
    model = tiny_conv_onnx(tmp_path / "conv.onnx")
    result = CliRunner().invoke(main, [
        "deploy", str(model), "--recipe", "fp32,int8-dynamic", "--targets-dir",
        str(board_38(tmp_path / "t", python38_board, "onnxruntime")), "--target", "jp5",
        "-o", str(tmp_path / "out"), "--json", *CLI_FAST], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    records = {r["variant"]: r for r in json.loads(result.stdout)["results"]}
    assert list(records) == ["conv.onnx", "int8-dynamic"]
    int8 = records["int8-dynamic"]
    assert int8["status"] == "ok" and int8["output_check"]["ok"]
    assert int8["runtime"] == {"name": "onnxruntime", "version": "1.19.2"}
    assert int8["details"]["weights"].startswith("uint8, per tensor")


def test_setup_on_a_bare_python_38_board_installs_the_cp38_lines(python38: Path,
                                                                  tmp_path: Path) -> None:
    board = FakeBoard(fake_target(tmp_path, "jp5", python=str(python38)), tmp_path / "board")
    facts = setup(board)
    facts.require()
    assert facts.version[:2] == (3, 8) and facts.python.endswith("venv/bin/python")
    assert facts.numpy is not None and facts.numpy.startswith("1.24.")
    assert facts.runtimes == {"tflite-runtime": "2.14.0"}
