"""ONNX Runtime behind the Interpreter calls the agent measures with.

:class:`OrtSession` wraps one ``onnxruntime.InferenceSession`` as a
:class:`device_agent.interp.Model`: ``set_tensor`` fills the feed, ``invoke`` is one
``session.run``, ``get_tensor`` reads its outputs; so warm-up, the timed runs, the
output check, memory and power are the TFLite path's own code.  Inputs are indexed
``0..n-1`` and outputs ``n..n+m-1``, as a TFLite graph's tensors never share an index.

Execution providers are the accelerators (:data:`PROVIDERS`): ``cpu`` is ORT's
CPUExecutionProvider; ``xnnpack``, ``cuda`` (onnxruntime-gpu, a Jetson's build) and
``tensorrt`` come with the CPU one beside them for the nodes they lack (``tensorrt`` with
CUDA's too where the build has it, as ORT's own documentation orders them).  A provider
this build lacks is one line naming those it has (``get_available_providers()``), never a
silent run on the CPU.

Example::

    model = OrtSession(model_path="m.onnx", num_threads=1)
    model.set_tensor(0, x); model.invoke(); model.get_tensor(1)
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from .interp import AcceleratorError, TensorDetail

if TYPE_CHECKING:
    from numpy.typing import NDArray

#: The ``accelerator`` setting's values that name an ONNX Runtime execution provider.
PROVIDERS = {"cpu": "CPUExecutionProvider", "xnnpack": "XnnpackExecutionProvider",
             "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
#: The accelerators that are GPU execution providers (a TFLite runtime's GPU is ``gpu``).
GPU_PROVIDERS = ("cuda", "tensorrt")
#: The probe model of ``edge doctor``'s load check (device_agent.load_check) as an ONNX
#: graph: y = x + x, float32 [1, 4], opset 13, IR version 7 (every onnxruntime since 1.6).
PROBE_ONNX = base64.b64decode(
    "CAcSBGVkZ2U6QQoOCgF4CgF4EgF5IgNBZGQSBXByb2JlWhMKAXgSDgoMCAESCAoCCAEKAggEYhMKAXkSDgoMCAESCAoC"
    "CAEKAggEQgQKABAN")
#: ONNX Runtime's element type names, as ``NodeArg.type`` spells them, to numpy's.
_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16,
    "tensor(double)": np.float64, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
    "tensor(int16)": np.int16, "tensor(uint16)": np.uint16, "tensor(int32)": np.int32,
    "tensor(uint32)": np.uint32, "tensor(int64)": np.int64, "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


class NodeArg(Protocol):
    """What the agent reads of ``InferenceSession.get_inputs()`` and ``get_outputs()``."""

    name: str
    type: str
    shape: Sequence[object]


def providers_for(accelerator: str, available: Sequence[str]) -> List[str]:
    """The providers to open a session with for ``accelerator``; AcceleratorError (one line
    naming what this build has) when it lacks the one asked for."""
    if accelerator not in PROVIDERS:
        raise AcceleratorError(f"accelerator {accelerator} is a TFLite one; onnxruntime runs "
                               "on an execution provider: one of " + ", ".join(PROVIDERS))
    wanted = PROVIDERS[accelerator]
    if wanted not in available:
        raise AcceleratorError(f"onnxruntime here has no {wanted} (accelerator {accelerator}); "
                               "it has " + ", ".join(available))
    # The CPU provider takes the nodes another provider has no kernel for, as ORT does;
    # TensorRT hands the subgraphs it cannot build an engine for to CUDA first.
    fallbacks = [PROVIDERS["cuda"]] if accelerator == "tensorrt" else []
    chain = [wanted] + [p for p in fallbacks if p in available] + [PROVIDERS["cpu"]]
    return list(dict.fromkeys(chain))


class OrtSession:
    """An ``InferenceSession`` with the Interpreter calls measuring makes."""

    def __init__(self, model_path: str, num_threads: Optional[int] = None,
                 providers: Optional[List[str]] = None,
                 profile_prefix: Optional[str] = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if profile_prefix is not None:  # the profiled pass (device_agent.ort_profiler)
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        # One node at a time, as a TFLite interpreter runs: the thread count is the only
        # parallelism, so both runtimes are measured with the same meaning of "threads".
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        self.session = onnxruntime.InferenceSession(
            model_path, sess_options=options, providers=providers or [PROVIDERS["cpu"]])
        self._inputs = [_detail(index, arg) for index, arg in enumerate(self.session.get_inputs())]
        first = len(self._inputs)
        self._outputs = [_detail(first + index, arg)
                         for index, arg in enumerate(self.session.get_outputs())]
        self._feed: Dict[str, NDArray[np.generic]] = {}
        self._results: List[NDArray[np.generic]] = []

    def allocate_tensors(self) -> None:
        """Nothing to do: the session allocated its arena when it was made."""

    def get_input_details(self) -> List[TensorDetail]:
        return [dict(detail) for detail in self._inputs]  # type: ignore[misc]

    def get_output_details(self) -> List[TensorDetail]:
        return [dict(detail) for detail in self._outputs]  # type: ignore[misc]

    def set_tensor(self, index: int, value: NDArray[np.generic]) -> None:
        self._feed[self._inputs[index]["name"]] = value

    def invoke(self) -> None:
        self._results = self.session.run(None, self._feed)

    def get_tensor(self, index: int) -> NDArray[np.generic]:
        if not self._results:
            raise ValueError("get_tensor before invoke: the session has no outputs yet")
        return np.asarray(self._results[index - len(self._inputs)])

    def providers(self) -> List[str]:
        """The providers the session really registered, in ORT's order of preference."""
        return list(self.session.get_providers())


def _detail(index: int, arg: NodeArg) -> TensorDetail:
    """A TensorDetail of an ORT ``NodeArg``: a symbolic dimension (``batch``) reads as 1,
    the size the host's reference inputs and the random inputs are made with."""
    shape: Tuple[object, ...] = tuple(arg.shape or ())
    kind = str(arg.type)
    if kind not in _DTYPES:
        raise ValueError(f"{arg.name}: element type {kind} is not one the agent "
                         "feeds (" + ", ".join(sorted(_DTYPES)) + ")")
    return {"index": index, "name": str(arg.name),
            "shape": np.array([d if isinstance(d, int) and d > 0 else 1 for d in shape],
                              dtype=np.int32),
            "dtype": _DTYPES[kind], "quantization": (0.0, 0)}
