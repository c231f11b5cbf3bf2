"""Recipes on a float .tflite edge did not build: a Keras export by TensorFlow's converter.

``tests/data/keras_cnn.tflite`` is made by ``tests/models/keras_tflite.py`` (TensorFlow
2.21, Keras 3, default converter options): a file from another toolchain, as users bring.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from toolkit.cli.main import main
from toolkit.compress._from_tflite import quantized_weights, refusal
from toolkit.compress._recipes import parse_chain
from toolkit.errors import UsageError
from toolkit.model.calibration import calibration_inputs, check_shapes

KERAS_CNN = Path(__file__).parent / "data" / "keras_cnn.tflite"
FAST = ["--min-runs", "10", "--min-seconds", "0.05"]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("recipe, reason", [
    ("prune:0.5+int8", "needs the PyTorch model: pruning, distillation and clustering"),
    ("distill+fp16", "needs the PyTorch model: pruning, distillation and clustering"),
    ("qat", "needs the PyTorch model; deploy the .py model file for it"),
    ("int8", "needs calibration inputs, which a .tflite does not carry: give a folder of "
             "them with --calibration DIR"),
])
def test_recipes_that_need_the_torch_model_or_calibration_are_refused(
        recipe: str, reason: str) -> None:
    assert (refusal(parse_chain(recipe), KERAS_CNN.read_bytes()) or "").startswith(reason)


@pytest.mark.parametrize("recipe", ["fp32", "fp16", "int8-dynamic", "int4-weight"])
def test_a_float_file_takes_the_weight_only_recipes(recipe: str) -> None:
    assert quantized_weights(KERAS_CNN.read_bytes()) is None
    assert refusal(parse_chain(recipe), KERAS_CNN.read_bytes()) is None


def test_a_refused_recipe_fails_the_deploy_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("deploy", str(KERAS_CNN), "--recipe", "fp16,prune:0.5+int8", "-o", str(out))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "edge: error: prune:0.5+int8 on keras_cnn.tflite: needs the PyTorch model: pruning, "
        "distillation and clustering change the model before it is converted; deploy the .py "
        "model file for it"]
    assert not out.exists()


@pytest.mark.integration
def test_weight_only_recipes_rewrite_a_keras_export_and_are_judged_against_it(
        tmp_path: Path) -> None:
    model = shutil.copyfile(KERAS_CNN, tmp_path / "keras_cnn.tflite")
    out = tmp_path / "out"
    result = invoke("deploy", str(model), "--recipe", "fp16,int8-dynamic,int4-weight",
                    "-o", str(out), "--json", *FAST)
    assert result.exit_code == 0, result.output
    records = {r["variant"]: r for r in json.loads(result.stdout)["results"]}
    # The file as given first, named after the file; the others after their recipe.
    assert list(records) == ["keras_cnn.tflite", "fp16", "int8-dynamic", "int4-weight"]
    assert all(r["status"] == "ok" and r["output_check"]["ok"] for r in records.values())
    given = records["keras_cnn.tflite"]
    assert given["config"] == {"recipe": "as-is"} and given["file"] == "keras_cnn.tflite"
    for recipe in ("fp16", "int8-dynamic", "int4-weight"):
        artifact = records[recipe]
        assert artifact["file"] == f"keras_cnn.{recipe}.tflite"
        assert artifact["size_bytes"] < given["size_bytes"]
        fidelity = artifact["fidelity"]
        assert fidelity["reference"] == "given keras_cnn.tflite"
        assert artifact["toolchain"] == {name: importlib.metadata.version(name)
                                         for name in ("edge", "ai-edge-quantizer")}
        assert fidelity["agreement_metric"] == "cosine" and "degenerate" not in fidelity
    assert records["fp16"]["fidelity"]["cosine_similarity"] > 0.999
    report = next((out / "runs").glob("*/report.md")).read_text()
    assert "| vs keras_cnn.tflite |" in report
    # A quantized file is not rewritten again: its float version is asked for.
    int8 = next((out / "runs").glob("*/artifacts/keras_cnn.int8-dynamic.tflite"))
    again = invoke("deploy", str(int8), "--recipe", "fp16", "-o", str(tmp_path / "again"))
    assert again.exit_code == 2
    assert again.stderr.strip() == (
        "edge: error: fp16 on keras_cnn.int8-dynamic.tflite: rewrites float weights, and the "
        "file's are already quantized (INT8); give its float version")


def calibration_folder(folder: Path, count: int = 24, shape: tuple[int, ...] = (1, 16, 16, 3)
                       ) -> Path:
    """``count`` seeded inputs of the Keras CNN, one .npy each (as a user would save them)."""
    folder.mkdir()
    rng = np.random.default_rng(7)
    for number in range(count):
        np.save(folder / f"{number:04d}.npy", rng.standard_normal(shape).astype(np.float32))
    return folder


def test_int8_on_a_tflite_is_built_once_calibration_inputs_are_given() -> None:
    assert refusal(parse_chain("int8"), KERAS_CNN.read_bytes(), calibrated=True) is None


def test_a_calibration_folder_is_read_in_name_order_and_checked_up_front(tmp_path: Path) -> None:
    folder = tmp_path / "cal"
    folder.mkdir()
    np.save(folder / "b.npy", np.ones((1, 2), np.float32))
    np.savez(folder / "a.npz", np.zeros((1, 2), np.float32), np.full((1, 3), 2, np.int32))
    samples = [inputs for inputs, label in calibration_inputs(folder)() if label is None]
    assert [len(s) for s in samples] == [2, 1] and samples[0][1].tolist() == [[2, 2, 2]]
    (folder / "notes.txt").write_text("x")
    problems = {
        tmp_path / "missing": "--calibration {} is not a folder; give a folder of .npy or "
                              ".npz files, one per sample",
        folder: "--calibration {} holds 'notes.txt', which is not an .npy or .npz file: keep "
                "only the samples in it",
    }
    empty = tmp_path / "empty"
    empty.mkdir()
    problems[empty] = ("--calibration {} holds no .npy or .npz file; write one per sample, "
                       "e.g. np.save('calibration/0000.npy', x)")
    for path, message in problems.items():
        with pytest.raises(UsageError) as raised:
            calibration_inputs(path)
        assert str(raised.value) == message.format(path)
    (folder / "notes.txt").unlink()
    (folder / "c.npy").write_bytes(b"not numpy")
    with pytest.raises(UsageError, match=r"^--calibration: .*c.npy does not read as numpy "
                                         r"arrays: "):
        calibration_inputs(folder)


def test_a_calibration_sample_of_another_shape_names_the_input() -> None:
    wanted = [((1, 16, 16, 3), "keras_tensor")]
    check_shapes((np.zeros((1, 16, 16, 3)),), wanted, "sample 1")
    with pytest.raises(UsageError) as raised:
        check_shapes((np.zeros((16, 16, 3)),), wanted, "--calibration sample 3")
    assert str(raised.value) == ("--calibration sample 3: input 'keras_tensor' has shape "
                                 "[16, 16, 3]; the model takes [1, 16, 16, 3] (batch "
                                 "dimension included)")
    with pytest.raises(UsageError, match=r"^sample 2 holds 2 array\(s\) and the model takes 1 "
                                         r"input\(s\) \(keras_tensor\)$"):
        check_shapes((np.zeros(1), np.zeros(1)), wanted, "sample 2")


def test_calibration_is_for_a_given_file_not_a_model_file(tmp_path: Path) -> None:
    folder = calibration_folder(tmp_path / "cal", count=1)
    model = Path(__file__).parent.parent / "examples" / "digits_cnn.py"
    result = invoke("deploy", str(model), "--calibration", str(folder),
                    "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert result.stderr.strip() == ("edge: error: --calibration is for a .tflite or .onnx; "
                                     "digits_cnn.py calibrates with its own calibration_data()")
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_full_int8_of_a_keras_export_is_calibrated_on_the_inputs_given(tmp_path: Path) -> None:
    model = shutil.copyfile(KERAS_CNN, tmp_path / "keras_cnn.tflite")
    folder = calibration_folder(tmp_path / "cal")
    out = tmp_path / "out"
    result = invoke("deploy", str(model), "--recipe", "int8,fp16", "--calibration", str(folder),
                    "-o", str(out), "--json", *FAST)
    assert result.exit_code == 0, result.output
    records = {r["variant"]: r for r in json.loads(result.stdout)["results"]}
    assert list(records) == ["keras_cnn.tflite", "int8", "fp16"]
    assert all(r["status"] == "ok" and r["output_check"]["ok"] for r in records.values())
    int8 = records["int8"]
    assert int8["file"] == "keras_cnn.int8.tflite"
    assert int8["size_bytes"] < records["keras_cnn.tflite"]["size_bytes"]
    assert int8["fidelity"]["inputs_from"] == "the --calibration inputs"
    assert int8["fidelity"]["cosine_similarity"] > 0.99
    # ai-edge-quantizer's static recipe built it, not the torch path's PT2E (torchao).
    assert int8["toolchain"] == {name: importlib.metadata.version(name)
                                 for name in ("edge", "ai-edge-quantizer")}
    manifest = json.loads(next((out / "runs").glob("*/artifacts/manifest.json")).read_text())
    [entry] = [v for v in manifest["variants"] if v["variant"] == "int8"]
    assert entry["calibration"]["samples_used"] == 24
    # Full integer: the board is fed int8 inputs, quantized with the file's own scale.
    from ai_edge_litert.interpreter import Interpreter

    artifact = next((out / "runs").glob("*/artifacts/keras_cnn.int8.tflite"))
    [detail] = Interpreter(model_path=str(artifact)).get_input_details()
    assert detail["dtype"] == np.int8


def test_a_calibration_sample_the_file_cannot_take_fails_before_anything_is_written(
        tmp_path: Path) -> None:
    folder = calibration_folder(tmp_path / "cal", count=2, shape=(16, 16, 3))
    out = tmp_path / "out"
    result = invoke("deploy", str(KERAS_CNN), "--recipe", "int8", "--calibration", str(folder),
                    "-o", str(out))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "edge: error: --calibration sample 1: input 'serving_default_keras_tensor:0' has "
        "shape [16, 16, 3]; the model takes [1, 16, 16, 3] (batch dimension included)")
    assert not out.exists()
