"""A well-formed ``.tflite`` whose only operator is a custom op no runtime has.

    python tests/models/custom_op_tflite.py OUT.tflite

One ``CUSTOM`` operator (``EdgeNoSuchOp`` unless another name is given) from a float
input ``[1, 4]`` to a float output ``[1, 4]``.  The flatbuffer is valid, but the runtime
refuses to build an interpreter for it (``Encountered unresolved custom op``), on the
host and on every board; edge refuses such a file when it loads it
(:mod:`toolkit.model.tflite_ops`).  Built from the TFLite schema on each use, like
``segfaulting_tflite.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

CUSTOM_OP = "EdgeNoSuchOp"


def custom_op_tflite(op: str = CUSTOM_OP) -> bytes:
    """The model's bytes (deterministic), its one operator the custom op ``op``."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    def tensor(name: str, buffer: int) -> schema.TensorT:
        made = schema.TensorT()
        made.name, made.shape, made.type, made.buffer = name, [1, 4], \
            schema.TensorType.FLOAT32, buffer
        return made

    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode, code.version = op, 1
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    graph = schema.SubGraphT()
    graph.name = "main"
    graph.tensors = [tensor("input", 1), tensor("output", 2)]
    graph.operators, graph.inputs, graph.outputs = [op], [0], [1]
    model = schema.ModelT()
    model.version = 3
    model.description = f"edge test fixture: the custom op {op}"
    model.operatorCodes, model.subgraphs = [code], [graph]
    model.buffers = [schema.BufferT() for _ in range(3)]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def write_custom_op_tflite(path: Path, op: str = CUSTOM_OP) -> Path:
    path.write_bytes(custom_op_tflite(op))
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/models/custom_op_tflite.py OUT.tflite")
    write_custom_op_tflite(Path(sys.argv[1]))
