"""`edge deploy` end to end on the local target, and every bad input the spine promises to catch."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.cli.main import main

from .conftest import DIGITS_MODEL

FAST = ["--min-runs", "20", "--min-seconds", "0.1"]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("deploy") / "edge-out"
    # Module-scoped: the autouse isolation of conftest does not reach it, so its own board
    # (a benchmark holding ~/.cache/edge/local-board made this deploy fail as "busy").
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGE_LOCAL_BOARD", str(out.parent / "local-board"))
        patch.setenv("EDGE_CONVERSION_CACHE", str(out.parent / "conversion-cache"))
        patch.delenv("EDGE_STORE", raising=False)
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
    lines = result.stdout.splitlines()
    report_line = next(line for line in lines if line.startswith("report:"))
    assert Path(report_line.split(":", 1)[1].strip()).is_file()
    # The results as plain columns in a pipe, not the report's Markdown table.
    assert not any(line.startswith("|") for line in lines)
    header = lines.index(next(line for line in lines if line.startswith("target ")))
    assert lines[header].split()[:3] == ["target", "variant", "size"]
    assert lines[header + 1].split()[:2] == ["local", "model.tflite"]


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
    ("empty tflite", "model.tflite is empty (0 bytes): not a TFLite model"),
    ("truncated tflite", "model.tflite is truncated or corrupt: a table or vector runs past "
                         "the end of its"),
    ("random tflite", "model.tflite is not a TFLite model: no TFL3 flatbuffer identifier"),
    ("tiny tflite", "model.tflite is truncated: 6 bytes, shorter than a TFLite header"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case: str, message: str,
                                                          tflite_copy: Path,
                                                          tmp_path: Path) -> None:
    # fp32: the .tflite as given (int8 of a .tflite is refused, needing calibration inputs).
    model, target, out, recipe = tflite_copy, "local", tmp_path / "out", "fp32"
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
    elif case.endswith(" tflite"):  # never stored as a run nor sent to a board
        data = tflite_copy.read_bytes()
        tflite_copy.write_bytes({"empty": b"", "truncated": data[:len(data) * 2 // 3],
                                 "random": random.Random(13).randbytes(len(data)),
                                 "tiny": data[:6]}[case.split()[0]])
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

    monkeypatch.setattr("toolkit.run.execute.JobRunner", lambda target: LyingTransport())
    out = tmp_path / "out"
    result = invoke("deploy", str(tflite_copy), "-o", str(out))
    assert result.exit_code == 1
    assert "invalid result" in result.stderr and "result.board" in result.stderr
    assert not (out / "runs").exists()
    with sqlite3.connect(out / "results.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone() == (0,)


EMBEDDING_BAG = Path(__file__).parent / "models" / "embedding_bag.py"


@pytest.mark.slow
def test_a_variant_that_cannot_be_built_fails_alone_and_the_deploy_exits_3(
        tmp_path: Path) -> None:
    # int8: no calibration data in the model file. fp32 and int8-dynamic (whose embedding
    # table the runtime once refused) are still built, measured and stored.
    out = tmp_path / "out"
    result = invoke("deploy", str(EMBEDDING_BAG), "--recipe", "fp32,int8-dynamic,int8",
                    "-o", str(out), "--json", *FAST)
    assert result.exit_code == 3, result.output
    document = json.loads(result.stdout)
    by_variant = {r["variant"]: r for r in document["results"]}
    assert list(by_variant) == ["fp32", "int8-dynamic", "int8"]
    for variant in ("fp32", "int8-dynamic"):
        assert by_variant[variant]["status"] == "ok"
        assert by_variant[variant]["latency_ms"]["p50"] > 0
    assert by_variant["int8"]["status"] == "failed"
    assert by_variant["int8"]["stage"] == "compress"
    assert by_variant["int8"]["target"] == "local"
    lines = result.stderr.strip().splitlines()
    assert lines[-2] == ("int8: not built: the model file defines no calibration_data(); int8 "
                         "needs representative inputs to calibrate activations")
    assert lines[-1] == (f"edge: error: 1 of 3 variants not measured (int8); what "
                         f"was measured is stored in run {document['run_id']}")
    assert "Traceback" not in result.stderr
    with sqlite3.connect(out / "results.sqlite") as db:
        stored = dict(db.execute("SELECT variant, status FROM results").fetchall())
    assert stored == {"fp32": "ok", "int8-dynamic": "ok", "int8": "failed"}
    run_dir = out / "runs" / document["run_id"]
    manifest = json.loads((run_dir / "artifacts" / "manifest.json").read_text())
    assert [f["variant"] for f in manifest["failed"]] == ["int8"]
    assert "not built: the model file defines no calibration_data()" in (
        run_dir / "report.md").read_text()
    assert not list(out.glob(".staging-*"))


@pytest.mark.slow
def test_a_token_id_model_is_timed_on_its_own_input_not_on_random_integers(
        tmp_path: Path) -> None:
    # Random integers are not token ids: EMBEDDING_LOOKUP failed on them ("index out of
    # bounds. Got 89, and bounds are [0, 49]") on the host's output check and on the board.
    result = invoke("deploy", str(Path(__file__).parent / "models" / "token_ids.py"),
                    "--recipe", "fp32", "-o", str(tmp_path / "out"), "--json", *FAST)
    assert result.exit_code == 0, result.output
    measured = json.loads(result.stdout)["results"][0]
    assert measured["status"] == "ok" and measured["latency_ms"]["p50"] > 0
    assert measured["inputs"] == "reference: the host's first input sample"
    assert measured["output_check"]["ok"]


def test_compress_refuses_a_broken_tflite_in_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "model.tflite"
    broken.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(8))
    result = invoke("compress", str(broken), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"edge: error: {broken} is truncated or corrupt: its root table offset 28 is past the "
        "end of its 16 bytes"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["deploy", "compress"])
def test_a_tflite_with_a_custom_op_no_stock_runtime_has_is_refused_before_anything(
        tmp_path: Path, command: str) -> None:
    # The board's runtime would refuse it after the upload ("unresolved custom op"); the op
    # codes are in the file, so the host says so first, naming the op and what would run it.
    from .models.custom_op_tflite import write_custom_op_tflite

    model = write_custom_op_tflite(tmp_path / "custom.tflite")
    out = tmp_path / "out"
    result = invoke(command, str(model), "-o", str(out))
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"edge: error: {model} uses the custom op 'EdgeNoSuchOp', which no stock TFLite "
        "runtime registers: it runs only on a runtime built with that op registered (or a "
        "delegate that implements it), and edge's agent loads the stock runtimes"]
    assert not out.exists()


def test_a_variant_not_built_is_named_once_whatever_the_number_of_boards() -> None:
    from toolkit.artifacts.bundle import FailedVariant
    from toolkit.results.record import ResultRecord, Status
    from toolkit.results.store import StoredRun
    from toolkit.run.deploy import DeployOutcome

    not_built = FailedVariant(variant="int8-dynamic", config={"recipe": "int8-dynamic"},
                              stage="compress", error="the converted file does not run: X")
    results = [ResultRecord(target="a", recipe="fp32", status=Status.OK),
               ResultRecord(target="a", recipe="segv", status=Status.OK),
               not_built.record("a"),
               ResultRecord(target="b", recipe="fp32", status=Status.OK),
               ResultRecord(target="b", recipe="segv", status=Status.FAILED,
                            error="killed by signal SIGSEGV"),
               not_built.record("b")]
    run = StoredRun(run_id="r1", created_at="2026-01-01T00:00:00Z", model_name="m",
                    model_path="m.py", model_sha256="0" * 64, report_dir="r", results=results)
    outcome = DeployOutcome(run=run, run_dir=Path("r"), report={}, store_path="s")
    assert outcome.failures == ["int8-dynamic: not built: the converted file does not run: X",
                                "segv on b: killed by signal SIGSEGV"]
    incomplete = outcome.incomplete()
    assert incomplete is not None and incomplete.exit_code == 3
    assert str(incomplete) == ("3 of 6 target x variant cells not measured (int8-dynamic, "
                               "segv on b); what was measured is stored in run r1")
    measured_all = DeployOutcome(run=StoredRun(**{**run.__dict__, "results": results[:2]}),
                                 run_dir=Path("r"), report={}, store_path="s")
    assert measured_all.failures == [] and measured_all.incomplete() is None


@pytest.mark.slow
def test_deploy_runs_on_the_boards_and_tags_of_the_lab_file(tflite_copy: Path,
                                                              tmp_path: Path) -> None:
    """`--target` names what `edge bench` names: a lab board, or a tag of the lab file."""
    lab = write(tmp_path / "lab.toml",
                '[boards.bench-host]\nkind = "local"\ntags = ["here"]\n')
    result = invoke("deploy", str(tflite_copy), "--target", "tag:here", "--lab", str(lab),
                    "-o", str(tmp_path / "out"), "--json", *FAST)
    assert result.exit_code == 0, result.output
    assert {r["target"] for r in json.loads(result.stdout)["results"]} == {"bench-host"}
    unknown = invoke("deploy", str(tflite_copy), "--target", "tag:nowhere", "--lab", str(lab),
                     "-o", str(tmp_path / "out2"))
    assert unknown.exit_code == 2 and "no board tagged 'nowhere'" in unknown.stderr
    assert not (tmp_path / "out2").exists()
