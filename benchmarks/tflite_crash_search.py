"""Search for .tflite files that crash the real TFLite runtime, and print what was found.

    python benchmarks/tflite_crash_search.py [--ops REVERSE_V2,TRANSPOSE] [--save DIR]
        [--check-with PYTHON ...]

A structured search, not byte flipping (flipped bytes only ever gave clean load
errors): every builtin operator gets single-op models built from the TFLite
schema with hostile operands: optional (-1) operands, huge, negative, empty and
too-short constants, the input wired to every operand, 8-D shapes, string
tensors with bad offsets, one to four operands, one or two outputs. Each model
is loaded, allocated and invoked twice in a forked child under a 3 GiB address
space limit and a 10 s alarm; the figures are how each child ended, by operator,
with the stage (load, allocate, invoke) it reached. ``--check-with`` runs the
crashing files again under other Pythons (e.g. a venv with tflite-runtime 2.14).

The fixture ``tests/models/segfaulting_tflite.py`` came from this search.
Linux only (fork, RLIMIT_AS); needs ai-edge-litert for the schema.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import signal
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

T = schema.TensorType
SKIPPED_OPS = {"CUSTOM", "DELEGATE", "PLACEHOLDER_FOR_GREATER_OP_CODES"}


class Graph:
    """One subgraph under construction; ``operand`` patterns add tensors to it."""

    def __init__(self) -> None:
        self.buffers = [schema.BufferT()]
        self.tensors: list[schema.TensorT] = []
        self.inputs: list[int] = []

    def tensor(self, shape: list[int], dtype: int = T.FLOAT32, data: bytes | None = None,
               graph_input: bool = False) -> int:
        buffer = schema.BufferT()
        if data is not None:
            buffer.data = list(data)
        self.buffers.append(buffer)
        made = schema.TensorT()
        made.shape, made.type, made.buffer = shape, dtype, len(self.buffers) - 1
        made.name = f"t{len(self.tensors)}"
        self.tensors.append(made)
        if graph_input:
            self.inputs.append(len(self.tensors) - 1)
        return len(self.tensors) - 1

    def model(self, builtin: int, inputs: list[int], outputs: int) -> bytes:
        code = schema.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
        outs = [self.tensor([1, 4]) for _ in range(outputs)]
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = 0, inputs, outs
        graph = schema.SubGraphT()
        graph.tensors, graph.operators = self.tensors, [op]
        graph.inputs, graph.outputs, graph.name = self.inputs, outs, "main"
        model = schema.ModelT()
        model.version, model.operatorCodes, model.subgraphs = 3, [code], [graph]
        model.buffers = self.buffers
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def _strings(offsets: list[int], payload: bytes = b"abc") -> bytes:
    return struct.pack(f"<{len(offsets) + 1}i", len(offsets) - 1, *offsets) + payload


def _constants(value: float, dtype: type, tflite_type: int, shape: list[int]
               ) -> Callable[[Graph, int], list[int]]:
    def operands(graph: Graph, count: int) -> list[int]:
        data = np.full(shape, value, dtype=dtype).tobytes()
        return [graph.tensor([1, 4], graph_input=True)] + \
            [graph.tensor(shape, tflite_type, data) for _ in range(count - 1)]
    return operands


#: Operand patterns: given a graph and an operand count, the operator's input indices.
PATTERNS: dict[str, Callable[[Graph, int], list[int]]] = {
    "all-optional": lambda g, n: [-1] * n,
    "rest-optional": lambda g, n: [g.tensor([1, 4], graph_input=True)] + [-1] * (n - 1),
    "int32-max": _constants(2**31 - 1, np.int32, T.INT32, [1]),
    "negative": _constants(-9, np.int32, T.INT32, [4]),
    "int64-huge": _constants(2**40, np.int64, T.INT64, [2]),
    "float-huge": _constants(1e30, np.float32, T.FLOAT32, [1, 4]),
    "input-everywhere": lambda g, n: [g.tensor([1, 4], graph_input=True)] * n,
    "unwritten": lambda g, n: [g.tensor([1, 4], graph_input=True)] +
    [g.tensor([2, 2], T.INT32) for _ in range(n - 1)],
    "empty": lambda g, n: [g.tensor([0, 4], graph_input=True)] +
    [g.tensor([0], T.INT32) for _ in range(n - 1)],
    "short-buffer": lambda g, n: [g.tensor([1, 4], graph_input=True)] +
    [g.tensor([64, 64], T.FLOAT32, np.ones(1, np.float32).tobytes()) for _ in range(n - 1)],
    "rank-8": lambda g, n: [g.tensor([1] * 7 + [2], graph_input=True)] +
    [g.tensor([8], T.INT32, np.full(8, 3, np.int32).tobytes()) for _ in range(n - 1)],
    "bad-strings": lambda g, n: [g.tensor([2], T.STRING, _strings([16, 1 << 20, 19]))] +
    [g.tensor([1], T.INT32, np.ones(1, np.int32).tobytes()) for _ in range(n - 1)],
}


def candidates(ops: set[str] | None) -> Iterator[tuple[str, str, bytes]]:
    builtins = {k: v for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    for op_name, code in sorted(builtins.items(), key=lambda item: item[1]):
        if op_name in SKIPPED_OPS or (ops and op_name not in ops):
            continue
        for pattern, operands in PATTERNS.items():
            for count in (1, 2, 3, 4):
                for outputs in (1, 2):
                    graph = Graph()
                    yield op_name, f"{pattern}/{count}in/{outputs}out", \
                        graph.model(code, operands(graph, count), outputs)


def _child(interpreter_class: Callable[..., object], content: bytes, stages: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    signal.alarm(10)
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)
    os.dup2(quiet, 2)
    os.write(stages, b"load\n")
    interpreter = interpreter_class(model_content=content)
    os.write(stages, b"allocate\n")
    interpreter.allocate_tensors()  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():  # type: ignore[attr-defined]
        if detail["dtype"] in (np.bytes_, np.object_):
            value = np.array([b"ab"] * int(np.prod(detail["shape"])), dtype=object)
        else:
            value = (rng.standard_normal(detail["shape"]) * 3).astype(detail["dtype"])
        interpreter.set_tensor(detail["index"], value.reshape(detail["shape"]))  # type: ignore[attr-defined]
    os.write(stages, b"invoke\n")
    interpreter.invoke()  # type: ignore[attr-defined]
    interpreter.invoke()  # type: ignore[attr-defined]
    os.write(stages, b"survived\n")


def run_forked(interpreter_class: Callable[..., object], content: bytes) -> tuple[str, str]:
    """How a forked child that loads, allocates and invokes ``content`` ended, and where."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            _child(interpreter_class, content, write_end)
            os._exit(0)
        except BaseException:  # noqa: BLE001 (a clean runtime error: the search goes on)
            os._exit(3)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as stages:
        reached = stages.read().decode().split()
    _, status = os.waitpid(pid, 0)
    stage = reached[-1] if reached else "start"
    if os.WIFSIGNALED(status):
        return signal.Signals(os.WTERMSIG(status)).name, stage
    return ("ok" if os.WEXITSTATUS(status) == 0 else "error"), stage


CHECK = """
import sys, numpy as np
try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:
    from tflite_runtime.interpreter import Interpreter
interpreter = Interpreter(model_path=sys.argv[1])
interpreter.allocate_tensors()
for d in interpreter.get_input_details():
    interpreter.set_tensor(d["index"], np.ones(d["shape"], d["dtype"]))
interpreter.invoke()
"""


def check_with(python: str, path: Path) -> str:
    ran = subprocess.run([python, "-c", CHECK, str(path)], capture_output=True, timeout=60,
                         check=False)
    return signal.Signals(-ran.returncode).name if ran.returncode < 0 else \
        ("ok" if ran.returncode == 0 else "error")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", help="comma-separated builtin op names (default: all)")
    parser.add_argument("--save", type=Path, help="folder to keep each crashing model in")
    parser.add_argument("--check-with", action="append", default=[], metavar="PYTHON",
                        help="also run each crashing file under this Python's runtime")
    args = parser.parse_args()
    from ai_edge_litert.interpreter import Interpreter

    ends: collections.Counter[tuple[str, str]] = collections.Counter()
    crashes: dict[str, list[tuple[str, str, str, Path]]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.save or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        ops = set(args.ops.split(",")) if args.ops else None
        for op_name, case, content in candidates(ops):
            end, stage = run_forked(Interpreter, content)
            ends[(end, stage)] += 1
            if end not in ("ok", "error"):
                path = folder / f"{op_name}-{case.replace('/', '-')}.tflite"
                path.write_bytes(content)
                crashes[op_name].append((case, end, stage, path))
        tried = sum(ends.values())
        print(f"{tried} single-op models under ai-edge-litert; how each child ended:")
        for (end, stage), count in sorted(ends.items()):
            print(f"  {end:8} at {stage:9} {count}")
        print(f"crashing operators ({len(crashes)}):")
        for op_name, found in sorted(crashes.items()):
            signals = collections.Counter(f"{end} at {stage}" for _, end, stage, _ in found)
            line = f"  {op_name}: {len(found)} models, " + ", ".join(
                f"{count}x {what}" for what, count in signals.items())
            for python in args.check_with:
                again = collections.Counter(check_with(python, path) for *_, path in found)
                line += f"; under {python}: " + ", ".join(f"{n}x {e}" for e, n in again.items())
            print(line, flush=True)


if __name__ == "__main__":
    main()
