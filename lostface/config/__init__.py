"""One typed settings tree, loaded from TOML presets and overridden from the command line.

    settings = load_settings(preset="cpu", config_file=None, overrides=["tracking.detect_every=2"])

Each section is a dataclass; unknown keys and wrongly typed values are rejected with a
ConfigError that names the key. `dump_toml(settings)` writes the resolved tree, which the
command line saves beside every output.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from lostface.errors import ConfigError


@dataclass
class DetectSettings:
    engine: str = "centerface"  # centerface (embedded) | yolov8
    model: str = ""  # yolov8: weights path or hub id (a face model, ideally with 5 keypoints)
    threshold: float = 0.3
    # least score of a face that only continues a track already followed (new faces need
    # `threshold`); at or above threshold: no second look (centerface; bench/small_faces.py)
    track_threshold: float = 0.1
    input_size: int = 320  # long side of the image the detector sees, pixels
    pad: float = 0.15  # border added around the image (fraction of its long side) before detection
    min_size: float = 12.0  # smallest face side kept, pixels in the input image
    nms_iou: float = 0.3
    max_faces: int = 32
    device: str = "cpu"  # yolov8: cpu | cuda | cuda:0 ...
    half: bool = False  # yolov8: half-precision inference (on a cuda device only)
    threads: int = 1  # detector threads (0 = all cores); decode and encode use the other core
    # centerface: also look for faces too small for input_size (the frame enlarged twice on
    # every small_every-th detection while that finds faces, less often while it finds none,
    # and passes at small_region pixels around the small faces found in between;
    # bench/small_faces.py)
    small_faces: bool = True
    small_every: int = 4
    small_region: int = 256
    # threads of the enlarged look's own session (the loop waits for it, so a second core is
    # idle then); 1: it shares the detector's session (a batch worker of one thread)
    look_threads: int = 2


@dataclass
class TrackingSettings:
    detect_every: int = 4  # run the detector every N frames, the Kalman filter predicts between
    flow: bool = True  # follow each face by optical flow between detections (about 0.5 ms a face)
    # files: frames the detector may run ahead of tracking on its own thread (12: three
    # detections at detect_every 4, slack for the detector that every frame waits for;
    # bench/README.md, "Throughput")
    detect_ahead: int = 12
    match_iou: float = 0.2  # least IoU for a detection to continue a track
    match_distance: float = 1.0  # else: largest centre distance (face sizes) for a match
    birth_hits: int = 2  # matched detections before a track is confirmed
    max_misses: int = 3  # detection rounds a track survives without a match
    landmark_smoothing: float = 0.5  # EMA weight of a new landmark measurement (1 = no smoothing)
    process_noise: float = 1.0
    measurement_noise: float = 4.0
    scene_cut_threshold: float = 0.35  # histogram distance between frames that counts as a cut


@dataclass
class KeyframeSettings:
    max_age: int = 45  # frames before a patch is repainted even if nothing changed
    pose_change: float = 0.12  # yaw/pitch change (eye distances) that calls for a new patch
    scale_change: float = 0.25  # relative face-size change that calls for a new patch
    roll_change: float = 0.2  # radians
    # change of the lower face's look (median Lab distance over a 4x3 grid, 8-bit units) that
    # calls for a new patch: a covering put on or taken off mid-shot (0 = never)
    look_change: float = 25.0
    # share by which the carried patch's fit to the covering in view (the compositor's
    # covering_fit, on the frames the detector measured the face) may fall below the best it
    # measured before a new patch is painted: a camera move or a turn the pose, roll and
    # scale thresholds miss, under which the patch no longer lies on the covering (0 = never)
    fit_drop: float = 0.15
    # pending keyframe jobs; live, the newest job replaces the oldest when full; in files only
    # a job whose face is in view and has a patch is replaced (else the queue grows: held
    # frames wait for the others); a face's newer job replaces its pending one when more than
    # 4 times delay_frames later (live: always)
    queue_size: int = 4
    batch: int = 1  # faces painted in one call of the restorer (a GPU engine batches them)
    # frames held before compositing, so a fresh patch reaches them (0 = live); a patch asked
    # for on a head turn reaches the frames of the turn rather than arriving after it
    delay_frames: int = 16
    # files: niceness added to the keyframe worker's thread (Linux): the frame loop's detector
    # and encoder then run first on a busy CPU, and the worker paints in what is left while
    # the delay line holds the frames. 0 (as the loop) since every keyframe asked for is
    # painted: the work is the same, and a lagging worker leaves it for the end of the file,
    # on one core (bench/README.md, "A full queue in files"); live: always 0
    nice: int = 0
    crossfade_frames: int = 8  # frames over which a new patch fades in over the old one
    # between keyframes, bend the patch onto the face's mesh on the frames the detector
    # measured it (lostface.restore.follow; needs models.face_mesh), not only carry it by the
    # landmarks' similarity transform. Off: on covered faces the mesh found under the
    # covering bends the patch off it (turned faces keep slivers of the covering; the stage
    # clip's restored identity 0.453 against 0.414, bench/README.md "Face mesh")
    follow_mesh: bool = False
    # between keyframes, slide the carried patch (a shift of up to a fifth of the eye
    # distance) to where the frame's pixels look like its keyframe's covering, rather than
    # only where the tracked landmarks put it, and trim it above the nose tip to the covering
    # in view (lostface.restore.compositor, _slide and _recede)
    slide: bool = True


@dataclass
class MaskSettings:
    presence_threshold: float = 0.5  # score above which the lower face counts as covered
    # a face judged covered stays covered until its score falls this far below the threshold,
    # and one judged open needs this much above it (no flip-flop on a borderline face)
    presence_hysteresis: float = 0.08
    # a face judged open on its last keyframe and found covered with a score under this is
    # taken as covered only when its next keyframe (asked for at its next detection) agrees:
    # a microphone, a hand or a cup passing an open face's mouth on one keyframe is not
    # painted; a score this high or more turns it covered at once (0: always at once)
    confirm_below: float = 0.75
    # a face judged covered whose detection scored under this is painted only when a closer
    # look (CenterFace on the frame around it, enlarged) finds a face there: a hand holding
    # something out, a ceiling's fittings or an ear, found weakly as faces and judged covered,
    # are left as they are (lostface.tracking.detectors.CloserLook; 0: never looks closer)
    closer_look_below: float = 0.5
    # a face scoring within 0.08 of the threshold is judged by how far a neutral covering
    # moves it in dlib's embedding: little, covered; far, open (a face painted on its last
    # keyframe stays painted). Another look, independent of colour, at the faces the colour
    # evidence leaves in doubt (lostface.restore.segment; needs dlib)
    second_look: bool = True
    feather_radius: int = 6  # pixels (canonical space) of the soft mask edge
    dilate: int = 6  # pixels (canonical space) the covered region grows before feathering
    # cut the covered region along the covering's own edge (GrabCut on the face, keyframes only)
    refine: bool = True
    engine: str = "geometry"  # geometry (embedded) | sam (Segment Anything, models.sam)
    # sam: its region is used when its predicted IoU reaches sam_min_iou and it overlaps the
    # embedded segmenter's region by sam_min_agreement (IoU); else the embedded region stays
    sam_min_iou: float = 0.75
    sam_min_agreement: float = 0.5
    sam_reach: int = 12  # sam: canonical pixels its region may reach beyond the embedded one
    # faces narrower than this (frame pixels, from the landmarks' scale) are too small to
    # judge and are left as they are
    min_face: float = 36.0
    # keep the covered region inside the face mesh's outline (models.face_mesh; its points
    # follow the 5 landmarks handed to mask.engine)
    mesh: bool = True


@dataclass
class RestoreSettings:
    # reference (embedded; the neutral fill when no reference is given) | neutral | diffusion
    engine: str = "reference"
    # photos or folders of people: PATH (one unnamed person) or NAME=PATH (repeat a name's
    # photos in a folder)
    references: list[str] = field(default_factory=list)
    # diffusion: a trained identity (`lostface identity train`) to paint the person with
    identity: str = ""
    # refuse a reference photo whose face the segmenter (mask.engine) judges covered (from a
    # folder: skip it with a warning); such a photo would paint the covering back on
    check_references: bool = True
    # reference: paint a face from a person's references only when its visible upper face
    # matches theirs (dlib distance, both wearing the same neutral covering, averaged over the
    # track's keyframes): taken below identity_match, kept below identity_keep; a face that
    # matches nobody gets the neutral fill
    identity_gate: bool = True
    identity_match: float = 0.58
    identity_keep: float = 0.63
    # learn each person's face from the moments the footage shows them unmasked
    # (lostface.restore.selfref; needs the identity gate's dlib): auto | off. Files gather the
    # people in a first pass, so masked frames before the unmasked moment benefit too; live,
    # they are learned as the call goes on. People given as references take precedence.
    self_reference: str = "auto"
    self_per_person: int = 5  # references kept per person: the best of each head-pose band
    # files: the first pass looks at every N-th frame (0: every 3 * tracking.detect_every-th);
    # with N a multiple of tracking.detect_every the second pass reuses its detections
    self_scan_every: int = 0
    self_min_face: float = 60.0  # frame pixels (face width): smaller faces are not learned
    # a face joins a learned person only this close to their faces (dlib distance, as the
    # identity gate measures it): stricter than identity_match, since two people learned as
    # one would paint one with the other's mouth; a face further off starts a new person
    self_join: float = 0.45
    # alpha | poisson (the patch's gradients, the face's own colours at its border, mean kept)
    blend: str = "alpha"
    # reference: re-place it by matching its brows and eyes to the face's own (the landmarks a
    # detector finds on a masked face sit off, mostly too high)
    refine: bool = True
    mirror: bool = True  # reference: also use mirrored references (covers the opposite head turn)
    relight: bool = True  # compositor: follow the face's brightness between keyframes
    # reference: largest head-pose gap (yaw and pitch proxies, in eye distances) between a
    # face and its best reference; a face turned further gets the neutral fill instead
    max_pose_gap: float = 0.45
    # reference: blur it to the face's own sharpness, and fade it toward the smooth fill where
    # the face shows less contrast (dim, hazy) than the reference photo
    match_detail: bool = True
    # reference: the colour move from the reference's skin to the face's, measured around the
    # covering on each keyframe, is averaged with the face's earlier keyframes' moves from the
    # same photo, this one's share 1 - colour_memory (0: each keyframe on its own); the light
    # on a face changes more slowly than one keyframe's measure of it, which a hand, motion
    # blur, a turn into shade or the reference bent to another pose throws off. Dropped at a
    # scene cut and with the person
    colour_memory: float = 0.5
    # reference: warp the reference's lower face onto the face's own by their face meshes
    # (lostface.restore.mesh, models.face_mesh), piecewise (a thin-plate spline); without
    # the mesh model the 5 landmarks place it (one log line)
    mesh: bool = True


@dataclass
class UpscaleSettings:
    # resize (embedded: the canonical warp resamples the face's pixels) | realesrgan (x4, CPU)
    # | sd-x4 (Stable Diffusion x4 upscaler, models.upscale)
    engine: str = "resize"
    # faces whose canonical crop spans fewer frame pixels than this (its width; a face box about
    # 2/3 of it) are upscaled on keyframes before segmentation and restoration
    below: int = 96
    threads: int = 1  # realesrgan: CPU threads (the worker shares the CPU with the frame loop)
    steps: int = 4  # sd-x4: LCM steps
    noise_level: int = 20  # sd-x4: noise added to the small face (0-350; more: more invented)
    prompt: str = "a sharp photo of a face"  # sd-x4


@dataclass
class ModelSettings:
    """Where the full engines' models come from: each a hub id (downloaded once by `lostface
    models pull`, then read from the cache) or a local folder or file."""

    inpaint: str = "stable-diffusion-v1-5/stable-diffusion-inpainting"  # a diffusers folder
    upscale: str = "stabilityai/stable-diffusion-x4-upscaler"  # upscale.engine = "sd-x4"
    # mask.engine = "sam": a segment-anything (vit_b, vit_l, vit_h) or MobileSAM (vit_t)
    # checkpoint, a local .pth/.pt file or a hub file such as owner/repo/sam_vit_b_01ec64.pth
    sam: str = ""
    # LCM-LoRA fused into the inpainting model for few-step sampling; empty when the inpainting
    # model is LCM-distilled itself
    lcm_lora: str = "latent-consistency/lcm-lora-sdv1-5"
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
    # auto (float16 on a GPU, float32 on the CPU) | float16 | bfloat16 | float32
    dtype: str = "auto"
    # a GPU named in models.device but absent: run on the CPU with a warning (false: stop)
    cpu_fallback: bool = True
    cache: str = ""  # folder of downloaded models; empty: the Hugging Face cache
    # the face mesh model file (MediaPipe's face_landmark.tflite, fetched from PyPI by `lostface
    # models pull models.face_mesh`); empty: $LOSTFACE_MODELS or ~/.cache/lostface
    face_mesh: str = ""


@dataclass
class DiffusionSettings:
    """restore.engine = "diffusion": Stable Diffusion inpainting with an LCM scheduler."""

    steps: int = 4  # LCM steps per keyframe (2 to 8)
    size: int = 512  # width of the face crop the model paints (height keeps the crop's 8:9)
    guidance: float = 1.0  # classifier-free guidance scale (1: none; LCM-LoRA wants 1 to 2)
    prompt: str = "a photo of a person's face, natural skin, relaxed mouth, sharp focus"
    negative_prompt: str = "face mask, covering, fabric, hand, blurry, deformed"
    # what a face's first keyframe starts from: noise | reference (the embedded reference
    # restorer's painting, noised to init_strength; its neutral fill when no photo is given)
    init: str = "reference"
    init_strength: float = 0.8  # 1: pure noise, whatever init says
    # between a face's keyframes: reuse (the last keyframe's latents, noised again to
    # reuse_strength) | fixed-noise (the same noise per face) | fresh (new noise each time)
    temporal: str = "reuse"
    reuse_strength: float = 0.6
    soft: bool = True  # soft inpainting: the feathered mask stays continuous inside the loop
    seed: int = 0
    # on a CUDA device, the UNet and VAE calls replay CUDA graphs recorded per input shape
    # (lostface.generative.graphs): a keyframe is bound by kernel launches, not by the GPU
    cuda_graphs: bool = True


@dataclass
class IdentitySettings:
    """`lostface identity train`: a LoRA of the inpainting model learnt from photos of one
    person (DreamBooth: the person bound to a rare token, e.g. "a photo of sks person")."""

    dir: str = ""  # where identities are kept; empty: $XDG_DATA_HOME/lostface/identities
    token: str = "sks"  # a rare word of the tokenizer's vocabulary
    class_word: str = "person"  # person | man | woman | ... (what the token is a kind of)
    steps: int = 400  # training steps
    rank: int = 16  # LoRA rank
    learning_rate: float = 1e-4
    batch: int = 1
    size: int = 512  # width of the training crops (height keeps the face crop's 8:9)
    # prior preservation: half the steps teach the class prompt to stay as the base model
    # paints it (so "person" does not turn into this person)
    prior_preservation: bool = False
    text_encoder: bool = False  # also train a LoRA of the text encoder
    weight: float = 1.0  # the identity LoRA's weight when painting
    seed: int = 0


@dataclass
class BatchSettings:
    """`lostface batch`: long files are cut into segments processed in parallel."""

    segment_seconds: float = 60.0  # cut at the keyframe nearest each multiple (0: never cut)
    overlap_seconds: float = 3.0  # a segment's pipeline starts this much before it (warm-up)


@dataclass
class VideoSettings:
    codec: str = "auto"  # auto: H.264 (VP9 in .webm), or any PyAV encoder name
    preset: str = "veryfast"
    crf: int = 20
    pix_fmt: str = "yuv420p"
    threads: int = 0  # encoder threads, 0 = codec default
    queue_size: int = 16  # decoded and to-be-encoded frames in flight
    # keep the input's audio: copied where the container holds its codec, else re-encoded
    # (Opus in .webm, AAC elsewhere); false (--no-audio) writes video only
    audio: bool = True
    # odd picture sizes: false pads them by one pixel to even (4:2:0, which browsers and
    # phones play); true keeps them exactly (4:4:4, which many players do not)
    exact_size: bool = False


@dataclass
class OutputSettings:
    debug_overlay: bool = False
    progress: bool = True  # progress bar on a terminal
    write_config: bool = True  # save the resolved configuration beside the output


@dataclass
class LiveSettings:
    badge: bool = True  # draw "AI-restored" on live output: viewers should know the face is painted
    host: str = "127.0.0.1"  # serve: address to bind; any other than loopback needs a token
    port: int = 8080
    token: str = ""  # serve: shared secret the page and POST /offer must present
    tls_cert: str = ""  # serve: PEM certificate (browsers share cameras only on secure origins)
    tls_key: str = ""  # serve: PEM private key of tls_cert
    max_sessions: int = 2  # serve: concurrent WebRTC sessions; more get 503
    max_offer_bytes: int = 65536  # serve: larger POST /offer bodies get 413
    connect_timeout: float = 15.0  # serve: seconds a new peer has to connect, else it is let go
    # serve: seconds a connected peer has to send its first frame (a silent one holds a slot)
    first_frame_timeout: float = 10.0
    idle_timeout: float = 10.0  # serve: seconds without a frame after which a peer has vanished
    # serve: Host names besides the bound address (and localhost on loopback) the server
    # answers to; any other name is refused (DNS rebinding)
    allowed_hosts: list[str] = field(default_factory=list)
    # serve: web origins (https://app.example.org) besides the page's own allowed to POST /offer
    allowed_origins: list[str] = field(default_factory=list)
    ice_servers: list[str] = field(default_factory=list)  # stun:/turn: URLs; empty = none
    ice_username: str = ""  # turn: credentials
    ice_credential: str = ""
    camera: str = "0"  # webcam index or device path
    camera_width: int = 640
    camera_height: int = 480
    camera_fps: float = 30.0
    vcam_device: str = ""  # virtual camera device (e.g. /dev/video10); empty = the first one
    stream_bitrate: int = 2_000_000  # --stream: x264 bits/s
    background_detection: bool = True  # detect on a thread beside the frame loop (see live.py)


@dataclass
class ProvenanceSettings:
    """How outputs say that their faces were painted (lostface.provenance; `lostface verify`
    reads it back)."""

    # an invisible 32-bit mark in every frame where a face was painted (files, photos and live
    # output alike); lostface verify reads it back
    watermark: bool = True
    # "frame": a spread-spectrum mark in the whole frame's brightness, no pixel moved by more
    # than 2 levels (lostface.provenance.framemark); "faces": RivaGAN's learned mark in every
    # painted patch, which spans the face's crop and so changes the visible eyes and brows too,
    # and is lost when the file is scaled to half size (bench/provenance.py)
    engine: str = "frame"
    # the mark's run id (3 hex digits); empty: a new random one per run, saved with the config
    run_id: str = ""
    amplitude: float = 2.0  # frame: the mark's strength in levels (clipped at 2; less in the dark)
    strength: float = 2.0  # faces: RivaGAN's residual scaled (1: as trained)
    metadata: bool = True  # files: a tag in the container (comment) or the photo (PNG/JPEG)
    c2pa: bool = False  # files: signed C2PA content credentials (needs cert and key)
    cert: str = ""  # PEM certificate chain (signing certificate first) for c2pa
    key: str = ""  # PEM private key of cert (unencrypted)


@dataclass
class Settings:
    detect: DetectSettings = field(default_factory=DetectSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    keyframe: KeyframeSettings = field(default_factory=KeyframeSettings)
    mask: MaskSettings = field(default_factory=MaskSettings)
    restore: RestoreSettings = field(default_factory=RestoreSettings)
    upscale: UpscaleSettings = field(default_factory=UpscaleSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    diffusion: DiffusionSettings = field(default_factory=DiffusionSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    batch: BatchSettings = field(default_factory=BatchSettings)
    video: VideoSettings = field(default_factory=VideoSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    live: LiveSettings = field(default_factory=LiveSettings)
    provenance: ProvenanceSettings = field(default_factory=ProvenanceSettings)


PRESETS = ("cpu", "gpu")
_ICE_SCHEMES = ("stun", "stuns", "turn", "turns")
MIN_TOKEN_LENGTH = 16
_ORIGIN = re.compile(r"^https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")
_HOST_NAME = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)$")


def _check_type(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"Setting {key} must be a list, got {value!r}.")
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _check_type(key, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"Setting {key} has the wrong type: {value!r}.")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"Setting {key} must be empty.")
        return None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"Setting {key} must be true or false, got {value!r}.")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"Setting {key} must be a whole number, got {value!r}.")
    if not isinstance(value, tp):
        raise ConfigError(f"Setting {key} must be a {tp.__name__}, got {value!r}.")
    return value


# settings of earlier versions: a saved configuration that uses them is told the new name
RENAMED = {
    "detect.backend": "detect.engine",
    "mask.backend": "mask.engine",
    "restore.backend": "restore.engine",
    "restore.upscale": "upscale.engine",
}


def _merge(obj: Any, data: dict, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if path in RENAMED:
            raise ConfigError(f"Setting {path} is now called {RENAMED[path]}; rename it.")
        if key not in names:
            raise ConfigError(
                f"Unknown setting {path}; known settings here: {', '.join(sorted(names))}."
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"Setting {path} is a section; give keys like {path}.<name>=...")
            _merge(current, value, path + ".")
        else:
            setattr(obj, key, _check_type(path, value, hints[key]))


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word is a string: --set detect.engine=yolov8


def parse_override(item: str) -> dict:
    """'a.b=value' -> {'a': {'b': value}} with the value read as TOML (bare words are strings)."""
    if "=" not in item:
        raise ConfigError(
            f"Override {item!r} is not key=value; write e.g. tracking.detect_every=2."
        )
    key, text = item.split("=", 1)
    parts = [p.strip() for p in key.strip().split(".") if p.strip()]
    if not parts:
        raise ConfigError(f"Override {item!r} has no key; write e.g. tracking.detect_every=2.")
    out: dict = {parts[-1]: _parse_value(text.strip())}
    for p in reversed(parts[:-1]):
        out = {p: out}
    return out


def load_preset(name: str) -> dict:
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}.")
    text = resources.files("lostface.config").joinpath("presets", f"{name}.toml").read_text()
    return tomllib.loads(text)


def load_settings(
    preset: str = "cpu", config_file: str | Path | None = None, overrides: list[str] | None = None
) -> Settings:
    """Preset, then the user's TOML file, then --set overrides, each over the last."""
    settings = Settings()
    _merge(settings, load_preset(preset))
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist; check the --config path.")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"Config file {path} is not valid TOML ({exc}); fix the line it names."
            ) from None
        _merge(settings, data)
    for item in overrides or []:
        _merge(settings, parse_override(item))
    validate(settings)
    from lostface.registry import check_engines  # engine names are the registry's to know

    check_engines(settings)
    return settings


def settings_from_toml(text: str) -> Settings:
    """Settings from a resolved configuration's TOML (dump_toml's output, e.g. sent to a batch
    worker): every key over the defaults, checked as load_settings checks them."""
    settings = Settings()
    try:
        _merge(settings, tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Settings are not valid TOML ({exc}).") from None
    validate(settings)
    from lostface.registry import check_engines

    check_engines(settings)
    return settings


def validate(s: Settings) -> None:
    """Range checks that types alone do not catch."""
    checks = [
        (s.tracking.detect_every >= 1, "tracking.detect_every must be 1 or more"),
        (s.tracking.detect_ahead >= 0, "tracking.detect_ahead must be 0 or more"),
        (0 < s.detect.threshold < 1, "detect.threshold must lie between 0 and 1"),
        (0 < s.detect.track_threshold < 1, "detect.track_threshold must lie between 0 and 1"),
        (s.detect.input_size >= 64, "detect.input_size must be 64 pixels or more"),
        (s.detect.look_threads >= 1, "detect.look_threads must be 1 or more"),
        (
            not s.detect.half or s.detect.device.startswith("cuda"),
            "detect.half needs a cuda detect.device (half precision runs on the GPU only)",
        ),
        (s.keyframe.queue_size >= 1, "keyframe.queue_size must be 1 or more"),
        (s.keyframe.batch >= 1, "keyframe.batch must be 1 or more"),
        (s.keyframe.delay_frames >= 0, "keyframe.delay_frames must be 0 or more"),
        (0 <= s.keyframe.nice <= 19, "keyframe.nice must be 0 to 19"),
        (s.keyframe.look_change >= 0, "keyframe.look_change must be 0 or more (0: never)"),
        (0 <= s.keyframe.fit_drop < 1, "keyframe.fit_drop must lie between 0 (never) and 1"),
        (
            0 <= s.restore.colour_memory < 1,
            "restore.colour_memory must lie between 0 (each keyframe on its own) and 1",
        ),
        (s.mask.feather_radius >= 0, "mask.feather_radius must be 0 or more"),
        (0 <= s.mask.confirm_below <= 1, "mask.confirm_below must lie between 0 and 1"),
        (
            0 <= s.mask.closer_look_below <= 1,
            "mask.closer_look_below must lie between 0 and 1",
        ),
        (s.upscale.below >= 0, "upscale.below must be 0 or more"),
        (s.upscale.threads >= 1, "upscale.threads must be 1 or more"),
        (1 <= s.upscale.steps <= 50, "upscale.steps must lie between 1 and 50"),
        (0 <= s.upscale.noise_level <= 350, "upscale.noise_level must lie between 0 and 350"),
        (
            s.models.dtype in ("auto", "float16", "bfloat16", "float32"),
            "models.dtype must be auto, float16, bfloat16 or float32",
        ),
        (
            s.models.device in ("auto", "cpu", "cuda", "mps")
            or s.models.device.startswith("cuda:"),
            "models.device must be auto, cpu, cuda, cuda:N or mps",
        ),
        (1 <= s.diffusion.steps <= 50, "diffusion.steps must lie between 1 and 50"),
        (
            128 <= s.diffusion.size <= 1024 and s.diffusion.size % 64 == 0,
            "diffusion.size must be a multiple of 64 between 128 and 1024",
        ),
        (s.diffusion.guidance >= 1.0, "diffusion.guidance must be 1 or more"),
        (s.identity.steps >= 1 and s.identity.batch >= 1, "identity.steps, batch must be 1+"),
        (s.identity.rank >= 1, "identity.rank must be 1 or more"),
        (
            s.batch.segment_seconds >= 0 and s.batch.overlap_seconds >= 0,
            "batch.segment_seconds and batch.overlap_seconds must be 0 or more",
        ),
        (s.identity.learning_rate > 0, "identity.learning_rate must be positive"),
        (
            128 <= s.identity.size <= 1024 and s.identity.size % 64 == 0,
            "identity.size must be a multiple of 64 between 128 and 1024",
        ),
        (s.diffusion.init in ("noise", "reference"), "diffusion.init must be noise or reference"),
        (
            s.diffusion.temporal in ("reuse", "fixed-noise", "fresh"),
            "diffusion.temporal must be reuse, fixed-noise or fresh",
        ),
        (
            0 < s.diffusion.init_strength <= 1 and 0 < s.diffusion.reuse_strength <= 1,
            "diffusion.init_strength and diffusion.reuse_strength must lie in (0, 1]",
        ),
        (s.restore.blend in ("poisson", "alpha"), "restore.blend must be poisson or alpha"),
        (
            s.restore.self_reference in ("auto", "off"),
            "restore.self_reference must be auto or off",
        ),
        (
            s.restore.self_per_person >= 1 and s.restore.self_scan_every >= 0,
            "restore.self_per_person must be 1 or more, restore.self_scan_every 0 or more",
        ),
        (0 <= s.video.crf <= 51, "video.crf must lie between 0 and 51"),
        (1 <= s.live.port <= 65535, "live.port must lie between 1 and 65535"),
        (s.live.max_sessions >= 1, "live.max_sessions must be 1 or more"),
        (s.live.max_offer_bytes >= 1024, "live.max_offer_bytes must be 1024 or more"),
        (
            min(s.live.connect_timeout, s.live.first_frame_timeout, s.live.idle_timeout) > 0,
            "live.connect_timeout, first_frame_timeout and idle_timeout must be positive",
        ),
        (
            not s.live.token or len(s.live.token) >= MIN_TOKEN_LENGTH,
            f"live.token (--token) has {len(s.live.token)} characters and must have "
            f"{MIN_TOKEN_LENGTH} or more (a short secret can be guessed); make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(24))'",
        ),
        (
            all(_HOST_NAME.match(h) for h in s.live.allowed_hosts),
            'live.allowed_hosts must hold bare host names or addresses, e.g. ["mybox.lan"]',
        ),
        (
            all(_ORIGIN.match(o) for o in s.live.allowed_origins),
            'live.allowed_origins must hold origins such as "https://app.example.org" '
            "(scheme, host and optional port; no path)",
        ),
        (
            s.live.camera_width > 0 and s.live.camera_height > 0 and s.live.camera_fps > 0,
            "live.camera_width, camera_height and camera_fps must be positive",
        ),
        (
            bool(s.live.tls_cert) == bool(s.live.tls_key),
            "live.tls_cert and live.tls_key must be given together",
        ),
        (
            all(u.split(":", 1)[0] in _ICE_SCHEMES for u in s.live.ice_servers),
            "live.ice_servers must hold stun:, stuns:, turn: or turns: URLs",
        ),
        (s.live.stream_bitrate >= 100_000, "live.stream_bitrate must be 100000 or more"),
        (
            bool(s.provenance.cert) == bool(s.provenance.key),
            "provenance.cert and provenance.key must be given together",
        ),
        (
            not s.provenance.c2pa or bool(s.provenance.cert),
            "provenance.c2pa needs provenance.cert and provenance.key (a PEM certificate chain "
            "and its private key)",
        ),
        (
            0.25 <= s.provenance.strength <= 4.0,
            "provenance.strength must lie between 0.25 and 4",
        ),
        (
            s.provenance.engine in ("frame", "faces"),
            f"provenance.engine must be frame or faces, not {s.provenance.engine!r}",
        ),
        (
            0.5 <= s.provenance.amplitude <= 3.0,
            "provenance.amplitude must lie between 0.5 and 3 (levels)",
        ),
        (
            _is_run_id(s.provenance.run_id),
            "provenance.run_id must be empty or 1 to 3 hex digits (such as 5a3)",
        ),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg + ".")


def _is_run_id(text: str) -> bool:
    return text == "" or (len(text) <= 3 and all(c in "0123456789abcdefABCDEF" for c in text))


def to_dict(settings: Settings) -> dict:
    return dataclasses.asdict(settings)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def dump_toml(settings: Settings) -> str:
    """The resolved settings as TOML (round-trips through load_settings' config file)."""
    lines = []
    for section, values in to_dict(settings).items():
        lines.append(f"[{section}]")
        for k, v in values.items():
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    return "\n".join(lines)
