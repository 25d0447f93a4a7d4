"""The chart for ``bra ablate --plot``: accuracy against cost, one point per finished variant."""

from __future__ import annotations

import io
from pathlib import Path

from bracli.ablation.report import AblationReport, Row
from bracli.errors import BracliError
from bracli.files import atomic_write_bytes

PANELS = (("gflops", "GFLOPs at the training size (multiply-add = 2)"), ("latency_ms", "latency, ms (median, batch 1)"))


def plot_ablation(report: AblationReport, path: str | Path, metric: str = "mAP50-95", force: bool = False) -> Path:
    """mAP against GFLOPs and against latency (a panel each); plain models drawn as squares. Written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: never touches the user's backend
    from matplotlib.figure import Figure

    rows = [row for row in report.rows if row.finished and metric in row.metrics]
    if not rows:
        raise BracliError("--plot: no finished variant to draw yet")
    panels = [(key, label) for key, label in PANELS if any(getattr(row, key) is not None for row in rows)]
    figure = Figure(figsize=(5.2 * len(panels), 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, label) in zip(axes, panels, strict=True):
        for index, row in enumerate(rows):
            _point(ax, row, getattr(row, key), row.metrics[metric], f"C{index % 10}")
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.margins(0.15)
    settings = report.settings
    axes[0].set_title(f"{report.folder.name}: {settings.get('epochs')} epochs at {settings.get('imgsz')}, seed "
                      f"{settings.get('seed')}", loc="left", fontsize="medium")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return atomic_write_bytes(path, buffer.getvalue(), force=force)


def _point(ax, row: Row, cost: float | None, accuracy: float, color: str) -> None:
    if cost is None:
        return
    plain = not row.variant["placements"]
    ax.scatter([cost], [accuracy], marker="s" if plain else "o", s=46, color=color, zorder=3)
    ax.annotate(row.slug, (cost, accuracy), textcoords="offset points", xytext=(5, 4), fontsize=8)
