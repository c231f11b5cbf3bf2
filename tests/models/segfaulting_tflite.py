"""A real ``.tflite`` file that makes the real TFLite runtime die with SIGSEGV when invoked.

    python tests/models/segfaulting_tflite.py OUT.tflite

One REVERSE_V2 on a float input ``[1, 8, 8, 1]``, whose ``axis`` operand is an int32
tensor of shape ``[0]`` (an empty list of axes) with no data and no producer. The
file is a valid flatbuffer, loads, and allocates; at invoke the REVERSE_V2 kernel
reads ``axis[0]`` from that empty tensor, whose data pointer is null, and the
process is killed by SIGSEGV. Checked with ai-edge-litert 2.3.0 and tflite-runtime
2.14.0 on x86_64 (every run, any thread count): ``tests/test_segfault.py`` proves it
again on each run of the suite.

Found by a structured search (each builtin op with hostile operands: optional
``-1`` inputs, empty, oversized and out-of-range constants, string tensors with bad
offsets): ``benchmarks/tflite_crash_search.py``. Of the crashes found, this is the
one where a well-formed single-op model with the right operand count and types
passes loading and allocation and dies during ``invoke``, on both runtimes, through
a null read (so the same signal every time, not heap-layout luck).

Built from the TFLite schema (``ai_edge_litert.schema_py_generated``) on each use
rather than kept as an opaque binary.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: Why the runtime dies, for messages and reports.
CRASH = "REVERSE_V2 reads axis[0] of an empty axis tensor (null data) during invoke: SIGSEGV"
INPUT_SHAPE = (1, 8, 8, 1)


def segfaulting_tflite() -> bytes:
    """The model's bytes (deterministic)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    buffers = [schema.BufferT() for _ in range(4)]  # 0: the conventional empty buffer

    def tensor(name: str, shape: list[int], dtype: int, buffer: int) -> schema.TensorT:
        made = schema.TensorT()
        made.name, made.shape, made.type, made.buffer = name, shape, dtype, buffer
        return made

    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.REVERSE_V2
    code.version = 1
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1], [2]
    op.builtinOptionsType = schema.BuiltinOptions.ReverseV2Options
    op.builtinOptions = schema.ReverseV2OptionsT()
    graph = schema.SubGraphT()
    graph.name = "main"
    graph.tensors = [tensor("input", list(INPUT_SHAPE), schema.TensorType.FLOAT32, 1),
                     # Shape [0], no data, nothing writes it: the kernel still reads axis[0].
                     tensor("axis", [0], schema.TensorType.INT32, 2),
                     tensor("output", list(INPUT_SHAPE), schema.TensorType.FLOAT32, 3)]
    graph.operators, graph.inputs, graph.outputs = [op], [0], [2]
    model = schema.ModelT()
    model.version = 3
    model.description = "edge test fixture: " + CRASH
    model.operatorCodes, model.subgraphs, model.buffers = [code], [graph], buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def write_segfaulting_tflite(path: Path) -> Path:
    path.write_bytes(segfaulting_tflite())
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/models/segfaulting_tflite.py OUT.tflite")
    write_segfaulting_tflite(Path(sys.argv[1]))
