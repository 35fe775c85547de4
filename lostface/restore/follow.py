"""Between keyframes, a patch follows the face's mesh, not only its similarity transform.

A patch is painted in the canonical space of its keyframe. On later frames the compositor
carries it by the similarity transform of the face's current 5 landmarks; as the head turns
or tilts the face changes shape in that space (its far cheek narrows, its jaw swings), and a
rigidly carried mouth and chin slide against the head until the next keyframe. On the frames
where the detector measured the face, its mesh is found on the current canonical crop and the
patch is bent onto it (restore.warp: the keyframe's mesh posed like the current head, the
visible points pinned to the current ones); frames in between keep the latest bend.
"""

from __future__ import annotations

import cv2
import numpy as np

from lostface.restore import align
from lostface.restore.mesh import FaceMesh
from lostface.restore.warp import MAX_DISAGREEMENT, mesh_maps, posed_disagreement

# below this median movement of the control points (canonical px) the patch is not bent:
# a face that kept its shape needs no resampling
_MIN_MOVE = 0.75


class MeshFollow:
    """Finds meshes (a patch's, a frame's face) and bends patches between them."""

    def __init__(self, mesh: FaceMesh) -> None:
        self.mesh = mesh

    def mesh_of(self, canonical: np.ndarray) -> np.ndarray | None:
        """The mesh of a canonical crop (a painted patch or a frame's face): one pass of the
        model, the same for both, so their difference is the face's motion, not the
        passes'."""
        return self.mesh.points(canonical, min_score=0.0, passes=1)

    def current(self, image: np.ndarray, m: np.ndarray) -> np.ndarray | None:
        """The mesh of the face that `m` (frame -> canonical) aligns in `image`."""
        return self.mesh_of(align.warp_to_canonical(image, m))

    @staticmethod
    def bend(bgra: np.ndarray, key: np.ndarray, now: np.ndarray) -> np.ndarray | None:
        """The patch (BGRA, canonical) painted on a face with mesh `key`, bent onto `now`; None
        when it needs no bend or the meshes disagree too much to trust."""
        moved, spread = posed_disagreement(key, now, depth=True)
        if spread > MAX_DISAGREEMENT or moved < _MIN_MOVE:
            return None
        mx, my = mesh_maps(key, now, depth=True)
        return cv2.remap(bgra, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
