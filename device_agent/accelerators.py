"""Which accelerator and which API run a model on the board, and what really ran.

Two settings choose how a variant runs (both per job, ``accelerator`` also per variant
for an ``--accelerator`` sweep):

- ``accelerator``: ``cpu`` (the runtime's default kernels: XNNPACK where it applies),
  ``xnnpack-off`` (builtin kernels only: separates kernel effects from the model),
  ``gpu`` (LiteRT's CompiledModel GPU accelerator: WebGPU over Vulkan), ``gpu+cpu``
  (LiteRT's ``GPU|CPU``: the CPU takes the operators the GPU lacks and, when no GPU is
  usable, the whole model: a fallback only when asked, and said; spelt with ``+`` so that
  a shell and a Markdown table take it as it is), or ``delegate`` (an
  external delegate library, the ``delegate`` setting's path with ``delegate_options``,
  through ``load_delegate``: Coral, vendor NPUs).
- ``api``: ``interpreter`` (``Interpreter.invoke``) or ``compiled`` (LiteRT's
  ``CompiledModel`` on the CPU: the API an app written for LiteRT 2 uses).  The GPU
  accelerator exists only under ``CompiledModel``, so ``gpu`` always uses it.

What ran is reported, never assumed (:meth:`Opened.facts`): the accelerator used,
whether LiteRT says the model is fully accelerated, the Vulkan adapter the GPU
accelerator selected and whether it is a software one (Mesa's lavapipe: a CPU
rasteriser, named as such, never as a GPU), the time to create the model, and the
first run's time on its own (it compiles the GPU's shaders: 90-108 s on lavapipe).

Why a child process probes first: LiteRT's aarch64 accelerator library aborts the
whole process on cores without ``lse``/``dotprod`` (Cortex-A72, A57), even for a
CPU-only ``CompiledModel``, because the environment loads it; and the adapter is
named only in native stderr.  The probe creates the model in a forked child with its
native output captured, so a crash or a missing Vulkan driver is one line naming the
cause.  Why the output read is timed on the GPU: ``run`` returns before the GPU has
finished, so a run is timed through reading its outputs back, as an app must.

Example::

    plan = plan_model(runtime, Path("m.tflite"), {"accelerator": "gpu", "threads": 1})
    opened = plan.open()         # timed by the caller: the probe above is not
    opened.model.allocate_tensors(); opened.model.invoke()
    opened.facts()   # {"requested": "gpu", "used": "software-vulkan", "adapter": ...}
"""

from __future__ import annotations

import base64
import ctypes
import importlib
import json
import os
import re
import select
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .protocol import ACCELERATORS, APIS
from .runtime import RUNTIME_CANDIDATES, Runtime

#: How long the probe child may take to create the model (creation is quick; shader
#: compilation happens at the first run, which the variant's own timeout covers).
PROBE_SECONDS = 60.0
#: What an external delegate library exports (TFLite's external delegate interface).
DELEGATE_ENTRY_POINTS = ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate")
#: The Vulkan loader the WebGPU accelerator (Dawn) opens.
VULKAN_LOADER = "libvulkan.so.1"
#: A one-operator model (y = x + x, float32 [1, 4], signature ``serving_default``), made
#: with litert-torch 0.10: ``doctor`` probes the accelerator with it when it has no model.
PROBE_MODEL = base64.b64decode(
    "HAAAAFRGTDMUACAABAAIAAwAEAAUAAAAGAAcABQAAAADAAAAOAAAACwAAABMAQAADAAAALAAAAAsAAAABQAAAKQC"
    "AACgAgAAnAIAABABAADIAAAAAQAAAEQBAAABAAAAzAEAAAEAAAAQAAAAAAAKABAADAAIAAQACgAAAAwAAAAcAAAA"
    "IAAAAA8AAABzZXJ2aW5nX2RlZmF1bHQAAQAAABQAAAABAAAAKAAAAAgADAAIAAQACAAAAAEAAAAEAAAACAAAAG91"
    "dHB1dF8wAAAAAHr///8EAAAABgAAAGFyZ3NfMAAAAgAAAEgAAAAEAAAAyP///wgAAAAEAAAAFwAAAGtlZXBfc3Rh"
    "YmxlaGxvX2NvbnN0YW50AML///8EAAAABAAAAHRydWUIAAwABAAIAAgAAAAIAAAAAwAAABMAAABtaW5fcnVudGlt"
    "ZV92ZXJzaW9uAAAABgAIAAQABgAAAAQAAAAQAAAAMS41LjAAAAAAAAAAAAAAAA8AAABNTElSIENvbnZlcnRlZC4A"
    "AAAOABgABAAIAAwAEAAUAA4AAAA4AAAALAAAACAAAAAUAAAABAAAAAQAAABtYWluAAAAAAEAAAAwAAAAAQAAAAEA"
    "AAABAAAAAAAAAAIAAADAAAAAVAAAAAAADgAUAAAACAAMAAcAEAAOAAAAAAAACxgAAAAMAAAABAAAACj///8BAAAA"
    "AQAAAAIAAAAAAAAAAAAAAAAACgAIAAAAAAAEAAoAAAABAAAArv///wAAAAE0AAAAAgAAAAgAAAA4AAAAHwAAAHNl"
    "cnZpbmdfZGVmYXVsdF9vdXRwdXRfMF9vdXRwdXQAAgAAAAEAAAAEAAAABAAGAAQAAAAAABYAGAAIAAAADAAQABQA"
    "AAAAAAAABwAWAAAAAAAAASwAAAABAAAACAAAACwAAAAWAAAAc2VydmluZ19kZWZhdWx0X2FyZ3NfMAAAAgAAAAEA"
    "AAAEAAAA/P///wQABAAEAAAA")

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


class AcceleratorError(RuntimeError):
    """The accelerator or API asked for cannot run here; one line naming what is missing."""


class Opened:
    """A model opened as the settings ask: ``model`` has the Interpreter calls measuring
    uses (allocate_tensors, get_input_details, set_tensor, invoke, get_tensor, ...)."""

    def __init__(self, model: Any, facts: dict[str, Any]) -> None:
        self.model = model
        self._facts = facts

    def facts(self) -> dict[str, Any]:
        """What ran, read after the runs (an Interpreter's delegates apply at allocation)."""
        facts = dict(self._facts)
        if isinstance(self.model, CompiledRunner):
            facts.update(self.model.timing_facts())
        else:
            # The default delegate (XNNPACK) applies at allocation, after any external one.
            partitions = _delegate_partitions(self.model)
            if partitions is not None:
                facts["xnnpack_partitions"] = partitions - facts.get("delegate_partitions", 0)
        return facts


class Plan:
    """How a model will be opened, decided (and probed) before anything is timed."""

    def __init__(self, opener: Callable[[], Opened]) -> None:
        self._opener = opener

    def open(self) -> Opened:
        """Create the model: what the caller times as its load."""
        return self._opener()


def plan_model(runtime: Runtime, model_path: Path, settings: dict[str, Any]) -> Plan:
    """How to open ``model_path`` with the ``accelerator`` and ``api`` of ``settings``.

    Raises :class:`AcceleratorError` (one line) when that combination cannot run here;
    falls back to the CPU only for ``gpu+cpu``, saying so in the facts.
    """
    accelerator = str(settings.get("accelerator", "cpu"))
    api = str(settings.get("api", "interpreter"))
    threads = int(settings.get("threads", 1))
    if accelerator not in ACCELERATORS:
        raise AcceleratorError(f"unknown accelerator {accelerator!r}; one of "
                               + ", ".join(ACCELERATORS))
    if api not in APIS:
        raise AcceleratorError(f"unknown api {api!r}; one of " + ", ".join(APIS))
    if accelerator in ("gpu", "gpu+cpu") or api == "compiled":
        return _open_compiled(runtime, model_path, accelerator, threads)
    return _open_interpreter(runtime, model_path, accelerator, threads, settings)


# --- Interpreter --------------------------------------------------------------------------


def _open_interpreter(runtime: Runtime, model_path: Path, accelerator: str, threads: int,
                      settings: dict[str, Any]) -> Plan:
    module = importlib.import_module(dict(RUNTIME_CANDIDATES)[runtime.name])
    kwargs: dict[str, Any] = {"model_path": str(model_path),
                              "num_threads": threads if threads > 0 else None}
    facts: dict[str, Any] = {"requested": accelerator, "used": accelerator, "api": "interpreter"}
    if accelerator == "xnnpack-off":
        kwargs["experimental_op_resolver_type"] = \
            module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        facts["kernels"] = "builtin (no default delegate: XNNPACK off)"
    elif accelerator == "delegate":
        path = str(settings.get("delegate") or "")
        options = settings.get("delegate_options") or {}
        kwargs["experimental_delegates"] = [load_external_delegate(module, path, options)]
        facts.update({"used": "delegate", "delegate": path,
                      "delegate_options": {str(k): _option_text(v) for k, v in options.items()}})

    def create() -> Opened:
        interpreter = runtime.interpreter_class(**kwargs)
        if accelerator == "delegate":  # an external delegate partitions the graph at once
            partitions = _delegate_partitions(interpreter)
            if partitions is not None:
                facts["delegate_partitions"] = partitions
            if partitions == 0:
                facts["fully_accelerated"] = False
                facts["note"] = ("the delegate took no operator: the whole model ran on the "
                                 "CPU's own kernels")
        return Opened(interpreter, facts)

    return Plan(create)


def load_external_delegate(module: Any, path: str, options: dict[str, Any]) -> Any:
    """``module.load_delegate(path, options)``, its failures as one line naming the cause.

    The library's two entry points are looked up first: given a library that is not a
    delegate, both runtimes raise AttributeError (not the documented ValueError), and
    the half-made delegate's ``__del__`` prints another one at exit.
    """
    if not path:
        raise AcceleratorError("accelerator delegate needs a library: set the target's "
                               "delegate = \"/path/to/libdelegate.so\"")
    if not os.path.isfile(path):
        raise AcceleratorError(f"delegate library {path} does not exist on this board")
    try:
        library = ctypes.CDLL(path)
    except OSError as exc:
        raise AcceleratorError(f"delegate {path} could not be loaded: "
                               f"{_one_line(exc)}") from None
    missing = [name for name in DELEGATE_ENTRY_POINTS if not hasattr(library, name)]
    if missing:
        raise AcceleratorError(f"{path} is not a TFLite delegate: it does not export "
                               + " or ".join(missing))
    try:
        return module.load_delegate(path, {str(k): _option_text(v) for k, v in options.items()})
    except Exception as exc:  # the runtime's own reason (a missing dependency, bad options)
        raise AcceleratorError(f"delegate {path} could not be loaded: "
                               f"{_one_line(exc)}") from None


def _option_text(value: Any) -> str:
    """Delegate options travel as strings; booleans the way delegates parse them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _delegate_partitions(interpreter: Any) -> int | None:
    """How many delegate kernels (partitions of the graph) the interpreter runs, if it says."""
    details = getattr(interpreter, "_get_ops_details", None)
    if details is None:
        return None
    try:
        return sum(1 for op in details() if op.get("op_name") == "DELEGATE")
    except Exception:  # a private call: an older or newer runtime may lack or change it
        return None


# --- CompiledModel ------------------------------------------------------------------------


def _open_compiled(runtime: Runtime, model_path: Path, accelerator: str,
                   threads: int) -> Plan:
    what = "the GPU accelerator" if accelerator.startswith("gpu") else "api compiled"
    if runtime.name != "ai-edge-litert":
        raise AcceleratorError(f"{what} needs LiteRT's CompiledModel API (ai-edge-litert); "
                               f"{runtime.name} {runtime.version} has only the Interpreter")
    if accelerator == "delegate":
        raise AcceleratorError("an external delegate loads only through the Interpreter "
                               "(load_delegate): use api interpreter with it")
    facts: dict[str, Any] = {"requested": accelerator, "api": "compiled"}
    hardware = "cpu" if accelerator in ("cpu", "xnnpack-off") else accelerator
    try:
        probe = probe_compiled(str(model_path), hardware, threads,
                               builtin_kernels=accelerator == "xnnpack-off")
    except AcceleratorError as exc:
        if accelerator != "gpu+cpu":
            raise
        # Asked for: the whole model on the CPU when no GPU is usable, and said so.
        facts["fallback"] = f"whole model on the CPU: {exc}"
        hardware = "cpu"
        probe = probe_compiled(str(model_path), hardware, threads, builtin_kernels=False)
    facts.update(_used(hardware, probe))
    if accelerator == "xnnpack-off":
        facts["kernels"] = "builtin (kernel_mode builtin: XNNPACK off)"
    facts["probe_seconds"] = probe["seconds"]
    # On the GPU a run returns before it is done: time it through the output read.
    sync = hardware != "cpu"
    if sync:
        facts["timing"] = "run + output read (the GPU run returns before it has finished)"
        facts["precision"] = "fp16 where the GPU allows (LiteRT's default)"

    def create() -> Opened:
        log = tempfile.TemporaryFile()
        _native_output_to(log)
        started = time.perf_counter_ns()
        try:
            model = _create_compiled(str(model_path), hardware, threads,
                                     builtin_kernels=accelerator == "xnnpack-off")
        except Exception as exc:
            raise AcceleratorError(_creation_failure(hardware, _read(log), exc)) from None
        facts["create_ms"] = (time.perf_counter_ns() - started) / 1e6
        facts["fully_accelerated"] = bool(model.is_fully_accelerated())
        return Opened(CompiledRunner(model, probe["details"], read_outputs=sync), facts)

    return Plan(create)


def _used(hardware: str, probe: dict[str, Any]) -> dict[str, Any]:
    """``used`` and the adapter facts: a software Vulkan adapter is never called a GPU."""
    facts: dict[str, Any] = {"used": "cpu", "fully_accelerated": probe["fully_accelerated"]}
    if hardware == "cpu":
        return facts
    adapter = probe.get("adapter") or {}
    facts["adapter"] = adapter.get("name", "not reported")
    facts["adapter_type"] = adapter.get("type", "not reported")
    facts["backend"] = adapter.get("backend", "")
    software = bool(adapter.get("software"))
    facts["software"] = software
    facts["used"] = "software-vulkan" if software else "gpu"
    if software:
        facts["note"] = (f"software Vulkan adapter {facts['adapter']}: the GPU accelerator's "
                         "shaders ran on the CPU, not on a GPU")
    return facts


def probe_compiled(model_path: str, hardware: str, threads: int, *,
                   builtin_kernels: bool = False,
                   model_content: bytes | None = None) -> dict[str, Any]:
    """Create the CompiledModel in a forked child; its facts, or AcceleratorError.

    Returns ``details`` (the Interpreter's input and output details, with quantization),
    ``fully_accelerated``, ``adapter`` (GPU: name, type, backend, software) and
    ``seconds``.  ``model_content`` replaces the file (``doctor`` has no model).
    """
    log = tempfile.TemporaryFile()
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the probe: native output into the log, the answer into the pipe
        code = 1
        try:
            os.close(read_fd)
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            answer: dict[str, Any] = {}
            try:
                answer = _probe(model_path, hardware, threads, builtin_kernels, model_content)
                code = 0
            except Exception as exc:
                answer = {"error": _one_line(exc)}
            os.write(write_fd, json.dumps(answer).encode("utf-8"))
        finally:
            os._exit(code)
    os.close(write_fd)
    raw, timed_out = _read_until_eof(read_fd, started + PROBE_SECONDS)
    if timed_out:
        _kill(pid)
    _, status = os.waitpid(pid, 0)
    native = _read(log)
    if timed_out:
        raise AcceleratorError(f"creating the model for {hardware} did not finish in "
                               f"{PROBE_SECONDS:g} s")
    if os.WIFSIGNALED(status):
        raise AcceleratorError(_crash_message(os.WTERMSIG(status)))
    try:
        answer = json.loads(raw.decode("utf-8"))
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
           model_content: bytes | None) -> dict[str, Any]:
    details: dict[str, list[dict[str, Any]]] = {}
    if model_content is None:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=model_path)
        details = {"inputs": [_detail(d) for d in interpreter.get_input_details()],
                   "outputs": [_detail(d) for d in interpreter.get_output_details()]}
        del interpreter
    model = _create_compiled(model_path, hardware, threads, builtin_kernels=builtin_kernels,
                             model_content=model_content)
    return {"details": details, "fully_accelerated": bool(model.is_fully_accelerated())}


def _detail(detail: dict[str, Any]) -> dict[str, Any]:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return {"index": int(detail["index"]), "name": str(detail["name"]),
            "shape": [int(d) for d in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name,
            "quantization": [float(scale), int(zero_point)]}


def _create_compiled(model_path: str, hardware: str, threads: int, *, builtin_kernels: bool,
                     model_content: bytes | None = None) -> Any:
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

    def __init__(self, model: Any, details: dict[str, list[dict[str, Any]]], *,
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
        self._in_buffers = model.create_input_buffers(0)
        self._out_buffers = model.create_output_buffers(0)
        self._last: dict[int, np.ndarray] = {}
        self._first_run_ms: float | None = None

    @staticmethod
    def _with_dtype(detail: dict[str, Any]) -> dict[str, Any]:
        return {**detail, "dtype": np.dtype(detail["dtype"]).type,
                "shape": np.array(detail["shape"], dtype=np.int32),
                "quantization": tuple(detail["quantization"])}

    def allocate_tensors(self) -> None:
        """Buffers were made with the model: nothing to allocate."""

    def get_input_details(self) -> list[dict[str, Any]]:
        return list(self._inputs)

    def get_output_details(self) -> list[dict[str, Any]]:
        return list(self._outputs)

    def set_tensor(self, index: int, value: np.ndarray) -> None:
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

    def get_tensor(self, index: int) -> np.ndarray:
        if index not in self._last:
            position = next(i for i, d in enumerate(self._outputs) if d["index"] == index)
            self._last[index] = self._read(position, self._outputs[position])
        return self._last[index]

    def _read(self, position: int, detail: dict[str, Any]) -> np.ndarray:
        shape = tuple(int(d) for d in detail["shape"])
        flat = self._out_buffers[position].read(int(np.prod(shape)), detail["dtype"])
        return np.asarray(flat).reshape(shape)

    def timing_facts(self) -> dict[str, Any]:
        """The first run on its own: on a GPU it compiles the shaders."""
        if self._first_run_ms is None:
            return {}
        return {"first_run_ms": self._first_run_ms}


# --- preflight (edge doctor) --------------------------------------------------------------


def preflight(runtime: Runtime | None, accelerators: list[str], api: str, delegate: str,
              delegate_options: dict[str, Any]) -> list[dict[str, Any]]:
    """Can each of ``accelerators`` (and ``api``) run here?  One check each, for ``doctor``.

    ``{"name", "ok", "detail", "warning"}``: the GPU's checks name the Vulkan loader, the
    adapter LiteRT selects (a software one is said to be software: a warning, since it
    measures a CPU) and whether the model of :data:`PROBE_MODEL` is fully accelerated;
    all probing happens in a child, so an accelerator that aborts costs one check.
    """
    checks = []
    wanted = list(accelerators) + (["compiled"] if api == "compiled" else [])
    for name in dict.fromkeys(wanted):
        try:
            ok, detail, warning = _preflight_one(runtime, name, delegate, delegate_options)
        except AcceleratorError as exc:
            ok, detail, warning = False, str(exc), False
        if not ok and name == "gpu+cpu":  # asked for: it runs, on the CPU
            ok, detail, warning = True, f"runs on the CPU (fallback): {detail}", True
        checks.append({"name": name, "ok": ok, "detail": detail, "warning": warning})
    return checks


def _preflight_one(runtime: Runtime | None, name: str, delegate: str,
                   delegate_options: dict[str, Any]) -> tuple[bool, str, bool]:
    if name == "cpu":
        return True, "the runtime's default kernels", False
    if runtime is None:
        return False, "no TFLite runtime", False
    if name == "xnnpack-off":
        module = importlib.import_module(dict(RUNTIME_CANDIDATES)[runtime.name])
        if not hasattr(module, "OpResolverType"):
            return False, f"{runtime.name} {runtime.version} cannot leave XNNPACK off", False
        return True, "builtin kernels (BUILTIN_WITHOUT_DEFAULT_DELEGATES)", False
    if name == "delegate":
        module = importlib.import_module(dict(RUNTIME_CANDIDATES)[runtime.name])
        load_external_delegate(module, delegate, delegate_options)
        return True, f"{delegate} loads as a delegate", False
    what = "api compiled" if name == "compiled" else "the GPU accelerator"
    if runtime.name != "ai-edge-litert":
        return False, (f"{what} needs LiteRT's CompiledModel API (ai-edge-litert); "
                       f"{runtime.name} {runtime.version} has only the Interpreter"), False
    if name == "compiled":
        probe = probe_compiled("", "cpu", 1, model_content=PROBE_MODEL)
        return True, f"CompiledModel on the CPU ({probe['seconds']:.1f} s to create)", False
    if not vulkan_loader_present():
        return False, (f"no Vulkan loader ({VULKAN_LOADER}): LiteRT's GPU accelerator "
                       "(WebGPU) runs over Vulkan only; install libvulkan1 and the GPU's "
                       "Vulkan driver"), False
    probe = probe_compiled("", "gpu", 1, model_content=PROBE_MODEL)
    facts = _used("gpu", probe)
    library = _webgpu_library()
    where = f"; accelerator library {library}" if library else ""
    if facts["software"]:
        return True, (f"Vulkan adapter {facts['adapter']} is a software adapter "
                      f"({facts['adapter_type']}): gpu figures will measure the CPU, not a "
                      f"GPU{where}"), True
    return True, f"Vulkan adapter {facts['adapter']} ({facts['adapter_type']}){where}", False


def _webgpu_library() -> str:
    """The WebGPU accelerator library ai-edge-litert ships beside its package, if present."""
    import ai_edge_litert

    found = sorted(Path(ai_edge_litert.__file__).parent.glob("libLiteRtWebGpuAccelerator*"))
    return found[0].name if found else ""


# --- explaining failures ------------------------------------------------------------------


def _creation_failure(hardware: str, native: str, error: Any) -> str:
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


def _native_output_to(log: Any) -> None:
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


def _read(log: Any) -> str:
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


def _one_line(exc: Any) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, BaseException):
        text = f"{type(exc).__name__}: {text}"
    return text
