"""Bi-Level Routing Attention (BiFormer, arXiv 2303.08810), NCHW in and out for YOLO models.

Two levels: (1) region level — the map is split into a grid of regions, region-mean queries and keys
give a region affinity, and each query region keeps its top-k regions (routing is not
differentiated); (2) token level — every token of a query region attends to all tokens of its
top-k regions. A depthwise conv on v (LCE, "lepe") is added before the output projection.
Parameter names and numerics follow the released legacy implementation in its YOLO configuration.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from bracli.nn import routed
from bracli.nn.options import check_bra_options, check_region_size, region_grid

AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps")  # a plain tuple: torch.compile traces it on every torch version


class QKVLinear(nn.Module):
    """One projection to q (qk_dim), k (qk_dim) and v (dim); its own module so keys read ``qkv.qkv.*``.

    Called on token-major input (``..., dim``). The attention applies the same weights to its own
    channel-major layout directly.
    """

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
        n_win: regions per side; the map is zero-padded right/bottom to a multiple of it. With
            ``region_size``, the least number of regions per side.
        num_heads: attention heads; must divide ``dim`` and ``qk_dim``.
        topk: regions each query region attends to, 1 ≤ topk ≤ n_win².
        qk_dim: channels of q and k (default ``dim``). Attention scale is ``qk_dim ** -0.5``,
            as in the released code (not per head).
        side_dwconv: odd kernel of the depthwise LCE conv on v (0 disables it).
        auto_pad: pad maps that do not split evenly into the region grid; when False they are an error.
        region_size: None (default) keeps the grid at ``n_win × n_win`` whatever the map size, as the
            paper does. An int caps regions at that many tokens per side: each forward uses
            ``max(n_win, ⌈H / region_size⌉)`` regions down and ``max(n_win, ⌈W / region_size⌉)`` across,
            so on large inputs the grid grows and the attention cost grows linearly with the tokens
            instead of with their square. Same weights either way; maps up to ``n_win · region_size``
            per side are computed exactly as without it.
    """

    region_size: int | None = None  # class default: modules pickled before the option existed load without it

    def __init__(self, dim: int, n_win: int = 7, num_heads: int = 8, topk: int = 4, qk_dim: int | None = None,
                 side_dwconv: int = 3, auto_pad: bool = True, region_size: int | None = None) -> None:
        super().__init__()
        qk_dim = dim if qk_dim is None else qk_dim
        check_bra_options(dim=dim, n_win=n_win, num_heads=num_heads, topk=topk, qk_dim=qk_dim,
                          side_dwconv=side_dwconv)
        check_region_size(region_size)
        self.dim, self.n_win, self.num_heads, self.topk = dim, n_win, num_heads, topk
        self.qk_dim, self.side_dwconv, self.auto_pad = qk_dim, side_dwconv, auto_pad
        self.region_size = region_size
        self.scale = qk_dim ** -0.5
        self.qkv = QKVLinear(dim, qk_dim)
        self.lepe = (nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim)
                     if side_dwconv > 0 else None)
        self.wo = nn.Linear(dim, dim)

    def extra_repr(self) -> str:
        grid = f", region_size={self.region_size}" if self.region_size is not None else ""
        return (f"dim={self.dim}, n_win={self.n_win}, num_heads={self.num_heads}, topk={self.topk}, "
                f"qk_dim={self.qk_dim}, side_dwconv={self.side_dwconv}, auto_pad={self.auto_pad}{grid}")

    def region_grid(self, height: int, width: int) -> tuple[int, int, int, int]:
        """``(rows, cols, region_h, region_w)`` for a height×width map (see ``bracli.nn.options.region_grid``)."""
        return region_grid(height, width, self.n_win, self.region_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        dim, qk_dim = self.dim, self.qk_dim
        chunked = routed.use_chunked(x, qk_dim // self.num_heads)
        qkv, (rows, cols, rh, _) = self._project(x, token_major=not chunked)
        grid = {"n": n, "j": rows, "i": cols, "a": rh}
        if chunked:  # channel-major (C, n·R, tokens)
            q, k, v = qkv.split([qk_dim, qk_dim, dim])
            routes = self._route(q, k, n, token_axis=-1).flatten(0, 1)
            out = routed.attend_chunked(q, k, v, routes, self.num_heads, self.scale)
            out = rearrange(out, "(n j i) c (a b) -> n j a i b c", **grid)  # a view
            v_to_map = "c (n j i) (a b) -> n (j a) (i b) c"
        else:  # token-major (n·R, tokens, C)
            q, kv = qkv.split([qk_dim, qk_dim + dim], dim=-1)
            routes = self._route(q, kv[..., :qk_dim], n, token_axis=1).flatten(0, 1)
            out = routed.attend_fused(q, kv, routes, self.num_heads, self.scale)
            out = rearrange(out, "(n j i) (a b) c -> n j a i b c", **grid)  # a view
            v, v_to_map = kv[..., qk_dim:], "(n j i) (a b) c -> n (j a) (i b) c"
        if self.lepe is not None:  # on a channels-last copy of v: the depthwise conv runs ~20x faster so on CPU
            v_map = rearrange(v, v_to_map, **grid)
            lepe = self.lepe(rearrange(v_map, "n h w c -> n c h w"))
            out = rearrange(lepe, "n c (j a) (i b) -> n j a i b c", j=rows, i=cols) + out
        mixed = rearrange(out, "n j a i b c -> n (j a) (i b) c")[:, :h, :w].contiguous()  # a no-op when unpadded
        # W_o · mixedᵀ: one batched product that writes NCHW directly (no transposing copy of the output)
        mixed = rearrange(mixed, "n h w c -> n c (h w)")
        out = torch.baddbmm(self.wo.bias.view(1, -1, 1), self.wo.weight.expand(n, -1, -1), mixed)
        return rearrange(out, "n c (h w) -> n c h w", h=h)

    @torch.no_grad()
    def route(self, x: torch.Tensor) -> torch.Tensor:
        """Routed regions of every query region: ``(n, rows·cols, topk)`` region indices, row-major.

        ``rows, cols, rh, rw = self.region_grid(H, W)``; region ``r`` covers rows ``(r // cols) * rh ...``
        and columns ``(r % cols) * rw ...`` of the padded map. Without ``region_size``, rows = cols =
        ``n_win``. For inspection and figures.
        """
        qkv, (rows, cols, _, _) = self._project(x, token_major=True)
        q, k, _ = qkv.split([self.qk_dim, self.qk_dim, self.dim], dim=-1)
        first = torch.arange(x.shape[0], device=x.device).view(-1, 1, 1) * (rows * cols)
        return self._route(q, k, x.shape[0], token_axis=1) - first

    def _project(self, x: torch.Tensor, token_major: bool) -> tuple[torch.Tensor, tuple]:
        """Pad to the region grid, project to q, k, v in one product, and return them with the grid.

        Token-major gives ``(n·regions, tokens, 2·qk_dim + dim)``, channel-major ``(2·qk_dim + dim,
        n·regions, tokens)``; tokens run region by region either way. Zero padding comes before the
        projection (as in the released code), so padded tokens carry the projection bias and count in
        region means and attention. Under tracing the padding is always applied and its size stays
        symbolic, so exported graphs accept any H×W.
        """
        _, c, h, w = x.shape
        rows, cols, rh, rw = self.region_grid(h, w)
        pad_b, pad_r = rows * rh - h, cols * rw - w
        tracing = torch.jit.is_tracing()
        if not tracing:
            if c != self.dim:
                raise ValueError(f"expected {self.dim} input channels, got {c} (input shape {tuple(x.shape)})")
            if (pad_b or pad_r) and not self.auto_pad:
                grid = f"n_win={self.n_win}" if self.region_size is None else f"its {rows}×{cols} region grid"
                raise ValueError(f"input {h}x{w} is not divisible by {grid} and auto_pad is False")
        if tracing or pad_b or pad_r:
            x = F.pad(x, (0, pad_r, 0, pad_b))
        weight, bias = self.qkv.qkv.weight, self.qkv.qkv.bias
        if token_major:
            tokens = rearrange(x, "n c (j a) (i b) -> (n j i) (a b) c", j=rows, i=cols)
            return F.linear(tokens, weight, bias), (rows, cols, rh, rw)
        tokens = rearrange(x, "n c (j a) (i b) -> c (n j i a b)", j=rows, i=cols)
        qkv = torch.addmm(bias.unsqueeze(1), weight, tokens)
        return rearrange(qkv, "c (r t) -> c r t", t=rh * rw), (rows, cols, rh, rw)

    def _route(self, q: torch.Tensor, k: torch.Tensor, batch: int, token_axis: int) -> torch.Tensor:
        """Top-k regions of each query region by region-mean affinity: ``(n, regions, topk)`` indices
        into the region axis of q/k (offset per image). Not differentiated, as in the paper.

        q and k are token-major ``(n·regions, tokens, qk_dim)`` (``token_axis=1``) or channel-major
        ``(qk_dim, n·regions, tokens)`` (``token_axis=-1``). Computed in fp32 even under autocast: a
        low-precision affinity rounds near-equal regions to exact ties, and the ranking then depends on
        how the kernel breaks them.
        """
        device = q.device.type  # meta (FLOP counting) has no autocast to switch off
        full_precision = torch.autocast(device, enabled=False) if device in AUTOCAST_DEVICES else nullcontext()
        with torch.no_grad(), full_precision:
            q_mean, k_mean = q.float().mean(token_axis), k.float().mean(token_axis)
            if token_axis != 1:
                q_mean, k_mean = q_mean.t(), k_mean.t()
            q_mean, k_mean = q_mean.reshape(batch, -1, self.qk_dim), k_mean.reshape(batch, -1, self.qk_dim)
            affinity = (q_mean * self.scale) @ k_mean.transpose(-1, -2)
            routes = affinity.topk(self.topk, dim=-1).indices
            return routes + torch.arange(batch, device=q.device).view(-1, 1, 1) * affinity.shape[1]
