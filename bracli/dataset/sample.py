"""The built-in sample dataset: seeded shapes on cluttered backgrounds, small enough to learn on a CPU.

Why shapes: they need no download, every box and outline is known exactly (the shapes are drawn from
polygons; the circle's outline is a 32-gon), and a detector learns them in a few CPU epochs, so
``bra train`` and ``bra demo`` can show a real, non-zero mAP offline. Each class has its own hue and
outline; the clutter (grey lines, blobs, noise) is desaturated so that colour and shape, not luck,
separate objects from background. ``task="segment"`` writes the same images with polygon labels
(``class x1 y1 x2 y2 ...``) instead of boxes, for segmentation models.

The layout is the usual YOLO one (``images/{train,val}``, ``labels/{train,val}``, ``data.yaml``). The
``data.yaml`` has no ``path:`` key on purpose: ultralytics then resolves ``train``/``val`` next to the
YAML file, so the folder works from any working directory and after being moved.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bracli.errors import BracliError, OutputExistsError, UsageError
from bracli.options import MAX_IMGSZ
from bracli.paths import cache_root

CLASS_NAMES = ("circle", "square", "triangle")
# BGR colours, one hue per class, saturated so they stand out of the grey clutter
CLASS_COLOURS = ((40, 40, 220), (220, 90, 30), (40, 190, 40))
CORNERS = {"square": 4, "triangle": 3}
SAMPLE_VERSION = "sample-v1"
SAMPLE_VERSIONS = {"detect": SAMPLE_VERSION, "segment": "sample-seg-v1"}  # cache folder per task
TASKS = tuple(SAMPLE_VERSIONS)
CIRCLE_VERTICES = 32  # a multiple of 4: the polygon touches the circle's box on all four sides
DEFAULTS = {"seed": 0, "n_train": 128, "n_val": 40, "imgsz": 320}
MAX_IMAGES = 100_000  # per split: a sample this size takes an hour to write; beyond it is a typo
OWNED = ("images", "labels", "data.yaml")  # what a sample writes, and what --force replaces
JPEG_QUALITY = 92
OBJECTS_PER_IMAGE = (2, 5)
RADIUS = (0.10, 0.20)  # of the image side
NOISE_STD = 6.0


@dataclass(frozen=True)
class Box:
    """One labelled object, normalised YOLO ``class cx cy w h``."""

    cls: int
    cx: float
    cy: float
    w: float
    h: float

    def line(self) -> str:
        return f"{self.cls} {self.cx:.6f} {self.cy:.6f} {self.w:.6f} {self.h:.6f}"


@dataclass(frozen=True)
class Shape:
    """One drawn object: its box, and its outline as a polygon of normalised ``(x, y)`` vertices."""

    box: Box
    polygon: tuple[tuple[float, float], ...]

    def line(self, task: str) -> str:
        if task == "detect":
            return self.box.line()
        return f"{self.box.cls} " + " ".join(f"{x:.6f} {y:.6f}" for x, y in self.polygon)


def default_sample(task: str = "detect") -> Path:
    """The cached default sample's data.yaml for ``task``, generated once; concurrent first calls never see half
    a dataset."""
    _check_task(task)
    target = cache_root() / SAMPLE_VERSIONS[task]
    data_yaml = target / "data.yaml"
    if data_yaml.is_file():
        return data_yaml
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as e:
        raise BracliError(f"cannot create the sample cache in {target.parent}: {e.strerror}; "
                          "set BRA_CACHE_DIR to a writable folder") from e
    try:
        write_sample(staging, **DEFAULTS, force=True, task=task)
        try:
            os.rename(staging, target)  # atomic; fails when another process finished first
        except OSError:
            if not data_yaml.is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return data_yaml


def write_sample(out_dir: str | Path, seed: int = DEFAULTS["seed"], n_train: int = DEFAULTS["n_train"],
                 n_val: int = DEFAULTS["n_val"], imgsz: int = DEFAULTS["imgsz"], force: bool = False,
                 progress: Callable[[int, int], None] | None = None, task: str = "detect") -> Path:
    """Write the seeded sample dataset into ``out_dir`` and return its data.yaml.

    ``task`` is ``detect`` (box labels) or ``segment`` (polygon labels); the images are the same for both.
    A non-empty ``out_dir`` is refused unless ``force``; with ``force`` only the sample's own entries
    (``images/``, ``labels/``, ``data.yaml``) are replaced, whole, so no stale file from an earlier sample
    survives. Everything is generated in a temporary folder first and moved in at the end.
    ``progress(done, total)`` is called after each image.
    """
    _check_task(task)
    _check_numbers(seed=seed, n_train=n_train, n_val=n_val, imgsz=imgsz)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} is a file, expected a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise OutputExistsError(out_dir)
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".bra-sample.", dir=out_dir))
    except OSError as e:
        raise UsageError(f"cannot write {out_dir}: {e.strerror}") from e
    try:
        try:
            _generate(staging, seed, {"train": n_train, "val": n_val}, imgsz, progress, task)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if created:  # no empty folder left behind (an interrupt, a full disk)
                with contextlib.suppress(OSError):
                    out_dir.rmdir()
            raise
        for name in OWNED:
            final = out_dir / name
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            elif final.exists() or final.is_symlink():
                final.unlink()
            os.replace(staging / name, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / "data.yaml"


def _check_numbers(*, seed: object, n_train: object, n_val: object, imgsz: object) -> None:
    """The numbers of a sample, checked before anything is created: numpy's own errors name no argument."""
    for name, value in (("seed", seed), ("n_train", n_train), ("n_val", n_val), ("imgsz", imgsz)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{name}={value!r} is not a whole number")
    if seed < 0:  # type: ignore[operator]
        raise UsageError(f"seed={seed} is negative; the sample's seed is a whole number from 0")
    for name, count in (("n_train", n_train), ("n_val", n_val)):
        if not 1 <= count <= MAX_IMAGES:  # type: ignore[operator]
            raise UsageError(f"{name}={count} is out of range: the sample has 1 to {MAX_IMAGES:,} images per split")
    if imgsz < 64:  # type: ignore[operator]
        raise UsageError(f"--imgsz {imgsz} is too small for the sample's shapes; use 64 or more")
    if imgsz > MAX_IMGSZ:  # type: ignore[operator]
        raise UsageError(f"--imgsz {imgsz} is larger than {MAX_IMGSZ} pixels; no single image needs that")


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise UsageError(f"unknown task '{task}' for the sample dataset; choose one of {', '.join(TASKS)}")


def _generate(root: Path, seed: int, counts: dict[str, int], imgsz: int,
              progress: Callable[[int, int], None] | None, task: str) -> None:
    import cv2
    import numpy as np

    total, done = sum(counts.values()), 0
    for split_index, (split, count) in enumerate(counts.items()):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for index in range(count):
            # one generator per image: changing n_train never changes the val images
            rng = np.random.default_rng([seed, split_index, index])
            image, shapes = render_shapes(rng, imgsz)
            stem = f"{split}_{index:05d}"
            ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise BracliError("could not encode a sample image (OpenCV JPEG support is missing)")
            (root / "images" / split / f"{stem}.jpg").write_bytes(encoded.tobytes())
            (root / "labels" / split / f"{stem}.txt").write_text("".join(s.line(task) + "\n" for s in shapes))
            done += 1
            if progress:
                progress(done, total)
    (root / "data.yaml").write_text(_data_yaml(seed, counts, imgsz, task))


def _data_yaml(seed: int, counts: dict[str, int], imgsz: int, task: str) -> str:
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(CLASS_NAMES))
    labels = "# Labels are polygons (class x1 y1 x2 y2 ...), for segmentation models.\n" if task == "segment" else ""
    return (f"# bracli sample dataset ({SAMPLE_VERSIONS[task]}): seed {seed}, {counts['train']} train / "
            f"{counts['val']} val images of {imgsz} px.\n"
            f"{labels}"
            "# No 'path:' key: train/val resolve next to this file, from any working directory.\n"
            "train: images/train\n"
            "val: images/val\n"
            f"nc: {len(CLASS_NAMES)}\n"
            f"names:\n{names}")


def render_image(rng, imgsz: int):
    """One BGR image with a few shapes and clutter, and the shapes' tight boxes (normalised)."""
    image, shapes = render_shapes(rng, imgsz)
    return image, [shape.box for shape in shapes]


def render_shapes(rng, imgsz: int):
    """One BGR image with a few shapes and clutter, and each shape's tight box and outline polygon (normalised)."""
    import cv2
    import numpy as np

    size = imgsz
    image = _background(rng, size)
    _clutter(rng, image)
    shapes: list[Shape] = []
    placed: list[tuple[float, float, float, float]] = []
    for _ in range(int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))):
        for _attempt in range(20):
            radius = float(rng.uniform(*RADIUS) * size)
            cx, cy = (float(v) for v in rng.uniform(radius + 2, size - radius - 2, 2))
            cls = int(rng.integers(len(CLASS_NAMES)))
            points = _shape_points(cls, cx, cy, radius, float(rng.uniform(0, 2 * math.pi)))
            x0, y0 = points.min(0)
            x1, y1 = points.max(0)
            if all(_iou((x0, y0, x1, y1), other) < 0.05 for other in placed):
                break
        else:
            continue
        colour = np.clip(np.array(CLASS_COLOURS[cls]) + rng.integers(-25, 26, 3), 0, 255).tolist()
        shift = 4  # sub-pixel vertices keep boxes tight
        if cls == 0:
            cv2.circle(image, (round(cx * 16), round(cy * 16)), round(radius * 16), colour, -1, cv2.LINE_AA, shift)
        else:
            cv2.fillPoly(image, [np.round(points * 16).astype(np.int32)], colour, cv2.LINE_AA, shift)
        placed.append((x0, y0, x1, y1))
        box = Box(cls, (x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size)
        outline = _circle_polygon(cx, cy, radius) if cls == 0 else points
        shapes.append(Shape(box, tuple((float(x) / size, float(y) / size) for x, y in outline)))
    noise = rng.standard_normal(image.shape, dtype=np.float32) * NOISE_STD
    image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return image, shapes


def _shape_points(cls: int, cx: float, cy: float, radius: float, angle: float):
    """Polygon vertices of a shape (for the circle: two opposite corners of its bounding square)."""
    import numpy as np

    if cls == 0:  # circle: its box is the bounding square, independent of angle
        return np.array([[cx - radius, cy - radius], [cx + radius, cy + radius]])
    corners = CORNERS[CLASS_NAMES[cls]]
    theta = angle + np.arange(corners) * 2 * np.pi / corners
    return np.stack([cx + radius * np.cos(theta), cy + radius * np.sin(theta)], 1)


def _circle_polygon(cx: float, cy: float, radius: float):
    """The circle's outline as a regular polygon starting at angle 0 (so it reaches the circle's box)."""
    import numpy as np

    theta = np.arange(CIRCLE_VERTICES) * 2 * np.pi / CIRCLE_VERTICES
    return np.stack([cx + radius * np.cos(theta), cy + radius * np.sin(theta)], 1)


def _background(rng, size: int):
    """A low-saturation gradient with soft blotches: texture without any class colour."""
    import cv2
    import numpy as np

    base = rng.uniform(60, 190)
    tint = rng.uniform(-15, 15, 3)
    ramp = np.linspace(-1, 1, size)
    gx, gy = np.meshgrid(ramp, ramp)
    direction = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(direction) * gx + np.sin(direction) * gy) * rng.uniform(10, 50)
    blotches = cv2.resize(rng.normal(0, 18, (6, 6)), (size, size), interpolation=cv2.INTER_CUBIC)
    grey = base + gradient + blotches
    return np.clip(grey[..., None] + tint, 0, 255).astype(np.uint8)


def _clutter(rng, image) -> None:
    """Grey distractors: lines and blobs that look like edges and objects but carry no class colour."""
    import cv2

    size = image.shape[0]
    for _ in range(int(rng.integers(2, 7))):
        grey = int(rng.integers(0, 256))
        p0, p1 = (tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(2))
        cv2.line(image, p0, p1, (grey, grey, grey), int(rng.integers(1, 4)), cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 4))):
        grey = int(rng.integers(0, 256))
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        axes = tuple(int(v) for v in rng.integers(3, max(4, size // 25), 2))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, (grey, grey, grey), -1, cv2.LINE_AA)


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
