"""What built each variant (its record's ``toolchain``) and which agent measured it, kept in
the store and named by ``edge runs diff`` and ``edge check --history``."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.artifacts.agent_package import build_agent_package
from toolkit.artifacts.bundle import Artifact
from toolkit.cli.main import main
from toolkit.compress._from_tflite import build_from_tflite
from toolkit.compress._recipes import parse_chain, parse_recipes
from toolkit.compress._toolchain import TORCH_TO_TFLITE, built_with
from toolkit.gate.conditions import toolchain_differences
from toolkit.gate.history import check_history
from toolkit.model.load import load_model_source
from toolkit.results.diff import diff_runs
from toolkit.results.record import ResultRecord
from toolkit.results.store import ResultsStore

from .records import make_run, record

REPO = Path(__file__).resolve().parent.parent
KERAS_CNN = REPO / "tests" / "data" / "keras_cnn.tflite"
OLD = {"edge": "0.1.0", "torch": "2.13.0", "litert-torch": "0.9.0"}
NEW = {"edge": "0.1.0", "torch": "2.13.0", "litert-torch": "0.10.0"}


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def built(variant: str, toolchain: dict[str, str] | None, *, sha: str = "a",
          median_ms: float = 1.0, seed: int = 0) -> dict:
    """A stored record of ``variant`` whose file (sha256 ``sha`` x 64) ``toolchain`` built;
    without one, as records stored before the field read."""
    result = {**record(variant, median_ms=median_ms, seed=seed, n=60), "sha256": sha * 64}
    if toolchain is not None:
        result["toolchain"] = toolchain
    return result


def test_versions_are_read_without_importing_what_they_name() -> None:
    script = ("import json, sys\n"
              "from toolkit.compress._toolchain import TORCH_TO_TFLITE, built_with\n"
              "found = built_with((*TORCH_TO_TFLITE, 'torchao', 'not-a-package-edge-knows'))\n"
              "print(json.dumps([found, sorted(m for m in ('torch', 'litert_torch', "
              "'torchao') if m in sys.modules)]))\n")
    found, imported = json.loads(subprocess.run([sys.executable, "-c", script], check=True,
                                                capture_output=True, text=True,
                                                cwd=REPO).stdout)
    assert imported == []
    assert list(found) == ["edge", *TORCH_TO_TFLITE, "torchao", "not-a-package-edge-knows"]
    assert found["torch"] == importlib.metadata.version("torch")
    assert found["edge"] == importlib.metadata.version("edge")
    assert found["not-a-package-edge-knows"] == "absent"


@pytest.mark.parametrize("recipe, tools", [
    ("fp32", ()), ("fp16", ("ai-edge-quantizer",)), ("int8-dynamic", ("ai-edge-quantizer",)),
    ("int4-weight", ("ai-edge-quantizer",)), ("int8", ("torchao",)), ("qat", ("torchao",)),
    ("int8-mixed", ("torchao",)), ("prune:0.5+distill", ()),
    ("prune-channels:0.5+distill+int8", ("torch-pruning", "torchao")),
])
def test_each_chain_names_the_packages_its_steps_use(recipe: str,
                                                     tools: tuple[str, ...]) -> None:
    assert parse_chain(recipe).tools == tools


def test_a_file_as_given_was_built_by_nothing_but_edge(tmp_path: Path) -> None:
    [given] = build_from_tflite(load_model_source(KERAS_CNN), parse_recipes("fp32"), tmp_path)
    assert given.toolchain == {"edge": importlib.metadata.version("edge")}
    assert given.to_dict()["toolchain"] == given.toolchain


def test_the_toolchain_travels_from_the_artifact_into_the_store_and_back(
        tmp_path: Path) -> None:
    artifact = Artifact(variant="int8", path=tmp_path / "int8.tflite", sha256="b" * 64,
                        size_bytes=30_000, config={"recipe": "int8"},
                        toolchain=built_with((*TORCH_TO_TFLITE, "torchao")))
    answer = {"name": "int8", "status": "ok", "latency_ms": {"p50": 0.5, "p99": 0.7}}
    made = ResultRecord.measured_on("local", artifact, answer, board=record("x")["board"],
                                    threads=1, swept=False)
    path = tmp_path / "s.sqlite"
    with ResultsStore(path) as store:
        store.add_run(make_run("new", [made]))
        store.add_run(make_run("old", [built("int8", None)],
                               created_at="2026-11-01T00:00:00+00:00"))
    with ResultsStore(path) as store:
        assert store.get_run("new").results[0].toolchain == dict(artifact.toolchain)
        assert list(artifact.toolchain)[:2] == ["edge", "torch"]
        # A record stored before the field reads as it did: nothing known of what built it.
        assert store.get_run("old").results[0].toolchain == {}
        assert "toolchain" not in store.get_run("old").results[0].to_dict()


def test_a_converter_that_moved_with_the_file_is_in_the_reading() -> None:
    base = make_run("run-a", [built("int8", OLD)])
    new = make_run("run-b", [built("int8", NEW, sha="b", median_ms=1.2)])
    diff = diff_runs(base, new)
    assert diff.reading == ("built with litert-torch 0.9.0 vs 0.10.0, same conditions: "
                            "p50 +20.0 % on local/int8")
    [variant] = diff.variants
    differing = [f.name for f in variant.facts if f.differs]
    assert differing[:2] == ["file sha256", "built with litert-torch"]  # conditions first
    fact = next(f for f in variant.conditions if f.name == "built with litert-torch")
    assert (fact.base, fact.new) == ("0.9.0", "0.10.0")
    assert [f.name for f in variant.conditions if f.name.startswith("built with")] == [
        "built with edge", "built with torch", "built with litert-torch"]
    assert diff.to_dict()["variants"][0]["built"] == ["litert-torch 0.9.0 vs 0.10.0"]


def test_the_same_bytes_from_another_converter_are_listed_but_not_read_as_a_cause() -> None:
    base = make_run("run-a", [built("int8", OLD)])
    new = make_run("run-b", [built("int8", NEW, median_ms=1.2)])
    diff = diff_runs(base, new)
    assert diff.reading == "same conditions: p50 +20.0 % on local/int8"
    assert next(f.name for f in diff.variants[0].facts if f.differs) == "built with litert-torch"


def test_a_record_without_a_toolchain_shows_a_dash_and_names_nothing() -> None:
    base = make_run("run-a", [built("int8", None)])
    new = make_run("run-b", [built("int8", NEW, sha="b")])
    assert toolchain_differences(base.results[0], new.results[0]) == []
    diff = diff_runs(base, new)
    assert "built with" not in diff.reading
    torch = next(f for f in diff.variants[0].conditions if f.name == "built with torch")
    assert (torch.base, torch.new, torch.differs) == ("-", "2.13.0", True)


def test_edge_runs_diff_prints_the_converter_row(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with ResultsStore(path) as store:
        store.add_run(make_run("run-a", [built("int8", OLD)]))
        store.add_run(make_run("run-b", [built("int8", NEW, sha="b")],
                               created_at="2026-11-23T20:00:00+00:00"))
    shown = invoke("runs", "diff", "run-a", "run-b", "--store", str(path))
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[0].startswith("built with litert-torch 0.9.0 vs 0.10.0, ")
    rows = [line.split() for line in shown.output.splitlines()[1:] if "built with" in line]
    assert rows[0] == ["*", "built", "with", "litert-torch", "0.9.0", "0.10.0"]
    assert [row[2] for row in rows[1:]] == ["edge", "torch"]  # alike: after the differing


def test_check_history_names_the_converter_a_step_came_with(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with ResultsStore(path) as store:
        for i in range(30):
            result = built("int8", NEW if i >= 25 else OLD, sha="b" if i >= 25 else "a",
                           median_ms=1.3 if i >= 25 else 1.0, seed=i)
            store.add_run(make_run(f"r-{i:02d}", [result],
                                   created_at=f"2026-11-{1 + i // 24:02d}T{i % 24:02d}:00"))
        outcome = check_history(store, store.get_run("latest"))
    p50 = next(c for c in outcome.checks if c.metric == "latency_p50")
    assert p50.verdict == "regression" and p50.changed_at == "r-25"
    assert p50.detail.endswith("the file changed at that run (built with litert-torch 0.9.0 "
                               "vs 0.10.0)")


def test_the_agent_names_its_own_package(tmp_path: Path) -> None:
    agent = build_agent_package()
    (tmp_path / agent.name).write_bytes(agent.data)
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); "
             "from device_agent.board import board_facts; print(board_facts()['agent'])")
    named = [subprocess.run([sys.executable, "-c", probe, str(where)], check=True,
                            capture_output=True, text=True, cwd=tmp_path).stdout.strip()
             for where in (tmp_path / agent.name, REPO)]
    assert named == [agent.name, "source"]


def test_runs_diff_lists_the_agent_package() -> None:
    base = make_run("run-a", [built("int8", NEW)])
    board = {**base.results[0].to_dict()["board"], "agent": "agent-0123456789abcdef.pyz"}
    new = make_run("run-b", [{**built("int8", NEW), "board": board}])
    diff = diff_runs(base, new)
    agent = next(f for f in diff.variants[0].conditions if f.name == "agent package")
    assert (agent.base, agent.new, agent.differs) == ("-", "agent-0123456789abcdef.pyz", True)
    assert diff.reading == "same conditions: p50 within 2 %"
