"""The native profilers of the two runtimes, reached with ``ctypes``: raw events only.

Each route returns the runtime's own events in the order its profiler recorded them, as
(tag, event type, metadata1, metadata2 = subgraph, elapsed us); :mod:`device_agent.profiler`
turns them into rows.  Every layout here was read from the runtime's headers and checked
against its binary (struct sizes from the headers' static_asserts, the vtable order from
tflite-runtime 2.14's ``RootProfiler`` vtable); :func:`device_agent.profiler.unavailable`
keeps other versions away from them.

- ai-edge-litert 2.3 (:func:`litert_events`): a CompiledModel of ``libLiteRt.so`` with the
  opaque option ``runtime_options_string`` = ``enable_profiling = true``, CPU through
  XNNPACK (``xnnpack``: ``num_threads``), in an environment that registers only the CPU
  accelerator (loading the GPU one aborts on ARM cores without LSE/dotprod).
- tflite-runtime 2.14 (:func:`tflite_runtime_events`): ``Interpreter::SetProfiler`` with a
  ``tflite::Profiler`` whose vtable is Python callbacks: two destructors, BeginEvent,
  EndEvent(handle, m1, m2), EndEvent(handle), AddEvent, AddEventWithData.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Tuple

import numpy as np

from .runtime import Runtime

#: Profiled runs: at least this many and this long, at most the ceilings.
MIN_RUNS, MIN_SECONDS, MAX_RUNS, MAX_SECONDS = 30, 0.5, 1000, 10.0
WARMUP_RUNS = 5
#: One recorded event: tag, event type, metadata1 (node), metadata2 (subgraph), elapsed us.
Event = Tuple[str, int, int, int, float]


class NotAvailable(RuntimeError):
    """The route cannot profile here (a symbol missing, a call refused): one line why."""


def timed_loop(run_once: Callable[[], None], *, max_runs: int = MAX_RUNS) -> int:
    """Run until both floors are met or a ceiling is hit; return the runs done."""
    done, started = 0, time.monotonic()
    while True:
        run_once()
        done += 1
        elapsed = time.monotonic() - started
        if (done >= MIN_RUNS and elapsed >= MIN_SECONDS) or done >= max_runs \
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
_LOCK_WRITE = 1


def _litert_library_path() -> Path:
    import ai_edge_litert

    return Path(ai_edge_litert.__file__).parent / "libLiteRt.so"


def litert_events(runtime: Runtime, model_path: Path, threads: int, inputs: list[np.ndarray]
                  ) -> tuple[str, list[Event]]:
    """Profile through a CompiledModel of libLiteRt.so; every handle is released."""
    path = _litert_library_path()
    try:
        lib = ctypes.CDLL(str(path))
        calls = _LiteRtCalls(lib)
    except (OSError, AttributeError) as exc:
        raise NotAvailable(f"{path.name}: {exc}") from None
    with calls:
        calls.open(model_path, threads)
        calls.feed(inputs)
        for _ in range(WARMUP_RUNS):
            calls.run()
        calls.start()
        with no_new_file_descriptors():
            timed_loop(calls.run)
        events = calls.events()
    method = (f"LiteRT C API profiler (CompiledModel, CPU, XNNPACK, {threads or 'default'} "
              "thread(s))")
    return method, events


@contextlib.contextmanager
def no_new_file_descriptors() -> Iterator[None]:
    """Make every ``open`` in this process fail at once (EMFILE) for the duration.

    LiteRT's profile buffer samples the process's memory at the begin and end of each
    non-operator event, three per run, and each sample reads ``/proc/self/status``: about
    30 us a read on the machine this was measured on, six per run, plus the caches that
    the kernel's formatting evicts.  That made a profiled run of the 12 us digits CNN take
    200 us and its operators a third longer; without the reads, 50 us.  edge does not
    use those samples.  Descriptors already open stay usable, and the profiled loop opens
    nothing else, so the soft limit is lowered to the lowest free descriptor and restored.
    """
    try:
        import resource
    except ImportError:  # not a POSIX system: nothing to lower, the samples stay
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.open(os.devnull, os.O_RDONLY)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


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
        self.inputs: ctypes.Array[ctypes.c_void_p] = (ctypes.c_void_p * 0)()
        self.outputs: ctypes.Array[ctypes.c_void_p] = (ctypes.c_void_p * 0)()

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

    def call(self, name: str, *args: object) -> None:
        status = self.fn[name](*args)
        if status != 0:
            raise NotAvailable(f"{name} returned status {status}")

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
            raise NotAvailable("the compiled model has no profiler (profiling not enabled)")

    def _buffers(self, signature: ctypes.c_void_p, kind: str) -> ctypes.Array[ctypes.c_void_p]:
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
            raise NotAvailable(f"the signature has {len(self.inputs)} inputs, "
                                f"{len(inputs)} given")
        for buffer, tensor in zip(self.inputs, inputs):
            data = np.ascontiguousarray(tensor).tobytes()
            size = ctypes.c_size_t()
            self.call("LiteRtGetTensorBufferSize", ctypes.c_void_p(buffer), ctypes.byref(size))
            if size.value < len(data):
                raise NotAvailable(f"an input buffer holds {size.value} bytes, "
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

    def events(self) -> list[Event]:
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

        def nothing(*_args: object) -> None:
            return None

        # Kept on self: ctypes callbacks must outlive every call the runtime makes.
        self.functions = (_DESTRUCTOR(nothing), _DESTRUCTOR(nothing), _BEGIN(begin),
                          _END_WITH_METADATA(end_with_metadata), _END(end), _ADD(add),
                          _ADD_WITH_DATA(nothing))
        self.vtable = (ctypes.c_void_p * len(self.functions))(
            *[ctypes.cast(function, ctypes.c_void_p) for function in self.functions])
        self.instance = _CProfiler(ctypes.cast(self.vtable, ctypes.c_void_p))


def tflite_runtime_events(runtime: Runtime, model_path: Path, threads: int,
                           inputs: list[np.ndarray]
                          ) -> tuple[str, list[Event]]:
    """Profile a fresh Interpreter with a ctypes profiler attached before allocation (XNNPACK
    reads the profiler when it builds its runtime, so it reports its own operators)."""
    interpreter = runtime.interpreter_class(model_path=str(model_path),
                                            num_threads=threads if threads > 0 else None)
    wrapper = getattr(interpreter, "_interpreter", None)
    if wrapper is None or not hasattr(wrapper, "interpreter"):
        raise NotAvailable("the interpreter wrapper does not expose its native interpreter")
    library = sys.modules[type(wrapper).__module__].__file__
    try:
        set_profiler = getattr(ctypes.CDLL(str(library)), _SET_PROFILER)
    except (OSError, AttributeError, TypeError) as exc:
        raise NotAvailable(f"Interpreter::SetProfiler is not exported: {exc}") from None
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
        timed_loop(interpreter.invoke)
        recorder.recording = False
    finally:
        set_profiler(native, None)
    events = [(tag, kind, meta1, meta2, elapsed)
              for tag, kind, meta1, meta2, elapsed in recorder.events]
    method = (f"tflite::Interpreter::SetProfiler with a ctypes profiler, "
              f"{threads or 'default'} thread(s)")
    return method, events
