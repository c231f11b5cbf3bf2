"""ONNX Runtime's own profiler: the trace ``SessionOptions.enable_profiling`` writes, read
into runs of node events.

A session opened as the timed pass opens it (:class:`device_agent.ort.OrtSession`: its
threads, its execution providers) with profiling on writes a Chrome trace (a JSON list of
``"ph": "X"`` events, times in whole microseconds) when ``end_profiling()`` is called.
Two kinds of its events are read here:

- ``cat == "Session"``, ``name == "model_run"``: one per ``run``, its ``dur`` the run's total;
- ``cat == "Node"``, named ``NODE_kernel_time``: one per node a run executed, ``args``
  naming its ``op_name``, the ``provider`` that ran it, its ``node_index`` and
  ``output_type_shape``.  1.19 adds ``_fence_before``/``_fence_after`` events (not read)
  and names the nodes its fusions made with a trailing "/" (``fc2/MatMulAddFusion/``),
  dropped here so that both lines name a node alike.

Nodes are those of the graph ORT optimised (a MatMul and an Add fused into one ``Gemm``
named ``/MatMulAddFusion``; a provider's fused subgraph as one node), which is what ran.
The layout was read from onnxruntime 1.19.2 (the last cp38 line), 1.30.0 and 1.32.0;
:data:`CHECKED` bounds the versions :func:`device_agent.profiler.unavailable` lets through.

Example::

    method, runs = ort_runs(Path("m.onnx"), threads=1, inputs=[x],
                            providers=["CPUExecutionProvider"])
    total_us, nodes = runs[0]; nodes[0].op, nodes[0].provider, nodes[0].elapsed_us
"""

from __future__ import annotations

import bisect
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, List, NamedTuple, Optional, Tuple

from .native_profilers import WARMUP_RUNS, NotAvailable, timed_loop
from .ort import OrtSession

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

#: The (major, minor) lines of onnxruntime whose trace layout was read: first and last.
CHECKED = ((1, 19), (1, 32))
#: Profiled runs at most: every run adds a JSON event per node (three on 1.19) to the
#: trace, which ORT writes to disk and this module reads back whole.
MAX_RUNS = 100
KERNEL_SUFFIX = "_kernel_time"


class NodeEvent(NamedTuple):
    """One node as one run executed it."""

    name: str
    op: str
    provider: str
    node_index: Optional[int]
    shape: Optional[List[int]]
    elapsed_us: float


#: One profiled run: its total (us, ORT's "model_run") and its node events in run order.
Run = Tuple[float, List[NodeEvent]]


def checked(version: str) -> bool:
    """Whether ``version`` lies within the lines :data:`CHECKED` spans."""
    try:
        line = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return False
    return len(line) == 2 and CHECKED[0] <= line <= CHECKED[1]


def ort_runs(model_path: Path, *, threads: int, inputs: List[NDArray[np.generic]],
             providers: Optional[List[str]]) -> Tuple[str, List[Run]]:
    """Profile ``model_path`` on ``providers``: the method, and the runs after the warm-up."""
    with tempfile.TemporaryDirectory(prefix="edge-ort-profile-") as folder:
        session = OrtSession(model_path=str(model_path), num_threads=threads or None,
                             providers=providers, profile_prefix=str(Path(folder) / "ort"))
        for detail, tensor in zip(session.get_input_details(), inputs):
            session.set_tensor(detail["index"], tensor)
        for _ in range(WARMUP_RUNS):
            session.invoke()
        timed_loop(session.invoke, max_runs=MAX_RUNS)
        written = Path(session.session.end_profiling())
        try:
            trace = json.loads(written.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise NotAvailable(f"ORT's trace {written.name} does not read: {exc}") from None
    ran = ", ".join(session.providers())
    method = (f"ONNX Runtime's profiler (SessionOptions.enable_profiling), {ran}, "
              f"{threads or 'default'} thread(s)")
    return method, trace_runs(trace, skip=WARMUP_RUNS)


def trace_runs(trace: object, *, skip: int = 0) -> List[Run]:
    """The runs of an ORT trace, each with the node events inside its ``model_run``
    interval in the order they began; the first ``skip`` runs (the warm-up) left out."""
    if not isinstance(trace, list):
        raise NotAvailable("ORT's trace is not a list of events")
    spans: List[Tuple[float, float]] = []
    nodes: List[Tuple[float, NodeEvent]] = []
    for event in trace:
        if not isinstance(event, dict):
            continue
        ts, dur, name = event.get("ts"), event.get("dur"), str(event.get("name", ""))
        if not isinstance(ts, (int, float)) or not isinstance(dur, (int, float)):
            continue
        if event.get("cat") == "Session" and name == "model_run":
            spans.append((float(ts), float(dur)))
        elif event.get("cat") == "Node" and name.endswith(KERNEL_SUFFIX):
            nodes.append((float(ts), _node(name, event.get("args"), float(dur))))
    spans.sort()
    runs: List[Run] = [(dur, []) for _ts, dur in spans]
    starts = [ts for ts, _dur in spans]
    for ts, node in sorted(nodes, key=lambda pair: pair[0]):
        at = bisect.bisect_right(starts, ts) - 1
        if at >= 0 and ts <= starts[at] + spans[at][1]:
            runs[at][1].append(node)
    return runs[skip:]


def _node(event_name: str, args: object, elapsed_us: float) -> NodeEvent:
    """One ``_kernel_time`` event: the node's name without the suffix (nor 1.19's "/")."""
    if not isinstance(args, dict):
        args = {}
    name = event_name[:-len(KERNEL_SUFFIX)]
    name = name[:-1] if name.endswith("/") else name
    index = str(args.get("node_index", ""))
    return NodeEvent(name=name, op=str(args.get("op_name", "")) or name,
                     provider=str(args.get("provider", "")),
                     node_index=int(index) if index.isdigit() else None,
                     shape=_first_shape(args.get("output_type_shape")),
                     elapsed_us=elapsed_us)


def _first_shape(value: object) -> Optional[List[int]]:
    """The first output's shape from ``[{"float": [1, 10]}, ...]``, when it reads as one."""
    if not isinstance(value, list) or not value or not isinstance(value[0], dict):
        return None
    dims = next(iter(value[0].values()), None)
    if not isinstance(dims, list) or not all(isinstance(d, int) for d in dims):
        return None
    return [int(d) for d in dims]
