"""Plain references for Bi-Level Routing Attention, written to be read, not to be fast.

Three independent formulas, each taking the weights of a ``BiLevelRoutingAttention``:

- ``bra_gather``: the released legacy strategy in its YOLO configuration — NHWC, region-major tokens,
  routed key/value regions copied with expand + gather, explicit matmul + softmax. It is the honest
  baseline of ``benchmarks/bra_bench.py``.
- ``bra_loops``: explicit loops over images, query regions and heads; token coordinates are listed one
  by one, so region bookkeeping cannot hide a layout bug.
- ``full_attention``: every padded token attends to every padded token (what BRA must equal when topk
  is n_win²), plus the same LCE and output projection.

The region grid is ``n_win × n_win``; with ``region_size`` it is ``max(n_win, ⌈H/region_size⌉)`` rows by
``max(n_win, ⌈W/region_size⌉)`` columns, worked out here on its own. All three zero-pad the input
right/bottom to whole regions before the projection, so padded tokens carry the projection bias and take
part in region means and attention, then crop the output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def grid(module, h: int, w: int) -> tuple[int, int]:
    """Regions down and across for an h×w map."""
    if module.region_size is None:
        return module.n_win, module.n_win
    return max(module.n_win, math.ceil(h / module.region_size)), max(module.n_win, math.ceil(w / module.region_size))


def _params(module, x: torch.Tensor) -> dict:
    rows, cols = grid(module, *x.shape[-2:])
    return {"dim": module.dim, "qk_dim": module.qk_dim, "heads": module.num_heads, "rows": rows, "cols": cols,
            "topk": module.topk, "scale": module.qk_dim ** -0.5,
            "w_qkv": module.qkv.qkv.weight, "b_qkv": module.qkv.qkv.bias,
            "lepe": module.lepe, "w_o": module.wo.weight, "b_o": module.wo.bias}


def _padded_nhwc(x: torch.Tensor, p: dict) -> torch.Tensor:
    """Zero-padded right/bottom to whole regions of ⌈H/rows⌉ × ⌈W/cols⌉ tokens, channels last."""
    h, w = x.shape[-2:]
    padded_h, padded_w = p["rows"] * math.ceil(h / p["rows"]), p["cols"] * math.ceil(w / p["cols"])
    return F.pad(x, (0, padded_w - w, 0, padded_h - h)).permute(0, 2, 3, 1)


def _lepe_nhwc(p: dict, v_nhwc: torch.Tensor) -> torch.Tensor | float:
    """LCE: the depthwise conv on v over the whole padded map (zeros beyond it)."""
    if p["lepe"] is None:
        return 0.0
    return p["lepe"](v_nhwc.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _finish(p: dict, attended: torch.Tensor, lepe, h: int, w: int) -> torch.Tensor:
    out = F.linear(attended + lepe, p["w_o"], p["b_o"])
    return out[:, :h, :w].permute(0, 3, 1, 2)


def bra_gather(module, x: torch.Tensor) -> torch.Tensor:
    """Released legacy strategy: kv of every region expanded to each query region, then gathered."""
    p = _params(module, x)
    n, _, h, w = x.shape
    sj, si, qk, dim, m = p["rows"], p["cols"], p["qk_dim"], p["dim"], p["heads"]
    regions = sj * si
    xp = _padded_nhwc(x, p)
    hp, wp = xp.shape[1:3]
    rh, rw = hp // sj, wp // si
    # n (j h) (i w) c -> n (j i) h w c
    xr = xp.reshape(n, sj, rh, si, rw, dim).permute(0, 1, 3, 2, 4, 5).reshape(n, regions, rh, rw, dim)
    q, kv = F.linear(xr, p["w_qkv"], p["b_qkv"]).split([qk, qk + dim], dim=-1)
    q_pix = q.reshape(n, regions, rh * rw, qk)
    kv_pix = kv.reshape(n, regions, rh * rw, qk + dim)
    q_win, k_win = q.mean([2, 3]), kv[..., :qk].mean([2, 3])

    v_map = kv[..., qk:].reshape(n, sj, si, rh, rw, dim).permute(0, 1, 3, 2, 4, 5).reshape(n, hp, wp, dim)
    lepe = _lepe_nhwc(p, v_map)

    logits = (q_win.detach() * p["scale"]) @ k_win.detach().transpose(-2, -1)
    idx = logits.topk(p["topk"], dim=-1).indices  # n, regions, topk
    t, ckv, k_top = rh * rw, qk + dim, p["topk"]
    kv_sel = torch.gather(kv_pix.view(n, 1, regions, t, ckv).expand(-1, regions, -1, -1, -1), dim=2,
                          index=idx.view(n, regions, k_top, 1, 1).expand(-1, -1, -1, t, ckv))
    k_sel, v_sel = kv_sel.split([qk, dim], dim=-1)
    # n p2 k w2 (m c) -> (n p2) m c (k w2)  and  -> (n p2) m (k w2) c
    nr = n * regions
    k_sel = k_sel.reshape(nr, k_top, t, m, qk // m).permute(0, 3, 4, 1, 2).reshape(nr, m, qk // m, -1)
    v_sel = v_sel.reshape(nr, k_top, t, m, dim // m).permute(0, 3, 1, 2, 4).reshape(nr, m, -1, dim // m)
    q_pix = q_pix.reshape(n * regions, t, m, qk // m).transpose(1, 2)
    attn = ((q_pix * p["scale"]) @ k_sel).softmax(dim=-1)
    out = attn @ v_sel  # (n p2) m (h w) c
    # (n j i) m (h w) c -> n (j h) (i w) (m c)
    out = out.reshape(n, sj, si, m, rh, rw, dim // m).permute(0, 1, 4, 2, 5, 3, 6).reshape(n, hp, wp, dim)
    return _finish(p, out, lepe, h, w)


def bra_loops(module, x: torch.Tensor) -> torch.Tensor:
    """Explicit loops: list each region's token coordinates, route, attend head by head."""
    p = _params(module, x)
    n, _, h, w = x.shape
    qk, dim, m = p["qk_dim"], p["dim"], p["heads"]
    xp = _padded_nhwc(x, p)
    hp, wp = xp.shape[1:3]
    rh, rw = hp // p["rows"], wp // p["cols"]
    qkv = F.linear(xp, p["w_qkv"], p["b_qkv"])
    q_map, k_map, v_map = qkv[..., :qk], qkv[..., qk:2 * qk], qkv[..., 2 * qk:]
    lepe = _lepe_nhwc(p, v_map)
    regions = [(j, i) for j in range(p["rows"]) for i in range(p["cols"])]
    coords = {r: [(r[0] * rh + a, r[1] * rw + b) for a in range(rh) for b in range(rw)] for r in regions}
    dq, dv = qk // m, dim // m
    out = torch.zeros(n, hp, wp, dim, dtype=x.dtype)
    for b in range(n):
        def tokens(t_map, region, b=b):
            return torch.stack([t_map[b, y, x_] for y, x_ in coords[region]])  # tokens, channels

        q_mean = torch.stack([tokens(q_map, r).mean(0) for r in regions])
        k_mean = torch.stack([tokens(k_map, r).mean(0) for r in regions])
        affinity = (q_mean * p["scale"]) @ k_mean.T
        for qi, region in enumerate(regions):
            chosen = [regions[c] for c in affinity[qi].detach().topk(p["topk"]).indices.tolist()]
            q_tok = tokens(q_map, region)
            k_tok = torch.cat([tokens(k_map, r) for r in chosen])
            v_tok = torch.cat([tokens(v_map, r) for r in chosen])
            heads = []
            for head in range(m):
                qh, kh = q_tok[:, head * dq:(head + 1) * dq], k_tok[:, head * dq:(head + 1) * dq]
                vh = v_tok[:, head * dv:(head + 1) * dv]
                heads.append(torch.softmax(qh @ kh.T * p["scale"], dim=-1) @ vh)
            result = torch.cat(heads, dim=1)
            for t, (y, x_) in enumerate(coords[region]):
                out[b, y, x_] = result[t]
    return _finish(p, out, lepe, h, w)


def full_attention(module, x: torch.Tensor) -> torch.Tensor:
    """Global multi-head attention over the padded map, plus LCE and the output projection."""
    p = _params(module, x)
    n, _, h, w = x.shape
    qk, dim, m = p["qk_dim"], p["dim"], p["heads"]
    xp = _padded_nhwc(x, p)
    hp, wp = xp.shape[1:3]
    q, k, v = F.linear(xp, p["w_qkv"], p["b_qkv"]).split([qk, qk, dim], dim=-1)
    lepe = _lepe_nhwc(p, v)
    q = q.reshape(n, hp * wp, m, qk // m).transpose(1, 2)
    k = k.reshape(n, hp * wp, m, qk // m).transpose(1, 2)
    v_heads = v.reshape(n, hp * wp, m, dim // m).transpose(1, 2)
    attn = torch.softmax(q @ k.transpose(-2, -1) * p["scale"], dim=-1)
    out = (attn @ v_heads).transpose(1, 2).reshape(n, hp, wp, dim)
    return _finish(p, out, lepe, h, w)
