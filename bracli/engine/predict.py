"""Predict with a checkpoint on images, folders, globs, videos, cameras or streams; count what it finds.

Images that cannot be decoded are named, one line each, and make the command fail at the end instead of
silently producing an empty table; ``--show`` falls back to saving when no window can open.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bracli import options
from bracli.engine.checkpoint import Checkpoint, read_checkpoint
from bracli.engine.devices import check_device
from bracli.engine.extras import check_class_ids, validate_extras
from bracli.engine.routing import FOLDER as ROUTING_FOLDER
from bracli.engine.routing import RoutingRecorder, check_routable
from bracli.engine.runs import newest_weights, project_dir, tidy_on_failure
from bracli.engine.sources import display_available, resolve_source, unreadable_images
from bracli.errors import BracliError


@dataclass
class ImagePrediction:
    source: str
    counts: dict[str, int]
    saved: str | None
    routing: list[str] = field(default_factory=list)  # routing pictures, one per BRA layer (--routing)


@dataclass
class PredictResult:
    weights: str
    save_dir: Path | None
    predictions: list[ImagePrediction]
    shown: bool
    notes: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # image -> why it could not be read

    def to_dict(self) -> dict:
        return {"weights": self.weights, "save_dir": str(self.save_dir) if self.save_dir else None,
                "predictions": [asdict(p) for p in self.predictions], "shown": self.shown, "notes": self.notes,
                "unreadable": self.unreadable}


def predict(source: str | None = None, weights: str | Path | Checkpoint | None = None, *, show: bool = False,
            save: bool = True, conf: float | None = None, iou: float | None = None, imgsz: int = 640,
            device: str | None = None, project: str | Path | None = None, extras: dict[str, Any] | None = None,
            routing: bool = False, routing_query: tuple[float, float] | None = None,
            notice: Callable[[str], None] | None = None) -> PredictResult:
    """Detect (or segment) objects; ``show`` falls back to saving annotated images when no window can open.

    ``routing`` (or a ``routing_query`` point in image pixels) also draws each BRA layer's routing per image
    (``bracli.engine.routing``), into the ``routing/`` folder of the predictions."""
    extras = validate_extras(extras)
    options.thresholds(conf, iou)
    device = options.device(device)
    check_device(device)
    imgsz = options.imgsz(imgsz, notice=notice)
    resolved = resolve_source(source)
    if isinstance(weights, Checkpoint):
        checkpoint = weights
    else:
        checkpoint = read_checkpoint(weights if weights is not None else newest_weights(project))
    check_class_ids(extras, getattr(checkpoint.model, "names", None))
    routing = routing or routing_query is not None
    if routing:
        check_routable(checkpoint.model, extras)
    unreadable = unreadable_images(resolved.images)
    if resolved.images and len(unreadable) == len(resolved.images):
        image, why = next(iter(unreadable.items()))
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        raise BracliError(f"cannot read image {image}: {why}{more}")
    notes = []
    if show:
        ok, why = display_available()
        if not ok:
            notes.append(f"--show: {why}; saving annotated images instead")
            show, save = False, True
    value = resolved.value
    if unreadable and resolved.only_images:  # predict the readable ones; the unreadable are reported
        value = [image for image in resolved.images if image not in unreadable]
    args: dict[str, Any] = {"stream": True, "show": show, "save": save, "imgsz": imgsz, "verbose": False,
                            "project": str(project_dir(project, checkpoint.task)), "name": "predict", **extras}
    for key, given in {"device": device, "conf": conf, "iou": iou}.items():
        if given is not None:
            args[key] = given
    with tempfile.TemporaryDirectory(prefix="bracli-sources-") as tmp:
        if isinstance(value, list):  # a list file keeps every result's own file name
            listing = Path(tmp) / "sources.txt"
            listing.write_text("\n".join(value) + "\n", encoding="utf-8")
            value = str(listing)
        with tidy_on_failure(project_dir(project, checkpoint.task)):
            predictions, save_dir = _run(checkpoint, value, save=save, args=args, routing=routing,
                                         routing_query=routing_query)
    return PredictResult(weights=str(checkpoint.path), save_dir=save_dir, predictions=predictions, shown=show,
                         notes=notes, unreadable=unreadable)


def _run(checkpoint: Checkpoint, source: str | int, *, save: bool, args: dict[str, Any], routing: bool = False,
         routing_query: tuple[float, float] | None = None) -> tuple[list[ImagePrediction], Path | None]:
    yolo = checkpoint.yolo()
    recorder = RoutingRecorder(yolo, routing_query) if routing else None
    predictions = []
    save_dir = None
    try:
        for result in yolo.predict(source=source, **args):
            names = result.names
            counts = Counter(names[int(c)] for c in result.boxes.cls.tolist()) if result.boxes is not None else {}
            save_dir = Path(yolo.predictor.save_dir) if save else None
            saved = save_dir / Path(result.path).name if save_dir else None
            pictures = recorder.draw(result, Path(yolo.predictor.save_dir) / ROUTING_FOLDER) if recorder else []
            predictions.append(ImagePrediction(source=str(result.path), counts=dict(counts),
                                               saved=str(saved) if saved and saved.exists() else None,
                                               routing=[str(p) for p in pictures]))
    except (FileNotFoundError, ConnectionError) as e:
        raise BracliError(f"cannot read source: {str(e).splitlines()[0]}") from e
    finally:
        if recorder is not None:
            recorder.close()
    return predictions, save_dir
