"""What the agent asks of a runtime's objects, as ``typing.Protocol``s of the calls it makes.

Both runtimes' ``Interpreter`` and :class:`device_agent.compiled.CompiledRunner` (LiteRT's
CompiledModel behind the same calls) satisfy :class:`Model`; measuring, the output check and
the paired blocks use nothing else.  LiteRT's CompiledModel and its tensor buffers are
reached through :class:`CompiledModelApi` and :class:`TensorBuffer`.  Numpy's types are
named for the type checker only: a board's numpy may predate ``numpy.typing``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Protocol, Sequence, Tuple, Type, TypedDict

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import DTypeLike, NDArray


class TensorDetail(TypedDict):
    """The keys of an Interpreter's input and output details that the agent reads."""

    index: int
    name: str
    shape: NDArray[np.int32]
    dtype: Type[np.generic]
    quantization: Tuple[float, int]


class OpDetail(TypedDict):
    """The keys of an Interpreter's ``_get_ops_details()`` rows that the agent reads."""

    index: int
    op_name: str
    inputs: Sequence[int]
    outputs: Sequence[int]


class AcceleratorError(RuntimeError):
    """The accelerator or API asked for cannot run here; one line naming what is missing."""


class Model(Protocol):
    """The Interpreter calls measuring, the output check and the paired blocks use."""

    def allocate_tensors(self) -> None: ...
    def get_input_details(self) -> List[TensorDetail]: ...
    def get_output_details(self) -> List[TensorDetail]: ...
    def set_tensor(self, index: int, value: NDArray[np.generic]) -> None: ...
    def invoke(self) -> None: ...
    def get_tensor(self, index: int) -> NDArray[np.generic]: ...


class Interpreter(Model, Protocol):
    """A TFLite Interpreter: :class:`Model`, and the graph's own tensors and nodes."""

    def get_tensor_details(self) -> List[TensorDetail]: ...
    def _get_ops_details(self) -> List[OpDetail]: ...


class TensorBuffer(Protocol):
    """One of a CompiledModel's input or output buffers."""

    def write(self, value: NDArray[np.generic]) -> None: ...
    def read(self, count: int, dtype: DTypeLike) -> NDArray[np.generic]: ...


class CompiledModelApi(Protocol):
    """The calls of ai-edge-litert's ``CompiledModel`` the agent makes."""

    def is_fully_accelerated(self) -> bool: ...
    def get_signature_list(self) -> Dict[str, Dict[str, List[str]]]: ...
    def get_input_tensor_details(self, signature: str) -> Dict[str, Dict[str, int]]: ...
    def get_output_tensor_details(self, signature: str) -> Dict[str, Dict[str, int]]: ...
    def create_input_buffers(self, signature_index: int) -> List[TensorBuffer]: ...
    def create_output_buffers(self, signature_index: int) -> List[TensorBuffer]: ...
    def run_by_index(self, signature_index: int, inputs: List[TensorBuffer],
                     outputs: List[TensorBuffer]) -> None: ...
