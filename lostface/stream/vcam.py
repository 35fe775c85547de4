"""Virtual camera sink through pyvirtualcam: v4l2loopback on Linux, OBS's virtual camera on
Windows and macOS. Call apps and browsers then list lostface as a camera."""

from __future__ import annotations

import logging
import sys

from lostface.errors import OutputError
from lostface.frame import Frame

log = logging.getLogger(__name__)


def how_to_create() -> str:
    """One platform-specific sentence on creating a virtual camera device."""
    if sys.platform.startswith("linux"):
        return (
            "create one with v4l2loopback: `sudo apt-get install v4l2loopback-dkms` then "
            "`sudo modprobe v4l2loopback devices=1 video_nr=10 exclusive_caps=1 "
            'card_label="lostface"` (exclusive_caps=1 lets browsers and call apps list it)'
        )
    return (
        "install OBS Studio (28 or newer) and press its 'Start Virtual Camera' button once, "
        "which installs the OBS virtual camera"
    )


class VirtualCameraSink:
    """Sends BGR frames to a virtual camera; the size and rate are fixed at open."""

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        device: str | None = None,
        backend: str | None = None,
    ) -> None:
        try:
            import pyvirtualcam
        except ImportError:
            raise OutputError(
                "The virtual camera needs pyvirtualcam; install the live extra: "
                "pip install 'lostface[live]'."
            ) from None
        self.size = (int(width), int(height))
        try:
            self.cam = pyvirtualcam.Camera(
                width=int(width),
                height=int(height),
                fps=float(fps),
                fmt=pyvirtualcam.PixelFormat.BGR,
                device=device or None,
                backend=backend,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            where = f" {device}" if device else ""
            detail = str(exc).strip().replace("\n", "; ")
            raise OutputError(
                f"No virtual camera device{where} could be opened ({detail}); {how_to_create()}."
            ) from None
        self.device = self.cam.device
        self.sent = 0
        log.info("Virtual camera: %s (%dx%d at %.0f fps).", self.device, width, height, fps)

    def send(self, frame: Frame) -> None:
        img = frame.image
        if (img.shape[1], img.shape[0]) != self.size:
            import cv2

            img = cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)
        self.cam.send(img)
        self.sent += 1

    def close(self) -> None:
        self.cam.close()
