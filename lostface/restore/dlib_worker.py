"""dlib's face embedding in a process of its own (lostface.restore.identity starts it).

dlib's Python binding holds the GIL for the whole of a face embedding (about 75 ms on a CPU
core), so in the same process every other thread (the frame loop, the detector's) stops for
it. Run here, the embedding costs the frame loop nothing but the wait of the thread that asked.

    python lostface/restore/dlib_worker.py SHAPE_MODEL RECOGNITION_MODEL LEFT TOP RIGHT BOTTOM

(run by its path, so the lostface package is not imported there).

Reads requests from stdin: a header (height, width as two little-endian uint32) and the RGB
uint8 pixels; answers each on stdout with one status byte, then either 128 float64 values (0)
or a length-prefixed UTF-8 message (1). Imports nothing but numpy and dlib, so it starts in a
fraction of a second; ends at the end of its input (the parent closed it, or died).
"""

from __future__ import annotations

import struct
import sys

HEADER = struct.Struct("<II")
ERROR = struct.Struct("<I")
DIMS = 128


def _read(stream, n: int) -> bytes | None:  # noqa: ANN001 - a binary file
    """Exactly n bytes, or None at the end of the input."""
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def main(argv: list[str]) -> int:
    import dlib
    import numpy as np

    shape_path, rec_path, *box = argv
    shape_model = dlib.shape_predictor(shape_path)
    rec = dlib.face_recognition_model_v1(rec_path)
    rect = dlib.rectangle(*(int(v) for v in box))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(b"\0")  # ready
    stdout.flush()
    while True:
        head = _read(stdin, HEADER.size)
        if head is None:
            return 0
        h, w = HEADER.unpack(head)
        data = _read(stdin, h * w * 3)
        if data is None:
            return 0
        try:
            rgb = np.frombuffer(data, np.uint8).reshape(h, w, 3)
            d = np.asarray(rec.compute_face_descriptor(rgb, shape_model(rgb, rect)), np.float64)
            stdout.write(b"\0" + d.tobytes())
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which falls back
            msg = f"{type(exc).__name__}: {exc}".encode()
            stdout.write(b"\1" + ERROR.pack(len(msg)) + msg)
        stdout.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
