"""What a blog reader's patched ultralytics produces: BiFormer's legacy BRA classes and checkpoints holding them.

The classes follow the released ``ops/bra_legacy.py`` in attribute names, parameter layout and numerics
(NHWC inside, region-major tokens, routed key/value regions gathered from an expanded tensor, attention and
routing scaled by ``qk_dim ** -0.5``), with the blog's two changes: NCHW in and out, auto-padding on. They
pickle as ``ultralytics.nn.modules.block.*``, the blog's module path; :func:`installed_as_blog` puts them
there only while a test saves or loads such a file, as the patched install would.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

BLOG_MODULE = "ultralytics.nn.modules.block"

# The blog's model file, as published: plain YOLOv8 with one BRA row after the P3 head C2f.
BLOG_YAML = """\
# Ultralytics YOLO, AGPL-3.0 license
# YOLOv8 object detection model with P3-P5 outputs, plus BiLevelRoutingAttention

# Parameters
nc: 80 # number of classes
scales: # model compound scaling constants, i.e. 'model=yolov8n.yaml' will call yolov8.yaml with scale 'n'
  # [depth, width, max_channels]
  n: [0.33, 0.25, 1024]
  s: [0.33, 0.50, 1024]
  m: [0.67, 0.75, 768]
  l: [1.00, 1.00, 512]
  x: [1.00, 1.25, 512]

# YOLOv8.0n backbone
backbone:
  # [from, repeats, module, args]
  - [-1, 1, Conv, [64, 3, 2]] # 0-P1/2
  - [-1, 1, Conv, [128, 3, 2]] # 1-P2/4
  - [-1, 3, C2f, [128, True]]
  - [-1, 1, Conv, [256, 3, 2]] # 3-P3/8
  - [-1, 6, C2f, [256, True]]
  - [-1, 1, Conv, [512, 3, 2]] # 5-P4/16
  - [-1, 6, C2f, [512, True]]
  - [-1, 1, Conv, [1024, 3, 2]] # 7-P5/32
  - [-1, 3, C2f, [1024, True]]
  - [-1, 1, SPPF, [1024, 5]] # 9

# YOLOv8.0n head
head:
  - [-1, 1, nn.Upsample, [None, 2, 'nearest']]
  - [[-1, 6], 1, Concat, [1]] # cat backbone P4
  - [-1, 3, C2f, [512]] # 12

  - [-1, 1, nn.Upsample, [None, 2, 'nearest']]
  - [[-1, 4], 1, Concat, [1]] # cat backbone P3
  - [-1, 3, C2f, [256]] # 15 (P3/8-small)
  - [-1, 1, BiLevelRoutingAttention, []] # 16

  - [-1, 1, Conv, [256, 3, 2]]
  - [[-1, 12], 1, Concat, [1]] # cat head P4
  - [-1, 3, C2f, [512]] # 19 (P4/16-medium)

  - [-1, 1, Conv, [512, 3, 2]]
  - [[-1, 9], 1, Concat, [1]] # cat head P5
  - [-1, 3, C2f, [1024]] # 22 (P5/32-large)

  - [[16, 19, 22], 1, Detect, [nc]] # Detect(P3, P4, P5)
"""
BLOG_YAML_NAME = "yolov8-BiLevelRoutingAttention.yaml"


class TopkRouting(nn.Module):
    """Region-level routing: scaled region-mean affinity, top-k regions per query region."""

    __module__ = BLOG_MODULE

    def __init__(self, qk_dim, topk=4, qk_scale=None, param_routing=False, diff_routing=False):
        super().__init__()
        self.topk = topk
        self.qk_dim = qk_dim
        self.scale = qk_scale or qk_dim ** -0.5
        self.diff_routing = diff_routing
        self.emb = nn.Linear(qk_dim, qk_dim) if param_routing else nn.Identity()
        self.routing_act = nn.Softmax(dim=-1)

    def forward(self, query, key):
        if not self.diff_routing:
            query, key = query.detach(), key.detach()
        affinity = (self.emb(query) * self.scale) @ self.emb(key).transpose(-2, -1)  # n, regions, regions
        top_affinity, top_index = affinity.topk(self.topk, dim=-1)
        return self.routing_act(top_affinity), top_index


class KVGather(nn.Module):
    """Copies the routed regions' key/value tokens next to each query region (n, p², topk, tokens, c)."""

    __module__ = BLOG_MODULE

    def __init__(self, mul_weight="none"):
        super().__init__()
        assert mul_weight in ("none", "soft", "hard")
        self.mul_weight = mul_weight

    def forward(self, r_idx, r_weight, kv):
        n, regions, tokens, channels = kv.shape
        topk = r_idx.shape[-1]
        every = kv.view(n, 1, regions, tokens, channels).expand(-1, regions, -1, -1, -1)
        index = r_idx.view(n, regions, topk, 1, 1).expand(-1, -1, -1, tokens, channels)
        selected = torch.gather(every, 2, index)
        if self.mul_weight == "soft":
            selected = r_weight.view(n, regions, topk, 1, 1) * selected
        elif self.mul_weight == "hard":
            raise NotImplementedError("differentiable hard routing")
        return selected


class QKVLinear(nn.Module):
    """One projection to q (qk_dim) and kv (qk_dim + dim)."""

    __module__ = BLOG_MODULE

    def __init__(self, dim, qk_dim, bias=True):
        super().__init__()
        self.dim = dim
        self.qk_dim = qk_dim
        self.qkv = nn.Linear(dim, qk_dim + qk_dim + dim, bias=bias)

    def forward(self, x):
        return self.qkv(x).split([self.qk_dim, self.qk_dim + self.dim], dim=-1)


class BiLevelRoutingAttention(nn.Module):
    """BiFormer's legacy Bi-Level Routing Attention in the blog's YOLO variant (NCHW, auto-padding on)."""

    __module__ = BLOG_MODULE

    def __init__(self, dim, num_heads=8, n_win=7, qk_dim=None, qk_scale=None, kv_per_win=4, kv_downsample_ratio=4,
                 kv_downsample_kernel=None, kv_downsample_mode="identity", topk=4, param_attention="qkvo",
                 param_routing=False, diff_routing=False, soft_routing=False, side_dwconv=3, auto_pad=True):
        super().__init__()
        self.dim = dim
        self.n_win = n_win
        self.num_heads = num_heads
        self.qk_dim = qk_dim or dim
        assert self.qk_dim % num_heads == 0 and self.dim % num_heads == 0
        self.scale = qk_scale or self.qk_dim ** -0.5
        self.lepe = (nn.Conv2d(dim, dim, kernel_size=side_dwconv, stride=1, padding=side_dwconv // 2, groups=dim)
                     if side_dwconv > 0 else (lambda x: torch.zeros_like(x)))
        self.topk = topk
        self.param_routing = param_routing
        self.diff_routing = diff_routing
        self.soft_routing = soft_routing
        assert not (param_routing and not diff_routing)
        self.router = TopkRouting(qk_dim=self.qk_dim, qk_scale=self.scale, topk=topk, diff_routing=diff_routing,
                                  param_routing=param_routing)
        self.kv_gather = KVGather(mul_weight="soft" if soft_routing else "hard" if diff_routing else "none")
        self.param_attention = param_attention
        self.qkv = QKVLinear(dim, self.qk_dim)
        self.wo = {"qkvo": lambda: nn.Linear(dim, dim), "qkv": nn.Identity}[param_attention]()
        self.kv_downsample_mode = kv_downsample_mode
        self.kv_per_win = kv_per_win
        self.kv_downsample_ratio = kv_downsample_ratio
        self.kv_downsample_kenel = kv_downsample_kernel  # the released attribute name, typo included
        self.kv_down = {"identity": nn.Identity, "avgpool": lambda: nn.AvgPool2d(kv_downsample_ratio),
                        "maxpool": lambda: nn.MaxPool2d(kv_downsample_ratio),
                        "ada_avgpool": lambda: nn.AdaptiveAvgPool2d(kv_per_win),
                        "ada_maxpool": lambda: nn.AdaptiveMaxPool2d(kv_per_win)}[kv_downsample_mode]()
        self.attn_act = nn.Softmax(dim=-1)
        self.auto_pad = auto_pad

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)  # the blog's variant: NCHW in, NHWC inside
        n, h_in, w_in, _ = x.shape
        s, qk, dim, m = self.n_win, self.qk_dim, self.dim, self.num_heads
        pad_r, pad_b = (s - w_in % s) % s, (s - h_in % s) % s
        if self.auto_pad:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        _, h, w, _ = x.shape
        rh, rw = h // s, w // s
        # n (j rh) (i rw) c -> n (j i) rh rw c
        x = x.view(n, s, rh, s, rw, dim).permute(0, 1, 3, 2, 4, 5).reshape(n, s * s, rh, rw, dim)
        q, kv = self.qkv(x)
        q_pix = q.reshape(n, s * s, rh * rw, qk)
        kv_pix = self.kv_down(kv.reshape(n * s * s, rh, rw, -1).permute(0, 3, 1, 2))
        kv_tokens = kv_pix.shape[-2] * kv_pix.shape[-1]
        kv_pix = kv_pix.permute(0, 2, 3, 1).reshape(n, s * s, kv_tokens, qk + dim)
        q_win, k_win = q.mean([2, 3]), kv[..., :qk].mean([2, 3])

        v_map = kv[..., qk:].reshape(n, s, s, rh, rw, dim).permute(0, 5, 1, 3, 2, 4).reshape(n, dim, h, w)
        lepe = self.lepe(v_map.contiguous()).permute(0, 2, 3, 1)  # n h w c

        r_weight, r_idx = self.router(q_win, k_win)
        kv_sel = self.kv_gather(r_idx=r_idx, r_weight=r_weight, kv=kv_pix)  # n, p², topk, tokens, qk + dim
        k_sel, v_sel = kv_sel.split([qk, dim], dim=-1)
        topk = k_sel.shape[2]
        k_sel = k_sel.reshape(n * s * s, topk, kv_tokens, m, qk // m).permute(0, 3, 4, 1, 2)
        k_sel = k_sel.reshape(n * s * s, m, qk // m, topk * kv_tokens)
        v_sel = v_sel.reshape(n * s * s, topk, kv_tokens, m, dim // m).permute(0, 3, 1, 2, 4)
        v_sel = v_sel.reshape(n * s * s, m, topk * kv_tokens, dim // m)
        q_pix = q_pix.reshape(n * s * s, rh * rw, m, qk // m).transpose(1, 2)

        attn = self.attn_act((q_pix * self.scale) @ k_sel)
        out = attn @ v_sel  # (n p²), m, tokens, c/m
        # (n j i) m (rh rw) c -> n (j rh) (i rw) (m c)
        out = out.reshape(n, s, s, m, rh, rw, dim // m).permute(0, 1, 4, 2, 5, 3, 6).reshape(n, h, w, dim)
        out = self.wo(out + lepe)
        if self.auto_pad and (pad_r or pad_b):
            out = out[:, :h_in, :w_in, :].contiguous()
        return out.permute(0, 3, 1, 2)


LEGACY_CLASSES = (BiLevelRoutingAttention, TopkRouting, KVGather, QKVLinear)


@contextlib.contextmanager
def installed_as_blog() -> Iterator[None]:
    """The legacy classes resolvable at the blog's module path, as in a patched install; removed afterwards."""
    import importlib

    block = importlib.import_module(BLOG_MODULE)
    present = [cls.__name__ for cls in LEGACY_CLASSES if hasattr(block, cls.__name__)]
    assert not present, f"{BLOG_MODULE} already has {present}"
    for cls in LEGACY_CLASSES:
        setattr(block, cls.__name__, cls)
    try:
        yield
    finally:
        for cls in LEGACY_CLASSES:
            delattr(block, cls.__name__)


def blog_model_dict(scale: str = "n") -> dict:
    """The dict the blog's patched ultralytics stored as ``model.yaml`` for the blog's YAML."""
    model = yaml.safe_load(BLOG_YAML)
    model.update(scale=scale, yaml_file=BLOG_YAML_NAME, channels=3)
    return model


def legacy_detector(seed: int = 0, **bra_options):
    """YOLOv8n with a legacy BRA at layer 16 (dim 64, after the P3 head C2f), as the blog's parser built it."""
    from bracli import templates
    from bracli.engine import models

    torch.manual_seed(seed)
    model = models.build(templates.render("n", ["p3"]))
    bracli_layer = model.model[16]
    legacy = BiLevelRoutingAttention(64, **bra_options)
    legacy.i, legacy.f, legacy.type = bracli_layer.i, bracli_layer.f, f"{BLOG_MODULE}.BiLevelRoutingAttention"
    legacy.np = sum(p.numel() for p in legacy.parameters())
    model.model[16] = legacy
    model.yaml = blog_model_dict("n")
    return model.eval()


def save_like_ultralytics(model: nn.Module, path: Path, **extra) -> Path:
    """A checkpoint laid out as ultralytics' trainer writes one (EMA in fp16, optimizer, args, metrics)."""
    import numpy as np
    from ultralytics.cfg import get_cfg
    from ultralytics.utils.torch_utils import convert_optimizer_state_dict_to_fp16

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    args = vars(get_cfg(overrides={"model": BLOG_YAML_NAME, "data": "data.yaml", "epochs": 3}))
    ckpt = {"epoch": -1, "best_fitness": np.float64(0.25), "model": None, "ema": copy.deepcopy(model).half(),
            "updates": 42, "optimizer": convert_optimizer_state_dict_to_fp16(optimizer.state_dict()),
            "train_args": args, "train_metrics": {"metrics/mAP50(B)": np.float64(0.5), "fitness": np.float64(0.25)},
            "train_results": {"epoch": [1, 2, 3]}, "date": "2026-11-29T00:00:00", "version": "8.0.200",
            "license": "AGPL-3.0 License (https://ultralytics.com/license)", **extra}
    buffer = io.BytesIO()
    with installed_as_blog():
        torch.save(ckpt, buffer)
    path.write_bytes(buffer.getvalue())
    return path


def load_as_blog(path: Path) -> dict:
    """Read a legacy checkpoint the way the patched install does (full unpickling, classes at the blog's path)."""
    with installed_as_blog():
        return torch.load(path, map_location="cpu", weights_only=False)
