"""Pure-PyTorch building blocks (no ultralytics here).

``BiLevelRoutingAttention`` is imported on first use, so the pure-Python parts of this package
(``bracli.nn.options``) can be used without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bracli.nn.bra import BiLevelRoutingAttention

__all__ = ["BiLevelRoutingAttention"]


def __getattr__(name: str):
    if name == "BiLevelRoutingAttention":
        from bracli.nn.bra import BiLevelRoutingAttention

        return BiLevelRoutingAttention
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
