"""Whether a file carries lostface's marks: the invisible watermark, the metadata tag, and
C2PA content credentials.

The frame watermark (provenance.engine "frame", the default) is read from whole frames: up to
FRAME_READS frames spread evenly over the file, judged together and in windows
(lostface.provenance.framemark). Where it is not found, the faces are read for RivaGAN's mark
(engine "faces"). Each test has its own false-alarm level (FRAME_FALSE_ALARM, FALSE_ALARM): an
unmarked file passes one of them at most 1.1 times in 1,000.

RivaGAN's watermark is judged for the whole file from many faces: frames are sampled evenly, every
face found is aligned and read (lostface.provenance.watermark), and each face is followed over
the sampled frames (boxes that overlap) and judged once, from its reads averaged over each of
the mark's two turns (payload and complement): H.264 spoils single reads, the averages
outvote them. Most faces of a picture may be unpainted (an
audience behind the speaker), so faces are judged one by one (see judge), never averaged
together. How often unmarked footage passes is measured by bench/provenance.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from lostface.errors import InputError
from lostface.frame import Frame
from lostface.provenance import metadata
from lostface.provenance.credentials import Credentials, read_credentials
from lostface.provenance.watermark import (
    HEADER,
    HEADER_BITS,
    MARK,
    SEGMENT,
    VERSION,
    MarkGeometry,
    RivaGan,
    crop_for_reading,
    geometry_for,
    split_payload,
)
from lostface.stages import Detector

log = logging.getLogger(__name__)

# chance that a file without the mark is judged marked: each face's test is exact (see
# judge) and the file's is their Bonferroni bound, so at most 1 unmarked file in 1,000 passes
# (bench/provenance.py counts how many do). A stricter level misses marks H.264 left 17 of 20
# header bits of; 20 check bits make one face no surer than 2**-20 in any case
FALSE_ALARM = 1e-3
FRAME_FALSE_ALARM = 1e-4  # the frame mark's level (its bound already counts its windows)
FRAME_READS = 4  # the frame mark is read from this many times --frames frames (cheap to read)
MIN_CROP = 40  # frame pixels: faces whose canonical crop is narrower carry no readable mark
MAX_FACES = 8  # faces read per frame, largest first
PHASE_STEP = 2  # frames between the turn phases tried (neighbouring phases read alike)
PHASE_SHARE = 0.5  # share of a face's test for the turns where the frame numbers put them
MIN_READS = 3  # video: a face seen in fewer sampled frames is not judged (too little to go on)
JITTER = ((0.0, 0.0), (1.5, 0.0), (-1.5, 0.0), (0.0, 1.5), (0.0, -1.5))  # photo reads, pixels
_NOT_MEDIA = {"tty"}  # FFmpeg shows any text file as ANSI art: not a video
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class WatermarkReading:
    """The watermark as read from one file: faces read, the averaged payload, and how well
    each face agreed with it."""

    faces: int = 0
    frames: int = 0  # frames (or 1 photo) sampled
    found: bool = False
    mark: int | None = None
    version: int | None = None
    run_id: int | None = None
    header_errors: int | None = None
    tracks: int = 0  # faces followed over the sampled frames and judged
    chance: float | None = None  # how often unmarked footage reads this well (the test)
    marked_faces: int = 0  # reads of the faces that carry the mark
    share: float = 0.0  # marked_faces / faces
    bit_accuracy: float | None = None  # mean share of a face's 32 bits equal to the payload
    engine: str = "faces"  # which mark was read: "frame" or "faces" (provenance.engine)
    z: float | None = None  # frame: the header's correlation in standard deviations

    def to_json(self) -> dict:
        return {
            "found": self.found,
            "engine": self.engine,
            "z": None if self.z is None else round(self.z, 2),
            "payload": None
            if self.mark is None
            else {
                "mark": f"{self.mark:04x}",
                "version": self.version,
                "run_id": f"{self.run_id:03x}",
            },
            "header_errors": self.header_errors,
            "chance": self.chance,
            "faces": self.faces,
            "tracks": self.tracks,
            "marked_faces": self.marked_faces,
            "frames": self.frames,
            "share_read": round(self.share, 4),
            "bit_accuracy": None if self.bit_accuracy is None else round(self.bit_accuracy, 4),
        }


def chance(weights: np.ndarray, observed: float) -> float:
    """P(sum of s_i * w_i >= observed) for independent random signs s_i = +-1: how often a
    picture that carries no mark agrees with the header this well (exact, over all 2**n sign
    patterns, by meeting in the middle)."""
    w = np.asarray(weights, np.float64)
    half = len(w) // 2

    def sums(part: np.ndarray) -> np.ndarray:
        signs = 1 - 2 * ((np.arange(2 ** len(part))[:, None] >> np.arange(len(part))) & 1)
        return (signs * part).sum(1)

    left, right = sums(w[:half]), np.sort(sums(w[half:]))
    need = observed - left - 1e-9  # right >= observed - left
    count = len(right) - np.searchsorted(right, need, side="left")
    return float(count.sum() / 2 ** len(w))


@dataclass
class FaceRead:
    """One face of one sampled frame, as the decoder read it (32 logits: > 0 reads a 1)."""

    frame: int
    box: np.ndarray
    logits: np.ndarray
    # read at the scale the mark has if the file was scaled to half size since it was written
    half: np.ndarray | None = None


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def follow(reads: list[FaceRead], min_iou: float = 0.3) -> list[list[FaceRead]]:
    """Reads grouped by face: a face of one sampled frame continues the face of the previous
    sampled frame whose box overlaps it most (IoU >= min_iou), else starts a new group."""
    groups: list[list[FaceRead]] = []
    open_: list[list[FaceRead]] = []
    frames = sorted({r.frame for r in reads})
    for f in frames:
        here = [r for r in reads if r.frame == f]
        pairs = sorted(
            (
                (_iou(g[-1].box, r.box), gi, ri)
                for gi, g in enumerate(open_)
                for ri, r in enumerate(here)
            ),
            reverse=True,
        )
        used_g: set[int] = set()
        used_r: set[int] = set()
        nxt = []
        for iou, gi, ri in pairs:
            if iou < min_iou or gi in used_g or ri in used_r:
                continue
            used_g.add(gi)
            used_r.add(ri)
            open_[gi].append(here[ri])
            nxt.append(open_[gi])
        for ri, r in enumerate(here):
            if ri not in used_r:
                g = [r]
                groups.append(g)
                nxt.append(g)
        open_ = nxt
    return groups


def _face_test(face: list[FaceRead]) -> tuple[float, np.ndarray]:
    """(chance, logits) of one face followed over the sampled frames.

    The compositor shows the payload in frames 0-7 of the file, its complement in frames
    8-15, and so on (SEGMENT), so the reads of one turn minus those of the other hold the mark
    twice and none of what the face's own picture makes the decoder read. In a file as lostface
    wrote it (or re-encoded, or scaled) the turns are where the frame numbers put them: that
    split, read as the payload, gets PHASE_SHARE of the face's test. A cut file starts
    anywhere: of the other splits (and scales), the one whose turns differ most is chosen from
    the sizes of the differences alone, which say nothing about the signs the header is tested
    on, and is read as the payload and as its complement, each against half of the rest. A
    face seen in one turn only (a photo) is judged from its reads averaged."""
    frames = np.array([x.frame for x in face])
    scales = [np.array([x.logits for x in face])]
    if all(x.half is not None for x in face):
        scales.append(np.array([x.half for x in face]))
    written: list[np.ndarray] = []  # the split where the frame numbers put the turns
    splits: list[np.ndarray] = []  # every split, each scale
    for logits in scales:
        for phase in range(0, SEGMENT, PHASE_STEP):
            turn = ((frames + phase) // SEGMENT) % 2
            if turn.all() or not turn.any():
                continue
            diff = logits[turn == 0].mean(0) - logits[turn == 1].mean(0)
            splits.append(diff)
            if phase == 0:
                written.append(diff)
    tests: list[tuple[np.ndarray, float]]
    if not splits:
        tests = [(logits.mean(0), 1.0 / len(scales)) for logits in scales]
    else:
        largest = max(splits, key=lambda d: float(np.abs(d).sum()))
        rest = (1.0 - PHASE_SHARE) if written else 1.0
        tests = [(d, PHASE_SHARE / len(written)) for d in written]
        tests += [(largest, rest / 2), (-largest, rest / 2)]
    sign = np.where(HEADER > 0, 1.0, -1.0)
    p = [
        chance(np.abs(t[:HEADER_BITS]), float((sign * t[:HEADER_BITS]).sum())) / w for t, w in tests
    ]
    best = int(np.argmin(p))
    return min(1.0, p[best]), tests[best][0]


def judge(reads: list[FaceRead], frames: int) -> WatermarkReading:
    """The file's verdict from every face read.

    Each face is followed over the sampled frames and judged once (_face_test): its header
    bits, each weighted by how sure the reads are, against every pattern of signs; an unmarked
    face matches the lostface header this well with probability `chance`. Faces share
    FALSE_ALARM by how many of the reads are theirs (a weighted Bonferroni bound, fixed before
    any header is looked at); the file is marked when one face's chance is within its share."""
    r = WatermarkReading(faces=len(reads), frames=frames)
    faces = [g for g in follow(reads) if frames == 1 or len(g) >= MIN_READS]
    if not faces:
        return r
    results = [_face_test(g) for g in faces]
    # faces share the file's test by how often they were seen: a face in most frames (whom a
    # viewer watches, and lostface paints) is judged against more of it than a glimpse
    weight = np.array([len(g) for g in faces], np.float64) / sum(len(g) for g in faces)
    p = np.array([c for c, _ in results]) / weight
    r.tracks = len(faces)
    best = int(np.argmin(p))
    r.chance = float(min(1.0, p[best]))
    r.found = r.chance <= FALSE_ALARM
    marked = [x for g, pi in zip(faces, p, strict=True) if pi <= FALSE_ALARM for x in g]
    r.marked_faces = len(marked)
    r.share = len(marked) / len(reads)
    bits = (results[best][1] > 0).astype(np.uint8)
    r.mark, r.version, r.run_id = split_payload(bits)
    r.header_errors = int((bits[:HEADER_BITS] != HEADER).sum())
    if r.found:
        each = np.array([x.logits for x in faces[best]]) > 0
        agree = (each == bits).mean(1)
        r.bit_accuracy = float(np.maximum(agree, 1 - agree).mean())  # either turn counts
    return r


def judge_frame_mark(cells: list[np.ndarray], frames: int) -> WatermarkReading:
    """The frame watermark's verdict from the cells (framemark.frame_cells) of a file's sampled
    frames, in order; bit_accuracy: the mean share of each frame's own 32 bits that agree with
    the payload read, over the frames of the best test."""
    from lostface.provenance import framemark

    r = WatermarkReading(frames=frames, engine="frame")
    best, _ = framemark.judge_frames(cells)
    if best is None:
        return r
    r.z, r.chance = best.z, best.chance
    r.found = best.chance <= FRAME_FALSE_ALARM
    r.mark, r.version, r.run_id = split_payload(best.bits)
    r.header_errors = best.header_errors
    if r.found:
        r.marked_faces = best.frames  # frames of the best test (there are no faces here)
        r.share = best.frames / max(1, frames)
        each = cells[best.start : best.start + best.frames]
        r.bit_accuracy = float(
            np.mean([(framemark.mark_test(c).bits == best.bits).mean() for c in each])
        )
    return r


def read_frame_mark(path: Path, max_frames: int) -> WatermarkReading:
    """The frame watermark of up to max_frames frames spread evenly over a video."""
    from lostface.provenance.framemark import frame_cells

    cells = [frame_cells(f.image) for f in sampled_frames(path, max_frames)]
    return judge_frame_mark(cells, len(cells))


class WatermarkReader:
    """Reads lostface's watermark from the faces of photos and video frames."""

    def __init__(
        self,
        detector: Detector,
        model: RivaGan | None = None,
        geometry: MarkGeometry | None = None,
    ) -> None:
        self.detector = detector
        self.model = model or RivaGan()
        self.geometry = geometry

    def read_image(self, image: np.ndarray, frame: int = 0, jitter: bool = False) -> list[FaceRead]:
        """Every face (up to MAX_FACES, largest first) of one BGR image, read. jitter: read
        each face at JITTER alignments a pixel or two apart and average them (a photo has one
        read per face, a video many), so one read's unlucky sampling does not decide."""
        dets = self.detector.detect(image)
        widths = [_crop_width(lm) for lm in dets.landmarks]
        order = [i for i in np.argsort(widths)[::-1] if widths[i] >= MIN_CROP][:MAX_FACES]
        shifts = JITTER if jitter else JITTER[:1]
        faces: list[tuple[int, list[MarkGeometry]]] = []
        for i in order:
            if self.geometry is not None:
                faces.append((i, [self.geometry]))
                continue
            # as written, and as it is if the file was scaled to half size since
            as_written, halved = geometry_for(widths[i]), geometry_for(2 * widths[i])
            faces.append((i, [as_written] if halved == as_written else [as_written, halved]))
        out = []
        for i, geometries in faces:
            lm = dets.landmarks[i]
            logits = []
            for g in geometries:
                crops = [
                    c
                    for d in shifts
                    if (c := crop_for_reading(image, lm + np.asarray(d, np.float32), g)) is not None
                ]
                if len(crops) < len(shifts):
                    break
                logits.append(np.clip(self.model.read(crops), -4, 4).mean(0))
            if len(logits) == len(geometries):
                out.append(
                    FaceRead(
                        frame, dets.boxes[i], logits[0], logits[1] if len(logits) > 1 else None
                    )
                )
        return out

    def read_video(self, path: Path, max_frames: int = 96) -> tuple[list[FaceRead], int]:
        """The faces of up to `max_frames` frames spread evenly over the video, read, and the
        number of frames sampled."""
        reads: list[FaceRead] = []
        sampled = 0
        for frame in sampled_frames(path, max_frames):
            reads += self.read_image(frame.image, frame.index)
            sampled += 1
        return reads, sampled


def sampled_frames(path: Path, max_frames: int) -> Iterator[Frame]:
    """Up to `max_frames` decoded frames spread evenly over a video (every third frame from the
    start when its length is unknown); an InputError when none decodes."""
    from lostface.stream.video import VideoReader

    reader = VideoReader(path)
    sampled = 0
    try:
        total = reader.info.frames or _estimate_frames(reader)
        wanted = (
            set(np.linspace(0, total - 1, min(total, max_frames)).round().astype(int).tolist())
            if total
            else set(range(0, 3 * max_frames, 3))
        )
        for item in reader.items():
            if not isinstance(item, Frame) or item.index not in wanted:
                continue
            yield item
            sampled += 1
            if sampled >= max_frames:
                break
    finally:
        reader.close()
    if sampled == 0:
        raise InputError(f"{path} has no decodable video frames; the file looks corrupt.")


def _crop_width(landmarks: np.ndarray) -> float:
    """Frame pixels the face's canonical crop spans (0 without an alignment)."""
    from lostface.restore import align

    try:
        return align.CANON_SIZE / align.scale_of(align.to_canonical(landmarks))
    except ValueError:
        return 0.0


def _estimate_frames(reader) -> int:
    try:
        c = reader.container
        if c.duration:
            return int(c.duration / av.time_base * float(reader.info.rate))
    except (AttributeError, TypeError, ValueError):
        pass
    return 0


@dataclass
class Verdict:
    """Everything `lostface verify` found in one file."""

    path: str
    kind: str = ""  # video | image
    watermark: WatermarkReading | None = None
    watermark_error: str | None = None  # why the watermark was not read (no weights)
    tag: str | None = None
    tag_version: str | None = None
    credentials: Credentials | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def marked(self) -> bool:
        wm = self.watermark is not None and self.watermark.found
        c2pa = self.credentials is not None and self.credentials.valid
        return self.error is None and (wm or self.tag_version is not None or c2pa)

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "kind": self.kind,
            "marked": self.marked,
            "watermark": None if self.watermark is None else self.watermark.to_json(),
            "watermark_error": self.watermark_error,
            "tag": self.tag,
            "c2pa": None if self.credentials is None else self.credentials.to_json(),
            "error": self.error,
        }

    def summary(self) -> str:
        """One line: the verdict and what it rests on."""
        if self.error is not None:
            return f"{self.path}: error: {self.error}"
        parts = []
        wm = self.watermark
        if wm is not None and wm.found and wm.engine == "frame":
            off = f", {wm.header_errors} of 20 header bits off" if wm.header_errors else ""
            parts.append(
                f"lostface watermark (run id read as {wm.run_id:03x}{off}; {wm.marked_faces} "
                f"of {wm.frames} {'frames' if self.kind == 'video' else 'photo'} read together "
                f"at {wm.z:.1f} standard deviations, each frame alone reads "
                f"{(wm.bit_accuracy or 0):.0%} of the bits)"
            )
        elif wm is not None and wm.found:
            off = f", {wm.header_errors} of 20 header bits off" if wm.header_errors else ""
            parts.append(
                f"lostface watermark (run id read as {wm.run_id:03x}{off}; "
                f"{wm.marked_faces} of {wm.faces} faces in {wm.frames} "
                f"{'frames' if self.kind == 'video' else 'photo'} carry it, "
                f"{(wm.bit_accuracy or 0):.0%} of their bits read)"
            )
        elif wm is not None:
            parts.append(
                f"no watermark (read in {wm.frames} {'frames' if wm.frames > 1 else 'frame'})"
            )
        elif self.watermark_error:
            parts.append("watermark not read (" + self.watermark_error.rstrip(".") + ")")
        parts.append(f"tag: lostface {self.tag_version}" if self.tag_version else "no lostface tag")
        cr = self.credentials
        if cr is not None and cr.present:
            who = f" signed by {cr.signer}" if cr.signer else ""
            parts.append(f"C2PA manifest {cr.state}{who}")
        else:
            parts.append("no C2PA manifest")
        verdict = "marked" if self.marked else "not marked"
        return f"{self.path}: {verdict}: " + "; ".join(parts)


def check_media(path: Path) -> str:
    """'video' or 'image', or an InputError saying what is wrong with the file."""
    if not path.exists():
        raise InputError(f"{path} does not exist; check the path.")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a video or photo file.")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes); give a complete video or photo.")
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return "image"
    unreadable = InputError(
        f"{path} is not a video or photo lostface can read (corrupt, or another kind of file)."
    )
    try:
        with av.open(str(path)) as c:
            if c.format.name in _NOT_MEDIA:
                raise unreadable
            if not c.streams.video:
                raise InputError(f"{path} has no video stream; give a video or photo file.")
            still = c.streams.video[0].codec_context.name in ("png", "mjpeg", "webp", "bmp")
            if still and (c.streams.video[0].frames or 0) <= 1:
                return "image"
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        raise unreadable from None
    return "video"


def verify_file(
    path: Path, reader: WatermarkReader | None, max_frames: int = 96, watermark_error: str = ""
) -> Verdict:
    """Watermark, tag and credentials of one file; bad input is an InputError."""
    from lostface.provenance.framemark import frame_cells
    from lostface.stream.image import read_image

    kind = check_media(path)
    v = Verdict(str(path), kind)
    if kind == "image":
        data = path.read_bytes()
        image = read_image(path)  # InputError for a corrupt photo
        texts = metadata.image_texts(data)
        v.watermark = judge_frame_mark([frame_cells(image.bgr)], 1)
    else:
        texts = list(metadata.video_tags(path).values())
        v.watermark = read_frame_mark(path, FRAME_READS * max_frames)
    if not v.watermark.found:
        # RivaGAN's mark in the faces (provenance.engine "faces"), when its weights are here
        v.watermark_error = watermark_error or None
        if reader is not None:
            if kind == "image":
                faces = judge(reader.read_image(image.bgr, jitter=True), 1)
            else:
                faces = judge(*reader.read_video(path, max_frames))
            if faces.found:
                v.watermark = faces
    for text in texts:
        version = metadata.parse_tag(text)
        if version is not None:
            v.tag, v.tag_version = text, version
            break
    v.credentials = read_credentials(path)
    return v


__all__ = [
    "MARK",
    "VERSION",
    "Verdict",
    "WatermarkReader",
    "WatermarkReading",
    "check_media",
    "judge",
    "verify_file",
]
