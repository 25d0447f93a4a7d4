"""Pictures of BRA's routing over an image: how often each region is routed to, and where one query region looks.

Pure drawing (numpy and matplotlib's Agg canvas, never pyplot, so no window ever opens and the user's
backend is untouched). The caller gives the region grid already mapped to image pixels; this module knows
nothing of models or letterboxing. A grid may reach beyond the image: BRA pads its feature map right and
bottom to whole regions, and the image was letterboxed into the network input, so some regions
cover pixels that are not the image. Those parts are drawn hatched, so a route into them stays visible.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bracli.files import atomic_write_bytes

PANEL_INCHES = 5.2  # width of one panel; the height follows the image's aspect
MAX_COUNT_LABELS = 12  # regions per side up to this: each region's count is written in it


@dataclass(frozen=True)
class RegionGrid:
    """A ``rows × cols`` region grid in image pixels; edges may lie outside the image (padding)."""

    x_edges: tuple[float, ...]  # cols + 1 increasing positions
    y_edges: tuple[float, ...]  # rows + 1

    def __post_init__(self) -> None:
        for edges in (self.x_edges, self.y_edges):
            if len(edges) < 2 or any(b <= a for a, b in itertools.pairwise(edges)):
                raise ValueError(f"a region grid needs at least 2 increasing edges per axis, got {edges}")

    @property
    def rows(self) -> int:
        return len(self.y_edges) - 1

    @property
    def cols(self) -> int:
        return len(self.x_edges) - 1

    @property
    def regions(self) -> int:
        return self.rows * self.cols

    def box(self, region: int) -> tuple[float, float, float, float]:
        """``x0, y0, x1, y1`` of a region (row-major index, as ``BiLevelRoutingAttention.route`` numbers them)."""
        row, col = divmod(int(region), self.cols)
        return self.x_edges[col], self.y_edges[row], self.x_edges[col + 1], self.y_edges[row + 1]

    def region_at(self, x: float, y: float) -> int:
        """The region holding point ``(x, y)``; a point beyond the grid counts for the nearest region."""
        col = int(np.clip(np.searchsorted(self.x_edges, x, side="right") - 1, 0, self.cols - 1))
        row = int(np.clip(np.searchsorted(self.y_edges, y, side="right") - 1, 0, self.rows - 1))
        return row * self.cols + col

    def overlaps_image(self, region: int, width: int, height: int) -> bool:
        x0, y0, x1, y1 = self.box(region)
        return x1 > 0 and y1 > 0 and x0 < width and y0 < height


@dataclass
class RoutingPicture:
    """Everything one picture shows: an image, one BRA layer's grid over it, and that layer's routes for it."""

    image: np.ndarray  # H×W×3 RGB, uint8
    grid: RegionGrid
    routes: np.ndarray  # (regions, topk) routed region indices of every query region, best first
    query: int  # the query region whose routes are drawn on the right
    query_note: str  # why that region (e.g. "under the top detection: circle 0.91")
    title: str
    box: tuple[float, float, float, float] | None = None  # the detection that chose the query region, if any

    def __post_init__(self) -> None:
        if self.routes.ndim != 2 or self.routes.shape[0] != self.grid.regions:
            raise ValueError(f"routes must be ({self.grid.regions}, topk), got {tuple(self.routes.shape)}")
        if not 0 <= self.query < self.grid.regions:
            raise ValueError(f"query region {self.query} is not one of the {self.grid.regions} regions")


def routed_counts(routes: np.ndarray, regions: int) -> np.ndarray:
    """How many query regions route to each region (the counts sum to ``regions × topk``)."""
    return np.bincount(np.asarray(routes).reshape(-1), minlength=regions)


def draw_routing(picture: RoutingPicture, path: str | Path, force: bool = False) -> Path:
    """Draw the two panels and write a PNG atomically; never overwrites without ``force``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height, width = picture.image.shape[:2]
    grid = picture.grid
    x_lim = (min(0.0, grid.x_edges[0]), max(float(width), grid.x_edges[-1]))
    y_lim = (min(0.0, grid.y_edges[0]), max(float(height), grid.y_edges[-1]))
    aspect = (y_lim[1] - y_lim[0]) / (x_lim[1] - x_lim[0])
    figure = Figure(figsize=(2 * PANEL_INCHES + 0.9, PANEL_INCHES * aspect + 1.2), layout="constrained")
    FigureCanvasAgg(figure)
    heat_ax, query_ax = figure.subplots(1, 2)
    for ax in (heat_ax, query_ax):
        _background(ax, picture.image, x_lim, y_lim)

    counts = routed_counts(picture.routes, grid.regions)
    topk = picture.routes.shape[1]
    never = np.ma.masked_equal(counts.reshape(grid.rows, grid.cols), 0)  # never routed to: the image shows
    mesh = heat_ax.pcolormesh(grid.x_edges, grid.y_edges, never, cmap="plasma", alpha=0.6, vmin=0,
                              vmax=max(int(counts.max()), 1), zorder=2)
    _grid_lines(heat_ax, grid)
    if max(grid.rows, grid.cols) <= MAX_COUNT_LABELS:
        from matplotlib import patheffects

        outline = [patheffects.withStroke(linewidth=2, foreground="black")]
        for region in np.flatnonzero(counts):
            x0, y0, x1, y1 = grid.box(region)
            heat_ax.text((x0 + x1) / 2, (y0 + y1) / 2, str(counts[region]), ha="center", va="center", fontsize=8,
                         color="white", zorder=4, path_effects=outline)
    figure.colorbar(mesh, ax=heat_ax, fraction=0.046, pad=0.02,
                    label=f"query regions routing here (of {grid.regions})")
    heat_ax.set_title("how often each region is routed to", fontsize="medium")

    _grid_lines(query_ax, grid)
    from matplotlib.patches import Rectangle

    outside = 0
    for rank, region in enumerate(picture.routes[picture.query].tolist(), start=1):
        x0, y0, x1, y1 = grid.box(region)
        outside += not grid.overlaps_image(region, width, height)
        query_ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, facecolor="yellow", alpha=0.35, edgecolor="yellow",
                                     lw=2, zorder=3))
        query_ax.text(x0 + (x1 - x0) * 0.08, y0 + (y1 - y0) * 0.08, str(rank), ha="left", va="top", fontsize=9,
                      weight="bold", color="black", zorder=5,
                      bbox={"facecolor": "yellow", "alpha": 0.85, "boxstyle": "round,pad=0.15", "lw": 0})
    x0, y0, x1, y1 = grid.box(picture.query)
    query_ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="cyan", lw=3, zorder=4))
    if picture.box is not None:
        bx0, by0, bx1, by1 = picture.box
        query_ax.add_patch(Rectangle((bx0, by0), bx1 - bx0, by1 - by0, fill=False, edgecolor="lime", lw=1.5,
                                     linestyle="--", zorder=4))
    row, col = divmod(picture.query, grid.cols)
    query_ax.set_title(f"query region (row {row}, col {col}) and its top-{topk}", fontsize="medium")

    notes = [f"left: how many of the {grid.regions} query regions route to each region (each routes to {topk}; "
             "unfilled: none)",
             f"right: cyan = the query region, {picture.query_note}; yellow = the regions its tokens attend to, "
             "ranked by region affinity" + ("; dashed = that detection" if picture.box is not None else "")]
    if outside:
        notes.append(f"{outside} of its {topk} routed regions lie wholly outside the image")
    notes.append("hatched: not the image (letterbox border, and BRA's zero padding to the region grid)")
    figure.suptitle(picture.title, fontsize="medium")
    figure.supxlabel("\n".join(notes), fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return atomic_write_bytes(path, buffer.getvalue(), force=force)


def _background(ax, image: np.ndarray, x_lim: Sequence[float], y_lim: Sequence[float]) -> None:
    """The image at its place, on a hatched field covering whatever of the grid lies beyond it."""
    from matplotlib.patches import Rectangle

    height, width = image.shape[:2]
    ax.add_patch(Rectangle((x_lim[0], y_lim[0]), x_lim[1] - x_lim[0], y_lim[1] - y_lim[0], facecolor="0.85",
                           edgecolor="0.6", hatch="///", lw=0, zorder=0))
    ax.imshow(image, extent=(0, width, height, 0), zorder=1, interpolation="antialiased")
    ax.set_xlim(*x_lim)
    ax.set_ylim(y_lim[1], y_lim[0])
    ax.set_xticks([])
    ax.set_yticks([])


def _grid_lines(ax, grid: RegionGrid) -> None:
    for x in grid.x_edges:
        ax.plot([x, x], [grid.y_edges[0], grid.y_edges[-1]], color="white", lw=0.7, alpha=0.8, zorder=3)
    for y in grid.y_edges:
        ax.plot([grid.x_edges[0], grid.x_edges[-1]], [y, y], color="white", lw=0.7, alpha=0.8, zorder=3)
