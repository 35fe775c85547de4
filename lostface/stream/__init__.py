"""Sources and sinks: video files, images (and later webcams, WebRTC, virtual cameras)."""
