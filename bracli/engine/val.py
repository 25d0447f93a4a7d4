"""Validate a checkpoint: overall and per-class precision, recall, mAP50, mAP50-95 (boxes, and masks for
segmentation models)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bracli import options
from bracli.engine.checkpoint import Checkpoint, read_checkpoint
from bracli.engine.data import check_split, resolve_data
from bracli.engine.devices import check_device
from bracli.engine.extras import check_class_ids, validate_extras
from bracli.engine.runs import discard_if_empty, missing_parents, project_dir, tidy_on_failure
from bracli.engine.train import dataset_failure, metrics_of
from bracli.errors import UsageError

SPLITS = ("val", "test")


@dataclass
class ClassMetrics:
    name: str
    images: int
    instances: int
    precision: float
    recall: float
    mAP50: float
    mAP50_95: float


@dataclass
class ValResult:
    weights: str
    data: str
    task: str
    metrics: dict[str, float]
    per_class: list[ClassMetrics]
    save_dir: Path | None  # None: nothing was saved (plots=False), so no folder was kept

    def to_dict(self) -> dict:
        return {"weights": self.weights, "data": self.data, "task": self.task, "metrics": self.metrics,
                "per_class": [asdict(c) for c in self.per_class],
                "save_dir": str(self.save_dir) if self.save_dir else None}


def data_of(checkpoint: Checkpoint, data: str | Path | None, allow_download: bool) -> Path:
    """The data.yaml to use: the one given, else the one the checkpoint was trained on when it is here."""
    if data is not None:
        return resolve_data(data, allow_download)
    stored = checkpoint.train_args.get("data")
    if stored and Path(str(stored)).is_file():
        return resolve_data(stored, allow_download)
    raise UsageError("the checkpoint does not name a data.yaml that exists here; pass --data DATA.yaml")


def val(weights: str | Path | Checkpoint, data: str | Path | None = None, *, imgsz: int | None = None,
        batch: int = 16, device: str | None = None, split: str = "val", conf: float | None = None,
        iou: float | None = None, project: str | Path | None = None, allow_download: bool = False,
        extras: dict[str, Any] | None = None, notice: Callable[[str], None] | None = None) -> ValResult:
    """Validate a checkpoint on its data (or ``data``)."""
    if split not in SPLITS:
        raise UsageError(f"--split must be val or test, not {split!r}")
    extras = validate_extras(extras)
    options.thresholds(conf, iou)
    batch = options.batch(batch)
    size = None if imgsz is None else options.imgsz(imgsz, notice=notice)
    device = options.device(device)
    check_device(device)
    checkpoint = weights if isinstance(weights, Checkpoint) else read_checkpoint(weights)
    check_class_ids(extras, getattr(checkpoint.model, "names", None))
    data_path = data_of(checkpoint, data, allow_download)
    check_split(data_path, split)
    root = project_dir(project, checkpoint.task)
    args: dict[str, Any] = {"data": str(data_path), "batch": batch, "split": split, "project": str(root),
                            "name": "val", **extras}
    for key, value in {"imgsz": size, "device": device, "conf": conf, "iou": iou}.items():
        if value is not None:
            args[key] = value
    created = missing_parents(root)
    with tidy_on_failure(root):
        try:
            metrics = checkpoint.yolo().val(**args)
        except (ValueError, RuntimeError) as e:
            if (refused := dataset_failure(e)) is None:
                raise
            raise refused from e
    save_dir = Path(metrics.save_dir)
    discard_if_empty(save_dir, created)  # ultralytics makes the folder even when it has nothing to save
    return ValResult(weights=str(checkpoint.path), data=str(data_path), task=checkpoint.task,
                     metrics=metrics_of(metrics.results_dict), per_class=_per_class(metrics),
                     save_dir=save_dir if save_dir.is_dir() else None)


def _per_class(metrics) -> list[ClassMetrics]:
    box = metrics.box
    nt_class = metrics.nt_per_class if metrics.nt_per_class is not None else []
    nt_image = metrics.nt_per_image if metrics.nt_per_image is not None else []
    rows = []
    for i, c in enumerate(metrics.ap_class_index):
        p, r, ap50, ap = box.class_result(i)
        rows.append(ClassMetrics(name=metrics.names[int(c)], images=int(nt_image[c]) if len(nt_image) else 0,
                                 instances=int(nt_class[c]) if len(nt_class) else 0, precision=float(p),
                                 recall=float(r), mAP50=float(ap50), mAP50_95=float(ap)))
    return rows
