"""Pure-PyTorch building blocks (no ultralytics here)."""

from bracli.nn.bra import BiLevelRoutingAttention

__all__ = ["BiLevelRoutingAttention"]
