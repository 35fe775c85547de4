"""Keyframe work: segment the covered region, restore the hidden face, composite it."""
