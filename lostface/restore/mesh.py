"""Dense face landmarks: MediaPipe's face mesh (468 points, Apache-2.0) on canonical crops.

The model file ships inside the mediapipe 0.10.21 wheel on PyPI. lostface does not depend on
mediapipe (it pins numpy<2 and pulls opencv-contrib); `lostface models pull models.face_mesh`
(run by `make`) downloads that wheel without dependencies, extracts the one file and checks its
sha256. Nothing here downloads at run time: without the file (or without the `ai-edge-litert`
runtime, the `mesh` extra) the restorer keeps the 5 landmarks, and says so once in the log.

The mesh is run on a face's canonical crop (restore.align), so its points are canonical
pixels: a first pass on a fixed square of the crop, a second on the square around the first
pass's points (as MediaPipe tracks a face), which corrects a crop placed by the landmarks a
masked face gets (they sit high). On a masked face the lower points are the model's
prediction from the visible face; bench/segmentation.py measures how far they move.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lostface.errors import ModelError
from lostface.models import file_sha256
from lostface.restore.align import CANON_EYE_DISTANCE, CANON_HEIGHT, CANON_SIZE

log = logging.getLogger(__name__)

MESH_WHEEL = "mediapipe==0.10.21"
MESH_MEMBER = "mediapipe/modules/face_landmark/face_landmark.tflite"
MESH_FILE = "face_landmark.tflite"
MESH_SHA256 = "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"
# the wheel pip downloads: the model file is the same in every platform's wheel, so one is named
_WHEEL_ARGS = ("--platform", "manylinux_2_28_x86_64", "--python-version", "311")
MESH_POINTS = 468
_INPUT = 192
_FIRST_ROI = (16.0, 36.0, 224.0)  # x0, y0, side of the first pass's square (canonical px)
_ROI_SCALE = 1.5  # the second pass's square over the first mesh's extent (MediaPipe's)
# face presence below this: the mesh of an open face (a reference photo) is not used. Under a
# covering the model's presence score falls (below 0.12 on one synthetic-masked photo in ten)
# while its points still follow the face, so a covered face's mesh is judged by how well it
# agrees with the landmarks instead (restore.warp.disagreement).
MIN_SCORE = 0.5

# Point indices of MediaPipe's face mesh topology (the published canonical mesh).
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip
LIPS = (
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409,
    78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415,
)  # fmt: skip
MOUTH_CORNERS = (61, 291)
NOSE = (1, 2, 4, 5, 6, 19, 94, 97, 98, 168, 195, 197, 326, 327, 129, 358, 64, 294)
LEFT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
RIGHT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
BROWS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)
CHIN = 152
NOSE_TIP = 1
# the lower face: below the nose's wings (jaw, cheeks' lower half, mouth, chin)
JAW = FACE_OVAL[8:29]  # 454 ... 234 along the jaw, through the chin (152)
# what a face mask leaves visible and the model finds well: brows, eyes, nose bridge (the
# oval at the temples and forehead is left out: hair hides it, and it moves the pose's scale)
UPPER = BROWS + LEFT_EYE + RIGHT_EYE + (6, 168, 197, 195)


def outline_mask(points: np.ndarray, lengthen: float = 1.0) -> np.ndarray:
    """The face outline of a mesh (its oval, canonical points) as a uint8 0/1 map over the
    canonical crop; the points below the nose tip `lengthen` times as far below it."""
    pts = np.asarray(points, np.float64)[list(FACE_OVAL), :2].copy()
    tip = float(points[NOSE_TIP][1])
    below = pts[:, 1] > tip
    pts[below, 1] = tip + (pts[below, 1] - tip) * lengthen
    out = np.zeros((CANON_HEIGHT, CANON_SIZE), np.uint8)
    cv2.fillPoly(out, [np.round(pts).astype(np.int32)], 1)
    return out


def default_path() -> Path:
    """Where `pull` puts the model file: $LOSTFACE_MODELS, else the user's cache folder."""
    root = os.environ.get("LOSTFACE_MODELS")
    if root:
        return Path(root).expanduser() / MESH_FILE
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "lostface" / MESH_FILE


def mesh_path(spec: str = "") -> Path:
    """The model file named by models.face_mesh (empty: default_path())."""
    return Path(spec).expanduser() if spec else default_path()


def pull_mesh(dest: Path) -> Path:
    """Download the mediapipe wheel from PyPI (no dependencies), extract the face mesh model to
    `dest` and check its sha256; an already present, intact file is kept."""
    if dest.is_file() and file_sha256(dest) == MESH_SHA256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lostface-mesh-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += [*_WHEEL_ARGS, "-q", "-d", tmp, MESH_WHEEL]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("mediapipe-*.whl"))
        if done.returncode != 0 or not wheels:
            tail = (done.stderr or done.stdout).strip().splitlines()
            raise ModelError(
                f"Could not download {MESH_WHEEL} from PyPI for the face mesh model "
                f"({tail[-1] if tail else 'pip failed'}); check the network to PyPI."
            )
        try:
            with zipfile.ZipFile(wheels[0]) as z:
                data = z.read(MESH_MEMBER)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise ModelError(f"{wheels[0].name} holds no readable {MESH_MEMBER} ({exc}).") from None
        if hashlib.sha256(data).hexdigest() != MESH_SHA256:
            raise ModelError(
                f"{MESH_MEMBER} in {wheels[0].name} is not the file lostface expects (its "
                "sha256 differs); it was not installed."
            )
        part = dest.with_name(dest.name + ".part")
        try:
            part.write_bytes(data)
            part.replace(dest)
        finally:
            part.unlink(missing_ok=True)
    return dest


def check_mesh(path: Path) -> None:
    """ModelError unless `path` is the expected face mesh model."""
    if not path.is_file():
        raise ModelError(
            f"The face mesh model {path} is missing; run `lostface models pull models.face_mesh`."
        )
    if file_sha256(path) != MESH_SHA256:
        raise ModelError(
            f"{path} is not MediaPipe's face_landmark.tflite (its sha256 differs); run "
            "`lostface models pull models.face_mesh` to fetch it again."
        )


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Native code's writes to fd 2 go nowhere inside (Python's own stderr is flushed first)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class FaceMesh:
    """468 face landmarks of a canonical crop, by the TFLite model on ai-edge-litert."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        check_mesh(path)
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ModelError(
                "The face mesh needs the ai-edge-litert runtime; run `pip install "
                "'lostface[mesh]'`."
            ) from None
        with _quiet_stderr():
            # the runtime prints an INFO line to fd 2 as it creates its XNNPACK delegate
            self._it: Any = Interpreter(model_path=str(path), num_threads=threads)
            self._it.allocate_tensors()
        self._in = self._it.get_input_details()[0]["index"]
        outs = self._it.get_output_details()
        by_size = sorted(outs, key=lambda d: int(np.prod(d["shape"])))
        self._score, self._points = by_size[0]["index"], by_size[-1]["index"]

    def _run(self, crop: np.ndarray, roi: tuple[float, float, float]) -> tuple[np.ndarray, float]:
        x0, y0, side = roi
        k = _INPUT / side
        m = np.array([[k, 0.0, -x0 * k], [0.0, k, -y0 * k]])
        flags = cv2.INTER_AREA if k < 1.0 else cv2.INTER_LINEAR
        x = cv2.warpAffine(crop, m, (_INPUT, _INPUT), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        x = cv2.cvtColor(x, cv2.COLOR_BGR2RGB).astype(np.float32) * np.float32(1.0 / 255.0)
        self._it.set_tensor(self._in, x[None])
        self._it.invoke()
        pts = self._it.get_tensor(self._points).reshape(MESH_POINTS, 3).astype(np.float64)
        logit = float(self._it.get_tensor(self._score).ravel()[0])
        return pts / k + (x0, y0, 0.0), float(1.0 / (1.0 + np.exp(-logit)))

    def landmarks(self, crop: np.ndarray, passes: int = 2) -> tuple[np.ndarray, float]:
        """(468,3) points in the crop's pixels (x, y; z: depth in the same units, relative to
        the face's centre, smaller is nearer) and the face-presence score (0-1). passes=1:
        the first pass only (half the time; the compositor's per-frame use)."""
        pts, score = self._run(crop, _FIRST_ROI)
        if passes < 2:
            return pts, score
        lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
        centre = (lo + hi) / 2.0
        side = float(max(hi - lo)) * _ROI_SCALE
        return self._run(crop, (centre[0] - side / 2, centre[1] - side / 2, side))

    def points(
        self, crop: np.ndarray, min_score: float = MIN_SCORE, passes: int = 2
    ) -> np.ndarray | None:
        """The (468,3) mesh of a crop, or None when the model's face presence is below
        min_score."""
        pts, score = self.landmarks(crop, passes)
        return pts.astype(np.float32) if score >= min_score else None


_WARNED: set[str] = set()


# A mesh whose eyes and nose tip lie further than this many eye distances from the detector's
# (canonical space) is posed unlike the face: on a covered face turned far aside it often sits
# frontal on the covering. It then does not bound the covered region (painter), which would
# stop short of the covering.
MAX_MISS = 0.5


def fits(dense: np.ndarray, landmarks: np.ndarray) -> bool:
    """Whether a face mesh (canonical points) agrees with the face's 5 landmarks (canonical):
    its eye centres and nose tip within MAX_MISS eye distances of theirs."""
    eyes = np.array([dense[list(LEFT_EYE), :2].mean(axis=0), dense[list(RIGHT_EYE), :2].mean(0)])
    points = np.vstack([eyes[np.argsort(eyes[:, 0])], dense[NOSE_TIP, :2]])
    lm = np.asarray(landmarks, np.float64)[:3].copy()
    lm[:2] = lm[:2][np.argsort(lm[:2, 0])]  # the image's left eye first on both sides
    miss = np.hypot(*(points - lm).T).max()
    return bool(miss <= MAX_MISS * CANON_EYE_DISTANCE)


def load_face_mesh(spec: str = "", threads: int = 1) -> FaceMesh | None:
    """The face mesh, or None (with one log line per reason) when its file or runtime is
    missing: the restorer then works from the 5 landmarks."""
    try:
        return FaceMesh(mesh_path(spec), threads)
    except ModelError as exc:
        reason = str(exc)
        if reason not in _WARNED:
            _WARNED.add(reason)
            log.warning("%s Restoring from the 5 landmarks instead.", reason)
        return None
