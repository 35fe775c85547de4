"""lostface: shows the face hidden under a face mask, on recorded footage and live."""

__version__ = "0.1.0"
