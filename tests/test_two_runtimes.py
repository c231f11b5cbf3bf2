"""One deploy, both runtimes: ``--runtime tflite,onnxruntime`` builds a model file's variants
for TFLite and for ONNX Runtime and measures them side by side on one board."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from toolkit.boards.lab import load_lab
from toolkit.cli.main import main
from toolkit.compress import for_runtimes, parse_recipes, parse_runtimes
from toolkit.errors import UsageError
from toolkit.model.load import ModelSource
from toolkit.report.render import render_html, render_markdown, report_rows
from toolkit.run.boards import board_sources
from toolkit.run.plan import RunPlan

from .conftest import DIGITS_MODEL
from .records import make_run, record

FAST = ["--min-runs", "10", "--min-seconds", "0.05"]
KERAS = Path(__file__).resolve().parent / "data" / "keras_cnn.tflite"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("text, runtimes", [
    ("tflite", ("tflite",)), ("onnxruntime", ("onnxruntime",)),
    (" onnxruntime , tflite ", ("onnxruntime", "tflite")),
])
def test_runtimes_parse_in_the_order_given(text: str, runtimes: tuple[str, ...]) -> None:
    assert parse_runtimes(text) == runtimes


@pytest.mark.parametrize("text", ["", "tflite,tflite", "tensorrt", "tflite,ort"])
def test_a_bad_runtime_list_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse_runtimes(text)
    assert str(raised.value) == (f"--runtime {text!r}: give distinct runtimes from tflite, "
                                 "onnxruntime, e.g. tflite,onnxruntime")


def test_onnx_runtime_variants_are_named_apart_and_say_their_runtime() -> None:
    chains = for_runtimes(parse_recipes("fp32,int8,int8-dynamic"), ("tflite", "onnxruntime"))
    assert [c.variant for c in chains] == ["fp32", "int8", "int8-dynamic", "fp32-ort",
                                           "int8-ort", "int8-dynamic-ort"]
    assert [f"{c.file_stem}{c.suffix}" for c in chains[2:4]] == ["int8-dynamic.tflite",
                                                                 "fp32-ort.onnx"]
    # A TFLite chain's manifest entry (and conversion cache key) is as it always was.
    assert "runtime" not in chains[1].to_dict()
    assert chains[4].to_dict() == {"recipe": "int8", "runtime": "onnxruntime",
                                   "steps": chains[1].to_dict()["steps"]}


@pytest.mark.parametrize("runtimes, recipes, variants", [
    ((), "", ["fp32", "int8"]),
    (("onnxruntime",), "fp16", ["fp16-ort"]),
    (("tflite", "onnxruntime"), "", ["fp32", "int8", "fp32-ort", "int8-ort"]),
])
def test_the_plan_builds_each_recipe_once_per_runtime_of_a_model_file(
        runtimes: tuple[str, ...], recipes: str, variants: list[str]) -> None:
    plan = RunPlan(models=(DIGITS_MODEL,), recipes=tuple(parse_recipes(recipes or "fp32,int8")),
                   boards=tuple(board_sources(load_lab().select_jobs(["local"]))),
                   runtimes=runtimes)
    model = ModelSource(path=DIGITS_MODEL, sha256="0" * 64)
    assert [chain.variant for chain in plan.chains(model)] == variants
    # A file given as it is runs on its own runtime, once.
    given = ModelSource(path=KERAS, sha256="0" * 64)
    assert plan.model_runtimes(given) == ("tflite",)


def test_deploy_bench_and_compress_take_runtime_with_one_help() -> None:
    commands = {name: command for name, command in main.commands.items()
                if not isinstance(command, click.Group)}
    helps = {name: param.help for name, command in commands.items() for param in command.params
             if isinstance(param, click.Option) and "--runtime" in param.opts}
    assert set(helps) == {"deploy", "bench", "compress"}
    assert len(set(helps.values())) == 1


def test_an_unknown_runtime_fails_in_one_line_naming_the_option(tmp_path: Path) -> None:
    result = invoke("deploy", str(DIGITS_MODEL), "--runtime", "tflite,tensorrt",
                    "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "Invalid value for --runtime: give distinct runtimes from tflite, onnxruntime" \
        in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("recipe, message", [
    ("prune:0.5+int8", "prune:0.5+int8 for --runtime onnxruntime: ONNX Runtime variants are "
                       "not made from a pruned, distilled or clustered model yet; build this "
                       "recipe with --runtime tflite"),
    ("fp32,int4-weight", "int4-weight for --runtime onnxruntime: the ONNX Runtime recipes are "
                         "fp32, fp16, int8-dynamic and int8 (static QDQ)"),
])
def test_a_recipe_onnx_runtime_has_no_variant_of_fails_before_any_conversion(
        tmp_path: Path, recipe: str, message: str) -> None:
    out = tmp_path / "out"
    result = invoke("deploy", str(DIGITS_MODEL), "--runtime", "tflite,onnxruntime",
                    "--recipe", recipe, "-o", str(out))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"edge: error: {message}"
    assert not out.exists()


@pytest.mark.parametrize("runtime, runtimes, message", [
    ("tflite-runtime", "tflite,onnxruntime",
     "--runtime tflite,onnxruntime builds .onnx files, which run on onnxruntime, and target "
     "board's runtime is tflite-runtime; set runtime = \"auto\" or \"onnxruntime\" in its "
     "target file, or drop onnxruntime from --runtime"),
    ("ai-edge-litert", "onnxruntime",
     "--runtime onnxruntime builds .onnx files, which run on onnxruntime, and target board's "
     "runtime is ai-edge-litert; set runtime = \"auto\" or \"onnxruntime\" in its target "
     "file, or give --runtime tflite"),
    ("onnxruntime", "tflite,onnxruntime",
     "--runtime tflite,onnxruntime builds .tflite files and target board's runtime is "
     "onnxruntime (.onnx only); set runtime = \"auto\" or a TFLite runtime in its target "
     "file, or give --runtime onnxruntime"),
    ("onnxruntime", None,
     "digits_cnn.py gives .tflite files and target board's runtime is onnxruntime (.onnx "
     "only); set runtime = \"auto\" or a TFLite runtime in its target file, or give --runtime "
     "onnxruntime"),
])
def test_a_target_whose_runtime_cannot_run_a_runtime_asked_for_is_refused_before_any_work(
        tmp_path: Path, runtime: str, runtimes: str | None, message: str) -> None:
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "board.toml").write_text(f'transport = "local"\nruntime = "{runtime}"\n')
    out = tmp_path / "out"
    result = invoke("deploy", str(DIGITS_MODEL), "--targets-dir", str(targets), "--target",
                    "board", *(["--runtime", runtimes] if runtimes else []), "-o", str(out))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"edge: error: {message}"
    assert not out.exists()


def test_runtime_is_for_a_model_file_a_given_file_runs_on_its_own(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("deploy", str(KERAS), "--runtime", "onnxruntime", "-o", str(out))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "edge: error: --runtime onnxruntime: keras_cnn.tflite runs on tflite as it is given; "
        "--runtime chooses the runtimes of a .py model file's variants")
    assert not out.exists()


def ort_record(variant: str, size: int) -> dict:
    """A measured ONNX Runtime variant, as the agent reports one."""
    return {**record(variant, size=size), "file": f"{variant}.onnx",
            "config": {"recipe": variant.removesuffix("-ort"), "runtime": "onnxruntime"},
            "runtime": {"name": "onnxruntime", "version": "1.30.0"}}


def test_the_report_compares_each_runtime_with_its_own_fp32_and_names_both() -> None:
    run = make_run("r1", [record("fp32", size=160_000), record("int8", size=40_000),
                          ort_record("fp32-ort", 200_000), ort_record("int8-ort", 50_000)])
    ratios = {r.variant: (r.size_ratio, r.runtime) for r in report_rows(run)}
    assert ratios == {"fp32": ("1.00x", "ai-edge-litert 2.3.0"),
                      "int8": ("0.25x", "ai-edge-litert 2.3.0"),
                      "fp32-ort": ("1.00x", "onnxruntime 1.30.0"),
                      "int8-ort": ("0.25x", "onnxruntime 1.30.0")}
    markdown = render_markdown(run)
    assert "**local**: Test CPU, ai-edge-litert 2.3.0 and onnxruntime 1.30.0" in markdown
    assert "| local | int8-ort | onnxruntime 1.30.0 | 48.8 KiB | 0.25x |" in markdown
    html = render_html(run)
    assert "<th>vs fp32 / fp32-ort</th>" in html and "<th>runtime</th>" in html
    assert "ONNX Runtime for an\n<code>.onnx</code>" in html
    assert "with the TFLite\ninterpreter on the host" not in html


@pytest.mark.e2e
def test_one_deploy_measures_both_runtimes_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("deploy", str(DIGITS_MODEL), "--target", "local", "--runtime",
                    "tflite,onnxruntime", "--recipe", "fp32,int8", "-o", str(out), "--json",
                    *FAST)
    assert result.exit_code == 0, result.output
    records = {r["variant"]: r for r in json.loads(result.stdout)["results"]}
    assert list(records) == ["fp32", "int8", "fp32-ort", "int8-ort"]
    for name, r in records.items():
        onnx = name.endswith("-ort")
        assert r["status"] == "ok"
        assert r["runtime"]["name"] == ("onnxruntime" if onnx else "ai-edge-litert")
        assert r["file"] == f"{name}.{'onnx' if onnx else 'tflite'}"
        assert r["accuracy"] > 0.9 and r["eval_samples"] > 0  # on the artifact, on the host
        assert r["runtime_compat"][0]["name"] == r["runtime"]["name"]
        assert r["output_check"]["ok"] is True and r["output_check"]["samples"] > 0
        assert r["verdict"]["status"] in ("VALID", "INVALID")
        assert isinstance(r["verdict"]["reasons"], list)
        assert r["verdict"]["status"] == "VALID" or r["verdict"]["reasons"]
    # What built each: torch's exporter and onnxruntime for the .onnx, litert-torch else.
    assert {"onnxscript", "onnxruntime"} <= set(records["int8-ort"]["toolchain"])
    assert "litert-torch" in records["int8"]["toolchain"]
    assert "litert-torch" not in records["int8-ort"]["toolchain"]
    int8 = records["int8-ort"]
    assert int8["details"]["format"] == "QDQ" and int8["details"]["weights"] == \
        "int8, per channel"
    assert int8["calibration"]["samples_used"] == records["int8"]["calibration"]["samples_used"]
    assert int8["size_bytes"] < 0.5 * records["fp32-ort"]["size_bytes"]
    [run] = (out / "runs").iterdir()
    assert sorted(p.name for p in (run / "artifacts").iterdir()) == [
        "fp32-ort.onnx", "fp32.tflite", "int8-ort.onnx", "int8.tflite", "manifest.json"]
