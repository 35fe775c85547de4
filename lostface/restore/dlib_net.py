"""dlib's face-recognition ResNet, read from dlib's own model file and run by onnxruntime.

dlib runs this network (29 convolutions, 150x150 RGB in, 128 values out) in about 75 ms on a
CPU core, with the GIL held, since the dlib wheel links no BLAS. The same weights as an ONNX
graph take about 4 ms in onnxruntime, and give the same descriptor to float rounding
(tests/test_dlib_net.py compares them on real faces; bench/identity.py reports what the
identity gate's looks cost on the stage clip).

The file (`dlib_face_recognition_resnet_model_v1.dat`, in face-recognition-models) is dlib's
serialization of the network: the layers from the input to the last, each a version string
followed by its settings and a parameter tensor (four dimensions, then little-endian
float32). This module finds each layer by its version string, reads what the graph needs,
checks it against the architecture dlib published for this model, and writes the graph
(lostface.onnx_wire): each convolution with the scale and shift of the affine layer after it
folded in; residual blocks that add their input (average-pooled by 2 where the block halves the
resolution, zero-padded to the block's channels and size as dlib's add_prev does); a global
average pool and the 128x256 projection.

Needs numpy and onnxruntime only (dlib reads the face chip: lostface.restore.identity).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lostface import onnx_wire as wire

SIZE = 150  # the network's input: a 150x150 RGB face chip (dlib.get_face_chip)
DIMS = 128
INPUT, OUTPUT = "chip", "descriptor"

# the layers of dlib_face_recognition_resnet_model_v1, from its input to its output
_COUNTS = {
    "input_rgb_image_sized": 1,
    "con_4": 29,
    "affine_": 29,
    "relu_": 29,
    "max_pool_2": 1,
    "avg_pool_2": 5,
    "add_prev_": 14,
    "fc_2": 1,
}


class NetworkFileError(ValueError):
    """The file is not the network this module knows how to read."""


class _Reader:
    """dlib's serialization: integers as a byte (count of bytes, 0x80 for negative) and that
    many little-endian bytes; floats as two such integers (mantissa, exponent of two)."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def int(self) -> int:
        head = self.data[self.pos]
        n = head & 0x0F
        value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + n], "little")
        self.pos += 1 + n
        return -value if head & 0x80 else value

    def float(self) -> float:
        mantissa = self.int()
        return float(np.ldexp(float(mantissa), self.int()))

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            raise NetworkFileError("a parameter tensor of an unknown version")
        shape = [self.int() for _ in range(4)]
        n = int(np.prod(shape))
        end = self.pos + 4 * n
        if end > len(self.data):
            raise NetworkFileError("the file ends inside a parameter tensor")
        values = np.frombuffer(self.data, "<f4", n, self.pos).astype(np.float32)
        self.pos = end
        return values


@dataclass
class _Layer:
    kind: str
    params: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    ints: tuple[int, ...] = ()
    floats: tuple[float, ...] = ()


def read_layers(path: Path) -> list[_Layer]:
    """The network's layers in order from the input, with what the graph needs of each."""
    data = Path(path).read_bytes()
    names = "|".join(re.escape(k) for k in _COUNTS)
    # a version string is written as its length (one byte 0x01, then the length) and its text
    pattern = re.compile(rb"\x01([\x04-\x15])(" + names.encode() + rb")")
    layers = []
    for m in pattern.finditer(data):
        try:
            kind = m.group(2).decode()
            if m.group(1)[0] != len(kind):
                continue
            r = _Reader(data, m.end())
            if kind == "input_rgb_image_sized":
                layers.append(_Layer(kind, floats=(r.float(), r.float(), r.float())))
            elif kind == "con_4":
                params = r.tensor()
                layers.append(_Layer(kind, params, tuple(r.int() for _ in range(7))))
            elif kind == "affine_":
                layers.append(_Layer(kind, r.tensor()))
            elif kind in ("max_pool_2", "avg_pool_2"):
                layers.append(_Layer(kind, ints=tuple(r.int() for _ in range(6))))
            elif kind == "fc_2":
                outputs, inputs = r.int(), r.int()
                layers.append(_Layer(kind, r.tensor(), (outputs, inputs)))
            else:
                layers.append(_Layer(kind))
        except (IndexError, ValueError) as exc:  # the file ends, or a shape is impossible
            raise NetworkFileError(f"{path} is cut short or damaged ({exc})") from None
    found = {k: sum(layer.kind == k for layer in layers) for k in _COUNTS}
    if found != _COUNTS:
        raise NetworkFileError(f"{path} holds layers {found}, not dlib's face-recognition ResNet")
    return layers


def onnx_model(layers: list[_Layer]) -> bytes:
    """The network as an ONNX graph: uint8-valued RGB chips (N, 150, 150, 3) as float32 in,
    (N, 128) descriptors out."""
    nodes: list[bytes] = []
    weights: list[bytes] = []
    count = itertools.count()

    def name(prefix: str) -> str:
        return f"{prefix}{next(count)}"

    def const(prefix: str, array: np.ndarray) -> str:
        n = name(prefix)
        weights.append(wire.tensor(n, array))
        return n

    def op(kind: str, inputs: list[str], **attrs: int | list[int]) -> str:
        out = name(kind.lower())
        nodes.append(wire.node(kind, inputs, [out], **attrs))
        return out

    first = layers[0]
    mean = np.array(first.floats, np.float32).reshape(1, 3, 1, 1)
    x = op("Transpose", [INPUT], perm=[0, 3, 1, 2])
    x = op("Sub", [x, const("mean", mean)])
    x = op("Mul", [x, const("scale", np.array(1 / 256, np.float32))])
    shape = (3, SIZE, SIZE)  # channels, rows, columns of x
    block_in: tuple[str, tuple[int, int, int]] | None = None  # a residual block's input
    i = 1
    while i < len(layers):
        layer = layers[i]
        if layer.kind == "con_4":
            if block_in is None and i > 1:
                block_in = (x, shape)
            filters, rows, cols, sy, sx, py, px = layer.ints
            affine = layers[i + 1]
            if affine.kind != "affine_" or len(affine.params) != 2 * filters:
                raise NetworkFileError("a convolution without its affine layer")
            k = (len(layer.params) - filters) // (filters * rows * cols)
            if k != shape[0]:
                raise NetworkFileError("a convolution whose input channels do not match")
            w = layer.params[: filters * k * rows * cols].reshape(filters, k, rows, cols)
            b = layer.params[filters * k * rows * cols :]
            gamma, beta = affine.params[:filters], affine.params[filters:]
            w = w * gamma[:, None, None, None]
            b = b * gamma + beta
            x = op(
                "Conv",
                [x, const("w", w.astype(np.float32)), const("b", b.astype(np.float32))],
                kernel_shape=[rows, cols],
                strides=[sy, sx],
                pads=[py, px, py, px],
            )
            shape = (
                filters,
                1 + (shape[1] + 2 * py - rows) // sy,
                1 + (shape[2] + 2 * px - cols) // sx,
            )
            i += 2
            continue
        if layer.kind == "relu_":
            x = op("Relu", [x])
        elif layer.kind == "max_pool_2":
            x, shape = _pool("MaxPool", op, x, shape, layer.ints)
            block_in = None
        elif layer.kind == "avg_pool_2" and layer.ints[:2] == (0, 0):
            x = op("GlobalAveragePool", [x])
            shape = (shape[0], 1, 1)
        elif layer.kind == "avg_pool_2":  # the shortcut of a block that halves the resolution
            if block_in is None:
                raise NetworkFileError("a pooled shortcut outside a residual block")
            pooled, pshape = _pool("AveragePool", op, *block_in, layer.ints)
            block_in = (pooled, pshape)
        elif layer.kind == "add_prev_":
            if block_in is None:
                raise NetworkFileError("a residual addition outside a residual block")
            x, shape = _add_padded(op, const, (x, shape), block_in)
            block_in = None
        elif layer.kind == "fc_2":
            outputs, inputs = layer.ints
            if inputs != shape[0]:
                raise NetworkFileError("the projection's inputs do not match")
            x = op("Flatten", [x], axis=1)
            proj = layer.params[: inputs * outputs].reshape(inputs, outputs)
            x = op("MatMul", [x, const("fc", np.ascontiguousarray(proj))])
        i += 1
    nodes.append(wire.node("Identity", [x], [OUTPUT]))
    return wire.model(
        nodes,
        weights,
        [wire.value_info(INPUT, ["N", SIZE, SIZE, 3])],
        [wire.value_info(OUTPUT, ["N", DIMS])],
    )


def _pool(
    kind: str, op: Any, x: str, shape: tuple[int, int, int], ints: tuple[int, ...]
) -> tuple[str, tuple[int, int, int]]:
    rows, cols, sy, sx, py, px = ints
    out = op(kind, [x], kernel_shape=[rows, cols], strides=[sy, sx], pads=[py, px, py, px])
    return out, (
        shape[0],
        1 + (shape[1] + 2 * py - rows) // sy,
        1 + (shape[2] + 2 * px - cols) // sx,
    )


def _add_padded(
    op: Any, const: Any, a: tuple[str, tuple[int, int, int]], b: tuple[str, tuple[int, int, int]]
) -> tuple[str, tuple[int, int, int]]:
    """a + b, each zero-padded at the end of every axis to the larger of the two (dlib's
    add_prev adds tensors of different sizes that way)."""
    shape = tuple(max(p, q) for p, q in zip(a[1], b[1], strict=True))
    terms = []
    for x, s in (a, b):
        if s != shape:
            pads = np.array([0, 0, 0, 0, 0, *(m - n for m, n in zip(shape, s, strict=True))])
            x = op("Pad", [x, const("pads", pads.astype(np.int64))])
        terms.append(x)
    return op("Add", terms), shape  # type: ignore[return-value]


class FaceNet:
    """The face-recognition ResNet of a dlib model file, in onnxruntime on the CPU."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        from lostface.models import cpu_session_options

        opts = cpu_session_options(ort, threads)
        self.session = ort.InferenceSession(
            onnx_model(read_layers(path)), opts, providers=["CPUExecutionProvider"]
        )

    def descriptor(self, chip: np.ndarray) -> np.ndarray:
        """128 float64 values of one 150x150 RGB uint8 chip (dlib.get_face_chip)."""
        if chip.shape != (SIZE, SIZE, 3):
            raise ValueError(f"a face chip is {SIZE}x{SIZE}x3, not {chip.shape}")
        x = chip[None].astype(np.float32)
        return self.session.run([OUTPUT], {INPUT: x})[0][0].astype(np.float64)
