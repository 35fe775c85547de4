"""Capture a person's face from the camera ("capture my face now"): a few seconds of frames
before the mask goes on become that person's references, as if given with --reference.

For each frame looked at, the largest face is cut from the frame with a generous margin (the
region that is saved) and read back from that region exactly as a reference photo is read
(ReferenceBank.from_image), so what a later run loads with `--reference NAME=DIR/NAME` is
what was learned now. The segmenter judges it more strictly than a reference photo: clearly
open on both the region's and the frame's alignment, near-frontal, and in a capture that was
not mostly covered (a capture has frames to spare; a covering learned would be painted back
on). Up to `keep` faces are kept, the best of each part of the capture (a few moments rather
than one): sharp, frontal, and with the lower face showing skin (no hand or microphone before
the mouth). A capture that saw no open face ends in one sentence.

Live, the frame loop only copies every few frames (LiveCapture.offer); the detector and the
segmenter run on the capture's own thread, so the loop never waits for them.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lostface.config import Settings
from lostface.errors import InputError, OutputError
from lostface.frame import Detections
from lostface.restore.mesh import FaceMesh
from lostface.restore.reference import Reference, ReferenceBank, align_face
from lostface.restore.selfref import PREFIX as SELF_PREFIX
from lostface.restore.selfref import lower_skin, mouth_opening, sharpness
from lostface.stages import Detector, Segmenter

log = logging.getLogger(__name__)

NO_OPEN_FACE = (
    "No unmasked face seen during the capture; look at the camera without the mask and try again."
)
STOPPED = "The capture was stopped before it ended; nothing was learned."
DEFAULT_NAME = "me"
KEEP = 4  # references kept from one capture
EVERY = 3  # live: one frame in this many is looked at
MAX_FRAMES = 24  # frames looked at in one capture, however long it is
NICE = 10  # how much lower the capture thread's CPU priority is than the loop's
MARGIN = 0.75  # the saved region reaches this many face sizes beyond the face box on each side
SAVED_PREFIX = "capture-"  # saved photos: capture-<date>-<time>-<random>-<k>.png
MAX_YAW = 0.45  # head turn (align.yaw_proxy) beyond which a face is not learned: face the camera
# a face is learned only with a covering score under this share of mask.presence_threshold (as
# lostface.restore.selfref learns): measured on ../shared/data, 0 of 300 masked photos pass
# (25 pass the reference photos' own check) and 259 of 300 unmasked ones (bench/live_capture.py)
OPEN_MARGIN = 0.6
_SAME_FACE_IOU = 0.5  # the face found again in the region must overlap the one found first
_NAME = re.compile(r"[\w][\w.-]{0,39}")


class NoOpenFace(InputError):
    """A capture in which no usable open face was seen (the message says what to do)."""


def check_name(name: str) -> str:
    """The person's name as given (stripped), or InputError: it names a folder under the
    captures' folder and is written NAME=DIR/NAME on the command line."""
    name = str(name).strip()
    if not _NAME.fullmatch(name) or name.startswith(SELF_PREFIX):
        raise InputError(
            f"Capture name {name!r} cannot be used; give 1 to 40 letters, digits, '-', '_' "
            f"or '.' (e.g. {DEFAULT_NAME}), not starting with '.', '-' or {SELF_PREFIX!r}."
        )
    return name


@dataclass(slots=True)
class Shot:
    """One open face of the capture: order (its frame's place in the capture), region (the
    frame around the face, BGR: what is saved), reference (read back from that region)."""

    order: int
    region: np.ndarray
    reference: Reference
    quality: float


@dataclass
class CaptureResult:
    """What a capture learned: its shots (at most `keep`), how many frames it looked at and
    what it saw on the others, and the seconds spent building the references."""

    name: str
    shots: list[Shot]
    frames: int
    seen: dict[str, int] = field(default_factory=dict)  # Builder.look's answers, counted
    seconds: float = 0.0
    saved: Path | None = None

    @property
    def references(self) -> list[Reference]:
        return [s.reference for s in self.shots]

    def summary(self) -> str:
        n = len(self.shots)
        return f"learned {self.name} from {n} face{'' if n == 1 else 's'}"


class _Found(Detector):
    """The detections already made (so from_image reads them without detecting again)."""

    def __init__(self, detections: Detections) -> None:
        self.detections = detections

    def detect(self, image: np.ndarray) -> Detections:
        return self.detections


def _largest(dets: Detections) -> int:
    b = dets.boxes
    return int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, float(x1 - x0)) * max(0.0, float(y1 - y0))
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


def face_region(image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The frame region around a face box, MARGIN face sizes wider on every side (clipped to
    the frame), and its top-left corner: enough background for the detector to find the face
    again in the saved photo."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    pad = MARGIN * max(x2 - x1, y2 - y1)
    x0, y0 = max(0, int(x1 - pad)), max(0, int(y1 - pad))
    xe, ye = min(w, int(np.ceil(x2 + pad))), min(h, int(np.ceil(y2 + pad)))
    return np.ascontiguousarray(image[y0:ye, x0:xe]), (x0, y0)


class Builder:
    """Looks at a capture's frames one by one (`look`) and keeps the best (`finish`).

    detector, segmenter: as for reference photos (the segmenter judges each face covered or
    not); min_face: faces narrower than this (frame pixels) are too small to learn from;
    open_threshold: the segmenter's covering score at which a face counts as covered
    (mask.presence_threshold): a face is learned only well below it (OPEN_MARGIN); mesh: the
    face mesh, which tells an open mouth (ranked lower) from a closed one."""

    def __init__(
        self,
        name: str,
        detector: Detector,
        segmenter: Segmenter | None,
        *,
        keep: int = KEEP,
        min_face: float = 0.0,
        open_threshold: float = 0.5,
        mesh: FaceMesh | None = None,
    ) -> None:
        self.name = check_name(name)
        self.mesh = mesh
        self.detector = detector.large_faces()  # faces under min_face are not kept anyway
        self.segmenter = segmenter
        self.keep = max(1, int(keep))
        self.min_face = float(min_face)
        self.shots: list[Shot] = []
        self.open_below = OPEN_MARGIN * float(open_threshold)
        self.seen = {k: 0 for k in ("open", "covered", "unsure", "turned", "small", "none")}
        self.frames = 0
        self.seconds = 0.0

    def look(self, image: np.ndarray, order: int | None = None) -> str:
        """Judge one BGR frame; returns what it showed: "open" (kept), "covered", "unsure" (not
        clearly open), "turned" (beyond MAX_YAW), "small" (under min_face) or "none"."""
        t0 = time.perf_counter()
        order = self.frames if order is None else order
        self.frames += 1
        try:
            what = self._look(image, order)
        finally:
            self.seconds += time.perf_counter() - t0
        self.seen[what] += 1
        return what

    def _look(self, image: np.ndarray, order: int) -> str:
        dets = self.detector.detect(image)
        if len(dets) == 0:
            return "none"
        i = _largest(dets)
        box = dets.boxes[i]
        if float(box[2] - box[0]) < self.min_face:
            return "small"
        region, (x0, y0) = face_region(image, box)
        # the face is read back from the region, as `--reference NAME=DIR/NAME` will read it
        again = self.detector.detect(region)
        if len(again) == 0:
            return "none"
        k = _largest(again)
        if _iou(again.boxes[k], box - np.array([x0, y0, x0, y0], np.float32)) < _SAME_FACE_IOU:
            return "none"  # the region's largest face is another one: it would not read back
        try:
            ref = ReferenceBank.from_image(self.name, region, _Found(again.subset([k])))
        except InputError:
            return "none"
        if abs(ref.yaw) > MAX_YAW:
            return "turned"
        judged = self._judge(ref.image, ref.landmarks)
        if judged == "open":
            # and once more as the frame's own detection placed it: a covering the segmenter
            # misses on one alignment it rarely misses on both
            judged = self._judge(*align_face(image, dets.landmarks[i][:5]))
        if judged != "open":
            return judged
        ref.person = self.name
        # sharp, frontal, the lower face showing skin (a hand, a microphone or a cup before
        # the mouth would be painted on) and the mouth closed (it is painted under a mask),
        # ranked as the self-reference ranks its faces
        skin = lower_skin(ref.image)
        opening = mouth_opening(self.mesh.points(ref.image) if self.mesh is not None else None)
        quality = sharpness(ref.image) * (0.2 + skin) / (1.0 + abs(ref.yaw)) / (1.0 + 4 * opening)
        self.shots.append(Shot(order, region, ref, quality))
        return "open"

    def _judge(self, face: np.ndarray, landmarks: np.ndarray) -> str:
        """ "open" when the segmenter finds the lower face clearly uncovered, "covered" when it
        finds a covering, "unsure" in between (not learned from: painting a covering back on
        is the worst a reference can do, and a capture has frames to spare)."""
        if self.segmenter is None:
            return "open"
        cover = self.segmenter.segment(face, landmarks, False)
        if cover.covered:
            return "covered"
        return "open" if cover.score < self.open_below else "unsure"

    def finish(self) -> CaptureResult:
        """The kept shots: the best of each of `keep` equal parts of the capture (so they
        come from moments spread over it); NoOpenFace when none was open."""
        if self.seen["covered"] > self.seen["open"]:
            # mostly covered: the few frames judged open are more likely misses than moments
            # without the mask
            self.shots = []
        if not self.shots:
            if self.seen["small"] and not (self.seen["covered"] or self.seen["unsure"]):
                raise NoOpenFace(
                    f"Only faces narrower than {self.min_face:.0f} pixels were seen during the "
                    "capture; come closer to the camera, without the mask, and try again."
                )
            raise NoOpenFace(NO_OPEN_FACE)
        span = max(1, self.frames)
        best: dict[int, Shot] = {}
        for shot in self.shots:
            part = min(self.keep - 1, shot.order * self.keep // span)
            if part not in best or shot.quality > best[part].quality:
                best[part] = shot
        shots = [best[p] for p in sorted(best)]
        return CaptureResult(self.name, shots, self.frames, dict(self.seen), self.seconds)


def build_references(
    name: str,
    frames: Iterable[np.ndarray],
    detector: Detector,
    segmenter: Segmenter | None,
    *,
    keep: int = KEEP,
    min_face: float = 0.0,
) -> CaptureResult:
    """References of `name` from a capture's frames (BGR), in the order they were taken."""
    builder = Builder(name, detector, segmenter, keep=keep, min_face=min_face)
    for image in frames:
        builder.look(image)
    return builder.finish()


def builder_for(name: str, settings: Settings, detector: Detector) -> Builder:
    """A Builder as the settings judge reference photos (restore.check_references) and the
    smallest face worth learning (restore.self_min_face), with the face mesh when the restorer
    uses one (restore.mesh)."""
    from lostface.registry import build_segmenter
    from lostface.restore.mesh import load_face_mesh

    segmenter = build_segmenter(settings) if settings.restore.check_references else None
    mesh = load_face_mesh(settings.models.face_mesh) if settings.restore.mesh else None
    return Builder(
        name,
        detector,
        segmenter,
        min_face=settings.restore.self_min_face,
        open_threshold=settings.mask.presence_threshold,
        mesh=mesh,
    )


def save_references(result: CaptureResult, folder: str | Path) -> Path:
    """Write the capture's face regions as PNG photos into FOLDER/NAME/ (created), replacing
    the photos an earlier capture of NAME saved there (capture-*.png; other files are left
    alone). Each file is written under a temporary name and renamed, so a failure leaves no
    half-written photo. Returns FOLDER/NAME, which `--reference NAME=FOLDER/NAME` reads."""
    target = Path(folder).expanduser().absolute() / check_name(result.name)
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"  # never an old name
    written: list[Path] = []
    temps: list[Path] = []
    try:
        target.mkdir(parents=True, exist_ok=True)
        for k, shot in enumerate(result.shots, 1):
            final = target / f"{SAVED_PREFIX}{stamp}-{k}.png"
            # not an image suffix: a temporary file left by a crash is never read as a photo
            temp = target / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
            ok, png = cv2.imencode(".png", shot.region)
            if not ok:
                raise OSError(f"could not encode {final.name}")
            temps.append(temp)
            temp.write_bytes(png.tobytes())
            os.replace(temp, final)
            temps.remove(temp)
            written.append(final)
    except OSError as exc:
        for p in temps + written:
            p.unlink(missing_ok=True)
        reason = exc.strerror or str(exc)
        raise OutputError(
            f"Could not save the captured photos in {target} ({reason}); choose a folder you "
            "can write to."
        ) from None
    for old in target.glob(f"{SAVED_PREFIX}*.png"):
        if old not in written:
            old.unlink(missing_ok=True)
    result.saved = target
    log.debug("Saved %d captured photo(s) of %s in %s.", len(written), result.name, target)
    return target


def check_save_dir(folder: str | Path) -> Path:
    """The folder captures are saved in, checked before any work: OutputError when it is a
    file or cannot be created or written (nothing is created here)."""
    path = Path(folder).expanduser().absolute()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"Cannot save captures in {path}: {probe} is not a folder.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(
            f"Cannot save captures in {path}: {probe} is not writable; choose a folder you "
            "can write to."
        )
    return path


def how_to_use(result: CaptureResult) -> str:
    """The command-line argument that gives a saved capture to a later run."""
    return f"--reference {result.name}={result.saved}"


def _yield_cpu() -> None:
    """Lower the calling thread's CPU priority (Linux: a thread has its own nice value), so
    the frame loop and the keyframe worker go first when the cores are busy."""
    if sys.platform.startswith("linux"):
        with suppress(OSError):
            tid = threading.get_native_id()
            os.setpriority(
                os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + NICE)
            )


class LiveCapture:
    """A capture inside a running frame loop (a `lostface serve` session).

    The loop calls `offer(image)` on every frame: for `seconds` after the first one, every
    `every`-th frame is copied and handed to the capture's own thread, which judges it there.
    When the time is up the thread keeps the best faces, saves them (save_dir), and sets
    `result` or `error`; `done` is set either way. The loop itself only copies frames.
    """

    def __init__(
        self,
        builder: Builder,
        seconds: float,
        *,
        every: int = EVERY,
        save_dir: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.builder = builder
        self.name = builder.name
        self.seconds = float(seconds)
        self.every = max(1, int(every))
        self.save_dir = save_dir
        self.clock = clock
        self.result: CaptureResult | None = None
        self.error = ""  # the sentence when the capture failed
        self.save_error = ""  # the sentence when the references were learned but not saved
        self.done = threading.Event()
        self.collecting = True
        self.offered = 0
        # clock times: the first frame offered, the end of the collection, the result
        self.t_first: float | None = None
        self.t_end: float | None = None
        self.t_done: float | None = None
        self._cond = threading.Condition()
        self._queue: list[tuple[int, np.ndarray]] = []
        self._ended = False
        self._cancelled = False
        self._thread = threading.Thread(
            target=self._run, name=f"lostface-capture-{self.name}", daemon=True
        )
        self._thread.start()

    def offer(self, image: np.ndarray) -> None:
        """One frame of the loop (the loop may draw on it afterwards: a copy is taken)."""
        if not self.collecting:
            return
        now = self.clock()
        if self.t_first is None:
            self.t_first = now
        if now - self.t_first >= self.seconds or self.offered >= MAX_FRAMES * self.every:
            self.end()
            return
        if self.offered % self.every == 0:
            with self._cond:
                self._queue.append((self.offered // self.every, image.copy()))
                self._cond.notify()
        self.offered += 1

    def end(self) -> None:
        """No more frames: build from those taken."""
        if self.collecting:
            self.t_end = self.clock()
        self.collecting = False
        with self._cond:
            self._ended = True
            self._cond.notify()

    def cancel(self) -> None:
        """Stop without learning or saving (the session closes, the command is stopped)."""
        self._cancelled = True
        self.end()

    @property
    def state(self) -> str:
        if self.collecting:
            return "capturing"
        return "building" if not self.done.is_set() else ("failed" if self.error else "learned")

    def _run(self) -> None:
        _yield_cpu()
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._ended:
                        self._cond.wait()
                    if self._cancelled:
                        self.error = STOPPED
                        return
                    if not self._queue:
                        break
                    order, image = self._queue.pop(0)
                self.builder.look(image, order)
            result = self.builder.finish()
            if self._cancelled:
                self.error = STOPPED
                return
            if self.save_dir is not None:
                try:
                    save_references(result, self.save_dir)
                except OutputError as exc:
                    self.save_error = str(exc)
            self.result = result
        except InputError as exc:
            self.error = str(exc)
        except Exception as exc:  # the session goes on; the page shows why
            log.exception("The capture of %s failed", self.name)
            self.error = f"The capture failed ({type(exc).__name__}: {exc}); try again."
        finally:
            self.t_done = self.clock()
            self.done.set()
