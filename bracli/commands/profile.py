"""`bra profile`."""

from __future__ import annotations

from bracli.errors import UsageError

NAME = "profile"
EPILOG = "Example: bra profile --scale n --bra-after p3 --imgsz 640 1280"


def command() -> None:
    """Measure a model's true cost: params, FLOPs with attention, latency, memory."""
    raise UsageError("bra profile is not yet implemented")
