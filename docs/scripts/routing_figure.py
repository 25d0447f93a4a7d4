"""Render docs/img/bra-routing.png: which regions one query region of BRA attends to.

The feature map is a synthetic image (coloured shapes on a grey ramp) pooled by 8, like a P3 map.
The module's q and k projections are set to the identity on mean-centred colour features, so the
region affinity is plain colour similarity and the picture shows routing doing what it is for:
a query region on a red disc routes to the other regions where red is. With trained weights the
features are learned, but the mechanism — region means, affinity, top-k — is the same.

Run: ``.venv/bin/python docs/scripts/routing_figure.py`` (``--out PATH`` to write elsewhere).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle

from bracli.nn import BiLevelRoutingAttention

SIZE, STRIDE, N_WIN, TOPK = 256, 8, 8, 4
OUT = Path(__file__).resolve().parents[1] / "img" / "bra-routing.png"


def synthetic_image() -> torch.Tensor:
    """3×SIZE×SIZE in [0, 1]: a grey ramp, two red discs, a blue square, a green bar."""
    ys, xs = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32),
                            indexing="ij")
    image = (0.35 + 0.3 * xs / SIZE).expand(3, SIZE, SIZE).clone()

    def paint(mask: torch.Tensor, rgb: tuple[float, float, float]) -> None:
        for channel, value in enumerate(rgb):
            image[channel][mask] = value

    paint((ys - 60) ** 2 + (xs - 70) ** 2 < 34**2, (0.9, 0.15, 0.1))
    paint((ys - 185) ** 2 + (xs - 190) ** 2 < 40**2, (0.85, 0.1, 0.15))
    paint((ys > 150) & (ys < 230) & (xs > 30) & (xs < 110), (0.1, 0.25, 0.9))
    paint((ys > 40) & (ys < 80) & (xs > 150) & (xs < 240), (0.15, 0.8, 0.2))
    return image


def colour_routing_module(channels: int) -> BiLevelRoutingAttention:
    """BRA whose q and k are the input features themselves (identity projections, no bias)."""
    module = BiLevelRoutingAttention(channels, n_win=N_WIN, num_heads=1, topk=TOPK)
    with torch.no_grad():
        weight = torch.zeros_like(module.qkv.qkv.weight)
        eye = torch.eye(channels)
        weight[:channels], weight[channels:2 * channels], weight[2 * channels:] = eye, eye, eye
        module.qkv.qkv.weight.copy_(weight)
        module.qkv.qkv.bias.zero_()
    return module


def render(out: Path) -> Path:
    image = synthetic_image()
    pooled = F.avg_pool2d(image[None], STRIDE)  # 1×3×32×32, a P3-sized map
    features = pooled - pooled.mean(dim=(2, 3), keepdim=True)  # centred: affinity = colour similarity
    module = colour_routing_module(features.shape[1])
    routes = module.route(features)[0]  # (N_WIN², TOPK)

    side = features.shape[-1] // N_WIN  # tokens per region side on the map
    cell = side * STRIDE  # region size in image pixels
    query = (60 // cell) * N_WIN + 70 // cell  # the region under the centre of the first red disc
    chosen = routes[query].tolist()

    q_mean = F.avg_pool2d(features, side)[0].flatten(1).t()  # region means; q = k = features here
    affinity = (q_mean[query] @ q_mean.t()).view(N_WIN, N_WIN) * module.scale

    fig, all_axes = plt.subplots(1, 3, figsize=(15, 5.4), gridspec_kw={"width_ratios": [1, 1, 1.1]})
    axes = all_axes[:2]
    axes[0].imshow(image.permute(1, 2, 0).numpy())
    axes[0].set_title("input (synthetic), region grid n_win=8")
    axes[1].imshow(pooled[0].permute(1, 2, 0).numpy(), extent=(0, SIZE, SIZE, 0))
    axes[1].set_title(f"feature map 32×32: query region and its top-{TOPK}")
    for ax in axes:
        for k in range(1, N_WIN):
            ax.axhline(k * cell, color="white", lw=0.6, alpha=0.7)
            ax.axvline(k * cell, color="white", lw=0.6, alpha=0.7)
        ax.set_xticks([])
        ax.set_yticks([])
    for rank, region in enumerate(chosen, start=1):
        row, col = divmod(region, N_WIN)
        axes[1].add_patch(Rectangle((col * cell, row * cell), cell, cell, facecolor="yellow", alpha=0.35,
                                    edgecolor="yellow", lw=2))
        axes[1].text(col * cell + 4, row * cell + 14, str(rank), color="black", fontsize=11, weight="bold")
    row, col = divmod(query, N_WIN)
    for ax in axes:
        ax.add_patch(Rectangle((col * cell, row * cell), cell, cell, fill=False, edgecolor="cyan", lw=3))
    heat = all_axes[2].imshow(affinity.numpy(), cmap="viridis")
    all_axes[2].set_title("region affinity of the query region (q̄·k̄ᵀ, scaled)")
    for rank, region in enumerate(chosen, start=1):
        row, col = divmod(region, N_WIN)
        all_axes[2].text(col, row, str(rank), ha="center", va="center", color="black", fontsize=11, weight="bold",
                         bbox={"facecolor": "yellow", "alpha": 0.8, "boxstyle": "round,pad=0.2"})
    all_axes[2].set_xticks(range(N_WIN))
    all_axes[2].set_yticks(range(N_WIN))
    fig.colorbar(heat, ax=all_axes[2], fraction=0.046)
    fig.text(0.5, 0.02, "cyan: query region · yellow, ranked: the regions its tokens attend to "
             "(q = k = centred colour, so affinity = colour similarity)", ha="center", fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    print(render(parser.parse_args().out))


if __name__ == "__main__":
    main()
