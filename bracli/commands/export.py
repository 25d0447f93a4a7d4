"""`bra export`."""

from __future__ import annotations

from bracli.errors import UsageError

NAME = "export"
EPILOG = "Example: bra export best.pt --format onnx --dynamic"


def command() -> None:
    """Export weights to ONNX/TorchScript/OpenVINO and check they match torch."""
    raise UsageError("bra export is not yet implemented")
