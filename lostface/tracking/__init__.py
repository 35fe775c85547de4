"""Per-frame work: face detection, Kalman tracking, keyframe policy."""
