"""dlib's face-recognition ResNet read from dlib's model file and run by onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lostface.restore import dlib_net
from lostface.restore.reference import read_image
from tests.conftest import shared_path

dlib = pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def paths() -> tuple[Path, Path]:
    from lostface.errors import ModelError
    from lostface.models import dlib_model_paths

    try:
        return dlib_model_paths(points=5)
    except ModelError as exc:
        pytest.skip(str(exc))


def test_the_graph_gives_dlib_s_descriptors_on_real_faces(paths: tuple[Path, Path]) -> None:
    """On the chips of real photos (dlib's own detector, shape and chip), the graph's
    descriptor is dlib's binding's to float rounding."""
    shape_path, rec_path = paths
    net = dlib_net.FaceNet(rec_path)
    rec = dlib.face_recognition_model_v1(str(rec_path))
    shape_model = dlib.shape_predictor(str(shape_path))
    find = dlib.get_frontal_face_detector()
    chips = []
    for k in range(8):
        rgb = np.ascontiguousarray(read_image(shared_path("unmasked", f"{k:04d}.jpg"))[:, :, ::-1])
        boxes = find(rgb, 0)
        if len(boxes):
            chips.append(dlib.get_face_chip(rgb, shape_model(rgb, boxes[0]), 150, 0.25))
    assert len(chips) >= 5
    ours = np.stack([net.descriptor(c) for c in chips])
    theirs = np.stack([np.asarray(rec.compute_face_descriptor(c)) for c in chips])
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    apart = np.linalg.norm(ours[:, None] - ours[None], axis=2)[np.triu_indices(len(chips), 1)]
    assert apart.min() > 0.3  # different people's photos stay apart
    with pytest.raises(ValueError, match="150x150x3"):
        net.descriptor(chips[0][:100])


def test_a_file_that_is_not_the_network_is_refused(
    paths: tuple[Path, Path], tmp_path: Path
) -> None:
    """The shape predictor's file, or the network's cut short: a NetworkFileError naming the
    file (the gate then runs dlib's binding)."""
    shape_path, rec_path = paths
    with pytest.raises(dlib_net.NetworkFileError, match="shape_predictor"):
        dlib_net.read_layers(shape_path)
    cut = tmp_path / "cut.dat"
    cut.write_bytes(rec_path.read_bytes()[: 4 << 20])
    with pytest.raises(dlib_net.NetworkFileError):
        dlib_net.read_layers(cut)
