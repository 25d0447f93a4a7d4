"""`bra demo`."""

from __future__ import annotations

from bracli.errors import UsageError

NAME = "demo"
EPILOG = "Example: bra demo"


def command() -> None:
    """Run the whole pipeline on the built-in sample data in a few minutes."""
    raise UsageError("bra demo is not yet implemented")
