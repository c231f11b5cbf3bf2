"""`edge deploy` end to end on the local target, and every bad input the spine promises to catch."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.cli import main

from .conftest import DIGITS_MODEL

FAST = ["--min-runs", "20", "--min-seconds", "0.1"]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("deploy") / "edge-out"
    result = invoke("deploy", str(DIGITS_MODEL), "--target", "local", "-o", str(out),
                    "--json", *FAST)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), out


@pytest.mark.slow
def test_deploy_json_has_every_variant_with_its_figures(digits_run) -> None:
    document, _ = digits_run
    by_variant = {r["variant"]: r for r in document["results"]}
    assert set(by_variant) == {"fp32", "int8"}
    for record in document["results"]:
        assert record["target"] == "local"
        assert record["status"] == "ok"
        assert record["size_bytes"] > 0
        assert 0 < record["latency_ms"]["p50"] <= record["latency_ms"]["p90"] \
            <= record["latency_ms"]["p99"]
        assert record["peak_rss_bytes"] > 0
        assert record["runtime"]["name"] and record["runtime"]["version"]


@pytest.mark.slow
def test_int8_keeps_accuracy_and_shrinks_the_file(digits_run) -> None:
    by_variant = {r["variant"]: r for r in digits_run[0]["results"]}
    fp32, int8 = by_variant["fp32"], by_variant["int8"]
    assert fp32["accuracy"] > 0.95
    assert abs(fp32["accuracy"] - int8["accuracy"]) <= 0.01
    assert int8["size_bytes"] <= 0.5 * fp32["size_bytes"]


@pytest.mark.slow
def test_deploy_writes_reports_and_stores_the_run(digits_run) -> None:
    document, out = digits_run
    run_dir = out / "runs" / document["run_id"]
    markdown = (run_dir / "report.md").read_text()
    assert "| local | int8 |" in markdown and "p99" in markdown
    assert "<table>" in (run_dir / "report.html").read_text()
    assert json.loads((run_dir / "artifacts" / "manifest.json").read_text())["variants"]
    with sqlite3.connect(out / "results.sqlite") as db:
        assert db.execute("SELECT run_id FROM runs").fetchall() == [(document["run_id"],)]
        assert db.execute("SELECT COUNT(*) FROM results").fetchone() == (2,)
    assert not list(out.glob(".staging-*"))


def test_deploy_prints_where_the_report_is(tflite_copy: Path, tmp_path: Path) -> None:
    result = invoke("deploy", str(tflite_copy), "-o", str(tmp_path / "out"), *FAST)
    assert result.exit_code == 0, result.output
    report_line = next(line for line in result.stdout.splitlines() if line.startswith("report:"))
    assert Path(report_line.split(":", 1)[1].strip()).is_file()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


MODEL_WITHOUT_BUILD = "def example_input():\n    return ()\n"
MODEL_REJECTING_INPUT = """
import torch
def build_model():
    return torch.nn.Linear(4, 2)
def example_input():
    return (torch.zeros(1, 3),)
"""


@pytest.mark.parametrize("case, message", [
    ("missing model", "does not exist"),
    ("no build_model", "defines no build_model()"),
    ("input rejected", "rejects example_input()"),
    ("unknown target", "unknown target 'nosuchboard'; known targets: jetson-nano, "),
    ("unwritable output", "is not writable"),
    ("unknown recipe", "unknown recipe 'int3'"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case: str, message: str,
                                                          tflite_copy: Path,
                                                          tmp_path: Path) -> None:
    model, target, out, recipe = tflite_copy, "local", tmp_path / "out", "fp32,int8"
    if case == "missing model":
        model = tmp_path / "nope.py"
    elif case == "no build_model":
        model = write(tmp_path / "m.py", MODEL_WITHOUT_BUILD)
    elif case == "input rejected":
        model = write(tmp_path / "m.py", MODEL_REJECTING_INPUT)
    elif case == "unknown target":
        target = "nosuchboard"
    elif case == "unwritable output":
        out = write(tmp_path / "a-file", "") / "out"  # a file where a folder must go
    elif case == "unknown recipe":
        model, recipe = DIGITS_MODEL, "fp32,int3"
    result = invoke("deploy", str(model), "--target", target, "-o", str(out),
                    "--recipe", recipe)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge: error: ")
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    if case != "unwritable output":
        assert not out.exists()


def test_an_invalid_agent_answer_is_never_stored(tflite_copy: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    class LyingTransport:
        def run_job(self, job: dict, files: dict) -> bytes:
            return json.dumps({"schema_version": 1, "job_id": job["job_id"]}).encode()

    monkeypatch.setattr("toolkit.pipeline.JobRunner", lambda target: LyingTransport())
    out = tmp_path / "out"
    result = invoke("deploy", str(tflite_copy), "-o", str(out))
    assert result.exit_code == 1
    assert "invalid result" in result.stderr and "result.board" in result.stderr
    assert not (out / "runs").exists()
    with sqlite3.connect(out / "results.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone() == (0,)
