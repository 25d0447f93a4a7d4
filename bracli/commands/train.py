"""`bra train`."""

from __future__ import annotations

from bracli.errors import UsageError

NAME = "train"
EPILOG = "Example: bra train data.yaml --epochs 50 --scale s --bra-after p3"


def command() -> None:
    """Train a BRA detector (built-in sample data by default)."""
    raise UsageError("bra train is not yet implemented")
