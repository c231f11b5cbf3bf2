"""`edge compress`: every recipe on real models, the manifest's figures, and bad input."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from toolkit.artifacts.bundle import sha256_file
from toolkit.cli.main import main
from toolkit.compress import (
    Chain,
    ChannelPruneConfig,
    DistillConfig,
    Int8MixedConfig,
    Int8StaticConfig,
    PruneConfig,
    QatConfig,
    analyze_to_folder,
    build_artifacts,
    compress,
    parse_chain,
    parse_recipes,
)
from toolkit.compress._mixed import weighted_ops
from toolkit.compress._toolchain import TORCH_TO_TFLITE, version
from toolkit.errors import UsageError
from toolkit.model.load import load_model_source

from .conftest import DIGITS_MODEL

TWO_HEADS = Path(__file__).parent / "models" / "two_heads.py"
QUANTIZED = "fp32,fp16,int8-dynamic,int8"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory,
                  tflite_runtime_214: Path) -> tuple[Path, dict]:
    """fp32, fp16, int8-dynamic and int8 of the digits CNN, through the CLI, once."""
    out = tmp_path_factory.mktemp("compress") / "bundle"
    result = invoke("compress", str(DIGITS_MODEL), "--recipe", QUANTIZED, "-o", str(out),
                    "--compat-python", str(tflite_runtime_214))
    assert result.exit_code == 0, result.output
    assert "int8-dynamic" in result.stdout
    return out, json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="session")
def digits_source():
    return load_model_source(DIGITS_MODEL)


def by_recipe(manifest: dict) -> dict[str, dict]:
    return {variant["recipe"]: variant for variant in manifest["variants"]}


@pytest.mark.slow
def test_manifest_describes_every_file(digits_bundle) -> None:
    out, manifest = digits_bundle
    assert list(by_recipe(manifest)) == QUANTIZED.split(",")
    for variant in manifest["variants"]:
        path = out / variant["file"]
        assert variant["sha256"] == sha256_file(path)
        assert variant["size_bytes"] == path.stat().st_size
        assert 0 < variant["gzip_bytes"] < variant["size_bytes"]
        assert variant["eval_samples"] == 450
        assert variant["parameters"] == variant["nonzero_parameters"] > 30_000
        assert variant["macs"] == 9_216 + 294_912 + 32_768 + 640  # conv, conv, fc, fc
        assert variant["fidelity"]["top1_agreement"] >= 0.98
        assert variant["compress_seconds"] > 0
        ops = {op["op"]: op["version"] for op in variant["ops"]}
        assert "CONV_2D" in ops and "FULLY_CONNECTED" in ops and min(ops.values()) >= 1
    # What built each file, as installed: the converter, and what each recipe adds.
    adds = {"fp32": [], "fp16": ["ai-edge-quantizer"], "int8-dynamic": ["ai-edge-quantizer"],
            "int8": ["torchao"]}
    for recipe, variant in by_recipe(manifest).items():
        assert variant["toolchain"] == {
            name: version(name) for name in ["edge", *TORCH_TO_TFLITE, *adds[recipe]]}
        assert all(v[0].isdigit() for v in variant["toolchain"].values()), variant
    assert not list(out.parent.glob(".bundle.staging-*"))


def assert_runs_on_both_runtimes(variant: dict) -> None:
    runtimes = {r["name"]: r for r in variant["runtime_compat"]}
    assert set(runtimes) == {"ai-edge-litert", "tflite-runtime"}, variant["recipe"]
    old = runtimes["tflite-runtime"]
    assert old["version"] == "2.14.0"
    assert old["loads"] and old["ok"], (variant["recipe"], old)
    assert old["top1_agreement_with_host"] >= 0.99
    assert runtimes["ai-edge-litert"]["ok"]
    assert variant["oldest_runtime"] == "tflite-runtime 2.14.0"


@pytest.mark.slow
def test_every_variant_computes_correctly_on_tflite_runtime_214(digits_bundle) -> None:
    _, manifest = digits_bundle
    for variant in manifest["variants"]:
        assert_runs_on_both_runtimes(variant)


@pytest.mark.slow
def test_quantized_variants_are_small_and_keep_accuracy(digits_bundle) -> None:
    _, manifest = digits_bundle
    variants = by_recipe(manifest)
    fp32 = variants["fp32"]
    assert fp32["fidelity"]["sqnr_db"] > 80  # the float file computes what torch computes
    assert variants["fp16"]["size_bytes"] <= 0.55 * fp32["size_bytes"]
    for name in ("int8-dynamic", "int8"):
        assert variants[name]["size_bytes"] <= 0.31 * fp32["size_bytes"], name
        assert variants[name]["fidelity"]["sqnr_db"] > 25, name
    for name in ("fp16", "int8-dynamic", "int8"):
        assert fp32["accuracy"] - variants[name]["accuracy"] <= 0.005, name
    calibration = variants["int8"]["calibration"]
    assert calibration["samples_used"] == calibration["samples_requested"] == 128


@pytest.mark.slow
def test_unstructured_pruning_shows_in_gzip_size(digits_source, digits_bundle,
                                                 tflite_runtime_214: Path,
                                                 tmp_path: Path) -> None:
    _, manifest = digits_bundle
    fp32 = by_recipe(manifest)["fp32"]
    chain = Chain(recipe="prune:0.8", transforms=(PruneConfig(sparsity=0.8, epochs=2),))
    [pruned] = [a.to_dict() for a in build_artifacts(digits_source, [chain], tmp_path,
                                                     compat_pythons=[tflite_runtime_214])]
    assert_runs_on_both_runtimes(pruned)
    assert pruned["nonzero_parameters"] <= 0.25 * pruned["parameters"]
    assert pruned["gzip_bytes"] <= 0.35 * fp32["gzip_bytes"]
    assert fp32["accuracy"] - pruned["accuracy"] <= 0.01


@pytest.mark.slow
def test_channel_pruning_distill_int8_is_really_smaller(digits_source, digits_bundle,
                                                        tflite_runtime_214: Path,
                                                        tmp_path: Path) -> None:
    _, manifest = digits_bundle
    fp32 = by_recipe(manifest)["fp32"]
    chain = Chain(recipe="prune-channels:0.5+distill+int8",
                  transforms=(ChannelPruneConfig(ratio=0.5, epochs=1), DistillConfig(epochs=2)),
                  conversion=Int8StaticConfig())
    [small] = [a.to_dict() for a in build_artifacts(digits_source, [chain], tmp_path,
                                                    compat_pythons=[tflite_runtime_214])]
    assert_runs_on_both_runtimes(small)
    assert small["file"] == "prune-channels-0.5+distill+int8.tflite"
    assert small["parameters"] <= 0.4 * fp32["parameters"]
    assert small["macs"] <= 0.35 * fp32["macs"]
    assert small["size_bytes"] <= 0.15 * fp32["size_bytes"]
    assert fp32["accuracy"] - small["accuracy"] <= 0.03
    assert [step["recipe"] for step in small["config"]["steps"]] == [
        "prune-channels", "distill", "int8"]


@pytest.mark.slow
def test_model_without_labels_with_two_inputs_and_outputs(tmp_path: Path,
                                                          tflite_runtime_214: Path) -> None:
    out = tmp_path / "heads"
    result = invoke("compress", str(TWO_HEADS), "--recipe", "fp32,fp16", "-o", str(out),
                    "--json", "--compat-python", str(tflite_runtime_214))
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    for variant in manifest["variants"]:
        assert "accuracy" not in variant
        assert variant["fidelity"]["inputs_from"] == "eval_data()"
        assert variant["fidelity"]["top1_agreement"] == 1.0
        assert variant["fidelity"]["sqnr_db"] > 40
        assert_runs_on_both_runtimes(variant)


@pytest.mark.slow
def test_int8_dynamic_of_an_embedding_model_runs_right_on_both_runtimes(
        tmp_path: Path, tflite_runtime_214: Path) -> None:
    # Its embedding table once came out with a non-zero zero point, which EMBEDDING_LOOKUP
    # refuses; quantized per channel it also reads right on 2.14 (one scale per table there).
    out = tmp_path / "heads"
    result = invoke("compress", str(TWO_HEADS), "--recipe", "fp32,int8-dynamic", "-o", str(out),
                    "--json", "--compat-python", str(tflite_runtime_214))
    assert result.exit_code == 0, result.output
    fp32, dynamic = json.loads(result.stdout)["variants"]
    assert_runs_on_both_runtimes(dynamic)
    assert dynamic["fidelity"]["cosine_similarity"] >= 0.99
    assert dynamic["size_bytes"] < fp32["size_bytes"]
    assert "embedding tables per-channel" in dynamic["details"]["weights"]


def test_a_missing_compat_python_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compress", str(DIGITS_MODEL), "--recipe", "fp32",
                                       "-o", str(tmp_path / "out"),
                                       "--compat-python", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "--compat-python" in result.stderr
    assert not (tmp_path / "out").exists()


def test_chain_grammar() -> None:
    chain = parse_chain("prune-channels:0.5+distill+int8")
    assert chain.transforms == (ChannelPruneConfig(ratio=0.5), DistillConfig())
    assert chain.conversion == Int8StaticConfig()
    assert parse_chain("prune:0.8").conversion.recipe == "fp32"
    assert [c.recipe for c in parse_recipes("fp32, int8")] == ["fp32", "int8"]
    qat = parse_chain("prune-channels:0.5+qat")
    assert qat.conversion == QatConfig() and qat.needs_training_data
    mixed = parse_chain("int8-mixed:0.2")
    assert mixed.conversion == Int8MixedConfig(max_drop=0.2) and mixed.needs_eval_data
    assert parse_chain("int8-mixed").conversion.max_drop == 0.5
    assert not parse_chain("qat").transforms and not parse_chain("int8").needs_training_data


@pytest.mark.parametrize(("recipe", "message"), [
    ("int9", "unknown recipe 'int9'"),
    ("prune", "prune needs a value"),
    ("prune:x", "must be a number"),
    ("prune:1.5", "between 0 and 1"),
    ("int8+fp16", "at most one of"),
    ("int8+distill", "at most one of"),
    ("fp32,fp32", "twice"),
    ("qat+int8", "at most one of"),
    ("int8-mixed:x", "must be a number"),
    ("int8-mixed:150", "points of accuracy below fp32"),
])
def test_bad_recipes_are_usage_errors(recipe: str, message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compress", str(DIGITS_MODEL), "--recipe", recipe,
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_fine_tuning_without_train_data_is_refused_before_any_work(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compress", str(TWO_HEADS), "--recipe", "fp32,prune:0.5",
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "train_data()" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.integration  # runs the real converter, which stops early
def test_calibration_data_of_the_wrong_shape_names_both_shapes(tmp_path: Path) -> None:
    model = tmp_path / "wrong_calibration.py"
    model.write_text(DIGITS_MODEL.read_text().replace(
        "yield (torch.from_numpy(image[None]),), int(label)\n\n\ndef train_data",
        "yield (torch.zeros(1, 1, 4, 4),), int(label)\n\n\ndef train_data"))
    (tmp_path / "wrong_calibration.pt").write_bytes(DIGITS_MODEL.with_suffix(".pt").read_bytes())
    result = CliRunner().invoke(main, ["compress", str(model), "--recipe", "int8",
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "(1, 1, 4, 4)" in result.stderr and "(1, 1, 8, 8)" in result.stderr
    assert not (tmp_path / "out").exists()


BRANCHY = """
import torch
from torch import nn


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.linear(x)
        return -self.linear(x)


def build_model():
    return Branchy().eval()


def example_input():
    return (torch.randn(1, 8),)
"""


@pytest.mark.integration  # runs the real converter, which stops early
def test_a_model_export_cannot_capture_names_the_line_to_change(tmp_path: Path) -> None:
    model = tmp_path / "branchy.py"
    model.write_text(BRANCHY)
    result = CliRunner().invoke(main, ["compress", str(model), "--recipe", "fp32",
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    line = result.stderr.strip().splitlines()[-1]  # after the progress lines
    assert line.startswith("edge: error: fp32: ") and "data-dependent" in line
    assert line.endswith("at branchy.py:12: if x.sum() > 0:; forward branches on a tensor's "
                         "value, which a converted model cannot: express the branch with "
                         "torch.cond, or move it out of forward")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_an_accuracy_budget_keeps_the_first_candidate_within_it(tmp_path: Path) -> None:
    out = tmp_path / "budget"
    result = invoke("compress", str(DIGITS_MODEL), "--max-accuracy-drop", "0.5", "-o", str(out),
                    "--json")
    assert result.exit_code == 0, result.output
    selection = json.loads(result.stdout)["selection"]
    tried = selection["tried"]
    assert tried[-1]["recipe"] == selection["chosen"] and tried[-1]["within_budget"]
    assert all(not t["within_budget"] for t in tried[:-1])  # tried in order, stopped at first
    assert tried[-1]["drop_points"] <= 0.5 and tried[-1]["size_ratio"] < 0.5
    assert sorted(p.name for p in out.glob("*.tflite")) == sorted(
        ["fp32.tflite", f"{by_recipe(json.loads(result.stdout))[selection['chosen']]['file']}"])


def test_an_accuracy_budget_without_labels_is_refused(tmp_path: Path) -> None:
    result = invoke("compress", str(TWO_HEADS), "--max-accuracy-drop", "1", "-o",
                    str(tmp_path / "out"))
    assert result.exit_code == 2 and "needs labelled eval data" in result.output
    assert not (tmp_path / "out").exists()


def test_qat_without_train_data_names_what_to_add(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compress", str(TWO_HEADS), "--recipe", "qat",
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "qat fine-tunes the model" in result.stderr and "train_data()" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags", [["--recipe", "int8-mixed"], ["--analyze"]])
def test_int8_mixed_without_eval_data_names_what_to_add(tmp_path: Path,
                                                        flags: list[str]) -> None:
    model = tmp_path / "no_eval.py"
    model.write_text(DIGITS_MODEL.read_text().replace("def eval_data", "def _eval_data"))
    (tmp_path / "no_eval.pt").write_bytes(DIGITS_MODEL.with_suffix(".pt").read_bytes())
    result = CliRunner().invoke(main, ["compress", str(model), *flags,
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "measures every layer" in result.stderr and "eval_data()" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_analyze_builds_no_variants(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compress", str(DIGITS_MODEL), "--analyze", "--recipe",
                                       "int8", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--analyze builds no variants" in result.stderr


def test_keep_float_must_name_a_layer(digits_source, tmp_path: Path) -> None:
    chain = Chain(recipe="int8-mixed", conversion=Int8MixedConfig(keep_float=("features.9",)))
    with pytest.raises(UsageError, match=r"features\.9.*features\.0, features\.2, "
                                         r"classifier\.1, classifier\.3"):
        compress(digits_source, chain, tmp_path)


def input_dtype(path: Path) -> str:
    from device_agent.runtime import find_runtime

    interpreter = find_runtime().interpreter_class(model_path=str(path))
    return interpreter.get_input_details()[0]["dtype"].__name__


@pytest.fixture(scope="session")
def learned_bundle(tmp_path_factory: pytest.TempPathFactory,
                   tflite_runtime_214: Path) -> tuple[Path, dict]:
    """fp32, int8, qat and int8-mixed of the digits CNN, through the CLI, once."""
    out = tmp_path_factory.mktemp("learned") / "bundle"
    result = invoke("compress", str(DIGITS_MODEL), "--recipe", "fp32,int8,qat,int8-mixed",
                    "-o", str(out), "--compat-python", str(tflite_runtime_214))
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "manifest.json").read_text())


@pytest.mark.slow
def test_qat_is_full_integer_and_keeps_accuracy(learned_bundle) -> None:
    out, manifest = learned_bundle
    variants = by_recipe(manifest)
    qat = variants["qat"]
    assert_runs_on_both_runtimes(qat)
    assert input_dtype(out / qat["file"]) == "int8"
    assert {op["weights"] for op in weighted_ops(out / qat["file"])} == {"INT8"}
    assert variants["fp32"]["accuracy"] - qat["accuracy"] <= 0.01
    assert qat["size_bytes"] <= 0.31 * variants["fp32"]["size_bytes"]
    assert qat["config"]["steps"] == [QatConfig().to_dict()]


@pytest.mark.slow
def test_int8_mixed_is_within_budget_and_never_below_int8(learned_bundle) -> None:
    out, manifest = learned_bundle
    variants = by_recipe(manifest)
    mixed = variants["int8-mixed"]
    assert_runs_on_both_runtimes(mixed)
    assert mixed["accuracy"] >= variants["int8"]["accuracy"]
    assert variants["fp32"]["accuracy"] - mixed["accuracy"] <= 0.005
    details = mixed["details"]
    assert details["metric"] == "accuracy" and details["budget"]["within"]
    # The sensitivity's all-int8 figure is the plain int8 file's accuracy, measured alike.
    assert details["budget"]["int8"] == pytest.approx(100 * variants["int8"]["accuracy"])
    layers = [row["layer"] for row in details["sensitivity"]["layers"]]
    assert layers == ["features.0", "features.2", "classifier.1", "classifier.3"]
    float_layers = set(details["float_layers"])
    for row, op in zip(details["layers"], weighted_ops(out / mixed["file"]), strict=True):
        assert row["confirmed"]
        assert op["weights"] == ("FLOAT32" if row["layer"] in float_layers else "INT8")


@pytest.mark.slow
def test_int8_mixed_keeps_named_layers_float_in_the_file(digits_source,
                                                         tflite_runtime_214: Path,
                                                         tmp_path: Path) -> None:
    chain = Chain(recipe="int8-mixed", conversion=Int8MixedConfig(
        keep_float=("features.0", "classifier.3")))
    [mixed] = build_artifacts(digits_source, [chain], tmp_path,
                              compat_pythons=[tflite_runtime_214])
    assert_runs_on_both_runtimes(mixed.to_dict())
    assert [op["weights"] for op in weighted_ops(mixed.path)] == [
        "FLOAT32", "INT8", "INT8", "FLOAT32"]
    assert mixed.details["float_layers"][:2] == ["features.0", "classifier.3"]
    # A float first and last layer: the file takes and gives float, and says so.
    io = mixed.details["io"]
    assert io["inputs"] == ["float32"] and io["outputs"] == ["float32"] and "note" in io
    assert input_dtype(mixed.path) == "float32"
    assert mixed.accuracy is not None
    assert mixed.accuracy >= mixed.details["budget"]["int8"] / 100


@pytest.mark.slow
def test_analyze_prints_and_writes_one_row_per_layer(tmp_path: Path) -> None:
    out = tmp_path / "analysis"
    result = invoke("compress", str(DIGITS_MODEL), "--analyze", "-o", str(out))
    assert result.exit_code == 0, result.output
    table = json.loads((out / "sensitivity.json").read_text())
    assert table["metric"] == "accuracy" and table["model"]["name"] == "digits_cnn"
    assert [(row["layer"], row["type"]) for row in table["layers"]] == [
        ("features.0", "Conv2d"), ("features.2", "Conv2d"), ("classifier.1", "Linear"),
        ("classifier.3", "Linear")]
    for row in table["layers"]:
        assert row["sqnr_db"] > 20 and row["drop_points"] <= 2
        assert row["layer"] in result.stdout
    assert "drop (points)" in result.stdout and "SQNR dB" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["sensitivity.json"]


def outlier_model(folder: Path) -> Path:
    """The digits CNN with one hidden unit of classifier.1 scaled 1000x (undone by
    classifier.3): the same function, but a per-tensor int8 range for that activation wipes
    out the other units, so plain int8 loses tens of points."""
    model = folder / "outlier.py"
    weights = "    model.load_state_dict(torch.load(WEIGHTS, weights_only=True))\n"
    model.write_text(DIGITS_MODEL.read_text().replace(weights, weights + (
        "    with torch.no_grad():\n"
        "        model.classifier[1].weight[0] *= 1000\n"
        "        model.classifier[1].bias[0] *= 1000\n"
        "        model.classifier[3].weight[:, 0] /= 1000\n")))
    (folder / "outlier.pt").write_bytes(DIGITS_MODEL.with_suffix(".pt").read_bytes())
    return model


@pytest.mark.slow
def test_a_budget_int8_misses_falls_back_to_qat_or_mixed_precision(tmp_path: Path) -> None:
    out = tmp_path / "budget"
    result = invoke("compress", str(outlier_model(tmp_path)), "--max-accuracy-drop", "0.5",
                    "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    tried = {t["recipe"]: t for t in json.loads(result.stdout)["selection"]["tried"]}
    assert not tried["int8"]["within_budget"]
    chosen = json.loads(result.stdout)["selection"]["chosen"]
    assert chosen in ("qat", "int8-mixed:0.5") and tried[chosen]["drop_points"] <= 0.5


@pytest.mark.slow
def test_int8_mixed_keeps_float_the_layers_int8_breaks(tmp_path: Path,
                                                       tflite_runtime_214: Path) -> None:
    model = outlier_model(tmp_path)
    out = tmp_path / "out"
    result = invoke("compress", str(model), "--recipe", "fp32,int8,int8-mixed", "-o", str(out),
                    "--compat-python", str(tflite_runtime_214))
    assert result.exit_code == 0, result.output
    variants = by_recipe(json.loads((out / "manifest.json").read_text()))
    fp32, int8, mixed = variants["fp32"], variants["int8"], variants["int8-mixed"]
    assert fp32["accuracy"] - int8["accuracy"] > 0.3
    assert fp32["accuracy"] - mixed["accuracy"] <= 0.005
    assert_runs_on_both_runtimes(mixed)
    details = mixed["details"]
    assert details["float_layers"] == ["classifier.1", "classifier.3"]
    drops = {row["layer"]: row["drop_points"] for row in details["sensitivity"]["layers"]}
    assert drops["classifier.1"] > 30 and drops["features.0"] < 1
    assert [op["weights"] for op in weighted_ops(out / mixed["file"])] == [
        "INT8", "INT8", "FLOAT32", "FLOAT32"]
    assert details["io"]["inputs"] == ["int8"] and details["io"]["outputs"] == ["float32"]


@pytest.mark.slow
def test_qat_after_pruning_keeps_the_zeros(digits_source, tflite_runtime_214: Path,
                                           tmp_path: Path) -> None:
    chain = Chain(recipe="prune:0.8+qat", transforms=(PruneConfig(sparsity=0.8, epochs=1),),
                  conversion=QatConfig(epochs=1))
    [pruned] = [a.to_dict() for a in build_artifacts(digits_source, [chain], tmp_path,
                                                     compat_pythons=[tflite_runtime_214])]
    assert_runs_on_both_runtimes(pruned)
    assert pruned["nonzero_parameters"] <= 0.25 * pruned["parameters"]
    assert pruned["gzip_bytes"] <= 0.5 * pruned["size_bytes"]
    assert pruned["accuracy"] >= 0.97


@pytest.mark.slow
def test_distillation_after_pruning_keeps_the_zeros(digits_source, tmp_path: Path) -> None:
    chain = Chain(recipe="prune:0.8+distill",
                  transforms=(PruneConfig(sparsity=0.8, epochs=1), DistillConfig(epochs=1)))
    [pruned] = [a.to_dict() for a in build_artifacts(digits_source, [chain], tmp_path)]
    assert pruned["nonzero_parameters"] <= 0.25 * pruned["parameters"]
    assert pruned["accuracy"] >= 0.97


@pytest.mark.slow
def test_analyze_without_labels_measures_agreement_with_the_float_model(
        tmp_path: Path) -> None:
    model = tmp_path / "unlabelled.py"
    labelled = ("        yield (torch.from_numpy(image[None]),), int(label)\n\n\n"
                "def train(")
    assert labelled in DIGITS_MODEL.read_text()
    model.write_text(DIGITS_MODEL.read_text().replace(labelled, labelled.replace(
        "int(label)", "None")))
    (tmp_path / "unlabelled.pt").write_bytes(DIGITS_MODEL.with_suffix(".pt").read_bytes())
    table = json.loads(analyze_to_folder(model, tmp_path / "out").read_text())
    assert table["metric"] == "top1_agreement"
    assert table["fp32"] == 100.0 and len(table["layers"]) == 4
    assert all(row["drop_points"] <= 2 for row in table["layers"])


@pytest.mark.slow
def test_a_file_another_runtime_computes_wrongly_is_caught(tflite_runtime_214: Path,
                                                           tmp_path: Path) -> None:
    # ai-edge-quantizer's dynamic-range MLP loads on tflite-runtime 2.14 without an error
    # and computes garbage there (toolchain notes); the float file agrees bit for bit.
    import torch

    from device_agent.outputs import MIN_SQNR_DB
    from toolkit.compress.compat import runtime_compat

    from .models.wrongly_computed_mlp import write_wrongly_computed_mlp

    write_wrongly_computed_mlp(tmp_path)
    samples = [(torch.randn(1, 64),) for _ in range(64)]
    checked = runtime_compat(tflite_runtime_214, [tmp_path / "float.tflite",
                                                  tmp_path / "dynamic.tflite"], samples)
    assert checked["float.tflite"]["ok"] and checked["float.tflite"]["max_relative_error"] == 0
    wrong = checked["dynamic.tflite"]
    assert wrong["loads"] and not wrong["ok"]
    assert wrong["sqnr_db_vs_host"] < MIN_SQNR_DB and wrong["top1_agreement_with_host"] < 0.5


class _Attention(nn.Module):
    """One head of attention over 3-D tensors: the math path of scaled-dot-product."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.o(nn.functional.scaled_dot_product_attention(self.q(x), self.k(x),
                                                                 self.v(x)))


class _SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x, x, x, need_weights=False)[0]


def test_macs_count_attention_and_every_convolution_by_hand() -> None:
    from toolkit.compress._build import model_counts

    # 8 tokens of width 16: q, k, v projections 3 x 8 x 16 x 16, scores 8 x 8 x 16,
    # weighted values 8 x 8 x 16, output projection 8 x 16 x 16 (the old counter saw only
    # the projections of the first and nothing of nn.MultiheadAttention's fused path).
    tokens = (torch.randn(1, 8, 16),)
    by_hand = 3 * 8 * 16 * 16 + 8 * 8 * 16 + 8 * 8 * 16 + 8 * 16 * 16
    assert model_counts(_Attention(), tokens)["macs"] == by_hand
    assert model_counts(_SelfAttention(), tokens)["macs"] == by_hand
    # Conv1d, a transposed and a depthwise convolution (output elements x kernel x in/groups).
    assert model_counts(nn.Conv1d(4, 8, 3), (torch.randn(1, 4, 10),))["macs"] == 8 * 8 * 4 * 3
    assert model_counts(nn.Conv2d(8, 8, 3, groups=8), (torch.randn(1, 8, 6, 6),))["macs"] == \
        8 * 4 * 4 * 9
    assert model_counts(nn.ConvTranspose2d(2, 3, 3), (torch.randn(1, 2, 4, 4),))["macs"] == \
        2 * 4 * 4 * 3 * 9  # every input element meets every kernel weight of each output map


def test_macs_of_mobilenet_v2_96_match_a_count_layer_by_layer() -> None:
    from toolkit.compress._build import model_counts

    source = load_model_source(Path(__file__).resolve().parent.parent / "examples"
                               / "digits_mobilenet96.py")
    by_hand = 0

    def count(layer: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal by_hand
        if isinstance(layer, nn.Conv2d):
            by_hand += output.numel() * layer.weight[0].numel()  # in/groups x kh x kw
        elif isinstance(layer, nn.Linear):
            by_hand += output.numel() * layer.in_features

    hooks = [m.register_forward_hook(count) for m in source.module.modules()]
    with torch.no_grad():
        source.module.eval()(*source.example_input)
    for hook in hooks:
        hook.remove()
    assert model_counts(source.module, source.example_input)["macs"] == by_hand > 5_000_000


def test_kmeans_finds_the_clusters_of_one_dimensional_weights() -> None:
    from toolkit.compress._transform import kmeans_1d

    values = torch.cat([torch.full((50,), -1.0), torch.full((30,), 0.25), torch.full((5,), 3.0)])
    values = values + 0.01 * torch.randn(values.shape, generator=torch.Generator().manual_seed(0))
    centroids, index = kmeans_1d(values, 3)
    assert torch.allclose(centroids, torch.tensor([-1.0, 0.25, 3.0]), atol=0.01)
    assert index.tolist() == [0] * 50 + [1] * 30 + [2] * 5


def test_clustering_leaves_k_values_per_layer_and_pruned_weights_zero() -> None:
    from toolkit.compress import ClusterConfig
    from toolkit.compress._transform import TransformContext, apply_transform

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    with torch.no_grad():
        model[2].weight[:, :100] = 0.0  # as pruning leaves it
    context = TransformContext(teacher=model, example=(torch.randn(1, 1, 8, 8),),
                               train_data=None, progress=lambda _line: None)
    messages: list[str] = []
    clustered = apply_transform(copy.deepcopy(model), ClusterConfig(clusters=4),
                                dataclasses.replace(context, progress=messages.append))
    assert torch.unique(clustered[0].weight).numel() == 4
    assert torch.unique(clustered[2].weight).numel() == 5  # four clusters and the zeros
    assert bool((clustered[2].weight[:, :100] == 0).all())
    assert not hasattr(clustered[0], "parametrizations")  # a plain weight again
    assert messages == ["cluster: centroids not fine-tuned (the model file defines no "
                        "train_data())"]


def test_clustering_folds_batch_norms_first_so_the_file_keeps_k_values() -> None:
    from toolkit.compress import ClusterConfig
    from toolkit.compress._transform import TransformContext, apply_transform

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    with torch.no_grad():  # statistics a trained model has: a different factor per channel
        model[1].running_var.copy_(torch.tensor([0.5, 2.0, 4.0, 9.0]))
        model[1].weight.copy_(torch.tensor([1.0, 0.3, 2.0, 0.7]))
    example = torch.randn(2, 1, 8, 8)
    expected = model(example)
    context = TransformContext(teacher=model, example=(example,), train_data=None,
                               progress=lambda _line: None)
    clustered = apply_transform(copy.deepcopy(model), ClusterConfig(clusters=4), context)
    # Folded after clustering, the converter would scale each channel's 4 values apart.
    assert isinstance(clustered[1], nn.Identity)
    assert torch.unique(clustered[0].weight).numel() == 4
    assert torch.nn.functional.cosine_similarity(
        clustered(example).flatten(), expected.flatten(), dim=0) > 0.9


@pytest.mark.parametrize("recipe, message", [
    ("cluster", "needs a number of clusters"), ("cluster:1", "from 2 to 256"),
    ("cluster:16.5", "whole number"), ("cluster:300", "from 2 to 256")])
def test_cluster_recipes_are_checked(recipe: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_recipes(recipe)


@pytest.mark.slow
def test_cluster_16_keeps_accuracy_and_compresses(digits_source, tmp_path: Path) -> None:
    from toolkit.compress import build_artifacts

    fp32, clustered, pruned = build_artifacts(
        digits_source, parse_recipes("fp32,cluster:16,prune:0.5+cluster:16+int8"), tmp_path)
    assert fp32.accuracy - clustered.accuracy <= 0.01
    assert clustered.gzip_bytes <= 0.35 * fp32.gzip_bytes
    # int8 after clustering quantizes per tensor, so 16 shared values stay 16 codes.
    assert pruned.gzip_bytes <= 0.15 * fp32.gzip_bytes
    assert fp32.accuracy - pruned.accuracy <= 0.01
    assert pruned.config["steps"][-1]["per_channel"] is False
    assert clustered.details["clustering"]["clusters"] == 16
    assert set(clustered.details["clustering"]["unique_weights_per_layer"].values()) == {16}


def test_a_step_takes_fine_tuning_options_after_its_value() -> None:
    [chain] = parse_recipes("prune:0.8:epochs=12:lr=5e-4+distill:epochs=20:temperature=2+int8")
    prune, distill = chain.transforms
    assert (prune.sparsity, prune.epochs, prune.learning_rate) == (0.8, 12, 5e-4)
    assert (distill.epochs, distill.temperature) == (20, 2.0)
    assert chain.file_stem == "prune-0.8-epochs-12-lr-5e-4+distill-epochs-20-temperature-2+int8"
    assert parse_recipes("cluster:16:epochs=0")[0].transforms[0].epochs == 0


@pytest.mark.parametrize("recipe, message", [
    ("int8:epochs=3", "unknown option 'epochs'; it takes no options"),
    ("distill:speed=2", "unknown option 'speed'; it takes epochs, lr, batch, temperature, alpha"),
    ("prune:epochs=3:0.8", "one value first, then KEY=VALUE options"),
    ("prune:0.8:epochs=x", "epochs must be a whole number, got 'x'"),
    ("distill:epochs=-1", "epochs >= 0")])
def test_step_options_are_checked(recipe: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_recipes(recipe)


TEXT_ENCODER = Path(__file__).resolve().parent.parent / "examples" / "text_encoder.py"


def test_macs_of_the_bert_style_encoder_match_a_count_by_hand() -> None:
    from toolkit.compress._build import model_counts

    source = load_model_source(TEXT_ENCODER)
    tokens, width, inner, layers, heads = 32, 128, 512, 4, 4
    per_layer = (4 * tokens * width * width  # query, key, value and output projections
                 + 2 * tokens * width * inner  # the feed-forward pair
                 + 2 * heads * tokens * tokens * (width // heads))  # scores, weighted values
    assert model_counts(source.module, source.example_input)["macs"] == layers * per_layer


@pytest.mark.slow
def test_the_bert_style_encoder_in_every_weight_recipe_on_both_runtimes(
        tmp_path: Path, tflite_runtime_214: Path) -> None:
    source = load_model_source(TEXT_ENCODER)
    chains = parse_recipes("fp32,int8-dynamic,int4-weight")
    variants = by_recipe({"variants": [a.to_dict() for a in build_artifacts(
        source, chains, tmp_path, compat_pythons=[tflite_runtime_214])]})
    fp32, dynamic, int4 = (variants[name] for name in ("fp32", "int8-dynamic", "int4-weight"))
    for variant in (fp32, dynamic, int4):  # no labels: judged as an embedding
        assert variant.get("accuracy") is None
        assert variant["fidelity"]["agreement_metric"] == "cosine"
        assert variant["fidelity"]["cosine_similarity"] >= 0.99, variant["recipe"]
    # The embedding table is quantized too (per row, dequantized at load), and the file
    # runs right on tflite-runtime 2.14, whose hybrid lookup once read it with one scale.
    assert dynamic["size_bytes"] <= 0.30 * fp32["size_bytes"]
    assert_runs_on_both_runtimes(dynamic)
    assert int4["size_bytes"] <= 0.20 * fp32["size_bytes"]
    old = {r["name"]: r for r in int4["runtime_compat"]}["tflite-runtime"]
    assert not old["loads"] and "DEQUANTIZE" in old["error"]  # no int4 kernels in 2.14


@pytest.mark.integration  # converts a model twice (int4-weight and fp32)
def test_int4_weight_falls_back_to_per_channel_where_a_layer_is_not_whole_blocks(
        tmp_path: Path) -> None:
    source = load_model_source(Path(__file__).parent / "models" / "embedding_bag.py")
    variant = compress(source, "int4-weight", tmp_path)
    assert variant.details["per_channel_linear"] == 1  # the 16-wide head, below one block
    assert variant.path.stat().st_size < 0.7 * compress(source, "fp32", tmp_path).path.stat(
    ).st_size


def test_int4_weight_takes_a_block_size_and_names_the_ones_it_accepts() -> None:
    assert parse_chain("int4-weight:64").conversion.block_size == 64  # type: ignore[union-attr]
    with pytest.raises(UsageError, match="one of 32, 64, 128, 256"):
        parse_chain("int4-weight:48")


def test_a_converted_file_the_runtime_cannot_prepare_is_a_failed_variant(
        tmp_path: Path) -> None:
    from toolkit.compress._usable import check_loads
    from toolkit.errors import CompressError

    from .models.custom_op_tflite import write_custom_op_tflite

    model = write_custom_op_tflite(tmp_path / "custom.tflite")
    with pytest.raises(CompressError, match=r"^int8: the converted file does not run: .*"
                                            r"EdgeNoSuchOp"):
        check_loads(model, "int8")
    assert not model.exists()  # nothing half-made is left for the deploy to push


ZERO_OUTPUTS = Path(__file__).parent / "models" / "zero_outputs.py"


@pytest.mark.integration
def test_a_model_whose_float_outputs_are_all_zero_is_named_degenerate_never_cos_1(
        tmp_path: Path) -> None:
    # Every variant computes the float model's zeros: two sets of zeros "agree" perfectly.
    source = load_model_source(ZERO_OUTPUTS)
    for artifact in build_artifacts(source, parse_recipes("fp32,int8"), tmp_path):
        fidelity = artifact.fidelity or {}
        assert fidelity["agreement_metric"] == "cosine"
        assert fidelity["degenerate"] == ("the float model's outputs are all zero; "
                                          "the file's outputs are all zero"), artifact.variant
        assert fidelity["cosine_similarity"] != 1.0
        [host] = artifact.runtime_compat
        assert host["ok"] is False and host["degenerate"] == fidelity["degenerate"]
