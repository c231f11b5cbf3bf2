"""On the board floor (tflite-runtime 2.14): correct quantized files pass the output check,
a file 2.14 computes wrongly does not.  The host makes the references, the agent judges."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from toolkit.compress import compress_to_folder
from toolkit.model.reference import compute_reference

from .conftest import DIGITS_MODEL
from .test_agent import run_agent

#: The output check is the subject here: no limit on the run-to-run spread (max_cv 0), which
#: a busy test machine may exceed without saying anything about the outputs.
SETTINGS = {"max_cv": 0.0, "cooldown_seconds": 0}


def digits_samples(count: int = 32) -> list[tuple[np.ndarray]]:
    from sklearn.datasets import load_digits

    images = load_digits().images[-count:].astype(np.float32) / 16.0
    return [(image,) for image in images.reshape(count, 1, 1, 8, 8)]


@pytest.mark.slow
def test_correct_quantized_digits_variants_are_valid_on_tflite_runtime_214(
        tflite_runtime_214: Path, tmp_path: Path) -> None:
    manifest = json.loads(compress_to_folder(
        DIGITS_MODEL, "int8,int8-dynamic,prune-channels:0.5+int8", tmp_path / "out")
        .read_text())
    folder = tmp_path / "out"
    variants = []
    for variant in manifest["variants"]:
        reference = f"{variant['file']}.ref.npz"
        compute_reference(folder / variant["file"], digits_samples(), folder / reference)
        variants.append({"name": variant["recipe"], "file": variant["file"],
                         "reference": reference})
    result = run_agent(folder, variants, SETTINGS, python=str(tflite_runtime_214))
    for measured in result["variants"]:
        assert measured["runtime"] == {"name": "tflite-runtime", "version": "2.14.0"}
        check = measured["output_check"]
        assert check["ok"], (measured["name"], check["summary"])
        assert check["rule"], measured["name"]
        assert measured["verdict"] == {"status": "VALID", "reasons": []}, measured["name"]
    by_name = {v["name"]: v["output_check"] for v in result["variants"]}
    # The case that used to fail: a correct int8 file, one output step from the host.
    assert by_name["int8"]["max_abs_diff"] > 1e-4
    assert by_name["int8"]["rule"] == "within 2 output steps"


@pytest.mark.slow
def test_a_file_tflite_runtime_214_computes_wrongly_is_invalid_on_the_board(
        tflite_runtime_214: Path, tmp_path: Path) -> None:
    # ai-edge-quantizer's dynamic-range MLP: runs on 2.14 without an error, computes garbage
    # there (tests/test_compress.py catches it on the host; the board must catch it too).
    import torch

    from .models.wrongly_computed_mlp import write_wrongly_computed_mlp

    write_wrongly_computed_mlp(tmp_path)
    samples = [(torch.randn(1, 64),) for _ in range(32)]
    for name in ("float", "dynamic"):
        compute_reference(tmp_path / f"{name}.tflite", samples, tmp_path / f"{name}.ref.npz")
    result = run_agent(tmp_path, [{"name": name, "file": f"{name}.tflite",
                                   "reference": f"{name}.ref.npz"}
                                  for name in ("float", "dynamic")],
                       SETTINGS, python=str(tflite_runtime_214))
    right, wrong = result["variants"]
    assert right["output_check"]["ok"] and right["verdict"]["status"] == "VALID"
    assert not wrong["output_check"]["ok"] and wrong["output_check"]["rule"] == ""
    assert wrong["verdict"]["status"] == "INVALID"
    assert any(r.startswith("outputs mismatched: ") and "SQNR" in r
               for r in wrong["verdict"]["reasons"])


@pytest.mark.slow
def test_int4_weights_are_refused_by_tflite_runtime_before_they_run(
        tflite_runtime_214: Path, tmp_path: Path) -> None:
    """tflite-runtime 2.14 has no int4 kernels: on the digits CNN's int4 file it crashed with
    SIGSEGV in some runs and computed garbage in others. The agent reads the file's tensor
    types and refuses it in one line; ai-edge-litert runs the same file."""
    from device_agent.tflite_file import int4_tensors

    manifest = json.loads(compress_to_folder(DIGITS_MODEL, "fp32,int4-weight",
                                             tmp_path / "out").read_text())
    folder = tmp_path / "out"
    files = {variant["recipe"]: variant["file"] for variant in manifest["variants"]}
    assert int4_tensors((folder / files["fp32"]).read_bytes()) == 0
    assert int4_tensors((folder / files["int4-weight"]).read_bytes()) > 0
    variants = [{"name": "int4-weight", "file": files["int4-weight"]}]
    refused = run_agent(folder, variants, SETTINGS, python=str(tflite_runtime_214))
    failed = refused["variants"][0]
    assert failed["status"] == "failed"
    assert failed["error"].startswith(f"tflite-runtime 2.14.0 cannot run {files['int4-weight']}: "
                                      "the file holds ")
    assert "int4 weights need ai-edge-litert" in failed["error"]
    assert "\n" not in failed["error"]
    assert run_agent(folder, variants, SETTINGS)["variants"][0]["status"] == "ok"


VANISHING = Path(__file__).parent / "models" / "vanishing_logits.py"


@pytest.mark.integration
def test_an_int8_file_computing_only_zeros_is_never_a_match_on_host_board_or_report(
        tmp_path: Path) -> None:
    from device_agent.measure import measure_variant
    from device_agent.outputs import load_reference
    from device_agent.runtime import find_runtime
    from toolkit.compress import build_artifacts, parse_recipes
    from toolkit.model.load import load_model_source
    from toolkit.report.render import report_rows
    from toolkit.run.execute import build_references

    from .records import make_run

    source = load_model_source(VANISHING)
    artifacts = {a.variant: a for a in build_artifacts(source, parse_recipes("fp32,int8"),
                                                       tmp_path)}
    fp32, int8 = artifacts["fp32"], artifacts["int8"]
    assert fp32.runtime_compat[0]["ok"] and "degenerate" not in (fp32.fidelity or {})
    assert (int8.fidelity or {})["degenerate"] == "the file's outputs are all zero"
    assert int8.runtime_compat[0]["ok"] is False
    references = build_references(source, [fp32, int8], tmp_path / "refs")
    settings = {"warmup_runs": 2, "warmup_seconds": 0.0, "min_runs": 10, "min_seconds": 0.05,
                **SETTINGS}
    records = []
    for artifact in (fp32, int8):
        reference = load_reference(references[artifact.board_name])
        assert reference["metric"] == "cosine"
        figures = measure_variant(find_runtime(), artifact.path, settings, reference=reference,
                                  thermal=lambda: {"zones_c": {}, "cpu_mhz": {}})
        records.append({"target": "local", "variant": artifact.variant, **artifact.to_dict(),
                        **figures})
        if artifact is int8:
            check = figures["output_check"]
            assert not check["ok"] and check["degenerate"] == (
                "the host's outputs are all zero; the board's outputs are all zero")
            assert figures["verdict"]["status"] == "INVALID"
            assert figures["verdict"]["reasons"][-1].startswith("outputs degenerate: ")
        else:
            assert figures["output_check"]["ok"], figures["output_check"]["summary"]
    rows = {row.variant: row for row in report_rows(make_run("r", records))}
    assert rows["fp32"].outputs_match is True
    assert rows["int8"].outputs_match is False and "\u2713" not in rows["int8"].output_check
