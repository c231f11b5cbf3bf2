"""A model that kills the real TFLite runtime with SIGSEGV, among healthy variants.

The crashing file is real (see ``tests/models/segfaulting_tflite.py``): nothing here
sends a signal itself. The agent runs each variant in a child process, so the
crash is that variant's failure, named with its signal and runtime, and the
variants before and after it are measured as usual, on a real sshd board
(with either runtime) and on the local target, through to the store and report.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.artifacts.bundle import Artifact, describe_artifact
from toolkit.boards.targets import load_target
from toolkit.report.render import write_report
from toolkit.results.store import ResultsStore, StoredRun
from toolkit.run.execute import run_on_target
from toolkit.run.plan import Sweep

from .lab import Sshd
from .models.segfaulting_tflite import write_segfaulting_tflite

REPO = Path(__file__).resolve().parent.parent
FAST = {"warmup_runs": 2, "min_runs": 10, "min_seconds": 0.05, "cooldown_seconds": 0}
INVOKE = """
import sys, numpy as np
try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:
    from tflite_runtime.interpreter import Interpreter
interpreter = Interpreter(model_path=sys.argv[1])
interpreter.allocate_tensors()
detail = interpreter.get_input_details()[0]
interpreter.set_tensor(detail["index"], np.ones(detail["shape"], detail["dtype"]))
print("allocated", flush=True)
interpreter.invoke()
print("survived", flush=True)
"""


@pytest.fixture
def segfaulting(tmp_path: Path) -> Path:
    return write_segfaulting_tflite(tmp_path / "segfaults.tflite")


# Both real runtimes, 2.14 from its own venv (asked for by name below, so the fixture rule
# in conftest does not see it).
@pytest.mark.integration
@pytest.mark.parametrize("runtime", ["ai-edge-litert", "tflite-runtime-2.14"])
def test_the_fixture_segfaults_the_real_runtime_at_invoke(
        runtime: str, segfaulting: Path, request: pytest.FixtureRequest) -> None:
    python = sys.executable if runtime == "ai-edge-litert" else \
        str(request.getfixturevalue("tflite_runtime_214"))
    ran = subprocess.run([python, "-c", INVOKE, str(segfaulting)], capture_output=True,
                         text=True, timeout=120, check=False)
    # Loads and allocates, then dies inside invoke: the runtime's own crash, every time.
    assert ran.returncode == -signal.SIGSEGV, ran.stderr
    assert ran.stdout == "allocated\n"


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory, digits_fp32_tflite: Path) -> list[Path]:
    """Two real, different models: the digits CNN in fp32 and in static int8."""
    from toolkit.compress import Int8StaticConfig, compress
    from toolkit.model.load import load_model_source

    int8 = compress(load_model_source(REPO / "examples" / "digits_cnn.py"), Int8StaticConfig(),
                    tmp_path_factory.mktemp("int8"))
    return [digits_fp32_tflite, int8.path]


def deploy_three(target_name: str, targets_dir: Path | None, healthy: list[Path],
                 segfaulting: Path, out: Path) -> tuple[StoredRun, Path]:
    """fp32, the segfaulting model, int8 in one job on one target; stored and reported."""
    artifacts: list[Artifact] = [
        describe_artifact("fp32", healthy[0], config={"recipe": "fp32"}),
        describe_artifact("segfaults", segfaulting, config={"recipe": "as-is"}),
        describe_artifact("int8", healthy[1], config={"recipe": "int8"})]
    run_id = f"segv-{target_name}"
    results = run_on_target(load_target(target_name, targets_dir), run_id, artifacts,
                             FAST, Sweep(), {})
    run = StoredRun(run_id=run_id, created_at="2026-01-01T00:00:00Z", model_name="three",
                    model_path=str(segfaulting), model_sha256=artifacts[1].sha256,
                    report_dir=str(out), results=results)
    out.mkdir(parents=True)
    write_report(run, out)
    store_path = out / "results.sqlite"
    with ResultsStore(store_path) as store:
        store.add_run(run)
    return run, store_path


@pytest.mark.slow
@pytest.mark.parametrize("board", ["local", "sshd", "sshd-tflite-runtime-2.14"])
def test_a_segfaulting_variant_fails_alone_and_the_others_are_measured(
        board: str, sshd: Sshd, healthy: list[Path], segfaulting: Path, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    targets_dir = None
    runtime = "ai-edge-litert"
    if board != "local":
        python = sys.executable
        if board.endswith("2.14"):
            python, runtime = str(request.getfixturevalue("tflite_runtime_214")), \
                "tflite-runtime"
        sshd.write_target(tmp_path / "targets", "lab", tmp_path / "board", python=python)
        targets_dir = tmp_path / "targets"
    name = "local" if board == "local" else "lab"
    run, store_path = deploy_three(name, targets_dir, healthy, segfaulting, tmp_path / "out")

    with ResultsStore(store_path, create=False) as store:
        stored = [r.to_dict() for r in store.get_run(run.run_id).results]
    assert [r["variant"] for r in stored] == ["fp32", "segfaults", "int8"]
    fp32, crashed, int8 = stored
    for measured in (fp32, int8):
        assert measured["status"] == "ok" and measured["target"] == name
        assert measured["runs"] >= FAST["min_runs"] and measured["latency_ms"]["p50"] > 0
        assert measured["runtime"]["name"] == runtime
    assert crashed["status"] == "failed"
    assert crashed["error"].startswith("killed by signal SIGSEGV in " + runtime)
    assert crashed["runtime"]["name"] == runtime
    assert "latency_ms" not in crashed

    report = (tmp_path / "out" / "report.md").read_text()
    header, *rows = [[cell.strip() for cell in line.strip("|").split("|")]
                     for line in report.splitlines() if line.startswith(f"| {name} |")
                     or line.startswith("| target |")]
    table = {row[1]: dict(zip(header, row, strict=True)) for row in rows}
    assert list(table) == ["fp32", "segfaults", "int8"]
    assert table["segfaults"]["p50"] == ""
    assert table["segfaults"]["verdict"].startswith(
        "failed (measure): killed by signal SIGSEGV in " + runtime)
    for variant in ("fp32", "int8"):
        value, unit = table[variant]["p50"].split()  # adaptive units: "15.2 us", "0.684 ms"
        assert float(value) > 0 and unit in ("ns", "us", "ms", "s")
        assert "killed" not in table[variant]["note"]


def test_host_references_survive_a_segfaulting_model(digits_fp32_tflite: Path, segfaulting: Path,
                                                     tmp_path: Path) -> None:
    from toolkit.model.reference import compute_references

    models = [digits_fp32_tflite, segfaulting, digits_fp32_tflite.with_name("missing.tflite")]
    made = compute_references([(m, tmp_path / f"{i}.npz") for i, m in enumerate(models)], None)
    assert made[models[0]] == tmp_path / "0.npz" and (tmp_path / "0.npz").is_file()
    assert made[models[1]] == "the host runtime crashed on it (killed by signal SIGSEGV)"
    # The child after the crash went on with the rest.
    assert isinstance(made[models[2]], str) and "missing.tflite" in made[models[2]]


@pytest.mark.slow
def test_edge_deploy_of_a_segfaulting_file_reports_it_and_the_host_survives(
        segfaulting: Path, tmp_path: Path) -> None:
    # A separate process: were the host to run the model in-process, only it would die.
    ran = subprocess.run([sys.executable, "-m", "toolkit", "deploy", str(segfaulting),
                          "--target", "local", "-o", str(tmp_path / "out"), "--json",
                          "--min-runs", "5", "--min-seconds", "0.05"],
                         capture_output=True, text=True, timeout=300, check=False,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    # Nothing was measured: exit 3, the failure named on stderr, and still stored.
    assert ran.returncode == 3, ran.stderr
    document = json.loads(ran.stdout)
    (result,) = document["results"]
    assert result["status"] == "failed"
    assert result["error"].startswith("killed by signal SIGSEGV in ai-edge-litert")
    assert "no output check for segfaults.tflite" in ran.stderr and "SIGSEGV" in ran.stderr
    *_, failure, error = ran.stderr.strip().splitlines()
    assert failure.startswith("segfaults.tflite on local: killed by signal SIGSEGV in "
                              "ai-edge-litert")
    assert error == (f"edge: error: 1 of 1 variants not measured (segfaults.tflite on local); "
                     f"run {document['run_id']} stores the failures")
    assert "Traceback" not in ran.stderr
