"""Facts read from a ``.tflite`` file's flatbuffer itself, with ``struct`` alone.

The runtimes' Python APIs say neither an operator's version nor a tensor's element type
when the runtime does not know it (an int4 tensor on tflite-runtime 2.14), so the agent
reads them from the file.  Layout (schema.fbs): Model is a table with operator_codes
(field 1) and subgraphs (field 2); OperatorCode.version is field 2 (default 1);
SubGraph.tensors is field 0 and SubGraph.operators field 3; Tensor.type is field 1 (a
byte, default FLOAT32); Operator.opcode_index is field 0.

Example::

    operator_versions(Path("m.tflite").read_bytes())   # [1, 3, 3, 1, ...], node order
    int4_tensors(Path("m.tflite").read_bytes())        # 4
"""

from __future__ import annotations

import struct
from typing import Tuple

#: schema.fbs TensorType.INT4.
INT4 = 17

_Table = Tuple[int, int, int]  # position, vtable, vtable size


def operator_versions(data: bytes) -> list[int]:
    """The op version of each operator of subgraph 0, in node order."""
    model = _root(data)
    codes = []
    for code in _vector(data, model, 1):
        at = _field(data, code, 2)
        codes.append(struct.unpack_from("<i", data, at)[0] if at is not None else 1)
    subgraphs = _vector(data, model, 2)
    if not subgraphs:
        return []
    versions = []
    for operator in _vector(data, subgraphs[0], 3):
        at = _field(data, operator, 0)
        versions.append(codes[struct.unpack_from("<I", data, at)[0] if at is not None else 0])
    return versions


def int4_tensors(data: bytes) -> int:
    """How many tensors of any subgraph hold int4 values (4-bit weights)."""
    count = 0
    for subgraph in _vector(data, _root(data), 2):
        for tensor in _vector(data, subgraph, 0):
            at = _field(data, tensor, 1)
            count += at is not None and data[at] == INT4
    return count


def _root(data: bytes) -> _Table:
    return _table(data, struct.unpack_from("<I", data, 0)[0])


def _table(data: bytes, position: int) -> _Table:
    vtable = position - struct.unpack_from("<i", data, position)[0]
    return position, vtable, struct.unpack_from("<H", data, vtable)[0]


def _field(data: bytes, table: _Table, number: int) -> int | None:
    position, vtable, size = table
    slot = 4 + 2 * number
    if slot >= size:
        return None
    offset = struct.unpack_from("<H", data, vtable + slot)[0]
    return position + offset if offset else None


def _vector(data: bytes, table: _Table, number: int) -> list[_Table]:
    at = _field(data, table, number)
    if at is None:
        return []
    start = at + struct.unpack_from("<I", data, at)[0]
    count = struct.unpack_from("<I", data, start)[0]
    return [_table(data, start + 4 + 4 * i + struct.unpack_from("<I", data, start + 4 + 4 * i)[0])
            for i in range(count)]
