"""Recipes on a float .tflite edge did not build: a Keras export by TensorFlow's converter.

``tests/data/keras_cnn.tflite`` is made by ``tests/models/keras_tflite.py`` (TensorFlow
2.21, Keras 3, default converter options): a file from another toolchain, as users bring.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.cli.main import main
from toolkit.compress._from_tflite import quantized_weights, refusal
from toolkit.compress._recipes import parse_chain

KERAS_CNN = Path(__file__).parent / "data" / "keras_cnn.tflite"
FAST = ["--min-runs", "10", "--min-seconds", "0.05"]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("recipe, reason", [
    ("prune:0.5+int8", "needs the PyTorch model: pruning, distillation and clustering"),
    ("distill+fp16", "needs the PyTorch model: pruning, distillation and clustering"),
    ("qat", "needs the PyTorch model; deploy the .py model file for it"),
    ("int8", "needs calibration inputs, which a .tflite does not carry"),
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
