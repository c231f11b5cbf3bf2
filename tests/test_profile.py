"""The per-operator profile (setting ``profile``, ``--profile``) on the real digits CNN, on both
runtimes: rows in run order that are the model's own operators, a total they account for,
the overhead stated, and one clean error line (the variant still measured) where no route
works."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from device_agent.profiler import DELEGATE_PROFILED_EVENT, summarize
from device_agent.tflite_file import operator_versions
from toolkit.report.render import render_html, render_markdown

from .conftest import DIGITS_MODEL
from .records import make_run, record
from .test_agent import run_agent

#: Quick runs: the profile is the subject; no limit on the spread of a busy test machine.
SETTINGS = {"profile": 1, "max_cv": 0.0, "cooldown_seconds": 0, "min_seconds": 0.05}


@pytest.fixture(scope="module")
def digits_pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the digits CNN as fp32.tflite and int8.tflite (full-integer static)."""
    from toolkit.compress import Fp32Config, Int8StaticConfig, compress
    from toolkit.model.load import load_model_source

    folder = tmp_path_factory.mktemp("digits-pair")
    source = load_model_source(DIGITS_MODEL)
    for config in (Fp32Config(), Int8StaticConfig()):
        compress(source, config, folder)
    return folder


@pytest.fixture(scope="module")
def litert_profiles(digits_pair: Path) -> dict[str, dict[str, Any]]:
    """fp32 and int8 measured with ``profile`` by the agent on ai-edge-litert (this venv)."""
    result = run_agent(digits_pair, [{"name": n, "file": f"{n}.tflite"} for n in ("fp32", "int8")],
                       {**SETTINGS, "runtime": "ai-edge-litert"})
    return {variant["name"]: variant for variant in result["variants"]}


def model_ops(path: Path) -> list[str]:
    """The model's operators in node order, as the interpreter reads the file."""
    from ai_edge_litert.interpreter import Interpreter

    return [op["op_name"] for op in Interpreter(model_path=str(path))._get_ops_details()]


def test_litert_rows_are_the_models_operators_in_run_order(
        litert_profiles: dict[str, dict[str, Any]], digits_pair: Path) -> None:
    for name, measured in litert_profiles.items():
        assert measured["status"] == "ok" and measured["latency_ms"]["p50"] > 0
        profile = measured["profile"]
        assert "error" not in profile, profile
        ops = model_ops(digits_pair / f"{name}.tflite")
        rows = profile["ops"]
        assert [row["index"] for row in rows] == list(range(len(rows)))
        # XNNPACK ran one operator per node: each row names its node, in node order.
        assert [row["node"] for row in rows] == list(range(len(ops)))
        assert [row["node_op"] for row in rows] == ops
        assert all(row["source"] == "xnnpack" and row["p50_us"] >= 0 for row in rows)
        assert rows[2]["output_shape"] == [1, 8, 8, 32]  # the second convolution
        assert [row["version"] for row in rows] == operator_versions(
            (digits_pair / f"{name}.tflite").read_bytes())
        assert {entry["op"] for entry in profile["by_type"]} == set(ops)
        assert profile["ops_sum_us"] == pytest.approx(
            sum(row["mean_us"] for row in rows), rel=1e-6)
        assert 0 < profile["ops_sum_us"] <= profile["total_us"]["mean"]
        # Overhead is stated against the unprofiled p50, which stays the latency figure.
        assert profile["overhead"] == pytest.approx(
            profile["total_us"]["p50"] / (measured["latency_ms"]["p50"] * 1e3) - 1)
        assert profile["runtime"] == measured["runtime"]


def test_the_report_shows_profiles_and_names_what_int8_loses_in(
        litert_profiles: dict[str, dict[str, Any]]) -> None:
    results = []
    for name, measured in litert_profiles.items():
        stored = record(name)
        stored["profile"] = measured["profile"]
        results.append(stored)
    run = make_run("r1", results)
    markdown, html = render_markdown(run), render_html(run)
    for text in (markdown, html):
        assert "Per-operator profile" in text
        assert "fp32 against int8 on local" in text
        assert "profiling cost" in text
        assert "Convolution (NHWC, QC8) IGEMM" in text
        assert "node 2 CONV_2D v3" in text  # the int8 node's version
    assert 'id="plot-profile-local-fp32"' in html
    assert 'id="plot-profile-compare-local-int8"' in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<script" not in html and "<link" not in html


def test_operators_tied_within_the_profiles_resolution_keep_run_order() -> None:
    """Two equal convolutions 1 us apart rank the same in either order; a reshape that
    takes nothing stays below a depthwise convolution of 0.7 us although XNNPACK's whole
    microseconds put their p50 1 us apart or equal; an operator 5 % lighter ranks below."""
    from toolkit.report.profile import heaviest

    def rows(*times: tuple[int, float, float]) -> dict[str, Any]:
        return {"ops": [{"index": index, "op": "CONV_2D", "p50_us": p50, "mean_us": mean}
                        for index, p50, mean in times]}

    for first, second in ((265.0, 264.0), (264.0, 265.0)):
        profile = rows((10, first, first), (12, second, second), (16, 210.0, 210.0),
                       (0, 0.0, 0.0), (1, 1.0, 0.7), (3, 0.0, 0.1), (17, 400.0, 400.0))
        assert [row["index"] for row in heaviest(profile)] == [17, 10, 12, 16, 1, 3, 0]
    assert [row["index"] for row in heaviest(rows((0, 1.0, 0.4), (1, 1.0, 0.7)))] == [1, 0]
    assert [row["index"] for row in heaviest(rows((4, 100.0, 100.0), (2, 95.0, 95.0)))] == [4, 2]


def test_a_profiled_pass_faster_than_the_timed_one_is_not_a_negative_cost() -> None:
    from toolkit.report.profile import profile_summary
    from toolkit.results.record import ResultRecord

    stored = record("fp32")
    stored["profile"] = {"method": "m", "runs": 50, "total_us": {"p50": 1020.0},
                         "overhead": 1020.0 / 1240.0 - 1, "coverage": 0.97}
    summary = profile_summary(ResultRecord.from_dict(stored), stored["profile"])
    assert "-18%" not in summary
    assert "less than the machine's drift" in summary and "ran 18% faster" in summary
    stored["profile"]["overhead"] = 0.25
    assert "profiling cost +25%" in profile_summary(ResultRecord.from_dict(stored),
                                                    stored["profile"])


def test_tflite_runtime_214_profiles_its_own_nodes(digits_pair: Path,
                                                   floor_python: Path) -> None:
    result = run_agent(digits_pair, [{"name": n, "file": f"{n}.tflite"} for n in ("int8", "fp32")],
                       SETTINGS, python=str(floor_python))
    int8, fp32 = result["variants"]
    assert int8["runtime"] == {"name": "tflite-runtime", "version": "2.14.0"}
    # 2.14 runs int8 with its own kernels on x86: one row per TFLite node, in node order.
    rows = int8["profile"]["ops"]
    assert [row["op"] for row in rows] == model_ops(digits_pair / "int8.tflite")
    assert all(row["source"] == "tflite" and row["node"] == row["index"] for row in rows)
    profile = int8["profile"]
    # Structure, not a figure: every operator event of a run begins and ends inside that
    # run's "Invoke" event, one after another on one clock (device_agent.native_profilers'
    # _Recorder), so the operators' sum cannot exceed the total. How close it comes varies
    # with the machine's load (32.7 against 45.6 us in one CI run): a benchmark's business.
    assert 0 < profile["ops_sum_us"] <= profile["total_us"]["mean"]
    assert profile["coverage"] == pytest.approx(
        profile["ops_sum_us"] / profile["total_us"]["mean"])
    assert profile["method"].startswith("tflite::Interpreter::SetProfiler")
    # fp32 goes through XNNPACK, which reports its own operators to the same profiler.
    assert {row["source"] for row in fp32["profile"]["ops"]} == {"xnnpack"}
    assert [row["node_op"] for row in fp32["profile"]["ops"]] == model_ops(
        digits_pair / "fp32.tflite")


def test_xnnpack_rows_map_to_nodes_across_a_folded_pad() -> None:
    """MobileNetV2-96's shape: XNNPACK folds each PAD into the depthwise convolution after
    it and runs 1x1 convolutions as fully connected operators; its rows still name their
    nodes.  An operator that fits no node leaves every XNNPACK row unmapped."""
    nodes = [{"index": i, "op": op} for i, op in enumerate(
        ["PAD", "DEPTHWISE_CONV_2D", "CONV_2D", "MEAN", "FULLY_CONNECTED"])]
    xnn = ["Convolution (NHWC, F32) DWConv", "Fully Connected (NC, F32) GEMM",
           "Global Average Pooling (NWC, F32)", "Fully Connected (NC, F32) GEMM"]
    runs = [(10.0, [(tag, DELEGATE_PROFILED_EVENT, i, 2.0) for i, tag in enumerate(xnn)])] * 3
    profile = summarize(runs, nodes)
    assert [row["node"] for row in profile["ops"]] == [1, 2, 3, 4]
    assert profile["coverage"] == pytest.approx(0.8)
    odd = [(10.0, [(tag, DELEGATE_PROFILED_EVENT, i, 2.0)
                   for i, tag in enumerate(["Softmax (NC, F32)", *xnn])])]
    assert all("node" not in row for row in summarize(odd, nodes)["ops"])


def stand_in_runtime(tmp_path: Path, version: str) -> dict[str, str]:
    """A ``tflite-runtime`` of ``version`` whose Interpreter is ai-edge-litert's: a runtime
    whose native library has no ``Interpreter::SetProfiler`` (ai-edge-litert's wrapper does
    not export it), which is all the agent can tell."""
    site = tmp_path / f"site-{version}"
    (site / "tflite_runtime").mkdir(parents=True)
    (site / "tflite_runtime" / "__init__.py").write_text("")
    (site / "tflite_runtime" / "interpreter.py").write_text(
        "from ai_edge_litert.interpreter import Interpreter  # noqa: F401\n")
    (site / f"tflite_runtime-{version}.dist-info").mkdir()
    (site / f"tflite_runtime-{version}.dist-info" / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: tflite-runtime\nVersion: {version}\n")
    return {**os.environ, "PYTHONPATH": str(site)}


@pytest.mark.parametrize(("version", "reason"), [
    ("2.14.0", "Interpreter::SetProfiler is not exported"),
    ("2.13.0", "the native profiler's layout is checked for ai-edge-litert 2.3, "
               "tflite-runtime 2.14 only"),
])
def test_no_route_is_one_error_line_and_the_variant_is_still_measured(
        tflite_copy: Path, tmp_path: Path, version: str, reason: str) -> None:
    result = run_agent(tflite_copy.parent, [{"name": "fp32", "file": tflite_copy.name}],
                       {**SETTINGS, "runtime": "tflite-runtime"},
                       env=stand_in_runtime(tmp_path, version))
    measured = result["variants"][0]
    assert measured["status"] == "ok" and measured["runs"] >= 1
    assert measured["verdict"]["status"] == "VALID"
    error = measured["profile"]["error"]
    assert error.startswith(f"per-op profile not available on tflite-runtime {version}: {reason}")
    assert "\n" not in error and list(measured["profile"]) == ["error"]


def test_the_litert_profiled_loop_opens_nothing_and_gets_its_descriptors_back(
        tmp_path: Path) -> None:
    """LiteRT's profile buffer reads /proc/self/status at every run's events; inside the
    profiled loop that read fails at once, and afterwards files open again."""
    import errno
    import resource

    from device_agent.native_profilers import no_new_file_descriptors

    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    with no_new_file_descriptors():
        with pytest.raises(OSError) as refused:
            open("/proc/self/status").close()
        assert refused.value.errno == errno.EMFILE
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == before
    (tmp_path / "after").write_text("opens again")


def test_without_the_setting_there_is_no_profile(tflite_copy: Path, agent_python: str) -> None:
    measured = run_agent(tflite_copy.parent, [{"name": "fp32", "file": tflite_copy.name}],
                         {"max_cv": 0.0}, python=agent_python)["variants"][0]
    assert "profile" not in measured


# A deploy: converts the digits CNN and profiles it through the agent.
@pytest.mark.integration
def test_edge_deploy_profile_stores_the_profile_with_the_run(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from toolkit.cli.main import main
    from toolkit.results.store import ResultsStore

    outcome = CliRunner().invoke(main, [
        "deploy", str(DIGITS_MODEL), "--target", "local", "--recipe", "fp32", "--profile",
        "--min-seconds", "0.05", "-q", "--json", "-o", str(tmp_path / "out")],
        catch_exceptions=False)
    assert outcome.exit_code in (0, 3), outcome.output
    run_id = json.loads(outcome.stdout)["run_id"]
    with ResultsStore(tmp_path / "out" / "results.sqlite") as store:
        stored = store.get_run(run_id)
    profile = stored.results[0].profile
    assert profile is not None and profile["ops"], profile
    # The host named each mapped node by its output tensor, from the deployed file.
    assert all(row["node_name"] for row in profile["ops"] if "node" in row)
    assert any("node" in row for row in profile["ops"])
    report = (tmp_path / "out" / "runs" / run_id / "report.md").read_text()
    assert "Per-operator profile" in report and "profiling cost" in report


def test_deploy_and_bench_both_take_profile() -> None:
    from click.testing import CliRunner

    from toolkit.cli.main import main

    for command in ("deploy", "bench"):
        shown = CliRunner().invoke(main, [command, "--help"], catch_exceptions=False).output
        assert "--profile" in shown and "operator by operator" in shown, command


def _profiled(ops: list[dict[str, Any]], total_p50: float) -> Any:
    stored = record("fp32")
    stored["profile"] = {"method": "m", "runs": 100, "ops": ops,
                         "by_type": [{"op": "CONV_2D", "count": len(ops),
                                      "mean_us": sum(o["mean_us"] for o in ops), "share": 0.9}],
                         "total_us": {"p50": total_p50, "mean": 500.0}, "coverage": 0.9}
    return make_run("r1", [stored])


def test_heaviest_operators_are_ranked_drawn_and_shared_by_the_same_p50() -> None:
    """An operator that stalled now and then (mean 300 us, p50 90 us) ranks below one of
    p50 100 us: its bar is shorter too, and its share is of the run's p50, not a mean's."""
    import xml.etree.ElementTree as ET

    from toolkit.report.profile import profile_sections

    run = _profiled([{"index": 0, "op": "CONV_2D", "p50_us": 90.0, "mean_us": 300.0},
                     {"index": 1, "op": "CONV_2D", "p50_us": 100.0, "mean_us": 100.0},
                     {"index": 2, "op": "CONV_2D", "p50_us": 10.0, "mean_us": 10.0}], 200.0)
    section = profile_sections(run)[0]
    assert [row["index"] for row in section.top] == ["1", "0", "2"]
    assert [row["share"] for row in section.top] == ["50.0%", "45.0%", "5.0%"]
    bars = [float(rect.get("width")) for rect in ET.fromstring(section.svg).iter(
        "{http://www.w3.org/2000/svg}rect") if rect.get("class") == "mark"]
    assert len(bars) == 3 and bars == sorted(bars, reverse=True)
    assert "(p50 per run)" in section.svg
    # Operators all under XNNPACK's whole microsecond: every p50 is 0, so the mean ranks,
    # draws and shares them, and the chart says so.
    tiny = profile_sections(_profiled([
        {"index": 0, "op": "Copy", "p50_us": 0.0, "mean_us": 0.2},
        {"index": 1, "op": "Fully Connected", "p50_us": 0.0, "mean_us": 0.3}], 3.0))[0]
    assert tiny.statistic == "mean" and "(mean per run)" in tiny.svg
    assert [row["index"] for row in tiny.top] == ["1", "0"]
    assert [row["share"] for row in tiny.top] == ["0.1%", "0.0%"]


def test_each_profile_table_names_its_statistic_and_an_empty_node_column_is_left_out() -> None:
    run = _profiled([{"index": 0, "op": "Convolution", "p50_us": 90.0, "mean_us": 95.0}], 100.0)
    markdown, html = render_markdown(run), render_html(run)
    assert "| op type | operators | mean per run (summed) | share (mean) |" in markdown
    assert ("| # | operator | kernel | p50 per run | mean per run | share (p50, ranked by) |"
            in markdown)
    assert "<th>mean per run (summed)</th>" in html
    assert "<th>share (p50, ranked by)</th>" in html
    assert "<th>node</th>" not in html and "| node |" not in markdown
    assert "<th>provider</th>" not in html and "| provider |" not in markdown
    named = _profiled([{"index": 0, "op": "Convolution", "p50_us": 90.0, "mean_us": 95.0,
                        "node": 0, "node_op": "CONV_2D", "node_name": "model/conv1/Relu"},
                       {"index": 1, "op": "Convolution", "p50_us": 9.0, "mean_us": 9.5}], 100.0)
    assert "<th>node</th>" in render_html(named)
    assert "| node 0 CONV_2D model/conv1/Relu |" in render_markdown(named)


def test_an_onnx_profile_names_the_provider_that_ran_each_node() -> None:
    """ONNX Runtime says which execution provider ran each node: a column of its own; the
    node's name is ORT's (the kernel column), never looked up in the file as a TFLite one."""
    from toolkit.report.profile import with_node_names

    row = {"index": 0, "op": "FusedGemm", "kernel": "fused fc1/MatMulAddFusion",
           "source": "onnxruntime", "provider": "XnnpackExecutionProvider", "node": 8,
           "node_op": "FusedGemm", "output_shape": [1, 32], "p50_us": 3.0, "mean_us": 3.2}
    run = _profiled([row], 10.0)
    markdown, html = render_markdown(run), render_html(run)
    assert ("| # | operator | kernel | provider | node | p50 per run | mean per run |"
            in markdown)
    assert ("| 0 | FusedGemm | fused fc1/MatMulAddFusion | XnnpackExecutionProvider | "
            "node 8 FusedGemm -\\> 1x32 |" in markdown)
    assert "<th>kernel</th><th>provider</th><th>node</th>" in html
    assert "<td>XnnpackExecutionProvider</td>" in html
    profile = {"ops": [row], "runtime": {"name": "onnxruntime", "version": "1.30.0"}}
    assert with_node_names(profile, Path(__file__).parent / "data" / "keras_cnn.tflite") \
        == profile


def test_the_host_names_each_profiled_node_by_its_output_tensor() -> None:
    """The board sends node indices; the host reads the file's output tensor names."""
    from toolkit.report.profile import with_node_names

    model = Path(__file__).parent / "data" / "keras_cnn.tflite"
    profile = {"ops": [{"op": "CONV_2D", "mean_us": 1.0, "node": 0},
                       {"op": "Convolution", "mean_us": 1.0}]}
    named = with_node_names(profile, model)
    assert named["ops"][0]["node_name"] == ("sequential_1/conv2d_1/Relu;"
                                            "sequential_1/conv2d_1/convolution")
    assert named["ops"][1] == profile["ops"][1]
    assert with_node_names(profile, model.with_name("missing.tflite")) == profile
