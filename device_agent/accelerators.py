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

A CompiledModel is probed in a child process before anything is timed, and run behind
the Interpreter's calls: :mod:`device_agent.compiled` says why.

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
import os
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Callable, List, Mapping, Tuple

from .compiled import (
    PROBE_SECONDS,
    VULKAN_LOADER,
    CompiledRunner,
    ProbeAnswer,
    _create_compiled,
    _creation_failure,
    _native_output_to,
    _one_line,
    _read,
    probe_compiled,
    vulkan_loader_present,
)
from .interp import AcceleratorError
from .ort import GPU_PROVIDERS, PROVIDERS, OrtSession, providers_for
from .runtime import ONNX_RUNTIME, RUNTIME_CANDIDATES, Runtime
from .settings import ACCELERATORS, APIS, JobSettings
from .wire import AcceleratorCheck, AcceleratorFacts, DelegateOption

if TYPE_CHECKING:
    from .interp import Model

#: What an external delegate library exports (TFLite's external delegate interface).
DELEGATE_ENTRY_POINTS = ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate")
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

class Opened:
    """A model opened as the settings ask: ``model`` has the Interpreter calls measuring
    uses (allocate_tensors, get_input_details, set_tensor, invoke, get_tensor, ...)."""

    def __init__(self, model: Model, facts: AcceleratorFacts) -> None:
        self.model = model
        self._facts = facts

    def facts(self) -> AcceleratorFacts:
        """What ran, read after the runs (an Interpreter's delegates apply at allocation)."""
        facts = self._facts.copy()
        if isinstance(self.model, CompiledRunner):
            facts.update(self.model.timing_facts())
        elif not isinstance(self.model, OrtSession):
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


def plan_model(runtime: Runtime, model_path: Path,
               settings: JobSettings | Mapping[str, object]) -> Plan:
    """How to open ``model_path`` with the ``accelerator`` and ``api`` of ``settings``.

    Raises :class:`AcceleratorError` (one line) when that combination cannot run here
    (or is not one of :data:`ACCELERATORS` and :data:`APIS`); falls back to the CPU only
    for ``gpu+cpu``, saying so in the facts.
    """
    if not isinstance(settings, JobSettings):  # a JobSettings was checked when it was made
        for key, default, known in (("accelerator", "cpu", ACCELERATORS),
                                    ("api", "interpreter", APIS)):
            value = str(settings.get(key, default))
            if value not in known:
                raise AcceleratorError(f"unknown {key} {value!r}; one of " + ", ".join(known))
        settings = JobSettings.from_dict(settings)
    accelerator, api, threads = settings.accelerator, settings.api, int(settings.threads)
    if runtime.name == ONNX_RUNTIME:
        return _open_session(runtime, model_path, accelerator, threads)
    if accelerator == "xnnpack":
        raise AcceleratorError("accelerator xnnpack is onnxruntime's XnnpackExecutionProvider; "
                               f"{runtime.name} runs XNNPACK as its cpu accelerator")
    if accelerator in GPU_PROVIDERS:
        raise AcceleratorError(f"accelerator {accelerator} is onnxruntime's "
                               f"{PROVIDERS[accelerator]} and runs .onnx files only; "
                               f"{runtime.name} reaches a GPU as accelerator gpu")
    if accelerator in ("gpu", "gpu+cpu") or api == "compiled":
        return _open_compiled(runtime, model_path, accelerator, threads)
    return _open_interpreter(runtime, model_path, accelerator, threads, settings)


# --- ONNX Runtime -------------------------------------------------------------------------


def _open_session(runtime: Runtime, model_path: Path, accelerator: str, threads: int) -> Plan:
    """An ``.onnx`` on the execution provider ``accelerator`` names (device_agent.ort),
    checked against the providers this onnxruntime build has before anything is timed."""
    import onnxruntime

    providers = providers_for(accelerator, onnxruntime.get_available_providers())

    def create() -> Opened:
        session = OrtSession(model_path=str(model_path), num_threads=threads or None,
                             providers=providers)
        registered = session.providers()
        # What ORT registered, not what was asked: a provider that failed to start is
        # dropped by ORT with only a log line, and the next one (CUDA under TensorRT, at
        # last the CPU) runs everything.
        by_provider = {provider: name for name, provider in PROVIDERS.items()}
        used = by_provider.get(registered[0], "cpu") if registered else "cpu"
        facts: AcceleratorFacts = {"requested": accelerator, "used": used, "api": "session",
                                   "providers": registered}
        return Opened(session, facts)

    return Plan(create)


# --- Interpreter --------------------------------------------------------------------------


def _open_interpreter(runtime: Runtime, model_path: Path, accelerator: str, threads: int,
                      settings: JobSettings) -> Plan:
    module = importlib.import_module(dict(RUNTIME_CANDIDATES)[runtime.name])
    kwargs: dict[str, object] = {"model_path": str(model_path),
                                 "num_threads": threads if threads > 0 else None}
    facts: AcceleratorFacts = {"requested": accelerator, "used": accelerator,
                               "api": "interpreter"}
    if accelerator == "xnnpack-off":
        kwargs["experimental_op_resolver_type"] = \
            module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        facts["kernels"] = "builtin (no default delegate: XNNPACK off)"
    elif accelerator == "delegate":
        path, options = settings.delegate, settings.delegate_options
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


def load_external_delegate(module: ModuleType, path: str,
                           options: Mapping[str, DelegateOption]) -> object:
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
        delegate: object = module.load_delegate(
            path, {str(k): _option_text(v) for k, v in options.items()})
        return delegate
    except Exception as exc:  # the runtime's own reason (a missing dependency, bad options)
        raise AcceleratorError(f"delegate {path} could not be loaded: "
                               f"{_one_line(exc)}") from None


def _option_text(value: DelegateOption) -> str:
    """Delegate options travel as strings; booleans the way delegates parse them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _delegate_partitions(interpreter: object) -> int | None:
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
    facts: AcceleratorFacts = {"requested": accelerator, "api": "compiled"}
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


def _used(hardware: str, probe: ProbeAnswer) -> AcceleratorFacts:
    """``used`` and the adapter facts: a software Vulkan adapter is never called a GPU."""
    facts: AcceleratorFacts = {"used": "cpu", "fully_accelerated": probe["fully_accelerated"]}
    if hardware == "cpu":
        return facts
    adapter = probe.get("adapter")
    facts["adapter"] = adapter["name"] if adapter else "not reported"
    facts["adapter_type"] = adapter["type"] if adapter else "not reported"
    facts["backend"] = adapter["backend"] if adapter else ""
    software = bool(adapter and adapter["software"])
    facts["software"] = software
    facts["used"] = "software-vulkan" if software else "gpu"
    if software:
        facts["note"] = (f"software Vulkan adapter {facts['adapter']}: the GPU accelerator's "
                         "shaders ran on the CPU, not on a GPU")
    return facts


def _provider_check(name: str) -> Tuple[bool, str, bool]:
    """Whether this board's onnxruntime has the execution provider ``name`` names."""
    try:
        import onnxruntime
    except Exception as exc:  # not installed, or a wheel for another numpy
        return False, f"onnxruntime does not import: {_one_line(exc)}", False
    providers_for(name, onnxruntime.get_available_providers())  # AcceleratorError: one line
    return True, f"onnxruntime's {PROVIDERS[name]}", False


# --- preflight (edge doctor) --------------------------------------------------------------


def preflight(runtime: Runtime | None, accelerators: List[str], api: str, delegate: str,
              delegate_options: Mapping[str, DelegateOption]) -> List[AcceleratorCheck]:
    """Can each of ``accelerators`` (and ``api``) run here?  One check each, for ``doctor``.

    ``{"name", "ok", "detail", "warning"}``: the GPU's checks name the Vulkan loader, the
    adapter LiteRT selects (a software one is said to be software: a warning, since it
    measures a CPU) and whether the model of :data:`PROBE_MODEL` is fully accelerated;
    all probing happens in a child, so an accelerator that aborts costs one check.
    """
    checks: List[AcceleratorCheck] = []
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
                   delegate_options: Mapping[str, DelegateOption]) -> Tuple[bool, str, bool]:
    if name == "xnnpack" or name in GPU_PROVIDERS or (runtime is not None
                                                 and runtime.name == ONNX_RUNTIME):
        return _provider_check(name)
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


# AcceleratorError, PROBE_SECONDS and vulkan_loader_present are named here as before; they
# live in device_agent.interp and device_agent.compiled.
__all__ = ["ACCELERATORS", "APIS", "DELEGATE_ENTRY_POINTS", "PROBE_MODEL", "PROBE_SECONDS",
           "VULKAN_LOADER", "AcceleratorError", "Opened", "Plan", "load_external_delegate",
           "plan_model", "preflight", "vulkan_loader_present"]
