"""What `lostface serve` checks before it builds anything for a request.

    check_host(request_host, allowed)        # DNS rebinding: the Host header names this server
    check_origin(origin, page_origin, allowed)   # cross-site POSTs from other pages
    check_offer(body_bytes)                   # the JSON shape and the SDP, completely

Each check raises Refused(status, sentence): the server answers that status with the
sentence and logs it as one WARNING line. aiortc's own parser asserts and indexes its way
through an SDP and the rest of aiortc trusts what it returns (a missing fingerprint only
fails later, in a task nobody awaits), so an offer is taken apart here first, and only an
offer that aiortc will accept whole reaches it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("lostface.stream.webrtc")

MAX_MEDIA_SECTIONS = 8  # a browser sends 1-3 (video, audio, data channel)
_ICE_CHAR = re.compile(r"^[A-Za-z0-9+/]+$")  # RFC 8839 ice-char
_HEX_PAIRS = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})*$")
_MDNS_NAME = re.compile(r"^[A-Za-z0-9-]{1,63}\.local\.?$")
_FINGERPRINT_BYTES = {"sha-256": 32, "sha-384": 48, "sha-512": 64}  # what aiortc verifies
_SENDING = ("sendrecv", "sendonly")
_CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")
_SCTP_PROFILES = ("UDP/DTLS/SCTP", "TCP/DTLS/SCTP", "DTLS/SCTP")

NOT_SDP = (
    "The offer is not a valid WebRTC session description (SDP); "
    "create it with RTCPeerConnection.createOffer()."
)


@dataclass
class Refused(Exception):
    """A request the server answers with `status` and one sentence (a client error)."""

    status: int
    message: str

    def __str__(self) -> str:
        return self.message


# -- Host and Origin ------------------------------------------------------------------------
def split_host(value: str) -> tuple[str, int | None]:
    """'Example.org:8080' -> ('example.org', 8080); '[::1]:80' -> ('::1', 80). Raises
    ValueError on anything that is not host[:port]."""
    value = value.strip()
    if not value or any(c.isspace() or c in "/?#@\\" for c in value):
        raise ValueError(value)
    port: int | None = None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(value)
        host, rest = value[1:end], value[end + 1 :]
        ipaddress.IPv6Address(host)
        if rest:
            if not rest.startswith(":"):
                raise ValueError(value)
            port = int(rest[1:])
    elif value.count(":") == 1:
        host, text = value.split(":")
        port = int(text)
    elif ":" in value:  # a bare IPv6 address
        host = value
        ipaddress.IPv6Address(host)
    else:
        host = value
    if port is not None and not 0 < port < 65536:
        raise ValueError(value)
    host = host.lower().rstrip(".")
    if not host:
        raise ValueError(value)
    return host, port


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def host_allowed(host: str, bound: str, names: list[str]) -> bool:
    """Whether a request's host name (no port) may reach a server bound to `bound`.

    A name in `names` always may. Bound to loopback: any loopback address and `localhost`
    (browsers resolve it to loopback themselves). Bound to one address: that address. Bound to
    every address (0.0.0.0, ::): any address literal. A DNS name that is not configured never
    may: that is what a rebinding attack sends (its own name, resolved to this machine)."""
    allowed = {n.lower().rstrip(".") for n in names}
    if host in allowed:
        return True
    bound = bound.lower().strip("[]").rstrip(".")
    ip, bound_ip = _ip(host), _ip(bound)
    if bound == "localhost" or (bound_ip is not None and bound_ip.is_loopback):
        return host == "localhost" or (ip is not None and ip.is_loopback)
    if bound_ip is not None and bound_ip.is_unspecified:
        return ip is not None or host == "localhost"
    if ip is not None and bound_ip is not None:
        return ip == bound_ip
    return host == bound


def check_host(value: str | None, bound: str, names: list[str], url: str) -> None:
    """The Host header against the bound address and live.allowed_hosts."""
    if not value:
        raise Refused(400, "The request has no Host header; send an HTTP/1.1 request.")
    try:
        host, _ = split_host(value)
    except ValueError:
        raise Refused(400, f"The Host header {clip(value)} is not host[:port].") from None
    if not host_allowed(host, bound, names):
        raise Refused(
            403,
            f"The Host {clip(value)} is not this server's address; open the page at {url} "
            "or add the name to live.allowed_hosts.",
        )


def normalise_origin(origin: str) -> str:
    """'HTTP://LocalHost:80' -> 'http://localhost'; '' for anything that is not an origin."""
    try:
        parts = urlsplit(origin.strip())
        if parts.scheme not in ("http", "https") or parts.path or parts.query or parts.fragment:
            return ""
        host, port = split_host(parts.netloc)
    except ValueError:
        return ""
    default = 443 if parts.scheme == "https" else 80
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown}" + ("" if port in (None, default) else f":{port}")


def check_origin(origin: str | None, page_origin: str, allowed: list[str]) -> None:
    """POST /offer from a browser carries Origin; it must be the page's own or a configured
    one. Clients that are not browsers (no Origin) are not a cross-site risk."""
    if origin is None:
        return
    given = normalise_origin(origin)
    ok = {normalise_origin(page_origin)} | {normalise_origin(o) for o in allowed}
    ok.discard("")
    if not given or given not in ok:
        raise Refused(
            403,
            f"Offers from the web page at {clip(origin)} are not accepted; open lostface's own "
            "page, or add that origin to live.allowed_origins.",
        )


# -- the offer ------------------------------------------------------------------------------
def parse_offer_json(body: bytes) -> str:
    """The SDP text of a JSON offer {"sdp": ..., "type": "offer"} (any parse error, deep
    nesting included, is a Refused 400)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Refused(400, 'The offer is not JSON; send {"sdp": ..., "type": "offer"}.') from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("sdp"), str)
        or data.get("type") != "offer"
        or not data["sdp"].strip()
    ):
        raise Refused(400, 'The offer must be JSON {"sdp": "<SDP text>", "type": "offer"}.')
    sdp: str = data["sdp"]
    return sdp


def check_offer(text: str) -> Any:
    """Everything aiortc needs from an offer, checked before anything is built: a video
    section that sends, ICE credentials and a DTLS fingerprint and role for every section,
    codecs aiortc can decode, and ports, candidates and payload types in range. Returns
    aiortc's parsed SessionDescription."""
    from aiortc import sdp as aiortc_sdp
    from aiortc.codecs import CODECS
    from aiortc.rtcpeerconnection import find_common_codecs

    if "\x00" in text or not text.lstrip().startswith("v="):
        raise Refused(400, NOT_SDP)
    try:
        desc = aiortc_sdp.SessionDescription.parse(text)
    except Exception:  # aiortc's parser asserts, splits and indexes: any failure is not SDP
        raise Refused(400, NOT_SDP) from None
    if not desc.media:
        raise Refused(400, "The offer has no media; send the camera's video.")
    if len(desc.media) > MAX_MEDIA_SECTIONS:
        raise Refused(
            400,
            f"The offer has {len(desc.media)} media sections; send at most "
            f"{MAX_MEDIA_SECTIONS} (one video is enough).",
        )
    for i, media in enumerate(desc.media):
        where = f"media section {i + 1} ({clip(media.kind)})"
        _check_transport(media, where)
        if media.kind in ("audio", "video"):
            if not media.rtcp_mux:
                raise Refused(400, f"The offer's {where} lacks a=rtcp-mux; WebRTC needs it.")
            if not find_common_codecs(CODECS[media.kind], media.rtp.codecs):
                names = sorted({c.mimeType.split("/")[-1] for c in CODECS[media.kind]})
                raise Refused(
                    400,
                    f"The offer's {where} has no codec this server can decode; "
                    f"offer one of {', '.join(names)}.",
                )
        elif media.kind == "application":
            if media.profile not in _SCTP_PROFILES:
                raise Refused(400, f"The offer's {where} is not an SCTP data channel.")
            port = media.sctp_port
            if media.profile == "DTLS/SCTP":
                port = int(media.fmt[0]) if media.fmt and str(media.fmt[0]).isdigit() else None
            if port is None or not 0 < port < 65536:
                raise Refused(400, f"The offer's {where} has no valid SCTP port.")
        else:
            raise Refused(400, f"The offer's {where} is of an unknown kind.")
    if not any(m.kind == "video" and m.port != 0 and m.direction in _SENDING for m in desc.media):
        raise Refused(400, "The offer has no video track; send the camera's video.")
    return desc


def _check_transport(media: Any, where: str) -> None:
    if not 0 <= media.port < 65536 or (
        media.rtcp_port is not None and not 0 <= media.rtcp_port < 65536
    ):
        raise Refused(400, f"The offer's {where} has a port outside 0-65535.")
    ice = media.ice
    ufrag, pwd = ice.usernameFragment, ice.password
    if not ufrag or not pwd:
        raise Refused(
            400, f"The offer's {where} lacks a=ice-ufrag or a=ice-pwd; WebRTC needs both."
        )
    if not (4 <= len(ufrag) <= 256 and _ICE_CHAR.match(ufrag)):
        raise Refused(400, f"The offer's {where} has a malformed a=ice-ufrag.")
    if not (22 <= len(pwd) <= 256 and _ICE_CHAR.match(pwd)):
        raise Refused(400, f"The offer's {where} has a malformed a=ice-pwd.")
    if media.dtls is None:
        raise Refused(
            400, f"The offer's {where} lacks a=setup (actpass, active or passive); WebRTC needs it."
        )
    known = [f for f in media.dtls.fingerprints if f.algorithm.lower() in _FINGERPRINT_BYTES]
    if not known:
        raise Refused(
            400,
            f"The offer's {where} lacks a DTLS fingerprint (a=fingerprint:sha-256 ...); "
            "WebRTC needs it.",
        )
    for f in known:
        n = _FINGERPRINT_BYTES[f.algorithm.lower()]
        if not _HEX_PAIRS.match(f.value) or len(f.value) != 3 * n - 1:
            raise Refused(400, f"The offer's {where} has a malformed {f.algorithm} fingerprint.")
    for c in media.ice_candidates:
        ok = (
            c.protocol.lower() in ("udp", "tcp")
            and c.type in _CANDIDATE_TYPES
            and 0 <= c.port < 65536
            and 1 <= c.component <= 256
            and 0 <= c.priority < 2**32
            and (_ip(c.ip) is not None or _MDNS_NAME.match(c.ip) is not None)
            and (c.relatedPort is None or 0 <= c.relatedPort < 65536)
        )
        if not ok:
            raise Refused(400, f"The offer's {where} has a malformed ICE candidate.")
    for codec in media.rtp.codecs:
        if not 0 <= codec.payloadType < 128 or not 0 < codec.clockRate < 2**32:
            raise Refused(400, f"The offer's {where} has a malformed a=rtpmap line.")


# -- logging --------------------------------------------------------------------------------
def clip(value: object, limit: int = 80) -> str:
    """A client-supplied value fit for one log line: quoted, escaped, cut short."""
    text = repr(str(value))
    return text if len(text) <= limit else text[: limit - 4] + "...'"


class ServerLog(logging.LoggerAdapter):
    """aiohttp's server log (requests it could not parse or handle). A request aiohttp cannot
    parse (a URL or header too long, not HTTP) is a client error: one WARNING line. Anything
    else is an error of this server: one ERROR line, the traceback at DEBUG (-v)."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kw: Any) -> None:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        text = str(msg) % args if args else str(msg)
        if isinstance(exc, HttpProcessingError):
            what = " ".join(str(exc.message).split())
            self.logger.warning(
                "Refused a malformed HTTP request (%s): %d %s", text, exc.code, clip(what, 120)
            )
            return
        self.logger.error("%s: %s: %s", text, type(exc).__name__, clip(exc, 160))
        self.logger.debug("Traceback of the error above", exc_info=exc)

    def error(self, msg: object, *args: object, **kw: Any) -> None:
        if kw.get("exc_info"):
            self.exception(msg, *args, **kw)
        else:
            self.logger.error(msg, *args)
