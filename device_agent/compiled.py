"""LiteRT's CompiledModel: probed in a child, created, and run behind the Interpreter's calls.

Why a child process probes first: LiteRT's aarch64 accelerator library aborts the
whole process on cores without ``lse``/``dotprod`` (Cortex-A72, A57), even for a
CPU-only ``CompiledModel``, because the environment loads it; and the adapter is
named only in native stderr.  The probe creates the model in a forked child with its
native output captured, so a crash or a missing Vulkan driver is one line naming the
cause (:func:`probe_compiled`).  Why the output read is timed on the GPU: ``run`` returns
before the GPU has finished, so a run is timed through reading its outputs back, as an
app must (:class:`CompiledRunner`).

:mod:`device_agent.accelerators` decides when this API runs a model.

Example::

    probe = probe_compiled("m.tflite", "gpu", 1)   # {"details", "fully_accelerated", ...}
    runner = CompiledRunner(_create_compiled("m.tflite", "gpu", 1, builtin_kernels=False),
                            probe["details"], read_outputs=True)
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import select
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, Dict, List, Mapping, NamedTuple, TypedDict

import numpy as np

from .interp import AcceleratorError, TensorDetail
from .wire import AcceleratorFacts

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from .interp import CompiledModelApi, TensorBuffer


class PlainDetail(TypedDict):
    """A tensor's details as the probe child sends them: plain JSON values."""

    index: int
    name: str
    shape: List[int]
    dtype: str
    quantization: List[float]  # [scale, zero point]


class Adapter(TypedDict):
    """The Vulkan adapter LiteRT's GPU accelerator selected (from Dawn's native log)."""

    name: str
    type: str
    backend: str
    software: bool


class ProbeAnswer(TypedDict, total=False):
    """What :func:`probe_compiled` found; ``error`` only on the way out of the child."""

    details: Dict[str, List[PlainDetail]]
    fully_accelerated: bool
    adapter: Adapter
    seconds: float
    error: str


#: How long the probe child may take to create the model (creation is quick; shader
#: compilation happens at the first run, which the variant's own timeout covers).
PROBE_SECONDS = 60.0
#: The Vulkan loader the WebGPU accelerator (Dawn) opens.
VULKAN_LOADER = "libvulkan.so.1"

#: Whether :func:`_native_output_to` has sent this process's native output to a log.
_redirected = {"done": False}
_ADAPTER = re.compile(r"Selected adapter: (?P<name>.*?), arch=(?P<arch>[^,]*), "
                      r"vendor=(?P<vendor>[^,]*), backend=(?P<backend>[^,]*), "
                      r"adapterType=(?P<type>.*)$", re.MULTILINE)
#: Dawn's reason for turning an adapter down ("Vulkan shaderUniform*ArrayDynamicIndexing
#: required." from Mesa 22.3's lavapipe), followed by "- While initializing adapter".
_ADAPTER_REJECTED = re.compile(r"^Warning: (.*?)\.?\s*\n\s*- While initializing adapter",
                               re.MULTILINE)
_WEBGPU_FAILED = re.compile(r"Failed to initialize WebGPU environment: (?:[A-Z_]+: )?(.*)$",
                            re.MULTILINE)



# --- probing and creating ------------------------------------------------------------------


class ChildRun(NamedTuple):
    """What a child of :func:`run_in_child` left: its answer, and how it ended."""

    raw: bytes            # the JSON it wrote, b"" if it wrote nothing
    timed_out: bool       # killed after PROBE_SECONDS
    status: int           # its wait status (os.waitpid)
    native: str           # everything it and its native libraries printed


def run_in_child(work: Callable[[], Mapping[str, object]]) -> ChildRun:
    """``work()`` in a forked child with its native output captured, killed after
    :data:`PROBE_SECONDS`: a crash or an abort in a runtime costs that child only.

    The child writes ``work()``'s answer as JSON, or ``{"error": one line}`` when it raised.
    """
    log = tempfile.TemporaryFile()
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: native output into the log, the answer into the pipe
        code = 1
        try:
            os.close(read_fd)
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            answer: Mapping[str, object] = {}
            try:
                answer = work()
                code = 0
            except Exception as exc:  # the runtime's own message is the useful part
                answer = {"error": _one_line(exc)}
            os.write(write_fd, json.dumps(answer).encode("utf-8"))
        finally:
            os._exit(code)
    os.close(write_fd)
    raw, timed_out = _read_until_eof(read_fd, started + PROBE_SECONDS)
    if timed_out:
        _kill(pid)
    _, status = os.waitpid(pid, 0)
    with log:
        return ChildRun(raw, timed_out, status, _read(log))


def probe_compiled(model_path: str, hardware: str, threads: int, *,
                   builtin_kernels: bool = False,
                   model_content: bytes | None = None) -> ProbeAnswer:
    """Create the CompiledModel in a forked child; its facts, or AcceleratorError.

    Returns ``details`` (the Interpreter's input and output details, with quantization),
    ``fully_accelerated``, ``adapter`` (GPU: name, type, backend, software) and
    ``seconds``.  ``model_content`` replaces the file (``doctor`` has no model).
    """
    started = time.monotonic()
    raw, timed_out, status, native = run_in_child(
        lambda: _probe(model_path, hardware, threads, builtin_kernels, model_content))
    if timed_out:
        raise AcceleratorError(f"creating the model for {hardware} did not finish in "
                               f"{PROBE_SECONDS:g} s")
    if os.WIFSIGNALED(status):
        raise AcceleratorError(_crash_message(os.WTERMSIG(status)))
    try:
        answer = json.loads(raw.decode("utf-8"))  # the child's own ProbeAnswer
    except ValueError:
        answer = {"error": f"the probe ended with status {os.WEXITSTATUS(status)}"}
    if "error" in answer:
        raise AcceleratorError(_creation_failure(hardware, native, answer["error"]))
    answer["seconds"] = round(time.monotonic() - started, 3)
    match = _ADAPTER.search(native)
    if match:
        answer["adapter"] = {
            "name": match["name"], "type": match["type"].strip(), "backend": match["backend"],
            "software": "software" in (match["arch"] + match["type"]).lower()}
    return answer


def _probe(model_path: str, hardware: str, threads: int, builtin_kernels: bool,
           model_content: bytes | None) -> ProbeAnswer:
    details: Dict[str, List[PlainDetail]] = {}
    if model_content is None:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=model_path)
        details = {"inputs": [_detail(d) for d in interpreter.get_input_details()],
                   "outputs": [_detail(d) for d in interpreter.get_output_details()]}
        del interpreter
    model = _create_compiled(model_path, hardware, threads, builtin_kernels=builtin_kernels,
                             model_content=model_content)
    return {"details": details, "fully_accelerated": bool(model.is_fully_accelerated())}


def _detail(detail: TensorDetail) -> PlainDetail:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return {"index": int(detail["index"]), "name": str(detail["name"]),
            "shape": [int(d) for d in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name,
            "quantization": [float(scale), int(zero_point)]}


def _create_compiled(model_path: str, hardware: str, threads: int, *, builtin_kernels: bool,
                     model_content: bytes | None = None) -> CompiledModelApi:
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import CpuOptions, Options

    flags = {"cpu": HardwareAccelerator.CPU, "gpu": HardwareAccelerator.GPU,
             "gpu+cpu": HardwareAccelerator.GPU | HardwareAccelerator.CPU}[hardware]
    cpu = CpuOptions(num_threads=threads)
    if builtin_kernels:
        from ai_edge_litert.cpu_kernel_mode import CpuKernelMode

        cpu = CpuOptions(num_threads=threads, kernel_mode=CpuKernelMode.BUILTIN)
    options = Options(hardware_accelerators=flags, cpu_options=cpu)
    if model_content is not None:
        return CompiledModel.from_buffer(model_content, options=options)
    return CompiledModel.from_file(model_path, options=options)


class CompiledRunner:
    """A CompiledModel behind the Interpreter calls that measuring and the output check use.

    Tensor details (with quantization, which CompiledModel does not report) come from
    the probe's Interpreter, matched to the signature's buffers by tensor index.
    ``read_outputs``: every ``invoke`` reads the outputs back (the GPU's run is
    asynchronous); on the CPU the outputs are read only when asked for.
    """

    def __init__(self, model: CompiledModelApi, details: Dict[str, List[PlainDetail]], *,
                 read_outputs: bool) -> None:
        self._model = model
        self._read_outputs = read_outputs
        signature = next(iter(model.get_signature_list()), None)
        if signature is None:
            raise AcceleratorError("CompiledModel needs a signature and the model has none")
        by_index = {d["index"]: d for d in details["inputs"] + details["outputs"]}
        self._inputs = [self._with_dtype(by_index[int(d["index"])]) for d in
                        model.get_input_tensor_details(signature).values()]
        self._outputs = [self._with_dtype(by_index[int(d["index"])]) for d in
                         model.get_output_tensor_details(signature).values()]
        self._in_buffers: List[TensorBuffer] = model.create_input_buffers(0)
        self._out_buffers: List[TensorBuffer] = model.create_output_buffers(0)
        self._last: Dict[int, NDArray[np.generic]] = {}
        self._first_run_ms: float | None = None

    @staticmethod
    def _with_dtype(detail: PlainDetail) -> TensorDetail:
        scale, zero_point = detail["quantization"]
        return {"index": detail["index"], "name": detail["name"],
                "dtype": np.dtype(detail["dtype"]).type,
                "shape": np.array(detail["shape"], dtype=np.int32),
                "quantization": (scale, int(zero_point))}

    def allocate_tensors(self) -> None:
        """Buffers were made with the model: nothing to allocate."""

    def get_input_details(self) -> List[TensorDetail]:
        return list(self._inputs)

    def get_output_details(self) -> List[TensorDetail]:
        return list(self._outputs)

    def set_tensor(self, index: int, value: NDArray[np.generic]) -> None:
        position = next(i for i, d in enumerate(self._inputs) if d["index"] == index)
        self._in_buffers[position].write(np.ascontiguousarray(value))

    def invoke(self) -> None:
        started = time.perf_counter_ns() if self._first_run_ms is None else 0
        self._model.run_by_index(0, self._in_buffers, self._out_buffers)
        self._last = {}
        if self._read_outputs:
            self._last = {d["index"]: self._read(position, d)
                          for position, d in enumerate(self._outputs)}
        if self._first_run_ms is None:
            self._first_run_ms = (time.perf_counter_ns() - started) / 1e6

    def get_tensor(self, index: int) -> NDArray[np.generic]:
        if index not in self._last:
            position = next(i for i, d in enumerate(self._outputs) if d["index"] == index)
            self._last[index] = self._read(position, self._outputs[position])
        return self._last[index]

    def _read(self, position: int, detail: TensorDetail) -> NDArray[np.generic]:
        shape = tuple(int(d) for d in detail["shape"])
        flat = self._out_buffers[position].read(int(np.prod(shape)), detail["dtype"])
        return np.asarray(flat).reshape(shape)

    def timing_facts(self) -> AcceleratorFacts:
        """The first run on its own: on a GPU it compiles the shaders."""
        if self._first_run_ms is None:
            return {}
        return {"first_run_ms": self._first_run_ms}


# --- explaining failures ------------------------------------------------------------------


def _creation_failure(hardware: str, native: str, error: object) -> str:
    """One line: why creating the model failed, naming what is missing when it is Vulkan."""
    if hardware == "cpu":
        return f"CompiledModel on the CPU could not be created: {_one_line(error)}"
    webgpu = _WEBGPU_FAILED.search(native)
    if webgpu is None:
        return f"the GPU accelerator could not create the model: {_one_line(error)}"
    said = webgpu.group(1).strip()
    rejected = _ADAPTER_REJECTED.findall(native)
    if rejected:  # Dawn saw an adapter and turned it down, saying for what
        return (f"the Vulkan adapter here lacks what LiteRT's GPU accelerator needs "
                f"({'; '.join(dict.fromkeys(r.strip() for r in rejected))}){_driver_hint()}: "
                f"a newer Vulkan driver may have it (Debian 12's lavapipe, Mesa 22.3, lacks it; "
                f"Mesa 25 from bookworm-backports works) (it said: {said})")
    if not vulkan_loader_present():
        return (f"no Vulkan loader ({VULKAN_LOADER}) on this board: LiteRT's GPU accelerator "
                f"(WebGPU) runs over Vulkan only; install libvulkan1 and the GPU's Vulkan "
                f"driver (it said: {said})")
    if "Found no drivers" in native:
        return (f"no Vulkan driver{_driver_hint()}: LiteRT's GPU accelerator (WebGPU) runs "
                f"over Vulkan only; install the GPU's Vulkan driver (it said: {said})")
    return (f"no Vulkan adapter LiteRT's GPU accelerator accepts{_driver_hint()}: install "
            f"the GPU's Vulkan driver (Debian 12's lavapipe, Mesa 22.3, is rejected; Mesa 25 "
            f"from bookworm-backports works) (it said: {said})")


def _driver_hint() -> str:
    """Where the Vulkan loader looked for drivers, when the environment steers it."""
    for name in ("VK_DRIVER_FILES", "VK_ICD_FILENAMES"):
        if os.environ.get(name):
            return f" ({name}={os.environ[name]})"
    found = [path for folder in ("/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d")
             for path in sorted(Path(folder).glob("*.json"))] if sys.platform.startswith(
                 "linux") else []
    return f" ({len(found)} Vulkan driver files installed)" if found else \
        " (no Vulkan driver installed: /usr/share/vulkan/icd.d is empty)"


def vulkan_loader_present() -> bool:
    try:
        ctypes.CDLL(VULKAN_LOADER)
    except OSError:
        return False
    return True


def _crash_message(signum: int) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = str(signum)
    hint = ""
    features = _cpu_features()
    if features is not None and not {"atomics", "asimddp"} <= features:
        hint = ("; this CPU lacks lse/dotprod (a Cortex-A72 or A57), which ai-edge-litert's "
                "aarch64 accelerator library needs: use the Interpreter (api interpreter, "
                "accelerator cpu) here")
    return f"creating the CompiledModel killed the probe process ({name}){hint}"


def _cpu_features() -> set[str] | None:
    """The aarch64 CPU's feature flags (``atomics`` is lse, ``asimddp`` dotprod); None elsewhere."""
    if os.uname().machine not in ("aarch64", "arm64"):
        return None
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("Features"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def _native_output_to(log: IO[bytes]) -> None:
    """Send native output (LiteRT and Dawn log freely on both, also at exit) to ``log``, and
    Python's ``sys.stdout``/``sys.stderr`` on to the real ones, so that the measuring
    child's last lines stay its own: the result and its one-line error."""
    if _redirected["done"]:  # a second model in one process: already done
        return
    _redirected["done"] = True
    for fd, name in ((1, "stdout"), (2, "stderr")):
        getattr(sys, name).flush()
        saved = os.dup(fd)
        os.dup2(log.fileno(), fd)
        setattr(sys, name, os.fdopen(saved, "w", buffering=1))


def _read(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read().decode("utf-8", "replace")


def _read_until_eof(fd: int, deadline: float) -> tuple[bytes, bool]:
    """Everything written to pipe ``fd`` until it closes; (data, True) at the deadline."""
    chunks: list[bytes] = []
    try:
        while True:
            wait = deadline - time.monotonic()
            if wait <= 0:
                return b"".join(chunks), True
            ready, _, _ = select.select([fd], [], [], wait)
            if ready:
                data = os.read(fd, 65536)
                if not data:
                    return b"".join(chunks), False
                chunks.append(data)
    finally:
        os.close(fd)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _one_line(exc: object) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, BaseException):
        text = f"{type(exc).__name__}: {text}"
    return text
