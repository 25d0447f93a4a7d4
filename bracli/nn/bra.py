"""Bi-Level Routing Attention (BiFormer, arXiv 2303.08810), NCHW in and out for YOLO models.

Two levels: (1) region level — the map is split into n_win x n_win regions, region-mean queries and
keys give a region affinity, and each query region keeps its top-k regions (routing is not
differentiated); (2) token level — every token of a query region attends to all tokens of its
top-k regions. A depthwise conv on v (LCE, "lepe") is added before the output projection.
Parameter names and numerics follow the released legacy implementation in its YOLO configuration.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class QKVLinear(nn.Module):
    """One projection to q (qk_dim), k (qk_dim) and v (dim); its own module so keys read ``qkv.qkv.*``."""

    def __init__(self, dim: int, qk_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.dim, self.qk_dim = dim, qk_dim
        self.qkv = nn.Linear(dim, qk_dim + qk_dim + dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.qkv(x)


class BiLevelRoutingAttention(nn.Module):
    """Bi-Level Routing Attention on an NCHW feature map; output has the input's shape.

    Args:
        dim: channels of the input (and output).
        n_win: regions per side; the map is zero-padded right/bottom to a multiple of it.
        num_heads: attention heads; must divide ``dim`` and ``qk_dim``.
        topk: regions each query region attends to, 1 ≤ topk ≤ n_win².
        qk_dim: channels of q and k (default ``dim``). Attention scale is ``qk_dim ** -0.5``,
            as in the released code (not per head).
        side_dwconv: odd kernel of the depthwise LCE conv on v (0 disables it).
        auto_pad: pad maps whose sides are not multiples of ``n_win``; when False they are an error.
    """

    def __init__(self, dim: int, n_win: int = 7, num_heads: int = 8, topk: int = 4, qk_dim: int | None = None,
                 side_dwconv: int = 3, auto_pad: bool = True) -> None:
        super().__init__()
        qk_dim = dim if qk_dim is None else qk_dim
        _check(dim=dim, n_win=n_win, num_heads=num_heads, topk=topk, qk_dim=qk_dim, side_dwconv=side_dwconv)
        self.dim, self.n_win, self.num_heads, self.topk = dim, n_win, num_heads, topk
        self.qk_dim, self.side_dwconv, self.auto_pad = qk_dim, side_dwconv, auto_pad
        self.scale = qk_dim ** -0.5
        self.qkv = QKVLinear(dim, qk_dim)
        self.lepe = (nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim)
                     if side_dwconv > 0 else None)
        self.wo = nn.Linear(dim, dim)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, n_win={self.n_win}, num_heads={self.num_heads}, topk={self.topk}, "
                f"qk_dim={self.qk_dim}, side_dwconv={self.side_dwconv}, auto_pad={self.auto_pad}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        s = self.n_win
        pad_b, pad_r = (-h) % s, (-w) % s
        if (pad_b or pad_r) and not self.auto_pad:
            raise ValueError(f"input {h}x{w} is not divisible by n_win={s} and auto_pad is False")
        x = F.pad(x, (0, pad_r, 0, pad_b)).permute(0, 2, 3, 1)  # N, Hp, Wp, C
        hp, wp = h + pad_b, w + pad_r
        rh, rw = hp // s, wp // s
        qkv = self.qkv(x)
        q, k, v = qkv.split([self.qk_dim, self.qk_dim, self.dim], dim=-1)
        lepe = self.lepe(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1) if self.lepe is not None else 0

        def regions(t: torch.Tensor) -> torch.Tensor:  # N, Hp, Wp, C -> N, S², rh*rw, C
            t = t.reshape(n, s, rh, s, rw, t.shape[-1]).permute(0, 1, 3, 2, 4, 5)
            return t.reshape(n, s * s, rh * rw, t.shape[-1])

        q, k, v = regions(q), regions(k), regions(v)
        affinity = (q.mean(2).detach() * self.scale) @ k.mean(2).detach().transpose(-1, -2)  # N, S², S²
        idx = affinity.topk(self.topk, dim=-1).indices  # N, S², topk
        batch = torch.arange(n, device=x.device).view(n, 1, 1)
        k_sel = k[batch, idx].flatten(2, 3)  # N, S², topk*rh*rw, Cqk
        v_sel = v[batch, idx].flatten(2, 3)
        m = self.num_heads
        q = q.reshape(n, s * s, rh * rw, m, -1).transpose(2, 3)
        k_sel = k_sel.reshape(n, s * s, -1, m, self.qk_dim // m).transpose(2, 3)
        v_sel = v_sel.reshape(n, s * s, -1, m, self.dim // m).transpose(2, 3)
        attn = ((q * self.scale) @ k_sel.transpose(-1, -2)).softmax(-1)
        out = (attn @ v_sel).transpose(2, 3).reshape(n, s, s, rh, rw, self.dim)
        out = out.permute(0, 1, 3, 2, 4, 5).reshape(n, hp, wp, self.dim)
        out = self.wo(out + lepe)[:, :h, :w]
        return out.permute(0, 3, 1, 2).contiguous()


def _check(**values: int) -> None:
    dim, qk_dim, heads = values["dim"], values["qk_dim"], values["num_heads"]
    for name in ("dim", "n_win", "num_heads", "topk", "qk_dim"):
        if not isinstance(values[name], int) or values[name] < 1:
            raise ValueError(f"{name} must be a positive integer, got {values[name]!r}")
    if dim % heads:
        raise ValueError(f"dim={dim} is not divisible by num_heads={heads}")
    if qk_dim % heads:
        raise ValueError(f"qk_dim={qk_dim} is not divisible by num_heads={heads}")
    if values["topk"] > values["n_win"] ** 2:
        raise ValueError(f"topk={values['topk']} exceeds the n_win²={values['n_win'] ** 2} regions")
    side = values["side_dwconv"]
    if not isinstance(side, int) or side < 0 or (side and side % 2 == 0):
        raise ValueError(f"side_dwconv must be 0 or an odd positive integer, got {side!r}")
