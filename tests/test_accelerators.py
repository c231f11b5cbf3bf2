"""Accelerators and APIs on the board: what ran, outputs checked, and one-line failures.

Real parts only: the agent zipapp on the real digits CNN, a no-op delegate compiled with
``cc`` here, a shared library that is not a delegate, and LiteRT's WebGPU accelerator on
Mesa's lavapipe (a software Vulkan adapter; ``scripts/install-dev.sh`` installs Mesa 25
from bookworm-backports, since Debian 12's 22.3 is rejected).  "No Vulkan" is a loader
pointed at no driver (``VK_DRIVER_FILES``), as on a board without a Vulkan driver.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from device_agent.accelerators import PROBE_SECONDS, vulkan_loader_present

from .conftest import DIGITS_MODEL
from .test_agent import run_agent

REPO = Path(__file__).resolve().parent.parent
#: The Vulkan loader looks only here for drivers: none, as on a board without Vulkan.
NO_VULKAN = {**os.environ, "VK_DRIVER_FILES": "/nonexistent/no-driver.json"}

NOOP_DELEGATE = textwrap.dedent("""
    /* A TFLite external delegate that takes no operator and records the options it got. */
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    typedef struct { void* data; int (*prepare)(void*, void*); void* copy_from;
                     void* copy_to; void* free_handle; long long flags; void* opaque; } Delegate;
    static int prepare(void* context, void* delegate) { return 0; }
    Delegate* tflite_plugin_create_delegate(char** keys, char** values, size_t count,
                                            void (*report_error)(const char*)) {
        const char* log = NULL;
        for (size_t i = 0; i < count; i++) if (!strcmp(keys[i], "log")) log = values[i];
        if (log) { FILE* out = fopen(log, "w");
                   for (size_t i = 0; i < count; i++) fprintf(out, "%s=%s\\n", keys[i], values[i]);
                   fclose(out); }
        Delegate* delegate = calloc(1, sizeof(Delegate));
        delegate->prepare = prepare;
        return delegate;
    }
    void tflite_plugin_destroy_delegate(Delegate* delegate) { free(delegate); }
""")


def _compile(tmp_path: Path, name: str, source: str) -> Path:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) to build the test's shared library")
    (tmp_path / f"{name}.c").write_text(source)
    library = tmp_path / f"lib{name}.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(library), str(tmp_path / f"{name}.c")],
                   check=True)
    return library


@pytest.fixture
def digits_with_reference(tflite_copy: Path) -> Path:
    """The digits CNN beside a reference .npz of the host's outputs on real digits."""
    from toolkit.model.load import load_model_source
    from toolkit.model.reference import compute_reference, source_inputs

    compute_reference(tflite_copy, source_inputs(load_model_source(DIGITS_MODEL)),
                      tflite_copy.parent / "ref.npz")
    return tflite_copy


def _variant(model: Path, name: str, **extra: str) -> dict[str, str]:
    return {"name": name, "file": model.name, "reference": "ref.npz", **extra}


def test_xnnpack_off_and_the_compiled_api_compute_what_the_interpreter_does(
        digits_with_reference: Path) -> None:
    model = digits_with_reference
    result = run_agent(model.parent, [_variant(model, "cpu"),
                                      _variant(model, "off", accelerator="xnnpack-off")])
    result_compiled = run_agent(model.parent, [_variant(model, "compiled")],
                                {"api": "compiled"})
    cpu, off = result["variants"]
    compiled = result_compiled["variants"][0]
    for measured in (cpu, off, compiled):
        assert measured["status"] == "ok", measured.get("error")
        assert measured["output_check"]["ok"], measured["output_check"]["summary"]
        assert measured["output_check"]["max_abs_diff"] < 1e-4
    assert cpu["accelerator"]["api"] == "interpreter"
    # What really ran: XNNPACK took the graph by default, and nothing with it off.
    assert cpu["accelerator"]["xnnpack_partitions"] >= 1
    assert off["accelerator"]["used"] == "xnnpack-off"
    assert off["accelerator"]["xnnpack_partitions"] == 0
    assert compiled["accelerator"]["api"] == "compiled"
    assert compiled["accelerator"]["used"] == "cpu"
    assert compiled["accelerator"]["fully_accelerated"] is True


# Converts the digits CNN to int8 and runs it through the agent on both APIs.
@pytest.mark.integration
def test_the_compiled_api_dequantizes_an_int8_model_like_the_interpreter(
        tmp_path: Path) -> None:
    from toolkit.compress import Int8StaticConfig, compress
    from toolkit.model.load import load_model_source
    from toolkit.model.reference import compute_reference, source_inputs

    source = load_model_source(DIGITS_MODEL)
    model = compress(source, Int8StaticConfig(), tmp_path).path
    compute_reference(model, source_inputs(source), tmp_path / "ref.npz")
    measured = run_agent(tmp_path, [_variant(model, "int8")], {"api": "compiled"})["variants"][0]
    assert measured["status"] == "ok", measured.get("error")
    assert measured["output_check"]["ok"], measured["output_check"]["summary"]


def test_a_no_op_delegate_loads_from_a_path_with_its_options(
        digits_with_reference: Path, tmp_path: Path, agent_python: str) -> None:
    library = _compile(tmp_path, "noop_delegate", NOOP_DELEGATE)
    log = tmp_path / "options.txt"
    model = digits_with_reference
    measured = run_agent(model.parent, [_variant(model, "noop", accelerator="delegate")],
                         {"delegate": str(library),
                          "delegate_options": {"log": str(log), "cache": True}},
                         python=agent_python)["variants"][0]
    assert measured["status"] == "ok", measured.get("error")
    assert measured["output_check"]["ok"]
    facts = measured["accelerator"]
    assert (facts["used"], facts["delegate"]) == ("delegate", str(library))
    # It took nothing, and the report says so instead of calling the model accelerated.
    assert facts["delegate_partitions"] == 0 and facts["fully_accelerated"] is False
    assert "took no operator" in facts["note"]
    assert sorted(log.read_text().split()) == ["cache=true", f"log={log}"]


def test_a_library_that_is_not_a_delegate_fails_in_one_line(digits_with_reference: Path,
                                                            tmp_path: Path,
                                                            agent_python: str) -> None:
    library = _compile(tmp_path, "not_a_delegate", "int answer(void) { return 42; }\n")
    model = digits_with_reference
    measured = run_agent(model.parent, [_variant(model, "bad", accelerator="delegate")],
                         {"delegate": str(library)}, python=agent_python)["variants"][0]
    assert measured["status"] == "failed"
    assert measured["error"] == (f"accelerator delegate (api interpreter): {library} is not a "
                                 "TFLite delegate: it does not export "
                                 "tflite_plugin_create_delegate or "
                                 "tflite_plugin_destroy_delegate")


def test_without_vulkan_gpu_fails_in_one_line_and_only_gpu_cpu_falls_back(
        digits_with_reference: Path) -> None:
    model = digits_with_reference
    result = run_agent(model.parent, [_variant(model, "gpu", accelerator="gpu"),
                                      _variant(model, "either", accelerator="gpu+cpu")],
                       env=NO_VULKAN)
    gpu, either = result["variants"]
    assert gpu["status"] == "failed"
    assert "\n" not in gpu["error"]
    assert gpu["error"].startswith("accelerator gpu (api compiled): no Vulkan driver "
                                   "(VK_DRIVER_FILES=/nonexistent/no-driver.json): LiteRT's "
                                   "GPU accelerator (WebGPU) runs over Vulkan only")
    assert "No adapters found" in gpu["error"]
    # Asked for a fallback: it ran on the CPU, and says so and why.
    assert either["status"] == "ok", either.get("error")
    assert either["accelerator"]["used"] == "cpu"
    assert either["accelerator"]["fallback"].startswith("whole model on the CPU: no Vulkan "
                                                         "driver")
    assert either["output_check"]["ok"]


def test_the_agent_preflight_says_no_vulkan_without_waiting_for_a_probe(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "device_agent", "facts", "none",
                           "--accelerator", "cpu,gpu"], cwd=REPO, env=NO_VULKAN,
                          capture_output=True, text=True, timeout=60, check=True)
    elapsed = time.monotonic() - started
    checks = {c["name"]: c for c in json.loads(done.stdout.splitlines()[-1])["accelerators"]}
    assert checks["cpu"]["ok"]
    assert not checks["gpu"]["ok"] and checks["gpu"]["detail"].startswith("no Vulkan driver")
    # A hang guard, not a figure: without a driver the agent must answer at once, not wait
    # out a CompiledModel probe (PROBE_SECONDS); half of that leaves a loaded machine room.
    assert elapsed < PROBE_SECONDS / 2


def test_the_compiled_api_and_gpu_need_ai_edge_litert(tflite_runtime_214: Path,
                                                      tflite_copy: Path) -> None:
    result = run_agent(tflite_copy.parent, [{"name": "gpu", "file": tflite_copy.name,
                                             "accelerator": "gpu"}],
                       {"api": "compiled"}, python=str(tflite_runtime_214))
    error = result["variants"][0]["error"]
    assert error == ("accelerator gpu (api compiled): the GPU accelerator needs LiteRT's "
                     "CompiledModel API (ai-edge-litert); tflite-runtime 2.14.0 has only "
                     "the Interpreter")


def _lavapipe_unusable() -> str:
    """Why the GPU test cannot run here ("" when it can)."""
    if not vulkan_loader_present():
        return "no Vulkan loader (libvulkan.so.1): run scripts/install-dev.sh"
    done = subprocess.run([sys.executable, "-m", "device_agent", "facts", "none",
                           "--accelerator", "gpu"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    try:
        check = json.loads(done.stdout.splitlines()[-1])["accelerators"][0]
    except (ValueError, IndexError, KeyError):
        return f"the agent's preflight failed: {done.stderr.strip()[-300:]}"
    return "" if check["ok"] else f"no usable Vulkan adapter: {check['detail']}"


@pytest.mark.slow
def test_the_digits_cnn_runs_on_the_gpu_accelerator_named_a_software_adapter(
        digits_with_reference: Path) -> None:
    reason = _lavapipe_unusable()
    if reason:
        pytest.skip(reason)
    model = digits_with_reference
    result = run_agent(model.parent, [_variant(model, "gpu", accelerator="gpu")],
                       {"variant_timeout_seconds": 600.0})
    measured = result["variants"][0]
    assert measured["status"] == "ok", measured.get("error")
    facts = measured["accelerator"]
    assert facts["requested"] == "gpu" and facts["api"] == "compiled"
    # lavapipe is a CPU rasteriser: named a software adapter, never a GPU.
    assert facts["software"] is True and facts["used"] == "software-vulkan"
    assert facts["adapter"].startswith("llvmpipe") and "Software" in facts["adapter_type"]
    assert facts["fully_accelerated"] is True
    assert facts["timing"].startswith("run + output read")
    # The first run (shader compilation) is kept apart from the steady state: it is the
    # run the agent timed as its first inference (the accelerator's clock inside the
    # agent's), so it is positive and never longer; how close the two come is load's.
    assert 0 < facts["first_run_ms"] <= measured["first_inference_ms"]
    # fp16 on the GPU: within the rule's 2 % of the output range, argmax unchanged.
    assert measured["output_check"]["ok"], measured["output_check"]["summary"]
    assert measured["output_check"]["top1_agreement"] == 1.0


# --- host side: target files, the --accelerator sweep, doctor, the report ----------------


def _edge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "toolkit", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def _local_target(folder: Path, name: str, **settings: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.toml").write_text('transport = "local"\nthreads = 1\n' + "".join(
        f"{key} = {json.dumps(value)}\n" for key, value in settings.items()))
    return folder


def test_target_files_check_accelerator_api_and_delegate(tmp_path: Path) -> None:
    from toolkit.boards.targets import load_target
    from toolkit.errors import TargetError

    folder = _local_target(tmp_path / "t", "gpu", accelerator="gpu", api="compiled")
    target = load_target("gpu", folder)
    assert (target.accelerator, target.api) == ("gpu", "compiled")
    (folder / "opts.toml").write_text('transport = "local"\naccelerator = "delegate"\n'
                                      'delegate = "/usr/lib/libedgetpu.so.1"\n'
                                      '[delegate_options]\ndevice = "usb"\n')
    assert load_target("opts", folder).to_dict()["delegate_options"] == {"device": "usb"}
    _local_target(folder, "npu", accelerator="npu")
    with pytest.raises(TargetError, match="accelerator 'npu' is not one of cpu, xnnpack-off"):
        load_target("npu", folder)
    _local_target(folder, "nolib", accelerator="delegate")
    with pytest.raises(TargetError, match='needs delegate = "/path'):
        load_target("nolib", folder)


def test_deploy_sweeps_accelerators_and_the_report_names_each(tflite_copy: Path,
                                                                tmp_path: Path) -> None:
    done = _edge("deploy", str(tflite_copy), "--target", "local", "--accelerator",
                 "cpu,xnnpack-off", "--api", "interpreter", "--min-runs", "10",
                 "--min-seconds", "0.05", "--out", str(tmp_path / "out"), "--json", "-q")
    assert done.returncode == 0, done.stderr
    results = {r["variant"]: r for r in json.loads(done.stdout)["results"]}
    assert set(results) == {"model.tflite@cpu", "model.tflite@xnnpack-off"}
    assert results["model.tflite@xnnpack-off"]["accelerator"]["used"] == "xnnpack-off"
    assert results["model.tflite@cpu"]["accelerator"]["requested"] == "cpu"
    report = next((tmp_path / "out" / "runs").glob("*/report.md")).read_text()
    assert "| model.tflite@xnnpack-off (xnnpack-off, Interpreter) |" in report
    assert "| model.tflite@cpu |" in report and "unless the variant names its accelerator" in report


def test_deploy_with_a_library_that_is_not_a_delegate_exits_2_in_one_line(
        tflite_copy: Path, tmp_path: Path) -> None:
    library = _compile(tmp_path, "not_a_delegate", "int answer(void) { return 42; }\n")
    folder = _local_target(tmp_path / "targets", "coral", delegate=str(library))
    done = _edge("deploy", str(tflite_copy), "--target", "coral", "--targets-dir", str(folder),
                 "--accelerator", "delegate", "--out", str(tmp_path / "out"), "-q")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"edge: error: target coral: {library} is not a TFLite delegate: it does not export "
        "tflite_plugin_create_delegate or tflite_plugin_destroy_delegate"]


def test_doctor_says_gpu_has_no_vulkan_without_waiting_for_a_probe(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from toolkit.boards.doctor import diagnose
    from toolkit.boards.targets import load_target

    monkeypatch.setenv("VK_DRIVER_FILES", NO_VULKAN["VK_DRIVER_FILES"])
    target = load_target("gpu", _local_target(tmp_path / "t", "gpu", accelerator="gpu"))
    started = time.monotonic()
    health = diagnose(target)
    # A hang guard: at once, not after a CompiledModel probe's PROBE_SECONDS (half: margin).
    assert time.monotonic() - started < PROBE_SECONDS / 2
    assert health.reason.startswith("accelerator gpu: no Vulkan driver (VK_DRIVER_FILES=")


def test_report_cells_name_a_software_adapter_a_fallback_and_the_api() -> None:
    from toolkit.report.render import render_markdown

    from .records import make_run, record

    lavapipe = {"requested": "gpu", "used": "software-vulkan", "api": "compiled",
                "adapter": "llvmpipe (LLVM 15.0.6, 256 bits)", "software": True,
                "fully_accelerated": True, "first_run_ms": 95_000.0}
    fallback = {"requested": "gpu+cpu", "used": "cpu", "api": "compiled",
                "fallback": "whole model on the CPU: no Vulkan adapter", "fully_accelerated": True}
    partial = {**lavapipe, "fully_accelerated": False}
    cells = [{**record("fp32@gpu"), "accelerator": lavapipe},
             {**record("fp32@gpu+cpu"), "accelerator": fallback},
             {**record("int8@gpu"), "accelerator": partial},
             {**record("fp32@cpu"), "accelerator": {"requested": "cpu", "used": "cpu",
                                                    "api": "compiled"}},
             {**record("fp32"), "accelerator": {"requested": "cpu", "used": "cpu",
                                                "api": "interpreter"}}]
    report = render_markdown(make_run("r1", cells))
    assert ("| fp32@gpu (gpu: software Vulkan llvmpipe (LLVM 15.0.6, 256 bits), not a GPU, "
            "CompiledModel) |") in report
    assert "first run 95.0 s (compiles the GPU's shaders; not in the latency)" in report
    assert "| fp32@gpu+cpu (gpu+cpu: fell back to the CPU, CompiledModel) |" in report
    assert "not a GPU, partly on the CPU, CompiledModel) |" in report
    assert "| fp32@cpu (cpu, CompiledModel) |" in report
    assert "| fp32 |" in report
    # The fp32 recipe stays the size reference in an accelerator sweep.
    swept = render_markdown(make_run("r2", [record("fp32@cpu"),
                                            record("int8@cpu", size=25_000)]))
    assert "| int8@cpu | 24.4 KiB | 0.25x |" in swept
