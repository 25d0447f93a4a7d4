"""PNG plots of a checked dataset: class histogram, box sizes against the strides, box centres, image sizes.

Figures are drawn with matplotlib's Agg canvas directly (no pyplot, no global backend switch) and
written atomically; existing PNGs are only replaced with ``force``.
"""

from __future__ import annotations

import io
from pathlib import Path

from bracli.dataset.report import Report, printable
from bracli.errors import UsageError
from bracli.files import atomic_write_bytes, check_writable

PLOT_NAMES = ("class_histogram.png", "box_sizes.png", "box_centres.png", "image_sizes.png")
STRIDES = (8, 16, 32)  # YOLOv8's P3, P4, P5 grids


def check_plots_writable(out_dir: Path, force: bool) -> None:
    """Fail before the check runs when a plot would overwrite a file (or the folder is unusable)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--plots {out_dir} is a file; give a folder")
    for name in PLOT_NAMES:
        check_writable(out_dir / name, force)


def write_plots(report: Report, out_dir: str | Path, force: bool = False) -> list[Path]:
    """Draw the four plots into ``out_dir`` and return their paths."""
    out_dir = Path(out_dir)
    check_plots_writable(out_dir, force)
    arrays = report.arrays
    drawings = (_class_histogram, _box_sizes, _box_centres, _image_sizes)
    return [atomic_write_bytes(out_dir / name, _png(draw, arrays), force=force)
            for name, draw in zip(PLOT_NAMES, drawings, strict=True)]


def _png(draw, arrays: dict) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 5), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    draw(figure.add_subplot(), arrays)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _class_histogram(ax, arrays: dict) -> None:
    import numpy as np

    # names come from the data.yaml: shown as written (matplotlib would read "$…$" as math, and fail on bad math)
    names = [printable(name).replace("$", r"\$") for name in arrays.get("class_names") or []]
    per_split = arrays.get("class_instances") or {}
    positions = np.arange(len(names))
    width = 0.8 / max(1, len(per_split))
    for index, (split, counts) in enumerate(per_split.items()):
        ax.bar(positions + index * width - 0.4 + width / 2, counts, width, label=split)
    ax.set_xticks(positions, names, rotation=45 if len(names) > 8 else 0, ha="right" if len(names) > 8 else "center")
    ax.set_ylabel("instances")
    ax.set_title("Instances per class")
    if per_split:
        ax.legend()


def _box_sizes(ax, arrays: dict) -> None:
    widths, heights = arrays.get("box_width_px", []), arrays.get("box_height_px", [])
    imgsz = arrays.get("imgsz", 640)
    if len(widths):
        ax.scatter(widths, heights, s=4, alpha=0.4, linewidths=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
    for stride in STRIDES:
        ax.axvline(stride, color="red", linestyle="--", linewidth=0.8)
        ax.axhline(stride, color="red", linestyle="--", linewidth=0.8)
        ax.annotate(f"stride {stride}", (stride, 1), xycoords=("data", "axes fraction"), rotation=90, va="top",
                    ha="right", fontsize=8, color="red")
    ax.set_xlabel(f"box width at imgsz {imgsz} (px)")
    ax.set_ylabel(f"box height at imgsz {imgsz} (px)")
    ax.set_title("Box sizes after resizing, against the detection strides")


def _box_centres(ax, arrays: dict) -> None:
    import numpy as np

    centres = arrays.get("box_centres", np.zeros((0, 2)))
    heat, _, _ = np.histogram2d(centres[:, 1], centres[:, 0], bins=40, range=[[0, 1], [0, 1]])
    image = ax.imshow(heat, extent=(0, 1, 1, 0), cmap="viridis", aspect="auto")
    ax.figure.colorbar(image, ax=ax, label="boxes")
    ax.set_xlabel("centre x (normalised)")
    ax.set_ylabel("centre y (normalised)")
    ax.set_title("Box centres")


def _image_sizes(ax, arrays: dict) -> None:
    import numpy as np

    sizes = arrays.get("image_sizes", np.zeros((0, 2)))
    if len(sizes):
        ax.scatter(sizes[:, 0], sizes[:, 1], s=8, alpha=0.5, linewidths=0)
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title(f"Image sizes ({len(sizes)} images)")
