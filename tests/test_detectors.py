"""Face detectors on real photos: the embedded CenterFace, and YOLOv8 at random init."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lostface.config import DetectSettings, load_settings
from lostface.errors import ConfigError, InputError, ModelError
from lostface.frame import Detections
from lostface.models import centerface_path, load_yolo
from lostface.registry import build_detector
from lostface.tracking.detectors import (
    FACE_TEMPLATE,
    CenterFaceDetector,
    SmallFaceDetector,
    YoloV8Detector,
    box_iou_matrix,
    detections_from_ultralytics,
    landmarks_from_boxes,
    nms,
    not_within,
)
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def detector() -> CenterFaceDetector:
    return CenterFaceDetector(DetectSettings())


def _skimage_bgr(name: str) -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(getattr(data, name)()[:, :, ::-1])


def _check_types(det: Detections, w: int, h: int) -> None:
    n = len(det)
    assert det.boxes.shape == (n, 4) and det.boxes.dtype == np.float32
    assert det.scores.shape == (n,) and det.scores.dtype == np.float32
    assert det.landmarks.shape == (n, 5, 2) and det.landmarks.dtype == np.float32
    assert np.all(det.boxes[:, 0] >= 0) and np.all(det.boxes[:, 2] <= w)
    assert np.all(det.boxes[:, 1] >= 0) and np.all(det.boxes[:, 3] <= h)
    assert np.all(det.boxes[:, 2] > det.boxes[:, 0]) and np.all(det.boxes[:, 3] > det.boxes[:, 1])


def _landmarks_inside_boxes(det: Detections) -> None:
    x, y = det.landmarks[..., 0], det.landmarks[..., 1]
    assert np.all(x >= det.boxes[:, None, 0] - 1) and np.all(x <= det.boxes[:, None, 2] + 1)
    assert np.all(y >= det.boxes[:, None, 1] - 1) and np.all(y <= det.boxes[:, None, 3] + 1)


def _masked_mosaic(n: int = 12, tile: int = 160) -> np.ndarray:
    """12 real masked faces in one 640x480 frame (every 25th photo, 4 columns x 3 rows)."""
    files = sorted(shared_path("masked").glob("*.jpg"))[::25][:n]
    tiles = [
        cv2.resize(cv2.imread(str(f)), (tile, tile), interpolation=cv2.INTER_AREA) for f in files
    ]
    return np.vstack([np.hstack(tiles[r * 4 : r * 4 + 4]) for r in range(n // 4)])


# --- embedded CenterFace -----------------------------------------------------------------


def test_weights_are_found_in_the_wheel() -> None:
    path = centerface_path()
    assert path.name == "centerface.onnx" and path.stat().st_size > 1_000_000


def test_astronaut_one_face_on_the_face_with_sane_landmarks(
    detector: CenterFaceDetector, astronaut_bgr: np.ndarray
) -> None:
    det = detector.detect(astronaut_bgr)
    assert len(det) == 1
    _check_types(det, 512, 512)
    # an independent detector (OpenCV's Haar cascade) agrees on where the face is
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    gray = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY)
    haar = cascade.detectMultiScale(gray, 1.1, 5, minSize=(60, 60))
    assert len(haar) == 1
    x, y, w, h = haar[0]
    assert box_iou_matrix(det.boxes, np.array([[x, y, x + w, y + h]], np.float32))[0, 0] > 0.4
    le, re, nose, ml, mr = det.landmarks[0]
    assert le[0] < nose[0] < re[0] and ml[0] < mr[0]
    assert max(le[1], re[1]) < nose[1] < min(ml[1], mr[1])
    _landmarks_inside_boxes(det)
    assert det.scores[0] > 0.5


@pytest.mark.parametrize("name", ["coffee", "rocket", "chelsea"])
def test_no_face_in_face_free_photos(detector: CenterFaceDetector, name: str) -> None:
    # chelsea is a cat: a face, but not a human one
    assert len(detector.detect(_skimage_bgr(name))) == 0


@pytest.mark.shared_data
def test_recall_on_a_sample_of_masked_photos(detector: CenterFaceDetector) -> None:
    files = sorted(shared_path("masked").glob("*.jpg"))[::5]
    assert len(files) == 60
    found = 0
    for f in files:
        image = cv2.imread(str(f))
        det = detector.detect(image)
        _check_types(det, image.shape[1], image.shape[0])
        _landmarks_inside_boxes(det)
        found += len(det) > 0
    assert found / len(files) >= 0.93


@pytest.mark.shared_data
@pytest.mark.parametrize(("name", "least"), [("group1", 2), ("group2", 4), ("single_dark", 1)])
def test_group_photos(detector: CenterFaceDetector, name: str, least: int) -> None:
    image = cv2.imread(str(shared_path("groups", f"{name}.jpg")))
    det = detector.detect(image)
    _check_types(det, image.shape[1], image.shape[0])
    _landmarks_inside_boxes(det)
    assert len(det) >= least
    iou = box_iou_matrix(det.boxes, det.boxes)
    assert np.all(iou[np.triu_indices(len(det), 1)] <= DetectSettings().nms_iou)
    assert np.all(np.diff(det.scores) <= 0)  # best first


@pytest.mark.shared_data
def test_mosaic_of_twelve_masked_faces(detector: CenterFaceDetector) -> None:
    mosaic = _masked_mosaic()
    det = detector.detect(mosaic)
    _check_types(det, 640, 480)
    _landmarks_inside_boxes(det)
    centres = (det.boxes[:, :2] + det.boxes[:, 2:]) / 2 // 160
    assert len({(int(cx), int(cy)) for cx, cy in centres}) >= 10


@pytest.mark.shared_data
def test_max_faces_keeps_the_best_and_min_size_drops_small_faces() -> None:
    mosaic = _masked_mosaic()
    everything = CenterFaceDetector(DetectSettings()).detect(mosaic)
    best3 = CenterFaceDetector(DetectSettings(max_faces=3)).detect(mosaic)
    assert len(best3) == 3
    np.testing.assert_allclose(best3.scores, everything.scores[:3])
    assert len(CenterFaceDetector(DetectSettings(min_size=170)).detect(mosaic)) == 0


def test_odd_size_and_buffer_reuse(detector: CenterFaceDetector, astronaut_bgr: np.ndarray) -> None:
    odd = cv2.resize(astronaut_bgr[:300], (641, 361), interpolation=cv2.INTER_AREA)
    first = detector.detect(odd)
    assert len(first) == 1
    _check_types(first, 641, 361)
    _landmarks_inside_boxes(first)
    detector.detect(astronaut_bgr)  # another input shape in between rebuilds the buffers
    again = detector.detect(odd)
    np.testing.assert_array_equal(first.boxes, again.boxes)
    np.testing.assert_array_equal(first.landmarks, again.landmarks)


def test_face_at_the_frame_edge_is_clipped(
    detector: CenterFaceDetector, astronaut_bgr: np.ndarray
) -> None:
    crop = np.ascontiguousarray(astronaut_bgr[100:400, 215:480])  # cuts the face's left half
    det = detector.detect(crop)
    _check_types(det, crop.shape[1], crop.shape[0])
    assert len(det) == 1 and det.boxes[0, 0] == 0


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((64, 64), np.uint8),
        np.zeros((64, 64, 3), np.float32),
        np.zeros((64, 64, 4), np.uint8),
    ],
)
def test_bad_images_raise_input_error(detector: CenterFaceDetector, image: np.ndarray) -> None:
    with pytest.raises(InputError):
        detector.detect(image)


def test_nms_keeps_only_boxes_no_better_box_overlaps() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 200, (300, 2))
    boxes = np.hstack([xy, xy + rng.uniform(10, 60, (300, 2))]).astype(np.float32)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    keep = nms(boxes, scores, 0.3)
    assert len(keep) and np.all(np.diff(scores[keep]) <= 0)
    iou = box_iou_matrix(boxes, boxes)
    assert np.all(iou[np.ix_(keep, keep)][np.triu_indices(len(keep), 1)] <= 0.3)
    dropped = np.setdiff1d(np.arange(300), keep)
    better = scores[None, :] > scores[dropped, None]
    assert np.all(((iou[dropped] > 0.3) & better).any(axis=1))
    assert len(nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.3)) == 0


def test_a_face_printed_on_a_covering_below_a_face_is_dropped(
    detector: CenterFaceDetector,
) -> None:
    """A black covering printed with a white skull (a real photo): the print with the choker
    below it is found as a second, weaker face on the neck, its eyes inside the wearer's box
    below the nose; it would be judged covered and the neck painted. Only the wearer is kept."""
    image = cv2.imread(str(shared_path("masked", "0133.jpg")))
    found = detector.detect(image)
    assert len(found) == 1, found.boxes
    eyes_y = found.landmarks[0][:2, 1].mean()
    assert eyes_y < found.landmarks[0][2, 1]  # the wearer's own face, eyes above the nose
    # the same arrays: faces side by side, one behind the other's shoulder, one above another
    # are all kept; the one whose eyes lie in a better face's box under its nose is dropped
    boxes = np.array(
        [[100, 100, 200, 220], [210, 100, 310, 220], [180, 20, 260, 110], [110, 170, 190, 280]],
        np.float32,
    )
    lm = landmarks_from_boxes(boxes)
    keep = not_within(boxes, lm, np.arange(4))
    assert keep.tolist() == [0, 1, 2]


def test_the_registry_builds_detectors_by_name() -> None:
    plain = build_detector(load_settings(overrides=["detect.small_faces=false"]))
    assert type(plain) is CenterFaceDetector
    small = build_detector(load_settings())  # the default also looks for small faces
    assert isinstance(small, SmallFaceDetector)
    assert small.large_faces() is small.plain and plain.large_faces() is plain
    with pytest.raises(
        ConfigError, match="Unknown detect.engine 'mtcnn'; known engines: centerface, yolov8"
    ):
        load_settings(overrides=["detect.engine=mtcnn"])
    with pytest.raises(ModelError, match="detect.model is empty"):
        build_detector(load_settings(overrides=["detect.engine=yolov8"]))


def test_missing_ultralytics_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # what an absent package looks like
    with pytest.raises(ModelError, match=r"lostface\[yolo\]"):
        load_yolo("weights.pt")


def test_template_landmarks_follow_the_convention() -> None:
    boxes = np.array([[10, 20, 110, 140]], np.float32)
    le, re, nose, ml, mr = landmarks_from_boxes(boxes)[0]
    assert le[0] < nose[0] < re[0] and ml[0] < mr[0]
    assert le[1] == re[1] < nose[1] < ml[1] == mr[1]
    np.testing.assert_allclose(FACE_TEMPLATE[:, 0] + FACE_TEMPLATE[[1, 0, 2, 4, 3], 0], 1)


# --- YOLOv8 through ultralytics (random init) --------------------------------------------


@pytest.fixture(scope="module")
def yolo_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random-weight YOLOv8n detector and a 5-keypoint YOLOv8n-pose, saved as .pt."""
    pytest.importorskip("ultralytics")
    import torch
    import yaml
    from ultralytics import YOLO
    from ultralytics.utils.checks import check_yaml

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("yolo")
    cfg = yaml.safe_load(Path(check_yaml("yolov8-pose.yaml")).read_text())
    cfg.update(kpt_shape=[5, 3], nc=1)
    pose_yaml = out / "yolov8n-face-pose.yaml"  # the "n" in the name picks the scale
    pose_yaml.write_text(yaml.safe_dump(cfg))
    paths = {"detect": out / "det.pt", "pose": out / "pose.pt"}
    YOLO("yolov8n.yaml").save(paths["detect"])
    YOLO(str(pose_yaml)).save(paths["pose"])
    return paths


@pytest.mark.yolo
@pytest.mark.parametrize("kind", ["detect", "pose"])
def test_yolo_from_config_path(
    yolo_weights: dict[str, Path], astronaut_bgr: np.ndarray, kind: str
) -> None:
    settings = load_settings(
        overrides=[
            "detect.engine=yolov8",
            f'detect.model="{yolo_weights[kind]}"',
            "detect.threshold=0.0001",
            "detect.min_size=1",
            "detect.max_faces=20",
        ]
    )
    detector = build_detector(settings)
    assert isinstance(detector, YoloV8Detector)
    image = np.ascontiguousarray(astronaut_bgr[:, :448])
    det = detector.detect(image)
    assert 0 < len(det) <= 20  # random weights: boxes with tiny scores, but boxes
    _check_types(det, 448, 512)
    assert np.all(det.scores >= 0.0001)
    raw = detector.model.predict(
        image, imgsz=detector.imgsz, conf=0.0001, max_det=20, verbose=False
    )[0]
    assert (raw.keypoints is not None) == (kind == "pose")
    converted = detections_from_ultralytics(raw)
    if kind == "pose":
        kp = raw.keypoints.xy.cpu().numpy()
        np.testing.assert_allclose(converted.landmarks, np.clip(kp, 0, [447, 511]), atol=1e-4)
    else:
        _landmarks_inside_boxes(converted)
        np.testing.assert_allclose(
            converted.landmarks, landmarks_from_boxes(converted.boxes), atol=1e-3
        )


@pytest.mark.yolo
def test_yolo_missing_file_and_uncached_hub_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ultralytics")
    with pytest.raises(ModelError, match="does not exist"):
        load_yolo(str(tmp_path / "nope.pt"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelError, match="lostface models pull detect.model"):
        load_yolo("someone/yolov8-face/model.pt")


@pytest.mark.yolo
def test_yolo_hub_id_from_the_local_cache(
    yolo_weights: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "hub" / "models--someone--yolov8-face"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (snap / "face.pt").write_bytes(yolo_weights["pose"].read_bytes())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    model = load_yolo("someone/yolov8-face/face.pt")
    assert model.task == "pose" and model.model.kpt_shape == [5, 3]


@pytest.mark.yolo
def test_gpu_check_runs_on_the_cpu_as_a_smoke_test(tmp_path: Path) -> None:
    """bench/gpu_check.py is run on GPU machines only when one is lent: its CPU mode keeps
    it working here, `lostface run` with the YOLOv8 engine included."""
    pytest.importorskip("ultralytics")
    pytest.importorskip("skimage")
    import json
    import subprocess

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "bench" / "gpu_check.py"), "--device", "cpu", "--quick"]
    cmd += ["--iters", "2", "--frames", "12", "--cli", "--out", str(tmp_path)]
    cmd += ["--sections", "detector"]  # the diffusion section: tests/test_diffusion.py
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    models = {row["model"] for row in result["detector"]}
    assert models == {"centerface (embedded, CPU, 1 thread)", "yolov8n", "yolov8n-face-pose"}
    assert all(row["median_ms"] > 0 for row in result["detector"])
    # the embedded detector finds the real face in every frame; random weights find none
    assert all(
        row["faces_per_call"] == 1.0 for row in result["detector"] if "centerface" in row["model"]
    )
    runs = result["lostface_run_1280x720"]
    assert set(runs) == {"centerface_cpu", "yolov8n-face-pose_cpu_fp32"}
    assert all(r["frames_out"] == 12 for r in runs.values())
    assert result["frame_loop_1280x720"]["centerface_cpu"]["faces_per_frame"] > 0.5


def test_small_masked_faces_are_found_at_the_resolution_they_need(
    detector: CenterFaceDetector,
) -> None:
    """Real masked faces 44 px wide in 640x360 frames: the plain pass at input_size
    misses most of them; the small-face detector finds them on its enlarged looks and keeps
    them on the calls between: by looking again around those the plain pass does not see,
    and as weak detections (which keep a followed face) those it sees only weakly."""
    frame = np.full((360, 640, 3), 60, np.uint8)
    truth = []
    for k, name in enumerate(("0001.jpg", "0010.jpg", "0020.jpg", "0030.jpg")):
        img = cv2.imread(str(shared_path("masked", name)))
        d = detector.detect(img)
        i = int(np.argmax(d.boxes[:, 2] - d.boxes[:, 0]))
        x0, y0, x1, y1 = d.boxes[i]
        s = 44.0 / (x1 - x0)
        side = 45
        small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        small = cv2.copyMakeBorder(small, side, side, side, side, cv2.BORDER_REPLICATE)
        cx, cy = int((x0 + x1) / 2 * s) + side, int((y0 + y1) / 2 * s) + side
        ox, oy = 80 + 150 * k - cx + side, 180 - cy + side
        frame[180 - side : 180 + side, 80 + 150 * k - side : 80 + 150 * k + side] = small[
            cy - side : cy + side, cx - side : cx + side
        ]
        truth.append(np.array([x0 * s + ox, y0 * s + oy, x1 * s + ox, y1 * s + oy]))

    def found(det: Detections, weak: bool = False) -> int:
        """Faces found; with weak, also those found weakly (which keep a followed face)."""
        boxes = det.boxes
        if weak and det.weak is not None:
            boxes = np.concatenate([boxes, det.weak.boxes])
        return sum(any(box_iou_matrix(t[None], boxes)[0] >= 0.3) for t in truth)

    assert found(detector.detect(frame)) < 4  # a weak sighting alone starts no track
    small = SmallFaceDetector(DetectSettings())
    assert found(small.detect(frame)) == 4  # the enlarged look
    per_call = [found(small.detect(frame), weak=True) for _ in range(small.every)]
    assert all(n == 4 for n in per_call), per_call
    # a pass that reuses the plain pass's detections adds the same small-face search
    again = SmallFaceDetector(DetectSettings())
    first = again.complete(frame, again.large_faces().detect(frame))
    fresh = SmallFaceDetector(DetectSettings()).detect(frame)
    assert found(first) == 4 and np.allclose(first.boxes, fresh.boxes)


def test_the_enlarged_look_backs_off_while_it_finds_nothing_new(
    detector: CenterFaceDetector, astronaut_bgr: np.ndarray
) -> None:
    """A 640x360 shot with one large face: the frame enlarged twice is looked at on the first
    call, then ever less often (every small_every calls while it finds small faces nobody
    knew of, up to _BACKOFF times that while it finds none)."""
    frame = np.full((360, 640, 3), 90, np.uint8)
    frame[:, 200:440] = cv2.resize(astronaut_bgr[:300, 136:376], (240, 360))
    small = SmallFaceDetector(DetectSettings())
    looks: list[int] = []
    calls = [0]
    inner = small.full.detect

    def counted(image: np.ndarray) -> Detections:
        looks.append(calls[0])
        return inner(image)

    small.full.detect = counted  # type: ignore[method-assign]
    for _ in range(60):
        assert len(small.detect(frame)) == 1
        calls[0] += 1
    every = small.every
    assert looks == [0, 4 * every, 4 * every + small._BACKOFF * every], looks


def test_the_enlarged_look_s_threads_follow_detect_look_threads(
    astronaut_bgr: np.ndarray,
) -> None:
    """The enlarged look runs on a session of its own with detect.look_threads (the cores
    allowing), or on the detector's own with 1 (a batch worker of one thread keeps to its
    core: lostface.batch sets it); either way it finds the same faces."""
    import os

    from lostface import batch
    from lostface.config import dump_toml

    frame = np.full((360, 640, 3), 90, np.uint8)
    frame[100:160, 300:352] = cv2.resize(astronaut_bgr[20:220, 160:330], (52, 60))
    own = SmallFaceDetector(DetectSettings(look_threads=1))
    assert own.full.session is own.plain.session
    looked = SmallFaceDetector(DetectSettings())
    assert (looked.full.session is not looked.plain.session) == ((os.cpu_count() or 1) > 1)
    a, b = own.detect(frame), looked.detect(frame)
    assert len(a) >= 1 and np.allclose(a.boxes, b.boxes, atol=0.01)
    text = dump_toml(load_settings())
    batch._CACHE.clear()
    try:
        settings, detector, _ = batch._settings_and_engines(text, 1)
        assert settings.detect.look_threads == 1
        assert detector.full.session is detector.plain.session
    finally:
        batch._CACHE.clear()
