"""`bra init`."""

from __future__ import annotations

from bracli.errors import UsageError

NAME = "init"
EPILOG = "Example: bra init --scale n --bra-after p3"


def command() -> None:
    """Render a BRA model YAML from templates and summarise it."""
    raise UsageError("bra init is not yet implemented")
