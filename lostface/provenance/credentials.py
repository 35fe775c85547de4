"""C2PA content credentials (c2pa-python, the Content Authenticity Initiative's library).

A signed manifest says, verifiably, that the file was edited by lostface and that
trained-algorithmic media was composited into it (IPTC digital source type
compositeWithTrainedAlgorithmicMedia). It is signed with the certificate chain and private key
named by `provenance.cert` and `provenance.key` (PEM), offline: no timestamp authority is
asked, so the signature is checked against the certificate's own validity period. The
certificate, its key and its dates are checked with `cryptography` before any work starts, so a
wrong file is one sentence, not a failure after the video was encoded.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lostface import __version__
from lostface.errors import ConfigError, ModelError, OutputError

log = logging.getLogger(__name__)

DIGITAL_SOURCE_TYPE = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
)
# extension -> MIME type of the outputs lostface signs (c2pa embeds manifests in these)
SIGNED_FORMATS = {
    ".mp4": "video/mp4",
    ".m4v": "video/x-m4v",
    ".mov": "video/quicktime",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}
C2PA_INSTALL = "pip install 'lostface[provenance]' (c2pa-python)"
HOW_TO_SIGN = (
    "No C2PA content credentials written: set provenance.cert and provenance.key (a PEM "
    "certificate chain and its private key) and provenance.c2pa=true to sign outputs."
)


def _c2pa() -> Any:
    try:
        import c2pa
    except ImportError:
        raise ModelError(f"C2PA content credentials need c2pa-python; {C2PA_INSTALL}.") from None
    return c2pa


def check_format(path: Path) -> str:
    """The MIME type c2pa signs `path` as, or an OutputError naming the formats it signs."""
    mime = SIGNED_FORMATS.get(path.suffix.lower())
    if mime is None:
        known = ", ".join(SIGNED_FORMATS)
        raise OutputError(
            f"provenance.c2pa signs {known} files, not {path.suffix or 'that'}; write one of "
            "those or set provenance.c2pa=false."
        )
    return mime


@dataclass
class SigningIdentity:
    """A checked certificate chain (PEM) and private key (PEM), and the algorithm they sign
    with; `signer()` makes a c2pa Signer (one per signature: c2pa consumes it)."""

    chain: bytes
    key: bytes
    alg: str  # es256 | es384 | es512 | ps256 | ed25519
    subject: str
    not_after: datetime.datetime

    def signer(self) -> Any:
        c2pa = _c2pa()
        algs = {
            "es256": c2pa.C2paSigningAlg.ES256,
            "es384": c2pa.C2paSigningAlg.ES384,
            "es512": c2pa.C2paSigningAlg.ES512,
            "ps256": c2pa.C2paSigningAlg.PS256,
            "ed25519": c2pa.C2paSigningAlg.ED25519,
        }
        info = c2pa.C2paSignerInfo(algs[self.alg], self.chain, self.key, None)
        return c2pa.Signer.from_info(info)


def _read(path_text: str, key: str, what: str) -> bytes:
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key} {path} does not exist; give the path of {what}.")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key} {path} cannot be read ({exc.strerror}).") from None


def load_identity(
    cert_path: str, key_path: str, now: datetime.datetime | None = None
) -> SigningIdentity:
    """The certificate chain and key of provenance.cert / provenance.key, checked: readable
    PEM, the key matches the first certificate, and that certificate is valid today."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    chain = _read(cert_path, "provenance.cert", "a PEM certificate chain (signer first)")
    key_pem = _read(key_path, "provenance.key", "the certificate's PEM private key")
    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError:
        certs = []
    if not certs:
        raise ConfigError(
            f"provenance.cert {cert_path} holds no readable PEM certificate; give the signing "
            "certificate (and its chain) in PEM form."
        )
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"provenance.key {key_path} is not a readable unencrypted PEM private key ({exc}); "
            "give the certificate's private key in PEM form, without a passphrase."
        ) from None
    cert = certs[0]
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, pub) != cert.public_key().public_bytes(der, pub):
        raise ConfigError(
            f"provenance.key {key_path} does not match the certificate in {cert_path}; give the "
            "private key that belongs to the signing certificate."
        )
    now = now or datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc < now:
        raise ConfigError(
            f"The certificate in {cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
            "renew it (content credentials signed with it would not validate)."
        )
    if cert.not_valid_before_utc > now:
        raise ConfigError(
            f"The certificate in {cert_path} is valid only from "
            f"{cert.not_valid_before_utc:%Y-%m-%d}; check its dates and the system clock."
        )
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = {256: "es256", 384: "es384", 521: "es512"}.get(key.curve.key_size)
    elif isinstance(key, rsa.RSAPrivateKey):
        alg = "ps256"
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        alg = "ed25519"
    else:
        alg = None
    if alg is None:
        raise ConfigError(
            f"provenance.key {key_path} is a key type C2PA does not sign with; use an EC "
            "(P-256, P-384, P-521), RSA or Ed25519 key."
        )
    pem = serialization.Encoding.PEM
    key_out = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    chain_out = b"".join(c.public_bytes(pem) for c in certs)
    return SigningIdentity(
        chain_out, key_out, alg, cert.subject.rfc4514_string(), cert.not_valid_after_utc
    )


def manifest(title: str, run_id: int | None = None) -> dict:
    """The manifest definition: an edit whose digital source type says trained-algorithmic
    media was composited in."""
    action: dict[str, Any] = {
        "action": "c2pa.edited",
        "digitalSourceType": DIGITAL_SOURCE_TYPE,
        "softwareAgent": {"name": "lostface", "version": __version__},
        "description": "faces hidden under face masks were painted (AI-restored)",
    }
    if run_id is not None:
        action["parameters"] = {"lostface.watermark_run_id": f"{run_id:03x}"}
    return {
        "claim_generator_info": [{"name": "lostface", "version": __version__}],
        "title": title,
        "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": [action]}}],
    }


def _no_thumbnails() -> Any:
    """A c2pa context that embeds no thumbnails (they would add a JPEG per manifest)."""
    c2pa = _c2pa()
    settings = c2pa.Settings.from_json(json.dumps({"builder": {"thumbnail": {"enabled": False}}}))
    return c2pa.Context(settings)


def sign_file(
    src: Path, dst: Path, identity: SigningIdentity, title: str, run_id: int | None = None
) -> None:
    """Write `src` with a signed manifest to `dst` (a new file; `src` is left as it is)."""
    c2pa = _c2pa()
    mime = check_format(dst)
    try:
        builder = c2pa.Builder(json.dumps(manifest(title, run_id)), context=_no_thumbnails())
        builder.set_intent(c2pa.C2paBuilderIntent.EDIT)
        with open(src, "rb") as f_in, open(dst, "wb") as f_out:
            builder.sign(identity.signer(), mime, f_in, f_out)
    except c2pa.C2paError as exc:
        dst.unlink(missing_ok=True)
        raise OutputError(
            f"C2PA signing of {title} failed ({_first_line(exc)}); check that provenance.cert "
            "is a signing certificate (key usage digitalSignature, an extended key usage such "
            "as emailProtection or documentSigning, issued by a CA, not self-signed)."
        ) from None


def sign_in_place(path: Path, identity: SigningIdentity, title: str, run_id: int | None) -> None:
    """Replace `path` (a temporary output) with its signed copy."""
    signed = path.with_name(path.name + ".c2pa" + path.suffix)
    try:
        sign_file(path, signed, identity, title, run_id)
        os.replace(signed, path)
    finally:
        signed.unlink(missing_ok=True)


def probe(identity: SigningIdentity) -> None:
    """Sign a 16x16 PNG in memory: c2pa's own certificate checks fail here, before any work."""
    import cv2
    import numpy as np

    c2pa = _c2pa()
    ok, buf = cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))
    try:
        builder = c2pa.Builder(json.dumps(manifest("probe.png")), context=_no_thumbnails())
        builder.set_intent(c2pa.C2paBuilderIntent.EDIT)
        builder.sign(identity.signer(), "image/png", io.BytesIO(buf.tobytes()), io.BytesIO())
    except c2pa.C2paError as exc:
        raise ConfigError(
            f"provenance.cert cannot sign C2PA manifests ({_first_line(exc)}); give a signing "
            "certificate (key usage digitalSignature, an extended key usage such as "
            "emailProtection or documentSigning) issued by a CA, with its chain."
        ) from None


@dataclass
class Credentials:
    """What a file's C2PA manifest store says: present, its validation state (Valid, Trusted,
    Invalid), who signed it, its actions, and the failures found."""

    present: bool
    state: str | None = None
    signer: str | None = None
    actions: list[str] = field(default_factory=list)
    source_types: list[str] = field(default_factory=list)
    generator: str | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.present and self.state in ("Valid", "Trusted")

    @property
    def by_lostface(self) -> bool:
        return bool(self.generator and self.generator.startswith("lostface"))

    def to_json(self) -> dict:
        return {
            "present": self.present,
            "state": self.state,
            "valid": self.valid,
            "signer": self.signer,
            "generator": self.generator,
            "actions": self.actions,
            "digital_source_types": self.source_types,
            "failures": self.failures,
        }


def read_credentials(path: Path) -> Credentials:
    """The manifest store embedded in `path`; present=False when there is none (or c2pa-python
    is not installed: then the result says so in `failures`)."""
    try:
        c2pa = _c2pa()
    except ModelError as exc:
        return Credentials(False, failures=[str(exc)])
    try:
        with open(path, "rb") as f:
            reader = c2pa.Reader(
                check_format(path) if path.suffix.lower() in SIGNED_FORMATS else None, f
            )
            try:
                store = json.loads(reader.json())
            finally:
                reader.close()
    except (c2pa.C2paError, OutputError, OSError, ValueError):
        return Credentials(False)
    active = store.get("manifests", {}).get(store.get("active_manifest", ""), {})
    actions, types = [], []
    for a in active.get("assertions", []):
        if str(a.get("label", "")).startswith("c2pa.actions"):
            for act in a.get("data", {}).get("actions", []):
                actions.append(str(act.get("action")))
                if act.get("digitalSourceType"):
                    types.append(str(act["digitalSourceType"]))
    gen = active.get("claim_generator_info") or [{}]
    generator = f"{gen[0].get('name', '')} {gen[0].get('version', '')}".strip() or None
    failures = [
        str(f.get("code"))
        for f in (store.get("validation_results", {}).get("activeManifest", {}) or {}).get(
            "failure", []
        )
    ]
    sig = active.get("signature_info", {}) or {}
    return Credentials(
        True,
        store.get("validation_state"),
        sig.get("common_name") or sig.get("issuer"),
        actions,
        types,
        generator,
        failures,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
