"""Per-operator profile of one model: where the time of a run goes, operator by operator.

Neither runtime has a Python profiler API, so each route reaches the runtime's own
profiler through ``ctypes`` (standard library), and only where the layout it relies on
was read from that runtime's headers and checked against its binary:

- ai-edge-litert 2.3: the LiteRT C API of ``libLiteRt.so`` (CompiledModel with the
  opaque option ``runtime_options_string`` = ``enable_profiling = true``, CPU through
  XNNPACK as the Interpreter runs it, ``LiteRtGetProfilerEvents``).  The environment
  registers the CPU accelerator only: loading the GPU one aborts the process on ARM
  cores without LSE/dotprod (Cortex-A72).
- tflite-runtime 2.14: ``tflite::impl::Interpreter::SetProfiler`` with a
  ``tflite::Profiler`` built in ``ctypes`` (vtable: two destructors, BeginEvent,
  EndEvent(handle, m1, m2), EndEvent(handle), AddEvent, AddEventWithData, the order of
  2.14's ``RootProfiler`` vtable).

Any other runtime or version, or a library without the symbols, gives
``{"error": "per-op profile not available on RUNTIME VERSION: reason"}``.  The
profiled pass runs in a forked child where the OS can fork, so a crash inside the
runtime's native profiler costs the profile, never the variant's measurement.

The profiled pass is separate from the timed one: profiling adds per-operator
bookkeeping (23-45 % measured with XNNPACK), so whole-model latency keeps coming from
the unprofiled pass and the profile says what it cost (``overhead``).

Rows are operators as they ran, in run order: TFLite nodes for the interpreter's own
kernels, XNNPACK operators for what XNNPACK ran (its names, e.g. ``Convolution (NHWC,
QC8) IGEMM``; ``op`` is the part before the bracket).  When XNNPACK ran exactly one
operator per delegated node, each of its rows also names the TFLite node (index, op,
version, output shape).  Times are microseconds per run (p50 and mean over the
profiled runs); both runtimes' XNNPACK timings are whole microseconds per run.

Example::

    profile = profile_variant(find_runtime(), Path("m.tflite"), threads=1,
                              inputs=[x], baseline_ms=0.79)
    profile["ops"][0]["op"], profile["by_type"][0]["share"], profile["overhead"]
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import struct
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .runtime import Runtime

#: Runtime versions whose native layouts this module was checked against.
LITERT_VERSIONS = ("2.3.",)
TFLITE_RUNTIME_VERSIONS = ("2.14.",)
#: Profiled runs: at least this many and this long, at most the ceilings.
MIN_RUNS, MIN_SECONDS, MAX_RUNS, MAX_SECONDS = 30, 0.5, 1000, 10.0
WARMUP_RUNS = 5
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
    checked = "ai-edge-litert 2.3, tflite-runtime 2.14"
    return f"the native profiler's layout is checked for {checked} only"


def profile_in_child(runtime: Runtime, model_path: Path, *, threads: int,
                     inputs: list[np.ndarray], baseline_ms: float,
                     timeout: float = 120.0) -> dict[str, Any]:
    """:func:`profile_variant` in a forked child (inline where the OS cannot fork).

    A crash in native profiler code (a layout that differs after all) then ends the
    child, and the answer is one line saying so; the measurement is untouched.
    """
    why = unavailable(runtime)
    if why is not None:
        return _error(runtime, why)
    if not hasattr(os, "fork"):
        return profile_variant(runtime, model_path, threads=threads, inputs=inputs,
                               baseline_ms=baseline_ms)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: profile, answer through the pipe, never return into the agent
        code = 0
        try:
            os.close(read_end)
            try:
                answer = profile_variant(runtime, model_path, threads=threads, inputs=inputs,
                                         baseline_ms=baseline_ms)
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


def _collect(runtime: Runtime, pid: int, read_end: int, timeout: float) -> dict[str, Any]:
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
    return answer if isinstance(answer, dict) else _error(runtime, "malformed answer")


def profile_variant(runtime: Runtime, model_path: Path, *, threads: int,
                    inputs: list[np.ndarray], baseline_ms: float) -> dict[str, Any]:
    """Profile ``model_path`` in this process: rows, a by-type summary, total and overhead.

    ``inputs`` are what the timed pass fed (one array per model input); ``baseline_ms``
    is the unprofiled pass's p50, the overhead's reference.
    """
    why = unavailable(runtime)
    if why is not None:
        return _error(runtime, why)
    route = _litert_events if runtime.name == "ai-edge-litert" else _tflite_runtime_events
    try:
        method, runs = route(runtime, model_path, threads, inputs)
    except _NotAvailable as exc:
        return _error(runtime, str(exc))
    try:
        nodes = _model_nodes(runtime, model_path)
    except Exception:
        nodes = []
    profile = summarize(runs, nodes)
    profile["method"] = method
    profile["runtime"] = runtime.describe()
    profile["threads"] = threads
    total = profile["total_us"]["p50"]
    profile["baseline_us"] = baseline_ms * 1e3
    profile["overhead"] = total / (baseline_ms * 1e3) - 1 if baseline_ms > 0 else None
    return profile


class _NotAvailable(RuntimeError):
    """The route cannot profile here (a symbol missing, a call refused): one line why."""


def _error(runtime: Runtime, reason: str) -> dict[str, Any]:
    return {"error": f"per-op profile not available on {runtime.name} {runtime.version}: "
                     f"{reason}"}


# --- one run's events -> rows -------------------------------------------------------------

def summarize(runs: list[tuple[float, list[tuple[str, int, int, float]]]],
              nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows (run order), by-type summary and totals from the profiled runs' events.

    ``runs``: per profiled run, its total (us: the interpreter's "Invoke" event) and its
    operator events in run order as (tag, event type, metadata1, elapsed us).
    """
    if not runs:
        raise _NotAvailable("the profiler recorded no run")
    shapes = {len(events) for _total, events in runs}
    if len(shapes) != 1 or not runs[0][1]:
        raise _NotAvailable(f"runs recorded {sorted(shapes)} operator events each "
                            "(the profiler dropped events)")
    first = runs[0][1]
    times = np.array([[event[3] for event in events] for _total, events in runs])
    totals = np.array([total for total, _events in runs])
    mean_total = float(totals.mean())
    mapped = _map_nodes(first, nodes)
    ops = []
    for column, (tag, kind, _meta, _elapsed) in enumerate(first):
        row: dict[str, Any] = {"index": column, "op": _op_type(tag, kind), "kernel": tag,
                               "source": "xnnpack" if kind == DELEGATE_PROFILED_EVENT
                               else "tflite",
                               "p50_us": float(np.median(times[:, column])),
                               "mean_us": float(times[:, column].mean())}
        node = mapped.get(column)
        if node is not None:
            row.update({"node": node["index"], "node_op": node["op"],
                        "version": node.get("version"), "output_shape": node.get("shape")})
        row["share"] = row["mean_us"] / mean_total if mean_total > 0 else 0.0
        ops.append(row)
    by_type: dict[str, dict[str, Any]] = {}
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
    return {"runs": len(runs), "ops": ops, "by_type": summary,
            "total_us": {"p50": float(np.median(totals)), "mean": mean_total},
            "ops_sum_us": ops_sum,
            "coverage": ops_sum / mean_total if mean_total > 0 else 0.0,
            "nodes_mapped": len(mapped)}


def _op_type(tag: str, kind: int) -> str:
    """``CONV_2D`` for a TFLite node; ``Convolution`` for ``Convolution (NHWC, F32) IGEMM``."""
    return tag.split(" (", 1)[0].strip() if kind == DELEGATE_PROFILED_EVENT else tag


def _map_nodes(events: list[tuple[str, int, int, float]],
               nodes: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
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
    aligned: dict[int, dict[str, Any]] = {}
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


def _split_runs(events: list[tuple[str, int, int, int, float]]
                ) -> list[tuple[float, list[tuple[str, int, int, float]]]]:
    """Cut a stream of (tag, type, metadata1, subgraph, elapsed us) events into runs at
    each "Invoke" event of the main subgraph.

    The "Invoke" event is recorded when the run begins (begin/end events are stored at
    their begin) and its elapsed time is the run's total; operator events follow it.
    Only the main subgraph's events count: a control-flow node's time already holds its
    body subgraphs', whose node indices are not the main subgraph's.
    XNNPACK reports its operators itself (no event for its delegate node), so node events
    of a delegate are dropped when its operators are there, or they would count twice.
    """
    runs: list[tuple[float, list[tuple[str, int, int, float]]]] = []
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


def _timed_loop(run_once: Callable[[], None]) -> int:
    """Run until both floors are met or a ceiling is hit; return the runs done."""
    done, started = 0, time.monotonic()
    while True:
        run_once()
        done += 1
        elapsed = time.monotonic() - started
        if (done >= MIN_RUNS and elapsed >= MIN_SECONDS) or done >= MAX_RUNS \
                or elapsed >= MAX_SECONDS:
            return done


# --- ai-edge-litert: the LiteRT C API --------------------------------------------------------

class _LiteRtAny(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("int_value", ctypes.c_int64)]


class _EnvOption(ctypes.Structure):  # LiteRtEnvOption: 24 bytes, value at offset 8
    _fields_ = [("tag", ctypes.c_int), ("value", _LiteRtAny)]


class _Layout(ctypes.Structure):  # LiteRtLayout: rank:7, has_strides:1, dims[8], strides[8]
    _fields_ = [("bits", ctypes.c_uint32), ("dimensions", ctypes.c_int32 * 8),
                ("strides", ctypes.c_uint32 * 8)]


class _RankedTensorType(ctypes.Structure):  # 72 bytes
    _fields_ = [("element_type", ctypes.c_int), ("layout", _Layout)]


class _MemoryUsage(ctypes.Structure):
    _fields_ = [("total", ctypes.c_size_t), ("in_use", ctypes.c_size_t),
                ("private", ctypes.c_size_t)]


class _ProfiledEventData(ctypes.Structure):  # litert_profiler_event.h
    _fields_ = [("tag", ctypes.c_char_p), ("event_type", ctypes.c_int),
                ("start_timestamp_us", ctypes.c_uint64), ("elapsed_time_us", ctypes.c_uint64),
                ("begin_mem_usage", _MemoryUsage), ("end_mem_usage", _MemoryUsage),
                ("event_metadata1", ctypes.c_uint64), ("event_metadata2", ctypes.c_uint64),
                ("event_source", ctypes.c_int)]


_ENV_AUTO_REGISTER_ACCELERATORS, _ANY_INT, _HW_CPU = 24, 2, 1
_LOCK_WRITE, _LOCK_READ = 1, 0


def _litert_library_path() -> Path:
    import ai_edge_litert

    return Path(ai_edge_litert.__file__).parent / "libLiteRt.so"


def _litert_events(runtime: Runtime, model_path: Path, threads: int, inputs: list[np.ndarray]
                   ) -> tuple[str, list[tuple[float, list[tuple[str, int, int, float]]]]]:
    """Profile through a CompiledModel of libLiteRt.so; every handle is released."""
    path = _litert_library_path()
    try:
        lib = ctypes.CDLL(str(path))
        calls = _LiteRtCalls(lib)
    except (OSError, AttributeError) as exc:
        raise _NotAvailable(f"{path.name}: {exc}") from None
    with calls:
        calls.open(model_path, threads)
        calls.feed(inputs)
        for _ in range(WARMUP_RUNS):
            calls.run()
        calls.start()
        _timed_loop(calls.run)
        events = calls.events()
    method = (f"LiteRT C API profiler (CompiledModel, CPU, XNNPACK, {threads or 'default'} "
              "thread(s))")
    return method, _split_runs(events)


class _LiteRtCalls:
    """The handful of LiteRT C calls the profile needs, each checked, all released on exit."""

    NAMES = ("LiteRtCreateEnvironment", "LiteRtDestroyEnvironment", "LiteRtCreateModelFromFile",
             "LiteRtDestroyModel", "LiteRtCreateOptions", "LiteRtDestroyOptions",
             "LiteRtSetOptionsHardwareAccelerators", "LiteRtCreateOpaqueOptions",
             "LiteRtAddOpaqueOptions", "LiteRtCreateCompiledModel", "LiteRtDestroyCompiledModel",
             "LiteRtGetModelSignature", "LiteRtGetNumSignatureInputs",
             "LiteRtGetNumSignatureOutputs", "LiteRtGetSignatureInputTensorByIndex",
             "LiteRtGetSignatureOutputTensorByIndex", "LiteRtGetRankedTensorType",
             "LiteRtGetCompiledModelInputBufferRequirements",
             "LiteRtGetCompiledModelOutputBufferRequirements",
             "LiteRtCreateManagedTensorBufferFromRequirements", "LiteRtDestroyTensorBuffer",
             "LiteRtLockTensorBuffer", "LiteRtUnlockTensorBuffer", "LiteRtGetTensorBufferSize",
             "LiteRtRunCompiledModel", "LiteRtCompiledModelGetProfiler", "LiteRtStartProfiler",
             "LiteRtStopProfiler", "LiteRtResetProfiler", "LiteRtGetNumProfilerEvents",
             "LiteRtGetProfilerEvents")

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.fn = {name: getattr(lib, name) for name in self.NAMES}  # AttributeError: missing
        for name in ("LiteRtDestroyEnvironment", "LiteRtDestroyModel", "LiteRtDestroyOptions",
                     "LiteRtDestroyCompiledModel", "LiteRtDestroyTensorBuffer"):
            self.fn[name].restype = None
            self.fn[name].argtypes = [ctypes.c_void_p]
        libc = ctypes.CDLL(None)
        self.strdup, self.free = libc.strdup, libc.free
        self.strdup.restype, self.strdup.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
        self.env = ctypes.c_void_p()
        self.model = ctypes.c_void_p()
        self.options = ctypes.c_void_p()
        self.compiled = ctypes.c_void_p()
        self.profiler = ctypes.c_void_p()
        self.buffers: list[ctypes.c_void_p] = []
        self.inputs: Any = None
        self.outputs: Any = None

    def __enter__(self) -> _LiteRtCalls:
        return self

    def __exit__(self, *_exc: object) -> None:
        for buffer in self.buffers:
            self.fn["LiteRtDestroyTensorBuffer"](buffer)
        for handle, name in ((self.compiled, "LiteRtDestroyCompiledModel"),
                             (self.options, "LiteRtDestroyOptions"),
                             (self.model, "LiteRtDestroyModel"),
                             (self.env, "LiteRtDestroyEnvironment")):
            if handle.value:
                self.fn[name](handle)

    def call(self, name: str, *args: Any) -> None:
        status = self.fn[name](*args)
        if status != 0:
            raise _NotAvailable(f"{name} returned status {status}")

    def open(self, model_path: Path, threads: int) -> None:
        # Only the CPU accelerator: the GPU one aborts the process on some ARM cores.
        only_cpu = (_EnvOption * 1)(_EnvOption(_ENV_AUTO_REGISTER_ACCELERATORS,
                                               _LiteRtAny(_ANY_INT, _HW_CPU)))
        self.call("LiteRtCreateEnvironment", 1, only_cpu, ctypes.byref(self.env))
        self.call("LiteRtCreateModelFromFile", self.env, str(model_path).encode(),
                  ctypes.byref(self.model))
        self.call("LiteRtCreateOptions", ctypes.byref(self.options))
        self.call("LiteRtSetOptionsHardwareAccelerators", self.options, _HW_CPU)
        cpu = f"num_threads = {threads}\n" if threads > 0 else ""
        for identifier, payload in (("runtime_options_string", "enable_profiling = true\n"),
                                    ("xnnpack", cpu)):
            opaque = ctypes.c_void_p()
            # The payload is a C string the options own: strdup'd here, free'd by them.
            self.call("LiteRtCreateOpaqueOptions", identifier.encode(),
                      ctypes.c_void_p(self.strdup(payload.encode())),
                      ctypes.cast(self.free, ctypes.c_void_p), ctypes.byref(opaque))
            self.call("LiteRtAddOpaqueOptions", self.options, opaque)
        self.call("LiteRtCreateCompiledModel", self.env, self.model, self.options,
                  ctypes.byref(self.compiled))
        signature = ctypes.c_void_p()
        self.call("LiteRtGetModelSignature", self.model, ctypes.c_size_t(0),
                  ctypes.byref(signature))
        self.inputs = self._buffers(signature, "Input")
        self.outputs = self._buffers(signature, "Output")
        self.call("LiteRtCompiledModelGetProfiler", self.compiled, ctypes.byref(self.profiler))
        if not self.profiler.value:
            raise _NotAvailable("the compiled model has no profiler (profiling not enabled)")

    def _buffers(self, signature: ctypes.c_void_p, kind: str) -> Any:
        count = ctypes.c_size_t()
        self.call(f"LiteRtGetNumSignature{kind}s", signature, ctypes.byref(count))
        made = []
        for index in range(count.value):
            tensor, requirements = ctypes.c_void_p(), ctypes.c_void_p()
            ranked = _RankedTensorType()
            self.call(f"LiteRtGetSignature{kind}TensorByIndex", signature,
                      ctypes.c_size_t(index), ctypes.byref(tensor))
            self.call("LiteRtGetRankedTensorType", tensor, ctypes.byref(ranked))
            self.call(f"LiteRtGetCompiledModel{kind}BufferRequirements", self.compiled,
                      ctypes.c_size_t(0), ctypes.c_size_t(index), ctypes.byref(requirements))
            buffer = ctypes.c_void_p()
            self.call("LiteRtCreateManagedTensorBufferFromRequirements", self.env,
                      ctypes.byref(ranked), requirements, ctypes.byref(buffer))
            self.buffers.append(buffer)
            made.append(buffer)
        return (ctypes.c_void_p * len(made))(*made)

    def feed(self, inputs: list[np.ndarray]) -> None:
        if len(inputs) != len(self.inputs):
            raise _NotAvailable(f"the signature has {len(self.inputs)} inputs, "
                                f"{len(inputs)} given")
        for buffer, tensor in zip(self.inputs, inputs):
            data = np.ascontiguousarray(tensor).tobytes()
            size = ctypes.c_size_t()
            self.call("LiteRtGetTensorBufferSize", ctypes.c_void_p(buffer), ctypes.byref(size))
            if size.value < len(data):
                raise _NotAvailable(f"an input buffer holds {size.value} bytes, "
                                    f"the input has {len(data)}")
            address = ctypes.c_void_p()
            self.call("LiteRtLockTensorBuffer", ctypes.c_void_p(buffer), ctypes.byref(address),
                      _LOCK_WRITE)
            ctypes.memmove(address, data, len(data))
            self.call("LiteRtUnlockTensorBuffer", ctypes.c_void_p(buffer))

    def run(self) -> None:
        self.call("LiteRtRunCompiledModel", self.compiled, ctypes.c_size_t(0),
                  ctypes.c_size_t(len(self.inputs)), self.inputs,
                  ctypes.c_size_t(len(self.outputs)), self.outputs)

    def start(self) -> None:
        """Forget anything recorded so far (the warm-up) and start recording."""
        self.call("LiteRtResetProfiler", self.profiler)
        self.call("LiteRtStartProfiler", self.profiler)

    def events(self) -> list[tuple[str, int, int, int, float]]:
        self.call("LiteRtStopProfiler", self.profiler)
        count = ctypes.c_int()
        self.call("LiteRtGetNumProfilerEvents", self.profiler, ctypes.byref(count))
        raw = (_ProfiledEventData * count.value)()
        self.call("LiteRtGetProfilerEvents", self.profiler, count, raw)
        return [((event.tag or b"").decode("utf-8", "replace"), int(event.event_type),
                 int(event.event_metadata1), int(event.event_metadata2),
                 float(event.elapsed_time_us)) for event in raw]


# --- tflite-runtime 2.14: Interpreter::SetProfiler -------------------------------------------

_SET_PROFILER = "_ZN6tflite4impl11Interpreter11SetProfilerEPNS_8ProfilerE"
_DESTRUCTOR = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_BEGIN = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                          ctypes.c_int64, ctypes.c_int64)
_END_WITH_METADATA = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int64,
                                      ctypes.c_int64)
_END = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32)
_ADD = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint64,
                        ctypes.c_int64, ctypes.c_int64)
_ADD_WITH_DATA = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                  ctypes.c_void_p)


class _CProfiler(ctypes.Structure):
    _fields_ = [("vtable", ctypes.c_void_p)]


class _Recorder:
    """A ``tflite::Profiler`` whose methods are Python: events timed with perf_counter_ns.

    Events are kept in begin order (as the runtime's own buffer keeps them) as
    [tag, type, metadata1, metadata2 (the subgraph), elapsed us]; a begun event's elapsed
    time is filled at its end.
    """

    def __init__(self) -> None:
        self.events: list[list[Any]] = []
        self.started: list[int] = []
        self.recording = False
        clock = time.perf_counter_ns

        def begin(_self: int, tag: bytes | None, kind: int, meta1: int, meta2: int) -> int:
            if not self.recording:
                return 0
            self.events.append([(tag or b"").decode("utf-8", "replace"), kind, meta1, meta2,
                                0.0])
            self.started.append(clock())
            return len(self.events)

        def end(_self: int, handle: int) -> None:
            now = clock()
            if handle and handle <= len(self.events):
                self.events[handle - 1][4] = (now - self.started[handle - 1]) / 1e3

        def end_with_metadata(_self: int, handle: int, _meta1: int, _meta2: int) -> None:
            end(_self, handle)

        def add(_self: int, tag: bytes | None, kind: int, metric: int, meta1: int,
                meta2: int) -> None:
            if self.recording:  # XNNPACK's operators: elapsed whole microseconds
                self.events.append([(tag or b"").decode("utf-8", "replace"), kind, meta1,
                                    meta2, float(metric)])
                self.started.append(0)

        def nothing(*_args: Any) -> None:
            return None

        # Kept on self: ctypes callbacks must outlive every call the runtime makes.
        self.functions = (_DESTRUCTOR(nothing), _DESTRUCTOR(nothing), _BEGIN(begin),
                          _END_WITH_METADATA(end_with_metadata), _END(end), _ADD(add),
                          _ADD_WITH_DATA(nothing))
        self.vtable = (ctypes.c_void_p * len(self.functions))(
            *[ctypes.cast(function, ctypes.c_void_p) for function in self.functions])
        self.instance = _CProfiler(ctypes.cast(self.vtable, ctypes.c_void_p))


def _tflite_runtime_events(runtime: Runtime, model_path: Path, threads: int,
                           inputs: list[np.ndarray]
                           ) -> tuple[str, list[tuple[float, list[tuple[str, int, int, float]]]]]:
    """Profile a fresh Interpreter with a ctypes profiler attached before allocation (XNNPACK
    reads the profiler when it builds its runtime, so it reports its own operators)."""
    interpreter = runtime.interpreter_class(model_path=str(model_path),
                                            num_threads=threads if threads > 0 else None)
    wrapper = getattr(interpreter, "_interpreter", None)
    if wrapper is None or not hasattr(wrapper, "interpreter"):
        raise _NotAvailable("the interpreter wrapper does not expose its native interpreter")
    library = sys.modules[type(wrapper).__module__].__file__
    try:
        set_profiler = getattr(ctypes.CDLL(str(library)), _SET_PROFILER)
    except (OSError, AttributeError, TypeError) as exc:
        raise _NotAvailable(f"Interpreter::SetProfiler is not exported: {exc}") from None
    set_profiler.restype, set_profiler.argtypes = None, [ctypes.c_void_p, ctypes.c_void_p]
    native = ctypes.c_void_p(wrapper.interpreter())
    del wrapper  # the Python Interpreter refuses to run while its wrapper is referenced
    recorder = _Recorder()
    set_profiler(native, ctypes.byref(recorder.instance))
    try:
        interpreter.allocate_tensors()
        for detail, tensor in zip(interpreter.get_input_details(), inputs):
            interpreter.set_tensor(detail["index"], tensor)
        for _ in range(WARMUP_RUNS):
            interpreter.invoke()
        recorder.recording = True
        _timed_loop(interpreter.invoke)
        recorder.recording = False
    finally:
        set_profiler(native, None)
    events = [(tag, kind, meta1, meta2, elapsed)
              for tag, kind, meta1, meta2, elapsed in recorder.events]
    method = (f"tflite::Interpreter::SetProfiler with a ctypes profiler, "
              f"{threads or 'default'} thread(s)")
    return method, _split_runs(events)


# --- the model's nodes: op, version, output shape -------------------------------------------

def _model_nodes(runtime: Runtime, model_path: Path) -> list[dict[str, Any]]:
    """Each TFLite node of the main subgraph: index, op name, version, output shape."""
    interpreter = runtime.interpreter_class(model_path=str(model_path))
    interpreter.allocate_tensors()
    shapes = {detail["index"]: [int(d) for d in detail["shape"]]
              for detail in interpreter.get_tensor_details()}
    versions = operator_versions(model_path.read_bytes())
    nodes = []
    for op in interpreter._get_ops_details():
        node: dict[str, Any] = {"index": int(op["index"]), "op": str(op["op_name"])}
        outputs = [int(t) for t in op["outputs"]]
        if outputs and outputs[0] in shapes:
            node["shape"] = shapes[outputs[0]]
        if node["index"] < len(versions):
            node["version"] = versions[node["index"]]
        nodes.append(node)
    return nodes


def operator_versions(data: bytes) -> list[int]:
    """The op version of each operator of subgraph 0, read from the flatbuffer itself.

    Model: table with operator_codes (field 1) and subgraphs (field 2); OperatorCode.version
    is field 2 (default 1); SubGraph.operators is field 3; Operator.opcode_index field 0.
    """
    def table(position: int) -> tuple[int, int, int]:
        vtable = position - struct.unpack_from("<i", data, position)[0]
        vtable_size = struct.unpack_from("<H", data, vtable)[0]
        return position, vtable, vtable_size

    def field(tab: tuple[int, int, int], number: int) -> int | None:
        position, vtable, size = tab
        slot = 4 + 2 * number
        if slot >= size:
            return None
        offset = struct.unpack_from("<H", data, vtable + slot)[0]
        return position + offset if offset else None

    def vector(tab: tuple[int, int, int], number: int) -> list[tuple[int, int, int]]:
        at = field(tab, number)
        if at is None:
            return []
        start = at + struct.unpack_from("<I", data, at)[0]
        count = struct.unpack_from("<I", data, start)[0]
        return [table(start + 4 + 4 * i + struct.unpack_from("<I", data, start + 4 + 4 * i)[0])
                for i in range(count)]

    model = table(struct.unpack_from("<I", data, 0)[0])
    codes = []
    for code in vector(model, 1):
        at = field(code, 2)
        codes.append(struct.unpack_from("<i", data, at)[0] if at is not None else 1)
    subgraphs = vector(model, 2)
    if not subgraphs:
        return []
    versions = []
    for operator in vector(subgraphs[0], 3):
        at = field(operator, 0)
        versions.append(codes[struct.unpack_from("<I", data, at)[0] if at is not None else 0])
    return versions
