"""Per-operator profile of one model: where the time of a run goes, operator by operator.

Neither runtime has a Python profiler API, so each route reaches the runtime's own
profiler through ``ctypes`` (:mod:`device_agent.native_profilers`), and only where the
layout it relies on was read from that runtime's headers and checked against its
binary: ai-edge-litert 2.3 through the LiteRT C API of ``libLiteRt.so`` (a CompiledModel
with profiling on, CPU through XNNPACK as the Interpreter runs it), tflite-runtime 2.14
through ``tflite::impl::Interpreter::SetProfiler`` with a ``tflite::Profiler`` built in
``ctypes``.  This module turns their events into rows.

ONNX Runtime has its own profiler (``SessionOptions.enable_profiling``): its trace is read
by :mod:`device_agent.ort_profiler`, one row per node of the graph ORT optimised, each
naming the execution provider that ran it (``provider``), times in whole microseconds.

Any other runtime or version, or a library without the symbols, gives
``{"error": "per-op profile not available on RUNTIME VERSION: reason"}``.  The
profiled pass runs in a forked child where the OS can fork, so a crash inside the
runtime's native profiler costs the profile, never the variant's measurement.

The profiled pass is separate from the timed one: profiling adds bookkeeping to every
run (measured here: a few per cent of a 1 ms MobileNetV2-96 run, +30 to +120 % of a 12 us
digits CNN run), so whole-model latency keeps coming from the unprofiled pass and the
profile says what it cost (``overhead``).

Rows are operators as they ran, in run order: TFLite nodes for the interpreter's own
kernels, XNNPACK operators for what XNNPACK ran (its names, e.g. ``Convolution (NHWC,
QC8) IGEMM``; ``op`` is the part before the bracket).  When XNNPACK ran one operator per
delegated node (a PAD it folded into the next convolution aside), each of its rows also
names the TFLite node (index, op, version, output shape).  Times are microseconds per
run (p50 and mean over the profiled runs); XNNPACK's timings are whole microseconds.

Example::

    profile = profile_variant(find_runtime(), Path("m.tflite"), threads=1,
                              inputs=[x], baseline_ms=0.79)
    profile["ops"][0]["op"], profile["by_type"][0]["share"], profile["overhead"]
"""

from __future__ import annotations

import json
import os
import select
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple, TypedDict, cast

import numpy as np

from .native_profilers import NotAvailable, litert_events, tflite_runtime_events
from .ort_profiler import CHECKED as ORT_CHECKED
from .ort_profiler import Run as OrtRun
from .ort_profiler import checked as ort_checked
from .ort_profiler import ort_runs
from .runtime import ONNX_RUNTIME, Runtime
from .tflite_file import operator_versions
from .wire import Profile, ProfileRow

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from .interp import Interpreter

#: One operator event of a run: (tag, event type, metadata1, elapsed us).
Event = Tuple[str, int, int, float]
#: One profiled run: its total (us) and its operator events in run order.
Run = Tuple[float, List[Event]]


class ModelNode(TypedDict, total=False):
    """A TFLite node of the main subgraph: index, op name, version, output shape."""

    index: int
    op: str
    version: int
    shape: List[int]

#: Runtime versions whose native layouts this module was checked against.
LITERT_VERSIONS = ("2.3.",)
TFLITE_RUNTIME_VERSIONS = ("2.14.",)
#: tflite::Profiler::EventType (and LiteRtProfilerEventType, the same values).
DEFAULT_EVENT, OPERATOR_EVENT, DELEGATE_PROFILED_EVENT = 1, 2, 8
#: XNNPACK operator families and the TFLite builtins each comes from: a one-to-one
#: mapping of XNNPACK operators to delegated nodes is accepted only where every pair fits.
XNNPACK_FAMILIES: dict[str, tuple[str, ...]] = {
    "Convolution": ("CONV_2D", "DEPTHWISE_CONV_2D"),
    "Depthwise Convolution": ("DEPTHWISE_CONV_2D",),
    "Deconvolution": ("TRANSPOSE_CONV",),
    # XNNPACK runs a 1x1 convolution as a fully connected operator.
    "Fully Connected": ("FULLY_CONNECTED", "BATCH_MATMUL", "CONV_2D"),
    "Batch Matrix Multiply": ("BATCH_MATMUL",),
    "Max Pooling": ("MAX_POOL_2D",), "Average Pooling": ("AVERAGE_POOL_2D",),
    "Global Average Pooling": ("MEAN", "AVERAGE_POOL_2D"), "Mean": ("MEAN",),
    "Static Reshape": ("RESHAPE", "SQUEEZE", "EXPAND_DIMS"), "Copy": ("RESHAPE", "SQUEEZE"),
    "Transpose": ("TRANSPOSE",), "Add": ("ADD",), "Subtract": ("SUB",),
    "Multiply": ("MUL",), "Divide": ("DIV",), "Clamp": ("RELU", "RELU6", "RELU_N1_TO_1"),
    "Convert": ("QUANTIZE", "DEQUANTIZE"), "Softmax": ("SOFTMAX",),
    "Concatenate": ("CONCATENATION",), "Constant Pad": ("PAD", "PADV2"),
    "Sigmoid": ("LOGISTIC",), "Tanh": ("TANH",), "HardSwish": ("HARD_SWISH",),
    "Leaky ReLU": ("LEAKY_RELU",), "Resize Bilinear": ("RESIZE_BILINEAR",),
    "Slice": ("SLICE", "STRIDED_SLICE"), "Square Root": ("SQRT",),
}
#: Nodes XNNPACK may fold into the operator after them (a PAD into a convolution's padding).
XNNPACK_FOLDED = ("PAD", "PADV2")


def unavailable(runtime: Runtime) -> str | None:
    """Why no route profiles ``runtime`` here (None: one should), without touching native code."""
    if runtime.name == "ai-edge-litert" and runtime.version.startswith(LITERT_VERSIONS):
        return None
    if runtime.name == "tflite-runtime" and runtime.version.startswith(TFLITE_RUNTIME_VERSIONS):
        return None
    if runtime.name == ONNX_RUNTIME:
        if ort_checked(runtime.version):
            return None
        first, last = (".".join(map(str, line)) for line in ORT_CHECKED)
        return f"its profiler's trace layout is checked for onnxruntime {first} to {last} only"
    checked = "ai-edge-litert 2.3, tflite-runtime 2.14"
    return f"the native profiler's layout is checked for {checked} only"


def profile_in_child(runtime: Runtime, model_path: Path, *, threads: int,
                     inputs: List[NDArray[np.generic]], baseline_ms: float,
                     providers: Optional[List[str]] = None, timeout: float = 120.0) -> Profile:
    """:func:`profile_variant` in a forked child (inline where the OS cannot fork).

    A crash in native profiler code (a layout that differs after all) then ends the
    child, and the answer is one line saying so; the measurement is untouched.
    """
    why = unavailable(runtime)
    if why is not None:
        return _error(runtime, why)
    if not hasattr(os, "fork"):
        return profile_variant(runtime, model_path, threads=threads, inputs=inputs,
                               baseline_ms=baseline_ms, providers=providers)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: profile, answer through the pipe, never return into the agent
        code = 0
        try:
            os.close(read_end)
            try:
                answer = profile_variant(runtime, model_path, threads=threads, inputs=inputs,
                                         baseline_ms=baseline_ms, providers=providers)
            except Exception as exc:  # the runtime's own message is the useful part
                answer = _error(runtime, f"{type(exc).__name__}: {exc}".splitlines()[0])
            data = json.dumps(answer).encode("utf-8")
            while data:
                data = data[os.write(write_end, data):]
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    return _collect(runtime, pid, read_end, timeout)


def _collect(runtime: Runtime, pid: int, read_end: int, timeout: float) -> Profile:
    """The child's answer, or why there is none; the child is always reaped."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_end], [], [], left)[0]:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                return _error(runtime, f"the profiled pass took over {timeout:g} s")
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
    _pid, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return _error(runtime, f"the profiled pass was killed by signal {os.WTERMSIG(status)}")
    try:
        answer = json.loads(b"".join(chunks).decode("utf-8"))
    except ValueError:
        return _error(runtime, f"the profiled pass ended with status {status} and no answer")
    # The child's own Profile, relayed: the host checks it (protocol.validate_result).
    return cast(Profile, answer) if isinstance(answer, dict) else _error(runtime,
                                                                         "malformed answer")


def profile_variant(runtime: Runtime, model_path: Path, *, threads: int,
                    inputs: List[NDArray[np.generic]], baseline_ms: float,
                    providers: Optional[List[str]] = None) -> Profile:
    """Profile ``model_path`` in this process: rows, a by-type summary, total and overhead.

    ``inputs`` are what the timed pass fed (one array per model input); ``baseline_ms``
    is the unprofiled pass's p50, the overhead's reference; ``providers`` the execution
    providers the timed pass's ONNX Runtime session registered (None: the CPU one).
    """
    why = unavailable(runtime)
    if why is not None:
        return _error(runtime, why)
    try:
        if runtime.name == ONNX_RUNTIME:
            method, runs = ort_runs(model_path, threads=threads, inputs=inputs,
                                    providers=providers)
            profile = summarize_ort(runs)
        else:
            method, profile = _tflite_profile(runtime, model_path, threads, inputs)
    except NotAvailable as exc:
        return _error(runtime, str(exc))
    profile["method"] = method
    profile["runtime"] = runtime.describe()
    profile["threads"] = threads
    total = profile["total_us"]["p50"]
    profile["baseline_us"] = baseline_ms * 1e3
    profile["overhead"] = total / (baseline_ms * 1e3) - 1 if baseline_ms > 0 else None
    return profile


def _tflite_profile(runtime: Runtime, model_path: Path, threads: int,
                    inputs: List[NDArray[np.generic]]) -> Tuple[str, Profile]:
    """A TFLite runtime's route (:mod:`device_agent.native_profilers`): method and profile."""
    route = litert_events if runtime.name == "ai-edge-litert" else tflite_runtime_events
    try:
        nodes = _model_nodes(runtime, model_path)
    except Exception:  # node facts are extras: the rows stand without them
        nodes = []
    method, events = route(runtime, model_path, threads, inputs)
    return method, summarize(_split_runs(events), nodes)


def _error(runtime: Runtime, reason: str) -> Profile:
    return {"error": f"per-op profile not available on {runtime.name} {runtime.version}: "
                     f"{reason}"}


# --- one run's events -> rows -------------------------------------------------------------

def summarize(runs: List[Run], nodes: List[ModelNode]) -> Profile:
    """Rows (run order), by-type summary and totals from the profiled runs' events.

    ``runs``: per profiled run, its total (us: the interpreter's "Invoke" event) and its
    operator events in run order as (tag, event type, metadata1, elapsed us).
    """
    if not runs:
        raise NotAvailable("the profiler recorded no run")
    shapes = {len(events) for _total, events in runs}
    if len(shapes) != 1 or not runs[0][1]:
        raise NotAvailable(f"runs recorded {sorted(shapes)} operator events each "
                            "(the profiler dropped events)")
    first = runs[0][1]
    mapped = _map_nodes(first, nodes)
    ops = []
    for column, (tag, kind, _meta, _elapsed) in enumerate(first):
        row: ProfileRow = {"index": column, "op": _op_type(tag, kind), "kernel": tag,
                           "source": "xnnpack" if kind == DELEGATE_PROFILED_EVENT
                           else "tflite"}
        node = mapped.get(column)
        if node is not None:
            row.update({"node": node["index"], "node_op": node["op"],
                        "version": node.get("version"), "output_shape": node.get("shape")})
        ops.append(row)
    profile = _timed(ops, [total for total, _events in runs],
                     [[event[3] for event in events] for _total, events in runs])
    profile["nodes_mapped"] = len(mapped)
    return profile


def summarize_ort(runs: List[OrtRun]) -> Profile:
    """Rows (run order), by-type summary and totals from ONNX Runtime's profiled runs: a
    row per node as it ran, naming the execution provider that really ran it."""
    if not runs:
        raise NotAvailable("the profiler recorded no run")
    first = runs[0][1]
    sequences = {tuple((node.name, node.provider) for node in nodes) for _total, nodes in runs}
    if len(sequences) != 1 or not first:
        raise NotAvailable(f"runs recorded {sorted({len(s) for s in sequences})} node events "
                           "each (the profiler dropped events or nodes ran in another order)")
    ops = []
    for column, node in enumerate(first):
        row: ProfileRow = {"index": column, "op": node.op, "kernel": node.name,
                           "source": ONNX_RUNTIME, "provider": node.provider,
                           "node_op": node.op}
        if node.node_index is not None:
            row["node"] = node.node_index
        if node.shape is not None:
            row["output_shape"] = node.shape
        ops.append(row)
    profile = _timed(ops, [total for total, _nodes in runs],
                     [[node.elapsed_us for node in nodes] for _total, nodes in runs])
    profile["nodes_mapped"] = sum(1 for row in ops if "node" in row)
    return profile


def _timed(ops: List[ProfileRow], run_totals: List[float],
           run_times: List[List[float]]) -> Profile:
    """``ops`` with their times (p50 and mean over the runs, share of the mean run), a
    by-type summary and the totals; ``run_times[run][column]`` is one row's time."""
    times = np.array(run_times)
    totals = np.array(run_totals)
    mean_total = float(totals.mean())
    for column, row in enumerate(ops):
        row["p50_us"] = float(np.median(times[:, column]))
        row["mean_us"] = float(times[:, column].mean())
        row["share"] = row["mean_us"] / mean_total if mean_total > 0 else 0.0
    by_type: Dict[str, ProfileRow] = {}
    for row in ops:
        # Typed by the model's node where the row names one: CONV_2D, not XNNPACK's family.
        kind_of = row.get("node_op") or row["op"]
        entry = by_type.setdefault(kind_of, {"op": kind_of, "count": 0, "mean_us": 0.0})
        entry["count"] += 1
        entry["mean_us"] += row["mean_us"]
    summary = sorted(by_type.values(), key=lambda entry: -entry["mean_us"])
    for entry in summary:
        entry["share"] = entry["mean_us"] / mean_total if mean_total > 0 else 0.0
    ops_sum = float(times.sum(axis=1).mean())
    return {"runs": len(run_totals), "ops": ops, "by_type": summary,
            "total_us": {"p50": float(np.median(totals)), "mean": mean_total},
            "ops_sum_us": ops_sum,
            "coverage": ops_sum / mean_total if mean_total > 0 else 0.0}


def _op_type(tag: str, kind: int) -> str:
    """``CONV_2D`` for a TFLite node; ``Convolution`` for ``Convolution (NHWC, F32) IGEMM``."""
    return tag.split(" (", 1)[0].strip() if kind == DELEGATE_PROFILED_EVENT else tag


def _map_nodes(events: List[Event], nodes: List[ModelNode]) -> Dict[int, ModelNode]:
    """Row -> TFLite node: nodes by index for the interpreter's own rows; XNNPACK rows in
    order onto the nodes that did not run as themselves, only when every pair fits
    :data:`XNNPACK_FAMILIES` (a node of :data:`XNNPACK_FOLDED` may have been folded into
    the next operator) and every node is accounted for; else XNNPACK rows stay unmapped."""
    by_index = {node["index"]: node for node in nodes}
    mapped = {column: by_index[meta] for column, (_tag, kind, meta, _t) in enumerate(events)
              if kind == OPERATOR_EVENT and meta in by_index}
    own = {node["index"] for node in mapped.values()}
    delegated = [node for node in nodes if node["index"] not in own
                 and not node["op"].startswith("DELEGATE")]
    xnn = [column for column, event in enumerate(events) if event[1] == DELEGATE_PROFILED_EVENT]
    aligned: Dict[int, ModelNode] = {}
    at = 0
    for column in xnn:
        family = XNNPACK_FAMILIES.get(_op_type(events[column][0], DELEGATE_PROFILED_EVENT), ())
        while at < len(delegated) and delegated[at]["op"] not in family \
                and delegated[at]["op"] in XNNPACK_FOLDED:
            at += 1
        if at == len(delegated) or delegated[at]["op"] not in family:
            return mapped
        aligned[column] = delegated[at]
        at += 1
    if all(node["op"] in XNNPACK_FOLDED for node in delegated[at:]):
        mapped.update(aligned)
    return mapped


def _split_runs(events: List[Tuple[str, int, int, int, float]]) -> List[Run]:
    """Cut a stream of (tag, type, metadata1, subgraph, elapsed us) events into runs at
    each "Invoke" event of the main subgraph.

    The "Invoke" event is recorded when the run begins (begin/end events are stored at
    their begin) and its elapsed time is the run's total; operator events follow it.
    Only the main subgraph's events count: a control-flow node's time already holds its
    body subgraphs', whose node indices are not the main subgraph's.
    XNNPACK reports its operators itself (no event for its delegate node), so node events
    of a delegate are dropped when its operators are there, or they would count twice.
    """
    runs: List[Run] = []
    for tag, kind, meta, subgraph, elapsed in events:
        if subgraph != 0:
            continue
        if kind == DEFAULT_EVENT and tag == "Invoke":
            runs.append((elapsed, []))
        elif runs and kind in (OPERATOR_EVENT, DELEGATE_PROFILED_EVENT):
            runs[-1][1].append((tag, kind, meta, elapsed))
    for _total, ops in runs:
        if any(kind == DELEGATE_PROFILED_EVENT for _tag, kind, _m, _t in ops):
            ops[:] = [op for op in ops if not (op[1] == OPERATOR_EVENT and "Delegate" in op[0])]
    return runs


# --- the model's nodes: op, version, output shape -------------------------------------------

def _model_nodes(runtime: Runtime, model_path: Path) -> List[ModelNode]:
    """Each TFLite node of the main subgraph: index, op name, version, output shape."""
    # Only TFLite runtimes reach here (see unavailable): theirs is a whole Interpreter.
    interpreter = cast("Interpreter", runtime.interpreter_class(model_path=str(model_path)))
    interpreter.allocate_tensors()
    shapes = {detail["index"]: [int(d) for d in detail["shape"]]
              for detail in interpreter.get_tensor_details()}
    versions = operator_versions(model_path.read_bytes())
    nodes = []
    for op in interpreter._get_ops_details():
        node: ModelNode = {"index": int(op["index"]), "op": str(op["op_name"])}
        outputs = [int(t) for t in op["outputs"]]
        if outputs and outputs[0] in shapes:
            node["shape"] = shapes[outputs[0]]
        if node["index"] < len(versions):
            node["version"] = versions[node["index"]]
        nodes.append(node)
    return nodes
