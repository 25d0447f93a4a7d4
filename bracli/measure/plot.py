"""The chart for ``bra profile --plot``: how each figure grows with the input size, model next to vanilla."""

from __future__ import annotations

import io
from pathlib import Path

from bracli.errors import UsageError
from bracli.files import atomic_write_bytes
from bracli.measure.report import CostReport, ModelCost
from bracli.measure.runtime import cpu_threads_text


def plot_cost(profile: CostReport, path: str | Path, force: bool = False) -> Path:
    """Draw GFLOPs, latency and memory against input pixels (one panel each) and write a PNG atomically.

    The x axis is the pixel count, so a cost that grows linearly with the image is a straight line.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: never touches the user's backend
    from matplotlib.figure import Figure

    sizes = [s.imgsz for s in profile.model.sizes]
    if len(sizes) < 2:
        raise UsageError("--plot needs at least two --imgsz values to draw how the cost grows")
    panels = [name for name, present in (("gflops", profile.model.sizes[0].flops),
                                         ("latency", profile.model.sizes[0].latency),
                                         ("memory", profile.model.sizes[0].memory)) if present]
    if not panels:
        raise UsageError("--plot has nothing to draw: measure --gflops, --latency or --memory")
    figure = Figure(figsize=(4.6 * len(panels), 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    megapixels = [h * w / 1e6 for h, w in sizes]
    labels = [f"{h}" if h == w else f"{h}×{w}" for h, w in sizes]
    models = [(profile.model, "-", "o", "C0")] + ([(profile.baseline, "--", "s", "C1")] if profile.baseline else [])
    for ax, panel in zip(axes, panels, strict=True):
        for model, style, marker, color in models:
            _draw(ax, panel, model, megapixels, dict(linestyle=style, marker=marker, color=color))
        ax.set_xticks(megapixels, labels)
        ax.set_xlabel("imgsz (spaced by pixel count)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    where = f"{profile.device}, {cpu_threads_text(profile.cpu_threads)}" if profile.device == "cpu" else profile.device
    axes[0].set_title(f"{profile.model.name}, batch {profile.batch}, {where}", loc="left", fontsize="medium")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return atomic_write_bytes(path, buffer.getvalue(), force=force)


def _draw(ax, panel: str, model: ModelCost, x: list[float], style: dict[str, str]) -> None:
    sizes = model.sizes
    if panel == "gflops":
        ax.plot(x, [s.flops.total_gflops for s in sizes], **style, label=model.name)
        ax.set_ylabel("GFLOPs (multiply-add = 2)")
    elif panel == "latency":
        median = [s.latency.median_ms for s in sizes]
        spread = [[m - s.latency.p10_ms for m, s in zip(median, sizes, strict=True)],
                  [s.latency.p90_ms - m for m, s in zip(median, sizes, strict=True)]]
        ax.errorbar(x, median, yerr=spread, **style, capsize=3, label=f"{model.name} (p10–p90)")
        ax.set_ylabel("forward latency, ms (median)")
    else:
        ax.plot(x, [s.memory.forward_mib for s in sizes], **style, label=f"{model.name} forward")
        ax.plot(x, [s.memory.train_mib for s in sizes], **style, fillstyle="none",
                label=f"{model.name} forward+backward")
        ax.set_ylabel("peak memory, MiB")
