"""Marking what is painted: the invisible watermark, the metadata tag, C2PA content
credentials, and `lostface verify`, on real footage and photos."""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from lostface.config import load_settings
from lostface.errors import ConfigError, ModelError
from lostface.provenance import metadata
from lostface.provenance.verify import FaceRead, chance, follow, judge
from lostface.provenance.watermark import (
    HEADER,
    MARK,
    SEGMENT,
    VERSION,
    payload_bits,
    split_payload,
)
from tests.conftest import ROOT, shared_path

# imwatermark is never imported (its wrapper needs torch): lostface loads its two ONNX files
_MISSING = [
    m for m in ("imwatermark", "c2pa", "cryptography") if importlib.util.find_spec(m) is None
]
if _MISSING:
    pytest.skip(
        f"needs the provenance extra (missing: {', '.join(_MISSING)}): "
        "pip install 'lostface[provenance]'",
        allow_module_level=True,
    )

ENV = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lostface.cli", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def _verify(*paths: Path) -> tuple[int, list[dict]]:
    proc = _cli("verify", "--json", "-q", *map(str, paths))
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


def _run_id_close(wm: dict, want: int = 0x5A3, max_off: int = 3) -> bool:
    """The run id read (RivaGAN's from many faces, each read at 60-80 % of bits: within 3 bits
    of 12)."""
    return bin(int(wm["payload"]["run_id"], 16) ^ want).count("1") <= max_off


def _one_sentence(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("lostface: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def transcode(src: Path, dst: Path, scale: float = 1.0, crf: int = 20, cut: float = 0.0) -> None:
    """Re-encode with H.264 (no metadata carried over), optionally scaled or cut to the middle
    `cut` seconds, as a viewer's tools would."""
    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        v = i.streams.video[0]
        rate = v.average_rate
        w = int(v.codec_context.width * scale) // 2 * 2
        h = int(v.codec_context.height * scale) // 2 * 2
        s = o.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.options = {"crf": str(crf), "preset": "veryfast"}
        frames = [f.to_ndarray(format="bgr24") for f in i.decode(v)]
        if cut:
            keep = int(round(cut * float(rate)))
            start = (len(frames) - keep) // 2
            frames = frames[start : start + keep]
        for k, img in enumerate(frames):
            if scale != 1.0:
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
            g = av.VideoFrame.from_ndarray(img, format="bgr24")
            g.pts = k
            for p in s.encode(g):
                o.mux(p)
        for p in s.encode(None):
            o.mux(p)


# --- certificates made here (C2PA needs a CA-issued signing certificate) ---------------------


def make_certificates(folder: Path, *, days: int = 30, expired: bool = False) -> dict[str, Path]:
    """A self-signed test CA and a signing certificate it issued (EC P-256), as C2PA wants
    them: key usage digitalSignature, extended key usage emailProtection, key identifiers."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    start = now - datetime.timedelta(days=60 if expired else 1)
    end = now - datetime.timedelta(days=1) if expired else now + datetime.timedelta(days=days)

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lostface tests"),
            ]
        )

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(sign, False, False, False, False, not sign, not sign, False, False)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("lostface test CA"))
        .issuer_name(name("lostface test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage(False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("lostface test signer"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    folder.mkdir(parents=True, exist_ok=True)
    cert = folder / "chain.pem"
    cert.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    key_path = folder / "key.pem"
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    other = folder / "other_key.pem"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return {"cert": cert, "key": key_path, "other_key": other}


def _c2pa_sets(certs: dict[str, Path]) -> list[str]:
    return [
        "--set",
        "provenance.c2pa=true",
        "--set",
        f'provenance.cert="{certs["cert"]}"',
        "--set",
        f'provenance.key="{certs["key"]}"',
    ]


# --- payload, decision, model files --------------------------------------------------------


def test_payload_holds_mark_version_and_run_id():
    bits = payload_bits(0x5A3)
    assert bits.shape == (32,) and set(bits.tolist()) <= {0, 1}
    assert split_payload(bits) == (MARK, VERSION, 0x5A3)
    assert HEADER.size == 20 and np.array_equal(HEADER, bits[:20])  # the mark and the version
    with pytest.raises(ValueError):
        payload_bits(1 << 12)


def _read(frame: int, x: float, bits: np.ndarray, rng: np.random.Generator) -> FaceRead:
    logits = np.where(bits > 0, 2.0, -2.0) + rng.normal(0, 0.1, 32)
    return FaceRead(frame, np.array([x, 10.0, x + 50.0, 70.0]), logits.astype(np.float32))


def test_chance_is_exact():
    """With equal weights the test is the binomial tail: 17 of 20 signs right by chance."""
    ones = np.ones(20)
    assert chance(ones, 2 * 17 - 20) == pytest.approx(1351 / 2**20)
    assert chance(ones, 20) == pytest.approx(2**-20)
    # a sure bit counts more than an unsure one: 19 right, the wrong one barely negative
    w = np.full(20, 3.0)
    w[0] = 0.1
    assert chance(w, 19 * 3.0 - 0.1) == pytest.approx(2 / 2**20)


def test_judge_follows_faces_and_is_not_fooled_by_a_steady_face():
    rng = np.random.default_rng(0)
    marked = payload_bits(0x123)
    # one marked face (the payload and its complement in turns of SEGMENT frames, as the
    # compositor shows them), sampled every second frame from frame 5, beside 3 unmarked faces
    reads = []
    frames = range(5, 5 + 2 * 16, 2)
    for f in frames:
        turn = ((f - 5) // SEGMENT) % 2
        reads.append(_read(f, 0.0, marked if turn == 0 else 1 - marked, rng))
        for k in range(3):
            reads.append(_read(f, 100.0 * (k + 1), rng.integers(0, 2, 32), rng))
    groups = follow(reads)
    assert len(groups) == 4 and all(len(g) == 16 for g in groups)
    r = judge(reads, 16)
    assert r.found and r.run_id == 0x123 and r.tracks == 4 and r.header_errors == 0
    assert r.marked_faces == 16 and r.share == pytest.approx(0.25)
    # an unmarked face that reads the lostface header in every frame (its picture biases the
    # decoder that way, the same in every frame): the turns cancel it, not found
    same = [_read(f, 0.0, marked, rng) for f in range(0, 120, 2)]
    assert not judge(same, 60).found
    # a photo (one frame, no turns): one face whose 19 header bits match, 1 in 50,000 by
    # chance, is enough; 16 (1 in 170) is not
    near = marked.copy()
    near[2] ^= 1
    assert judge([_read(0, 0.0, near, rng)], 1).found
    near[[5, 7, 11]] ^= 1
    assert not judge([_read(0, 0.0, near, rng)], 1).found


def test_rivagan_files_are_checked_by_checksum(tmp_path, monkeypatch):
    from lostface import models

    enc, dec = models.rivagan_paths()
    assert enc.name == "rivagan_encoder.onnx" and dec.name == "rivagan_decoder.onnx"
    fake = tmp_path / "imwatermark"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    shutil.copy(enc, fake / enc.name)
    data = bytearray(dec.read_bytes())
    data[-1] ^= 0xFF
    (fake / dec.name).write_bytes(bytes(data))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelError, match="checksum differs"):
        models.rivagan_paths()
    (fake / dec.name).unlink()
    with pytest.raises(ModelError, match="is missing"):
        models.rivagan_paths()


def test_settings_validate_provenance():
    s = load_settings()
    assert s.provenance.watermark and s.provenance.engine == "frame"
    assert s.provenance.metadata and not s.provenance.c2pa
    with pytest.raises(ConfigError, match="provenance.engine must be frame or faces"):
        load_settings(overrides=['provenance.engine="patch"'])
    with pytest.raises(ConfigError, match="provenance.amplitude"):
        load_settings(overrides=["provenance.amplitude=4.0"])
    with pytest.raises(ConfigError, match="provenance.c2pa needs provenance.cert"):
        load_settings(overrides=["provenance.c2pa=true"])
    with pytest.raises(ConfigError, match="given together"):
        load_settings(overrides=['provenance.cert="/x.pem"'])
    with pytest.raises(ConfigError, match="run_id"):
        load_settings(overrides=['provenance.run_id="xyz1"'])


# --- a marked patch, read back from the frame it was composited into -------------------------


def test_patch_mark_is_read_from_the_composited_face():
    from lostface.factory import build_detector
    from lostface.frame import FaceTrack, Patch
    from lostface.provenance import shared_rivagan
    from lostface.provenance.verify import WatermarkReader
    from lostface.provenance.watermark import PatchMarker
    from lostface.restore import align
    from lostface.restore.compositor import PatchCompositor

    image = cv2.imread(str(shared_path("identity", "stage_clip_reference.png")))
    settings = load_settings()
    detector = build_detector(settings)
    lm = detector.detect(image).landmarks[0]
    m = align.to_canonical(lm)
    crop = align.warp_to_canonical(image, m)
    alpha = np.zeros(align.CANON_SHAPE, np.float32)
    alpha[170:260, 50:206] = 1.0  # a painted mouth and chin
    marker = PatchMarker(shared_rivagan(), 0x2B7)
    span = align.CANON_SIZE / align.scale_of(m)  # frame pixels the face's crop spans
    patch = Patch(0, 0, crop, alpha, m, mark=marker.residual(crop, span))
    out = image.copy()
    box = detector.detect(image).boxes[0]
    PatchCompositor(settings).composite(out, FaceTrack(0, box, lm), patch)
    changed = np.any(out != image, axis=2)
    assert changed.any()
    psnr = cv2.PSNR(out, image)
    assert psnr > 40.0, psnr
    reader = WatermarkReader(detector, shared_rivagan())
    got = judge(reader.read_image(out, jitter=True), 1)
    assert got.found and got.header_errors <= 1  # one face: 19 of the 20 header bits suffice
    assert bin(got.run_id ^ 0x2B7).count("1") <= 3  # ... and the run id may lose a bit or two
    assert not judge(reader.read_image(image, jitter=True), 1).found


# --- files: run, transform, verify -------------------------------------------------------------


@pytest.fixture(scope="module")
def restored(tmp_path_factory) -> dict[str, Path]:
    """The first 150 frames (5 s) of the stage clip with synthetic masks, restored by
    `lostface run` (the default frame watermark, signed with a test certificate), restored
    with RivaGAN's mark in the faces (provenance.engine "faces"), and what a viewer's tools
    make of each."""
    from lostface.demo import mask_video
    from lostface.factory import build_detector

    src = shared_path("video", "stage_clip.mp4")
    ref = shared_path("identity", "stage_clip_reference.png")
    root = tmp_path_factory.mktemp("provenance")
    head = root / "head.mp4"
    with av.open(str(src)) as i, av.open(str(head), "w") as o:
        v = i.streams.video[0]
        s = o.add_stream("libx264", rate=v.average_rate)
        s.width, s.height, s.pix_fmt = v.codec_context.width, v.codec_context.height, "yuv420p"
        s.codec_context.options = {"crf": "18", "preset": "veryfast"}
        for k, f in enumerate(i.decode(v)):
            if k >= 150:
                break
            g = av.VideoFrame.from_ndarray(f.to_ndarray(format="bgr24"), format="bgr24")
            g.pts = k
            for p in s.encode(g):
                o.mux(p)
        for p in s.encode(None):
            o.mux(p)
    settings = load_settings(overrides=["output.progress=false"])
    masked = root / "masked.mp4"
    mask_video(head, masked, settings, build_detector(settings), "surgical")
    certs = make_certificates(root / "certs")
    out = root / "restored.mp4"
    proc = _cli(
        "run", str(masked), "-o", str(out), "-r", str(ref), "-q", "--set",
        'provenance.run_id="5a3"', *_c2pa_sets(certs),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # RivaGAN's mark in the faces, in this process with keyframes painted in the frame loop
    # (synchronous), so what its tests read does not depend on thread timing
    from lostface.factory import build_stages
    from lostface.provenance import OutputProvenance
    from lostface.runner import process_video

    sync_settings = load_settings(
        overrides=["output.progress=false", 'provenance.run_id="5a3"', 'provenance.engine="faces"']
    )
    stages = build_stages(sync_settings, [ref], detector=build_detector(sync_settings))
    sync = root / "faces.mp4"
    provenance = OutputProvenance.from_settings(sync_settings, sync)
    process_video(masked, sync, sync_settings, stages, synchronous=True, provenance=provenance)
    paths = {"masked": masked, "restored": out, "faces": sync, "head": head, "root": root, **certs}
    transcode(masked, root / "plain.mp4")
    paths["plain"] = root / "plain.mp4"
    for engine, src in (("", out), ("faces_", sync)):
        for name, kw in (
            ("crf28", {"crf": 28}),
            ("half", {"scale": 0.5}),
            ("cut3s", {"cut": 3.0}),
        ):
            dst = root / f"{engine}{name}.mp4"
            transcode(src, dst, **kw)
            paths[engine + name] = dst
    return paths


def test_restored_clip_carries_tag_and_credentials(restored):
    code, [row] = _verify(restored["restored"])
    assert code == 0, row
    assert row["marked"] and row["kind"] == "video"
    assert "painted by lostface" in row["tag"]
    assert metadata.parse_tag(row["tag"]) is not None
    c2pa = row["c2pa"]
    assert c2pa["valid"] and c2pa["state"] in ("Valid", "Trusted")
    assert "c2pa.edited" in c2pa["actions"]
    assert any(
        t.endswith("compositeWithTrainedAlgorithmicMedia") for t in c2pa["digital_source_types"]
    )
    config = restored["restored"].with_name("restored.mp4.lostface.toml").read_text()
    assert 'run_id = "5a3"' in config  # the saved configuration repeats the mark


@pytest.mark.parametrize("name", ["restored", "crf28", "half", "cut3s"])
def test_frame_watermark_survives_what_viewers_do_to_files(restored, name):
    """The default watermark, directly, after H.264 at CRF 28, after scaling to half size and
    in the middle 3 s: found with the run id, from the frames alone. (Halved and at CRF 28 at
    once, this 5 s clip reads about at the verdict's level: bench/provenance.py.)"""
    code, [row] = _verify(restored[name])
    if name != "restored":
        assert row["tag"] is None and not row["c2pa"]["present"]  # only the watermark is left
    wm = row["watermark"]
    assert code == 0, row
    assert wm["engine"] == "frame" and wm["found"] and wm["chance"] <= 1e-4, wm
    # the verdict rests on the 20 header bits together; a bit of the run id may slip alone
    assert wm["header_errors"] <= 2 and _run_id_close(wm, max_off=2), wm
    assert wm["z"] > 5.5, wm  # clear of the verdict's level (z about 4.5)


# bench/README.md, Provenance: on the stage clip (faces about 50 pixels wide) RivaGAN's mark in
# the faces reads at a chance of 1e-3 to 2e-2 in these two, around and above the 1e-3 verdict;
# as written it reads at 3e-4 to 1.1e-3, as what the restorer paints moves it
SHORT_OF_TARGET = {
    "faces": "target met with little margin: as written this 5 s clip reads at chance 3e-4 to "
    "1.1e-3 with the painted patches' colour (restore.colour_memory 0-0.7)",
    "faces_cut3s": "target met with little margin: the middle 3 s read at chance ~5e-4 to 1e-3",
    "faces_crf28": "target not met reliably: after H.264 at CRF 28 the mark reads at ~1e-3",
    "faces_half": "target not met: after halving, the faces are ~25 pixels wide (chance ~1e-2)",
}


@pytest.mark.parametrize("name", ["faces", "faces_cut3s", "faces_crf28", "faces_half"])
def test_faces_watermark_survives_what_viewers_do_to_files(restored, name):
    """provenance.engine "faces" (RivaGAN in the painted patches): directly, from the middle
    3 s (renumbered from frame 0: the turns are found from the reads), after H.264 at CRF 28 and
    after scaling to half size. Where the issue's verdict is not reached (SHORT_OF_TARGET) the
    evidence must still stand far from unmarked clips' (test_unmarked_clips_are_not_marked),
    and the shortfall is reported as an xfail."""
    code, [row] = _verify(restored[name])
    wm = row["watermark"]
    if name in SHORT_OF_TARGET and not wm["found"]:
        pytest.xfail(f"{SHORT_OF_TARGET[name]}")
    assert code == 0, row
    assert wm["engine"] == "faces" and wm["found"] and _run_id_close(wm), wm
    assert wm["marked_faces"] > 0 and wm["chance"] <= 1e-3


def test_unmarked_clips_are_not_marked(restored):
    code, rows = _verify(restored["plain"], restored["head"], restored["masked"])
    assert code == 1
    for row in rows:
        assert not row["marked"], row
        assert not row["watermark"]["found"] and row["tag"] is None
        assert row["watermark"]["engine"] == "frame"  # RivaGAN found nothing either
        assert row["watermark"]["chance"] > 1e-2  # far from the marked files' evidence


def test_clip_lostface_left_untouched_is_not_marked(tmp_path):
    """An unmasked face, panned over 3 s: lostface paints nothing, so it writes no tag, no
    manifest and no watermark (and says so)."""
    photo = cv2.imread(str(shared_path("identity", "stage_clip_reference.png")))
    h, w = photo.shape[:2]
    clip = tmp_path / "open.mp4"
    with av.open(str(clip), "w") as o:
        s = o.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 480, 360, "yuv420p"
        for k in range(90):
            x = int((w - 480 * h / 360) * k / 89) if w > 480 * h / 360 else 0
            view = photo[:, x : x + int(480 * h / 360)] if x else photo
            g = av.VideoFrame.from_ndarray(cv2.resize(view, (480, 360)), format="bgr24")
            g.pts = k
            for p in s.encode(g):
                o.mux(p)
        for p in s.encode(None):
            o.mux(p)
    out = tmp_path / "out.mp4"
    tracks = tmp_path / "tracks.jsonl"
    proc = _cli("run", str(clip), "-o", str(out), "--tracks", str(tracks), "-q")
    assert proc.returncode == 0, proc.stderr
    faces = [f for line in tracks.read_text().splitlines() for f in json.loads(line)["faces"]]
    assert faces and not any(f["masked"] for f in faces)
    assert not any("lostface" in v for v in metadata.video_tags(out).values())
    code, [row] = _verify(out)
    assert code == 1 and not row["marked"] and not row["watermark"]["found"]


# --- photos ----------------------------------------------------------------------------------


def test_photo_is_tagged_signed_and_tampering_shows(restored, tmp_path):
    src = shared_path("masked")
    photo = sorted(p for p in src.iterdir() if p.suffix.lower() in (".jpg", ".png"))[0]
    out = tmp_path / "restored.png"
    # one run id: on this photo the frame mark reads at z 4.2-5.1 with the payload (about one
    # random run id in fifty falls under the threshold; bench/README.md, Provenance)
    sets = ["--set", 'provenance.run_id="5a3"', *_c2pa_sets(restored)]
    proc = _cli("restore", str(photo), "-o", str(out), "-q", *sets)
    assert proc.returncode == 0, proc.stderr
    texts = metadata.image_texts(out.read_bytes())
    assert any(metadata.parse_tag(t) for t in texts)
    code, [row] = _verify(out)
    assert code == 0 and row["kind"] == "image"
    assert row["c2pa"]["valid"], row["c2pa"]
    assert row["watermark"]["found"] and row["watermark"]["engine"] == "frame", row["watermark"]
    # change the pixels after signing, keeping the manifest: its hash no longer matches
    tampered = tmp_path / "tampered.png"
    tampered.write_bytes(_repaint_png(out.read_bytes()))
    code, [row] = _verify(tampered)
    assert row["c2pa"]["present"] and not row["c2pa"]["valid"]
    assert row["c2pa"]["state"] == "Invalid" and row["c2pa"]["failures"]


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        out.append((data[pos + 4 : pos + 8], data[pos : pos + 12 + n]))
        pos += 12 + n
    return out


def _repaint_png(signed: bytes) -> bytes:
    """The signed PNG with a grey square painted into its pixels and every other chunk (the
    C2PA manifest among them) kept as it was."""
    image = cv2.imdecode(np.frombuffer(signed, np.uint8), cv2.IMREAD_UNCHANGED)
    image[10:40, 10:40] = 128
    ok, buf = cv2.imencode(".png", image)
    assert ok
    new_idat = b"".join(raw for kind, raw in _png_chunks(buf.tobytes()) if kind == b"IDAT")
    out, placed = [signed[:8]], False
    for kind, raw in _png_chunks(signed):
        if kind == b"IDAT":
            if not placed:
                out.append(new_idat)
                placed = True
            continue
        out.append(raw)
    return b"".join(out)


def test_jpeg_photo_carries_the_tag_as_a_comment(tmp_path):
    photo = sorted(p for p in shared_path("masked").iterdir() if p.suffix.lower() == ".jpg")[1]
    out = tmp_path / "restored.jpg"
    proc = _cli("restore", str(photo), "-o", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    assert any(metadata.parse_tag(t) for t in metadata.jpeg_comments(out.read_bytes()))
    assert cv2.imread(str(out)) is not None  # still a JPEG every reader opens


# --- bad input -------------------------------------------------------------------------------


def test_verify_bad_input_is_one_sentence(tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    # random bytes (fixed: FFmpeg takes some draws for a container without a video stream)
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n" * 50)
    for path, what in (
        (tmp_path / "missing.mp4", ("does not exist",)),
        (corrupt, ("not a video or photo", "has no video stream")),
        (text, ("not a video or photo",)),
    ):
        proc = _cli("verify", str(path))
        assert proc.returncode == 2
        line = _one_sentence(proc)
        assert any(w in line for w in what), line


@pytest.mark.parametrize("case", ["mismatch", "expired", "unreadable"])
def test_bad_certificates_are_one_sentence(tmp_path, case):
    certs = make_certificates(tmp_path / "c", expired=case == "expired")
    if case == "mismatch":
        certs["key"] = certs["other_key"]
    if case == "unreadable":
        certs["cert"].write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    photo = cv2.imread(str(shared_path("identity", "stage_clip_reference.png")))
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), photo)
    out = tmp_path / "out.png"
    proc = _cli("restore", str(src), "-o", str(out), "-q", *_c2pa_sets(certs))
    line = _one_sentence(proc)
    assert proc.returncode == 2
    assert {"mismatch": "does not match", "expired": "expired", "unreadable": "no readable"}[
        case
    ] in line
    assert not out.exists()
