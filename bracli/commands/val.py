"""`bra val`."""

from __future__ import annotations

from bracli.errors import UsageError

NAME = "val"
EPILOG = "Example: bra val runs/detect/train/weights/best.pt --data data.yaml"


def command() -> None:
    """Validate weights: mAP50, mAP50-95, precision, recall per class."""
    raise UsageError("bra val is not yet implemented")
