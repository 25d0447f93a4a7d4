"""`bra predict`."""

from __future__ import annotations

from bracli.errors import UsageError

NAME = "predict"
EPILOG = "Example: bra predict imgs/ --model best.pt --show"


def command() -> None:
    """Detect objects in images, folders, videos or a camera."""
    raise UsageError("bra predict is not yet implemented")
