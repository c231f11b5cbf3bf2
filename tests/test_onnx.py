"""An .onnx deployed as given and measured by ONNX Runtime on the board.

The model is made here with ``onnx.helper`` (MatMul + Add, seeded weights): no
conversion, so the agent-side tests are unit tests; deploys through the local board
are integration tests (a real agent process, real runtimes).
"""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from click.testing import CliRunner

from device_agent.accelerators import plan_model, preflight
from device_agent.interp import AcceleratorError
from device_agent.load_check import load_checks
from device_agent.measure import measure_variant
from device_agent.native_profilers import NotAvailable
from device_agent.ort import providers_for
from device_agent.ort_profiler import NodeEvent, trace_runs
from device_agent.outputs import load_reference
from device_agent.profiler import unavailable
from device_agent.runtime import Runtime, RuntimeNotFound, find_runtime, runtime_for
from device_agent.settings import RUNTIMES
from toolkit.boards.bootstrap import BoardPython
from toolkit.boards.wheelhouse import REQUIREMENTS
from toolkit.cli.main import main
from toolkit.compress._from_onnx import refusal
from toolkit.compress._recipes import parse_chain
from toolkit.errors import BoardSetupError, ModelError
from toolkit.model.load import load_model_source
from toolkit.model.reference import compute_reference

from .test_agent import packages_measuring, run_agent

if TYPE_CHECKING:
    import onnx

REPO = Path(__file__).resolve().parent.parent
FAST = {"min_runs": 10, "min_seconds": 0.05, "warmup_runs": 2, "warmup_seconds": 0.0,
        "cooldown_seconds": 0}
CLI_FAST = ["--min-runs", "10", "--min-seconds", "0.05"]


def tiny_onnx(path: Path) -> Path:
    """y = x @ W + b, x float32 [1, 16], y [1, 10], weights from a seeded generator."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.standard_normal((16, 10)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], [weights, bias])
    return saved_onnx(graph, path)


def saved_onnx(graph: onnx.GraphProto, path: Path) -> Path:
    """``graph`` as a checked model file at ``path``, opset 17, in the IR version
    onnxruntime 1.19 (the last cp38 line) reads."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def ort_targets(folder: Path) -> Path:
    """A targets folder with ``ort``: this machine as the board, runtime onnxruntime."""
    folder.mkdir()
    (folder / "ort.toml").write_text('transport = "local"\nruntime = "onnxruntime"\n'
                                     "threads = 1\n")
    return folder


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_the_agent_measures_an_onnx_with_the_same_method_and_checks_its_outputs(
        tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "mlp.onnx")
    reference = load_reference(compute_reference(model, None, tmp_path / "mlp.ref.npz"))
    runtime = runtime_for("auto", model.name)
    figures = measure_variant(runtime, model, FAST, reference=reference)
    assert figures["status"] == "ok" and figures["runtime"]["name"] == "onnxruntime"
    assert figures["runs"] >= 10 and set(figures["latency_ms"]) >= {"p50", "p90", "p99"}
    assert figures["peak_rss_bytes"] > 0
    assert figures["inputs"] == "reference: the host's first input sample"
    assert figures["accelerator"] == {"requested": "cpu", "used": "cpu", "api": "session",
                                      "providers": ["CPUExecutionProvider"]}
    check = figures["output_check"]
    assert check["ok"] and check["samples"] == 32 and check["max_abs_diff"] == 0.0
    assert figures["verdict"]["status"] in ("VALID", "INVALID")


def two_layer_onnx(path: Path) -> Path:
    """softmax(relu(x @ W1 + b1) @ W2 + b2), x float32 [1, 16], named nodes: ORT fuses it
    into three (a FusedGemm with the Relu, a Gemm, the Softmax)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w1", (16, 32)), ("b1", (32,)), ("w2", (32, 10)),
                                   ("b2", (10,)))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
             helper.make_node("Add", ["h1", "b1"], ["h2"], name="bias1"),
             helper.make_node("Relu", ["h2"], ["h3"], name="relu"),
             helper.make_node("MatMul", ["h3", "w2"], ["h4"], name="fc2"),
             helper.make_node("Add", ["h4", "b2"], ["h5"], name="bias2"),
             helper.make_node("Softmax", ["h5"], ["y"], name="softmax")]
    graph = helper.make_graph(
        nodes, "mlp2", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_the_agent_profiles_an_onnx_node_by_node_naming_the_provider_of_each(
        tmp_path: Path, agent_python: str) -> None:
    model = two_layer_onnx(tmp_path / "mlp2.onnx")
    result = run_agent(tmp_path, [{"name": "mlp2", "file": model.name}],
                       {"profile": 1, "max_cv": 0.0, "cooldown_seconds": 0,
                        "min_seconds": 0.05}, python=agent_python)
    measured = result["variants"][0]
    assert measured["status"] == "ok" and measured["runtime"]["name"] == "onnxruntime"
    profile = measured["profile"]
    assert "error" not in profile, profile
    assert profile["runtime"] == measured["runtime"] and profile["runs"] >= 30
    assert profile["method"].startswith("ONNX Runtime's profiler (SessionOptions.enable_"
                                        "profiling), CPUExecutionProvider, 1 thread(s)")
    rows = profile["ops"]
    # The nodes of the graph ORT optimised, in run order, each with its provider.
    assert [(row["op"], row["kernel"]) for row in rows] == [
        ("FusedGemm", "fused fc1/MatMulAddFusion"), ("Gemm", "fc2/MatMulAddFusion"),
        ("Softmax", "softmax")]
    assert [row["index"] for row in rows] == [0, 1, 2]
    assert {row["provider"] for row in rows} == {"CPUExecutionProvider"}
    assert [row["output_shape"] for row in rows] == [[1, 32], [1, 10], [1, 10]]
    assert all(row["source"] == "onnxruntime" and isinstance(row["node"], int)
               and row["p50_us"] >= 0 for row in rows)
    assert {entry["op"] for entry in profile["by_type"]} == {"FusedGemm", "Gemm", "Softmax"}
    assert profile["ops_sum_us"] == pytest.approx(sum(row["mean_us"] for row in rows),
                                                  rel=1e-6)
    assert 0 < profile["ops_sum_us"] <= profile["total_us"]["mean"]
    assert profile["overhead"] == pytest.approx(
        profile["total_us"]["p50"] / (measured["latency_ms"]["p50"] * 1e3) - 1)


#: A run of one node as each checked line writes it (trimmed to the keys read, plus
#: 1.19's fences): onnxruntime 1.19.2 and 1.30.0 (1.32.0 writes as 1.30.0) on two_layer_onnx's
#: second layer.
TRACE_119 = [
    {"cat": "Node", "ts": 10, "dur": 0, "ph": "X", "name": "fc2/MatMulAddFusion/_fence_before",
     "args": {"op_name": "Gemm"}},
    {"cat": "Node", "ts": 11, "dur": 2, "ph": "X", "name": "fc2/MatMulAddFusion/_kernel_time",
     "args": {"op_name": "Gemm", "provider": "CPUExecutionProvider", "node_index": "7",
              "output_type_shape": [{"float": [1, 10]}]}},
    {"cat": "Node", "ts": 13, "dur": 0, "ph": "X", "name": "fc2/MatMulAddFusion/_fence_after",
     "args": {"op_name": "Gemm"}},
    {"cat": "Session", "ts": 10, "dur": 4, "ph": "X", "name": "SequentialExecutor::Execute"},
    {"cat": "Session", "ts": 9, "dur": 6, "ph": "X", "name": "model_run", "args": {}},
]
TRACE_130 = [
    {"cat": "Node", "ts": 11, "dur": 2, "ph": "X", "name": "fc2/MatMulAddFusion_kernel_time",
     "args": {"op_name": "Gemm", "provider": "CPUExecutionProvider", "node_index": "7",
              "output_type_shape": [{"float": [1, 10]}]}},
    {"cat": "Session", "ts": 10, "dur": 4, "ph": "X", "name": "SequentialExecutor::Execute"},
    {"cat": "Session", "ts": 9, "dur": 6, "ph": "X", "name": "model_run", "args": {}},
]


@pytest.mark.parametrize("trace", [TRACE_119, TRACE_130], ids=["1.19", "1.30"])
def test_both_checked_trace_layouts_read_as_the_same_runs(trace: list[dict]) -> None:
    warm_up = [{**event, "ts": event["ts"] - 9} for event in trace]  # an earlier run
    runs = trace_runs(warm_up + trace, skip=1)
    assert runs == [(6.0, [NodeEvent(name="fc2/MatMulAddFusion", op="Gemm",
                                     provider="CPUExecutionProvider", node_index=7, shape=[1, 10],
                                     elapsed_us=2.0)])]
    assert trace_runs([]) == []
    with pytest.raises(NotAvailable, match="not a list of events"):
        trace_runs({"traceEvents": trace})


@pytest.mark.parametrize(("version", "reason"), [
    ("1.18.1", "its profiler's trace layout is checked for onnxruntime 1.19 to 1.32 only"),
    ("1.33.0", "its profiler's trace layout is checked for onnxruntime 1.19 to 1.32 only"),
    ("1.19.2", None), ("1.30.0", None), ("1.32.0", None),
])
def test_the_onnx_profile_is_guarded_by_the_versions_whose_trace_was_read(
        version: str, reason: str | None) -> None:
    assert unavailable(replace(find_runtime("onnxruntime"), version=version)) == reason


def test_an_onnx_profile_refused_for_its_version_is_one_line_and_the_figures_stand(
        tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "mlp.onnx")
    runtime = replace(find_runtime("onnxruntime"), version="1.18.1")
    figures = measure_variant(runtime, model, {**FAST, "profile": 1})
    assert figures["status"] == "ok" and figures["runs"] >= 10
    assert figures["profile"] == {"error": (
        "per-op profile not available on onnxruntime 1.18.1: its profiler's trace layout is "
        "checked for onnxruntime 1.19 to 1.32 only")}


def test_the_runtime_is_chosen_by_the_file_and_a_mismatch_is_one_line() -> None:
    assert runtime_for("auto", "ab12.onnx").name == "onnxruntime"
    assert runtime_for("onnxruntime", "ab12.onnx").name == "onnxruntime"
    assert runtime_for("auto", "ab12.tflite").name != "onnxruntime"
    with pytest.raises(RuntimeNotFound, match=r"^ab12.onnx is an ONNX model and runtime "
                                              r"ai-edge-litert .* set runtime = \"onnxruntime\""):
        runtime_for("ai-edge-litert", "ab12.onnx")
    with pytest.raises(RuntimeNotFound, match=r"^ab12.tflite is a TFLite model and runtime "
                                              r"onnxruntime .* runs .onnx files"):
        runtime_for("onnxruntime", "ab12.tflite")


def test_a_provider_the_board_lacks_names_those_it_has() -> None:
    assert providers_for("cpu", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert providers_for("xnnpack", ["XnnpackExecutionProvider", "CPUExecutionProvider"]) == \
        ["XnnpackExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(AcceleratorError) as raised:
        providers_for("xnnpack", ["AzureExecutionProvider", "CPUExecutionProvider"])
    assert str(raised.value) == ("onnxruntime here has no XnnpackExecutionProvider (accelerator "
                                 "xnnpack); it has AzureExecutionProvider, CPUExecutionProvider")
    with pytest.raises(AcceleratorError, match=r"^accelerator gpu is a TFLite one"):
        providers_for("gpu", ["CPUExecutionProvider"])


def test_gpu_providers_fall_back_as_ort_orders_them_and_only_on_onnxruntime() -> None:
    jetson = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("cuda", jetson) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("tensorrt", jetson) == jetson
    assert providers_for("tensorrt", ["TensorrtExecutionProvider", "CPUExecutionProvider"]) \
        == ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(AcceleratorError) as raised:
        providers_for("cuda", ["CPUExecutionProvider"])
    assert str(raised.value) == ("onnxruntime here has no CUDAExecutionProvider (accelerator "
                                 "cuda); it has CPUExecutionProvider")
    litert = Runtime("ai-edge-litert", "2.3.0", object, "")
    with pytest.raises(AcceleratorError) as raised:
        plan_model(litert, Path("m.tflite"), {"accelerator": "tensorrt"})
    assert str(raised.value) == ("accelerator tensorrt is onnxruntime's "
                                 "TensorrtExecutionProvider and runs .onnx files only; "
                                 "ai-edge-litert reaches a GPU as accelerator gpu")


def test_the_board_check_refuses_what_an_onnx_cannot_run_on_in_one_line() -> None:
    board = BoardPython(target="pi", python="python3", version=(3, 11, 2), numpy="1.26.4",
                        runtimes={"tflite-runtime": "2.14.0"}, runtime_preference="auto")
    checks = [
        (board, ["cpu"], "pi: onnxruntime is not installed for python3, and an .onnx runs on "
                         "it: pip install onnxruntime there"),
        (replace(board, runtimes={"onnxruntime": "1.19.2"}, providers=("CPUExecutionProvider",)),
         ["cpu", "xnnpack"], "pi: onnxruntime here has no XnnpackExecutionProvider (accelerator "
                             "xnnpack); it has CPUExecutionProvider"),
    ]
    for facts, accelerators, message in checks:
        with pytest.raises(BoardSetupError) as raised:
            facts.require_providers(accelerators)
        assert str(raised.value) == message
    replace(board, runtimes={"onnxruntime": "1.19.2"},
            providers=("XnnpackExecutionProvider", "CPUExecutionProvider")
            ).require_providers(["cpu", "xnnpack"])


def test_setup_installs_onnxruntime_for_a_target_that_runs_it() -> None:
    assert set(REQUIREMENTS) == set(RUNTIMES)
    assert REQUIREMENTS["onnxruntime"] == ["numpy", "onnxruntime"]
    board = BoardPython(target="pi", python="python3", version=(3, 11, 2), numpy="1.26.4",
                        runtimes={"ai-edge-litert": "2.3.0"}, runtime_preference="onnxruntime")
    assert board.missing() == ["onnxruntime is not installed"]


def test_doctor_checks_the_providers_and_loads_the_probe_on_onnxruntime() -> None:
    import onnxruntime

    runtime = find_runtime("onnxruntime")
    checks = {c["name"]: c for c in preflight(runtime, ["cpu", "xnnpack"], "interpreter", "", {})}
    assert checks["cpu"] == {"name": "cpu", "ok": True, "warning": False,
                             "detail": "onnxruntime's CPUExecutionProvider"}
    assert checks["xnnpack"]["ok"] == \
        ("XnnpackExecutionProvider" in onnxruntime.get_available_providers())
    (loaded,) = load_checks(runtime, ["cpu"], "interpreter", "", {})
    assert loaded["ok"], loaded
    assert loaded["detail"].startswith(f"onnxruntime {runtime.version} loaded and ran y = x + x")


def test_a_model_the_target_runtime_cannot_read_is_refused_before_any_work(
        tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "mlp.onnx")
    targets = ort_targets(tmp_path / "t")
    (targets / "tfl.toml").write_text('transport = "local"\nruntime = "tflite-runtime"\n')
    keras = REPO / "tests" / "data" / "keras_cnn.tflite"
    for given, target, message in [
        (model, "tfl", "mlp.onnx runs on onnxruntime and target tfl's runtime is "
                       'tflite-runtime; set runtime = "auto" or "onnxruntime" in its target file'),
        (keras, "ort", "keras_cnn.tflite gives .tflite files and target ort's runtime is "
                       'onnxruntime (.onnx only); set runtime = "auto" or a TFLite runtime in '
                       "its target file"),
    ]:
        out = tmp_path / f"out-{target}"
        result = invoke("deploy", str(given), "--targets-dir", str(targets), "--target", target,
                        "-o", str(out))
        assert result.exit_code == 2
        assert result.stderr.strip() == f"edge: error: {message}"
        assert not out.exists()


@pytest.mark.parametrize("content, message", [
    (b"", "is empty (0 bytes): not an ONNX model"),
    (b"\x08\x09\x12\xff\xff", "is not an ONNX model: "),
])
def test_a_broken_onnx_is_refused_in_one_line(tmp_path: Path, content: bytes,
                                              message: str) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError) as raised:
        load_model_source(path)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_an_onnx_the_checker_rejects_fails_the_deploy_before_anything_is_written(
        tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(tiny_onnx(tmp_path / "mlp.onnx")))
    model.graph.node[1].input[0] = "nowhere"  # an edge from no node and no input
    onnx.save(model, str(tmp_path / "cut.onnx"))
    out = tmp_path / "out"
    result = invoke("deploy", str(tmp_path / "cut.onnx"), "--target", "local", "-o", str(out))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"edge: error: {tmp_path / 'cut.onnx'} "
                                                   "fails onnx.checker: ")
    assert not out.exists()


@pytest.mark.parametrize("recipe, reason", [
    ("fp32", None), ("int8-dynamic", None), ("fp16", None),
    ("int8", "static int8 calibrates on representative inputs, which an .onnx does not carry: "
             "give a folder of them with --calibration DIR"),
    ("int4-weight", "the ONNX Runtime recipes are fp32, fp16, int8-dynamic and int8"),
    ("prune:0.5+int8-dynamic", "needs the PyTorch model: pruning, distillation and clustering"),
])
def test_recipes_an_onnx_takes_and_those_refused(recipe: str, reason: str | None) -> None:
    why = refusal(parse_chain(recipe))
    assert why == reason if reason is None else (why or "").startswith(reason)


def test_a_recipe_an_onnx_does_not_take_fails_the_deploy_in_one_line(tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "mlp.onnx")
    out = tmp_path / "out"
    result = invoke("deploy", str(model), "--recipe", "int8", "--target", "local",
                    "-o", str(out))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "edge: error: int8 on mlp.onnx: static int8 calibrates on representative inputs, which "
        "an .onnx does not carry: give a folder of them with --calibration DIR (one .npy or "
        ".npz per sample), or use int8-dynamic")
    assert not out.exists()


def test_the_agent_measuring_an_onnx_imports_only_stdlib_numpy_and_onnxruntime(
        tmp_path: Path, agent_python: str) -> None:
    model = tiny_onnx(tmp_path / "mlp.onnx")
    third_party = packages_measuring(model, agent_python)
    assert third_party <= {"device_agent", "numpy", "onnxruntime"}, third_party


@pytest.mark.integration
def test_an_onnx_deploys_to_a_local_board_running_onnxruntime(tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "mlp.onnx")
    out = tmp_path / "out"
    result = invoke("deploy", str(model), "--targets-dir", str(ort_targets(tmp_path / "t")),
                    "--target", "ort", "--recipe", "fp32,int8-dynamic", "-o", str(out),
                    "--json", "--profile", *CLI_FAST)
    assert result.exit_code == 0, result.output
    record, int8 = json.loads(result.stdout)["results"]
    assert record["status"] == "ok" and record["variant"] == "mlp.onnx"
    assert record["file"] == "mlp.onnx" and record["config"] == {"recipe": "as-is"}
    assert record["runtime"]["name"] == "onnxruntime" and record["runtime"]["version"]
    assert record["runtime_choice"].startswith("onnxruntime ")
    assert record["accelerator"]["used"] == "cpu"
    assert record["accelerator"]["providers"] == ["CPUExecutionProvider"]
    assert set(record["latency_ms"]) >= {"p50", "p90", "p99"} and record["peak_rss_bytes"] > 0
    assert record["output_check"]["ok"] and record["verdict"]["status"] in ("VALID", "INVALID")
    assert record["ops"] == [{"op": "MatMul", "version": 17}, {"op": "Add", "version": 17}]
    # Uploaded and run under its own suffix: the agent chooses its runtime by it.
    artifacts = next((out / "runs").glob("*/artifacts"))
    assert (artifacts / "mlp.onnx").read_bytes() == model.read_bytes()
    # int8-dynamic: onnxruntime.quantization's rewrite, judged against the given file.
    assert int8["variant"] == "int8-dynamic" and int8["file"] == "mlp.int8-dynamic.onnx"
    assert int8["status"] == "ok" and int8["runtime"]["name"] == "onnxruntime"
    assert int8["output_check"]["ok"]
    assert int8["fidelity"]["reference"] == "given mlp.onnx"
    assert int8["fidelity"]["cosine_similarity"] > 0.99
    assert int8["details"]["tool"] == "onnxruntime.quantization.quantize_dynamic"
    assert {"op": "MatMulInteger", "version": 17} in int8["ops"]
    # --profile: ORT's nodes as they ran, each naming its provider, in the stored run's report.
    for measured in (record, int8):
        rows = measured["profile"]["ops"]
        assert rows and {row["provider"] for row in rows} == {"CPUExecutionProvider"}
    assert [row["op"] for row in record["profile"]["ops"]] == ["Gemm"]
    report = next((out / "runs").glob("*/report.md")).read_text()
    assert "| # | operator | kernel | provider | node |" in report
    # Nothing built the file as given; onnxruntime.quantization (on onnx) built int8.
    assert record["toolchain"] == {"edge": importlib.metadata.version("edge")}
    assert int8["toolchain"] == {name: importlib.metadata.version(name)
                                 for name in ("edge", "onnx", "onnxruntime")}


@pytest.mark.integration
def test_fp16_of_a_given_onnx_keeps_float32_inputs_and_agrees_with_it(tmp_path: Path) -> None:
    import onnx

    from toolkit.compress._from_onnx import build_from_onnx

    model = tiny_onnx(tmp_path / "mlp.onnx")
    folder = tmp_path / "out"
    folder.mkdir()
    given, fp16 = build_from_onnx(load_model_source(model), [parse_chain("fp16")], folder)
    assert (given.variant, fp16.variant, fp16.path.name) == ("mlp.onnx", "fp16", "mlp.fp16.onnx")
    graph = onnx.load(str(fp16.path)).graph
    # The board feeds it float32, as the file as given: the casts are inside the graph.
    assert [i.type.tensor_type.elem_type for i in graph.input] == [onnx.TensorProto.FLOAT]
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer)
    assert fp16.fidelity is not None and fp16.fidelity["cosine_similarity"] > 0.99
    assert fp16.runtime_compat[0]["ok"] and fp16.size_bytes < given.size_bytes


@pytest.mark.integration
def test_static_int8_of_a_given_onnx_is_calibrated_on_the_inputs_given(tmp_path: Path) -> None:
    import onnx

    from toolkit.compress._from_onnx import build_from_onnx

    assert refusal(parse_chain("int8"), calibrated=True) is None
    model = tiny_onnx(tmp_path / "mlp.onnx")
    inputs = tmp_path / "calibration"
    inputs.mkdir()
    rng = np.random.default_rng(1)
    for number in range(8):
        np.save(inputs / f"{number}.npy", rng.standard_normal((1, 16)).astype(np.float32))
    folder = tmp_path / "out"
    folder.mkdir()
    _, int8 = build_from_onnx(load_model_source(model, calibration=inputs),
                              [parse_chain("int8")], folder)
    assert (int8.variant, int8.path.name) == ("int8", "mlp.int8.onnx")
    assert int8.details["format"] == "QDQ" and int8.calibration is not None
    assert int8.calibration["samples_used"] == 8
    assert int8.calibration["source"] == "--calibration"
    ops = {node.op_type for node in onnx.load(str(int8.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert int8.fidelity is not None and int8.fidelity["inputs_from"] == "the --calibration inputs"
    assert int8.fidelity["cosine_similarity"] > 0.99


@pytest.mark.integration
def test_a_provider_the_board_lacks_is_one_line_and_nothing_is_stored(tmp_path: Path) -> None:
    import onnxruntime

    if "XnnpackExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime build has XNNPACK: the board lacks nothing")
    model = tiny_onnx(tmp_path / "mlp.onnx")
    out = tmp_path / "out"
    result = invoke("deploy", str(model), "--targets-dir", str(ort_targets(tmp_path / "t")),
                    "--target", "ort", "--accelerator", "xnnpack", "-o", str(out))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "edge: error: ort: onnxruntime here has no XnnpackExecutionProvider (accelerator "
        "xnnpack); it has " + ", ".join(onnxruntime.get_available_providers()))
    assert not out.exists()
