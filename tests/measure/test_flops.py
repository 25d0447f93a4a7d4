"""FLOPs counted at the dispatcher: against hand counts, across threads, SDPA vs matmul, in whole models."""

from __future__ import annotations

import math
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bracli import templates
from bracli.engine import models
from bracli.engine.cost import ultralytics_gflops
from bracli.measure import flops as prof
from bracli.measure.runtime import measure_memory
from bracli.nn import BiLevelRoutingAttention


def bra_flops_by_hand(batch: int, dim: int, height: int, width: int, *, n_win: int, topk: int,
                      qk_dim: int | None = None, side_dwconv: int = 3) -> int:
    """BRA's multiply-adds ×2 from its shape alone.

    The map is zero-padded to an n_win grid and these stages run on the padded tokens: the q/k/v
    projection, the region affinity (S² × S² over qk_dim), each query region's tokens against the
    tokens of its top-k regions (Q·Kᵀ over qk_dim and attention·V over dim; heads only split channels)
    and the depthwise LCE conv on v. The output is cropped back to H×W before the output projection
    (a per-token linear, so cropping first changes no output value), which therefore runs on H·W tokens.
    """
    qk_dim = qk_dim or dim
    padded_h, padded_w = math.ceil(height / n_win) * n_win, math.ceil(width / n_win) * n_win
    tokens = padded_h * padded_w
    regions = n_win * n_win
    per_region = tokens // regions
    projection = tokens * dim * (2 * qk_dim + dim)
    routing = regions * regions * qk_dim
    attention = regions * per_region * topk * per_region * (qk_dim + dim)
    lce = tokens * dim * side_dwconv**2
    output = height * width * dim * dim
    return 2 * batch * (projection + routing + attention + lce + output)


BRA_SHAPES = [  # dim, n_win, heads, topk, qk_dim, side_dwconv, height, width, batch
    (64, 8, 8, 4, None, 3, 40, 40, 1),  # divisible: no padding
    (64, 7, 8, 4, None, 3, 40, 40, 1),  # padded to 42×42
    (32, 8, 4, 4, 16, 3, 20, 28, 2),  # padded, not square, qk_dim ≠ dim, batch 2
    (48, 4, 6, 16, None, 0, 13, 9, 1),  # odd padding on both sides, topk = all regions, no LCE
    (128, 8, 8, 1, None, 5, 64, 64, 1),  # topk 1, wider LCE kernel
]


@pytest.mark.parametrize(("dim", "n_win", "heads", "topk", "qk_dim", "side", "height", "width", "batch"),
                         BRA_SHAPES)
def test_bra_flops_match_hand_count(dim, n_win, heads, topk, qk_dim, side, height, width, batch):
    module = BiLevelRoutingAttention(dim, n_win=n_win, num_heads=heads, topk=topk, qk_dim=qk_dim, side_dwconv=side)
    expected = bra_flops_by_hand(batch, dim, height, width, n_win=n_win, topk=topk, qk_dim=qk_dim, side_dwconv=side)
    count = prof.count_flops(module, (height, width), batch)
    assert count.counted_on == "meta"
    assert count.bra_layers[0] * 1e9 == pytest.approx(expected, rel=0.01)
    assert count.total_gflops == pytest.approx(count.bra_gflops)
    assert count.bra_input_shapes[0] == [batch, dim, height, width]


@pytest.fixture
def two_torch_threads():
    """Two intra-op threads even on a one-core machine, so work split across threads is exercised."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("height", "width"), [(30, 22), (80, 80)])  # padded; many routed chunks
def test_meta_and_real_counts_agree_on_bra(height, width, two_torch_threads):
    module = BiLevelRoutingAttention(64, n_win=7 if height == 30 else 8, num_heads=8, topk=4)
    on_meta = prof.count_flops(module, (height, width), 1)
    on_cpu = prof.count_flops(module, (height, width), 1, device="cpu")
    assert on_cpu.counted_on == "cpu"
    assert on_meta.total_gflops == on_cpu.total_gflops
    assert on_meta.by_operator == on_cpu.by_operator
    assert torch.get_num_threads() == 2


class SplitAcrossThreads(nn.Module):
    """Pixel-by-pixel similarity (L×L over C), its rows shared out to one Python thread per torch thread."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2)[0].T.contiguous()  # L, C
        shares = tokens.chunk(torch.get_num_threads())
        parts: list[torch.Tensor | None] = [None] * len(shares)

        def work(i: int) -> None:
            parts[i] = shares[i] @ tokens.T

        helpers = [threading.Thread(target=work, args=(i,)) for i in range(1, len(shares))]
        for helper in helpers:
            helper.start()
        work(0)
        for helper in helpers:
            helper.join()
        return torch.cat(parts)


def test_work_in_other_threads_is_counted(two_torch_threads):
    tokens, channels = 12 * 10, 16
    count = prof.count_flops(SplitAcrossThreads(), (12, 10), channels=channels, device="cpu")
    assert count.total_gflops * 1e9 == 2 * tokens * tokens * channels
    memory = measure_memory(SplitAcrossThreads(), (12, 10), channels=channels)
    assert memory.forward_bytes >= 2 * tokens * tokens * 4  # every share's product, then their concatenation
    assert torch.get_num_threads() == 2


class TokenAttention(nn.Module):
    """Multi-head self-attention over an NCHW map's pixels, written with matmul or with SDPA."""

    def __init__(self, heads: int, sdpa: bool) -> None:
        super().__init__()
        self.heads, self.sdpa = heads, sdpa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2).reshape(n, h * w, self.heads, c // self.heads).transpose(1, 2)
        if self.sdpa:
            return F.scaled_dot_product_attention(t, t, t)
        return ((t @ t.transpose(-1, -2)) * (c // self.heads) ** -0.5).softmax(-1) @ t


@pytest.mark.parametrize("device", ["meta", "cpu"])  # on CPU, SDPA runs its flash kernel; on meta, its math path
def test_attention_counts_the_same_with_matmul_or_sdpa(device):
    batch, channels, heads, h, w = 2, 32, 4, 6, 8
    expected = 2 * batch * heads * (h * w) * (h * w) * 2 * (channels // heads)
    counts = [prof.count_flops(TokenAttention(heads, sdpa), (h, w), batch, channels=channels, device=device)
              for sdpa in (False, True)]
    assert [c.total_gflops * 1e9 for c in counts] == [pytest.approx(expected)] * 2


def test_bra_layers_inside_a_model_match_hand_count():
    rendered = templates.render("n", ["p3", "p5"], n_win=7)
    model = models.build(rendered)
    count = prof.count_flops(model, 320)
    layers = {layer["index"]: layer for layer in rendered["bra"]["layers"]}
    assert set(count.bra_layers) == set(layers)
    for index, layer in layers.items():
        side = 320 // layer["stride"]  # 40 at P3 (padded to 42), 10 at P5 (padded to 14)
        assert count.bra_input_shapes[index] == [1, layer["channels"], side, side]
        expected = bra_flops_by_hand(1, layer["channels"], side, side, n_win=7, topk=4)
        assert count.bra_layers[index] * 1e9 == pytest.approx(expected, rel=0.01)
        assert count.per_layer[index] == pytest.approx(count.bra_layers[index])
        assert count.bra_shares[index] == pytest.approx(count.bra_layers[index] / count.total_gflops)
    assert sum(count.per_layer.values()) == pytest.approx(count.total_gflops)
    assert count.bra_share == pytest.approx(sum(count.bra_shares.values()))


def test_counting_leaves_the_model_as_it_was():
    model = models.build(templates.render("n", ["p3"]))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prof.count_flops(model, 128)
    assert model.training
    assert all(not layer._forward_hooks and not layer._forward_pre_hooks for layer in model.model)
    after = model.state_dict()
    assert all(after[k].device.type == "cpu" and torch.equal(after[k], v) for k, v in before.items())


def test_count_survives_a_cached_head_and_matches_a_real_forward():
    model = models.build(templates.render("n", ["p3"])).eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 96, 96))  # the head caches real anchors for this size
    on_meta = prof.count_flops(model, 96)
    assert on_meta.counted_on == "meta"
    assert on_meta.total_gflops == prof.count_flops(model, 96, device="cpu").total_gflops


class ReadsValues(nn.Module):
    """A forward that branches on a value: cannot run on shapes alone."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y if y.abs().sum().item() >= 0 else -y


def test_count_falls_back_to_the_real_device_when_values_are_read():
    count = prof.count_flops(ReadsValues(), (8, 10), 1, channels=4)
    assert count.counted_on == "cpu"
    assert count.total_gflops * 1e9 == 2 * 8 * 10 * 6 * 4 * 9


def test_vanilla_yolov8n_at_640_matches_the_published_figure_and_ultralytics():
    model = models.build(templates.render("n", []))
    count = prof.count_flops(model, 640)
    assert 8.7 <= count.total_gflops <= 8.9
    assert count.bra_layers == {} and count.bra_share == 0.0
    ultralytics = ultralytics_gflops(model, 640)
    assert ultralytics == pytest.approx(count.total_gflops, rel=0.03)

