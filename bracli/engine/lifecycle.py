"""train / val / predict / export through ultralytics, with BRA registered and bracli's guarantees.

Each function validates its inputs first (so bad input fails in one line before any work), runs
ultralytics in-process with :class:`BraDetectionTrainer`, and returns a small dataclass.
"""

from __future__ import annotations

import difflib
import glob
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bracli.engine import offline

offline.guard()

import torch  # noqa: E402
import yaml  # noqa: E402
from ultralytics import YOLO  # noqa: E402
from ultralytics.cfg import DEFAULT_CFG_DICT, check_cfg, smart_value  # noqa: E402
from ultralytics.data.utils import IMG_FORMATS, VID_FORMATS  # noqa: E402
from ultralytics.nn.tasks import DetectionModel  # noqa: E402
from ultralytics.utils import ASSETS  # noqa: E402

from bracli import __version__  # noqa: E402
from bracli.engine import models  # noqa: E402
from bracli.engine.data import resolve_data  # noqa: E402
from bracli.engine.trainer import BraDetectionTrainer  # noqa: E402
from bracli.errors import BracliError, MissingDependencyError, OutputExistsError, UsageError  # noqa: E402
from bracli.files import atomic_write_text  # noqa: E402

METRIC_KEYS = {"precision": "metrics/precision(B)", "recall": "metrics/recall(B)",
               "mAP50": "metrics/mAP50(B)", "mAP50-95": "metrics/mAP50-95(B)"}
# arguments that have their own option or are decided by bracli; extras may not set them
RESERVED_EXTRAS = {"model", "data", "mode", "task", "resume", "pretrained", "source", "format", "project", "name",
                   "epochs", "imgsz", "batch", "device", "workers", "seed", "conf", "iou", "show", "save",
                   "dynamic", "half", "simplify", "opset"}
EXPORT_FORMATS = {"onnx": ("onnx", "onnxruntime"), "torchscript": (), "openvino": ("openvino",)}


# ---------------------------------------------------------------------------------------------- options


def parse_extras(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` strings → validated ultralytics arguments (unknown key: closest match, exit 2)."""
    extras: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise UsageError(f"extra argument {pair!r} is not key=value (e.g. lr0=0.005)")
        if key in RESERVED_EXTRAS:
            raise UsageError(f"{key}= has its own option; use --{key.replace('_', '-')} instead")
        if key not in DEFAULT_CFG_DICT:
            close = difflib.get_close_matches(key, DEFAULT_CFG_DICT.keys(), n=1)
            hint = f"; did you mean {close[0]}=?" if close else ""
            raise UsageError(f"unknown ultralytics argument {key!r}{hint}")
        extras[key] = smart_value(raw.strip())
    try:
        check_cfg(dict(extras), hard=True)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e).splitlines()[0]) from e
    return extras


def round_imgsz(imgsz: int, stride: int = 32) -> int:
    """ultralytics rounds image sizes up to a multiple of the model stride; bracli does it up front and says so."""
    if imgsz < stride:
        raise UsageError(f"--imgsz {imgsz} is smaller than the model stride {stride}")
    return -(-imgsz // stride) * stride


def default_project() -> Path:
    """Runs go to ./runs/detect of the working directory (ultralytics' own default moves with its settings)."""
    return Path.cwd() / "runs" / "detect"


def _project(project: str | Path | None) -> str:
    return str(Path(project).expanduser().resolve()) if project else str(default_project())


def checkpoint(weights: str | Path) -> Path:
    """A local checkpoint path, validated: exists, is a .pt, holds a detection model."""
    return read_checkpoint(weights)[0]


def read_checkpoint(weights: str | Path) -> tuple[Path, DetectionModel, dict[str, Any]]:
    """:func:`checkpoint`, also returning what it read: the model and the checkpoint dict."""
    path = Path(weights).expanduser()
    if path.suffix.lower() not in models.CHECKPOINT_SUFFIXES:
        raise UsageError(f"{path} is not a .pt checkpoint")
    model, ckpt = models.read(path)  # one-line BracliError for missing / unreadable / foreign files
    return path.resolve(), model, ckpt


def _metrics(results: dict[str, float] | None) -> dict[str, float]:
    results = results or {}
    return {name: float(results[key]) for name, key in METRIC_KEYS.items() if key in results}


# ---------------------------------------------------------------------------------------------- train


@dataclass
class TrainResult:
    run_dir: Path
    best: Path | None
    last: Path | None
    metrics: dict[str, float]
    epochs: int
    model: str
    data: str
    transfer: dict | None = None

    def to_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


@dataclass
class ModelChoice:
    """The model to train: a YAML/checkpoint path, or render options for a fresh BRA model."""

    path: Path | None = None
    scale: str = "n"
    placements: tuple[str, ...] = ("p3",)
    bra_options: dict[str, int] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        if self.path:
            return {"path": str(self.path)}
        return {"scale": self.scale, "placements": list(self.placements), **self.bra_options}


def _materialise_model(choice: ModelChoice, workdir: Path) -> Path:
    if choice.path is not None:
        path = Path(choice.path).expanduser()
        if path.suffix.lower() in models.CHECKPOINT_SUFFIXES:
            return checkpoint(path)
        models.model_dict(path)  # validates name and YAML
        return path.resolve()
    from bracli import templates

    model = templates.render(choice.scale, list(choice.placements), **choice.bra_options)
    path = workdir / templates.model_filename(choice.scale, list(choice.placements))
    header = f"rendered by bracli {__version__} for bra train: {choice.describe()}"
    atomic_write_text(path, templates.to_yaml(model, header), force=True)
    return path


def find_resumable(resume: str | Path | bool, project: str | Path | None) -> Path:
    """The checkpoint to resume: a given path, or the newest last.pt under the project folder."""
    if resume is True or str(resume) == "latest":
        root = Path(_project(project))
        candidates = glob.glob(str(root / "**" / "weights" / "last.pt"), recursive=True)
        if not candidates:
            raise BracliError(f"no run to resume under {root}; pass --resume PATH/TO/last.pt")
        path = Path(max(candidates, key=os.path.getmtime))
    else:
        path = Path(str(resume)).expanduser()
        if path.is_dir():
            path = path / "weights" / "last.pt"
    if not path.is_file():
        raise BracliError(f"checkpoint to resume not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("optimizer") is None or ckpt.get("epoch", -1) < 0:
        raise BracliError(f"{path} cannot be resumed: its run finished (or it is not a training checkpoint); "
                          "start a new run with --weights to fine-tune from it")
    return path.resolve()


def train(
    data: str | Path | None = None,
    model: ModelChoice | None = None,
    weights: str | Path | None = None,
    *,
    epochs: int = 50,
    imgsz: int = 640,
    batch: int = 16,
    device: str | None = None,
    workers: int = 8,
    project: str | Path | None = None,
    name: str | None = None,
    seed: int = 0,
    resume: str | Path | bool | None = None,
    allow_download: bool = False,
    extras: dict[str, Any] | None = None,
    callbacks: dict[str, Callable] | None = None,
) -> TrainResult:
    """Train a BRA detector; ``resume`` continues an interrupted run instead of starting one."""
    extras = dict(extras or {})
    if resume:
        last = find_resumable(resume, project)
        yolo = YOLO(str(last))
        for event, fn in (callbacks or {}).items():
            yolo.add_callback(event, fn)
        overrides = {k: v for k, v in {"device": device, "data": data and str(resolve_data(data, allow_download))}
                     .items() if v is not None}
        # ultralytics applies the few it allows on resume (batch, workers, patience …) and warns about the rest
        yolo.train(resume=True, trainer=BraDetectionTrainer, **extras, **overrides)
        return _train_result(yolo, model="resumed " + str(last), data=str(yolo.trainer.args.data))

    if data is None:
        from bracli.dataset.sample import default_sample

        data = default_sample()
    data_path = resolve_data(data, allow_download)
    source_weights = checkpoint(weights) if weights else None
    choice = model or ModelChoice()
    with tempfile.TemporaryDirectory(prefix="bracli-model-") as tmp:
        model_path = _materialise_model(choice, Path(tmp))
        yolo = YOLO(str(model_path))
        run_info = {"bracli": __version__, "data": str(Path(data).resolve()), "data_resolved": str(data_path),
                    "model": choice.describe(), "weights": str(source_weights) if source_weights else None,
                    "extras": extras}
        rendered = model_path.read_text(encoding="utf-8") if choice.path is None else None

        def write_run_files(trainer: BraDetectionTrainer) -> None:
            info = {**run_info, "transfer": trainer.transfer_report.to_dict() if trainer.transfer_report else None}
            save_dir = Path(trainer.save_dir)
            atomic_write_text(save_dir / "bracli.yaml", yaml.safe_dump(info, sort_keys=False), force=True)
            if rendered is not None:
                atomic_write_text(save_dir / model_path.name, rendered, force=True)

        yolo.add_callback("on_pretrain_routine_end", write_run_files)
        for event, fn in (callbacks or {}).items():
            yolo.add_callback(event, fn)
        args = {"data": str(data_path), "epochs": epochs, "imgsz": imgsz, "batch": batch, "workers": workers,
                "project": _project(project), "seed": seed, "exist_ok": False, **extras}
        if name:
            args["name"] = name
        if device is not None:
            args["device"] = device
        if source_weights:
            args["pretrained"] = str(source_weights)
        yolo.train(trainer=BraDetectionTrainer, **args)
    return _train_result(yolo, model=str(choice.describe()), data=str(data_path))


def _train_result(yolo: YOLO, model: str, data: str) -> TrainResult:
    trainer = yolo.trainer
    report = trainer.transfer_report
    best = Path(trainer.best) if Path(trainer.best).exists() else None
    last = Path(trainer.last) if Path(trainer.last).exists() else None
    results = yolo.metrics.results_dict if yolo.metrics is not None else trainer.metrics
    return TrainResult(run_dir=Path(trainer.save_dir), best=best, last=last, metrics=_metrics(results),
                       epochs=trainer.epochs, model=model, data=data,
                       transfer=report.to_dict() if report else None)


# ---------------------------------------------------------------------------------------------- val


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
    metrics: dict[str, float]
    per_class: list[ClassMetrics]
    save_dir: Path

    def to_dict(self) -> dict:
        return {"weights": self.weights, "data": self.data, "metrics": self.metrics,
                "per_class": [asdict(c) for c in self.per_class], "save_dir": str(self.save_dir)}


def _data_of(yolo: YOLO, data: str | Path | None, allow_download: bool) -> Path:
    if data is not None:
        return resolve_data(data, allow_download)
    stored = yolo.overrides.get("data") or (getattr(yolo.model, "args", {}) or {}).get("data")
    if stored and Path(stored).is_file():
        return resolve_data(stored, allow_download)
    raise UsageError("the checkpoint does not name a data.yaml that exists here; pass --data DATA.yaml")


def val(weights: str | Path, data: str | Path | None = None, *, imgsz: int | None = None, batch: int = 16,
        device: str | None = None, split: str = "val", project: str | Path | None = None,
        allow_download: bool = False, extras: dict[str, Any] | None = None) -> ValResult:
    """Validate a checkpoint: overall and per-class precision, recall, mAP50, mAP50-95."""
    path = checkpoint(weights)
    yolo = YOLO(str(path))
    data_path = _data_of(yolo, data, allow_download)
    args = {"data": str(data_path), "batch": batch, "split": split, "project": _project(project), "name": "val",
            **(extras or {})}
    if imgsz:
        args["imgsz"] = imgsz
    if device is not None:
        args["device"] = device
    metrics = yolo.val(**args)
    box = metrics.box
    per_class = []
    nt_class = metrics.nt_per_class if metrics.nt_per_class is not None else []
    nt_image = metrics.nt_per_image if metrics.nt_per_image is not None else []
    for i, c in enumerate(metrics.ap_class_index):
        p, r, ap50, ap = box.class_result(i)
        per_class.append(ClassMetrics(name=metrics.names[int(c)], images=int(nt_image[c]) if len(nt_image) else 0,
                                      instances=int(nt_class[c]) if len(nt_class) else 0, precision=float(p),
                                      recall=float(r), mAP50=float(ap50), mAP50_95=float(ap)))
    return ValResult(weights=str(path), data=str(data_path), metrics=_metrics(metrics.results_dict),
                     per_class=per_class, save_dir=Path(metrics.save_dir))


# ---------------------------------------------------------------------------------------------- predict


@dataclass
class ImagePrediction:
    source: str
    counts: dict[str, int]
    saved: str | None


@dataclass
class PredictResult:
    weights: str
    save_dir: Path | None
    predictions: list[ImagePrediction]
    shown: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"weights": self.weights, "save_dir": str(self.save_dir) if self.save_dir else None,
                "predictions": [asdict(p) for p in self.predictions], "shown": self.shown, "notes": self.notes}


def display_available() -> tuple[bool, str]:
    """Whether a window can open: a display to talk to, and an OpenCV built with a GUI backend."""
    import sys

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display (DISPLAY/WAYLAND_DISPLAY unset)"
    import cv2

    gui = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation())
    if gui and gui.group(1).upper() == "NONE":
        return False, "OpenCV was built without a GUI backend"
    return True, ""


LIST_SUFFIXES = {"txt", "csv"}  # ultralytics reads these as lists of sources


def resolve_source(source: str | None) -> str | int | list[str]:
    """An image, folder, glob (expanded here), video, list file, camera index or stream URL.

    Refuses downloads and missing files."""
    if source is None:
        return str(ASSETS)
    text = str(source).strip()
    if text.isdigit():
        return int(text)
    lowered = text.lower()
    if lowered.startswith(("rtsp://", "rtmp://", "tcp://")):
        return text
    if lowered.startswith(("http://", "https://")):
        raise UsageError("bracli does not download sources; save the file locally and pass its path")
    if any(ch in text for ch in "*?["):
        matches = sorted(str(Path(p).resolve()) for p in glob.glob(os.path.expanduser(text), recursive=True)
                         if Path(p).is_file() and Path(p).suffix.lower().lstrip(".") in IMG_FORMATS | VID_FORMATS)
        if not matches:
            raise BracliError(f"no images or videos match {text}")
        return matches  # ultralytics itself expands only '*' patterns
    path = Path(text).expanduser()
    if not path.exists():
        raise BracliError(f"source not found: {path}")
    if path.is_file() and path.suffix.lower().lstrip(".") not in IMG_FORMATS | VID_FORMATS | LIST_SUFFIXES:
        raise UsageError(f"{path.name}: unsupported file type; images ({', '.join(sorted(IMG_FORMATS))}) or "
                         f"videos ({', '.join(sorted(VID_FORMATS))})")
    if path.is_dir() and not any(p.suffix.lower().lstrip(".") in IMG_FORMATS | VID_FORMATS for p in path.iterdir()):
        raise BracliError(f"{path} holds no images or videos")
    return str(path.resolve())


def newest_weights(project: str | Path | None) -> Path:
    root = Path(_project(project))
    found = glob.glob(str(root / "**" / "weights" / "best.pt"), recursive=True)
    if not found:
        raise UsageError(f"no trained weights under {root}; pass --model PATH/TO/best.pt or run bra train first")
    return Path(max(found, key=os.path.getmtime))


def predict(source: str | None = None, weights: str | Path | None = None, *, show: bool = False, save: bool = True,
            conf: float = 0.25, iou: float = 0.7, imgsz: int = 640, device: str | None = None,
            project: str | Path | None = None, extras: dict[str, Any] | None = None) -> PredictResult:
    """Detect objects; ``show`` falls back to saving annotated images when no window can open."""
    resolved = resolve_source(source)
    path = checkpoint(weights) if weights else newest_weights(project)
    notes = []
    if show:
        ok, why = display_available()
        if not ok:
            notes.append(f"--show: {why}; saving annotated images instead")
            show, save = False, True
    yolo = YOLO(str(path))
    with tempfile.TemporaryDirectory(prefix="bracli-sources-") as tmp:
        if isinstance(resolved, list):  # a list file keeps every result's own file name
            listing = Path(tmp) / "sources.txt"
            listing.write_text("\n".join(resolved) + "\n", encoding="utf-8")
            resolved = str(listing)
        predictions, save_dir = _run_predict(yolo, resolved, show=show, save=save, conf=conf, iou=iou,
                                             imgsz=imgsz, device=device, project=project, extras=extras)
    return PredictResult(weights=str(path), save_dir=save_dir, predictions=predictions, shown=show, notes=notes)


def _run_predict(yolo: YOLO, source: str | int, *, show: bool, save: bool, conf: float, iou: float, imgsz: int,
                 device: str | None, project: str | Path | None, extras: dict[str, Any] | None
                 ) -> tuple[list[ImagePrediction], Path | None]:
    args = {"source": source, "stream": True, "show": show, "save": save, "conf": conf, "iou": iou,
            "imgsz": imgsz, "project": _project(project), "name": "predict",
            "verbose": False, **(extras or {})}
    if device is not None:
        args["device"] = device
    predictions = []
    save_dir = None
    try:
        for result in yolo.predict(**args):
            names = result.names
            counts = Counter(names[int(c)] for c in result.boxes.cls.tolist()) if result.boxes is not None else {}
            save_dir = Path(yolo.predictor.save_dir) if save else None
            saved = save_dir / Path(result.path).name if save_dir else None
            predictions.append(ImagePrediction(source=str(result.path), counts=dict(counts),
                                               saved=str(saved) if saved and saved.exists() else None))
    except (FileNotFoundError, ConnectionError) as e:
        raise BracliError(f"cannot read source: {str(e).splitlines()[0]}") from e
    return predictions, save_dir


# ---------------------------------------------------------------------------------------------- export


@dataclass
class Parity:
    imgsz: tuple[int, int]
    max_abs_diff: float
    scale: float
    detections_torch: int
    detections_export: int
    detections_agree: bool


@dataclass
class ExportResult:
    path: Path
    format: str
    tolerance: float
    parity: list[Parity]
    image: str = ""

    @property
    def ok(self) -> bool:
        return all(p.detections_agree and p.max_abs_diff <= self.tolerance * p.scale for p in self.parity)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "format": self.format, "tolerance": self.tolerance, "ok": self.ok,
                "image": self.image, "parity": [asdict(p) for p in self.parity]}


def _require(packages: Sequence[str], feature: str) -> None:
    import importlib.util

    for package in packages:
        if importlib.util.find_spec(package) is None:
            raise MissingDependencyError(package, feature)


def _export_target(weights: Path, fmt: str) -> Path:
    suffix = {"onnx": ".onnx", "torchscript": ".torchscript"}.get(fmt)
    return weights.with_suffix(suffix) if suffix else weights.parent / f"{weights.stem}_{fmt}_model"


def export(weights: str | Path, *, format: str = "onnx", imgsz: int = 640, dynamic: bool = False, half: bool = False,
           simplify: bool = True, opset: int | None = None, device: str | None = None, force: bool = False,
           conf: float = 0.25, iou: float = 0.7) -> ExportResult:
    """Export and then prove the export computes what the torch model computes on the same input."""
    fmt = format.lower()
    if fmt not in EXPORT_FORMATS:
        close = difflib.get_close_matches(fmt, EXPORT_FORMATS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"unknown export format {format!r} (choose {', '.join(EXPORT_FORMATS)}){hint}")
    _require(EXPORT_FORMATS[fmt] + (("onnxslim",) if fmt == "onnx" and simplify else ()), f"export to {fmt}")
    if opset is not None and fmt != "onnx":
        raise UsageError("--opset applies to ONNX export only")
    path, reference, ckpt = read_checkpoint(weights)
    target = _export_target(path, fmt)
    if target.exists() and not force:
        raise OutputExistsError(target)
    with tempfile.TemporaryDirectory(prefix=".bracli-export-", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        shutil.copy2(path, staged)
        args = {"format": fmt, "imgsz": imgsz, "dynamic": dynamic, "half": half, "simplify": simplify}
        if opset is not None:
            args["opset"] = opset
        if device is not None:
            args["device"] = device
        try:
            produced = Path(YOLO(str(staged)).export(**args))
        except Exception as e:
            first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise BracliError(f"export to {fmt} failed: {first_line}") from e
        if target.is_dir() and force:
            shutil.rmtree(target)
        os.replace(produced, target)
    sizes = [(imgsz, imgsz)]
    if dynamic:
        sizes.append((round_imgsz(imgsz * 3 // 4), imgsz))  # a rectangular input proves the dynamic axes
    image = _parity_image(ckpt)
    reference = reference.fuse().eval()  # the export is fused too
    parity = [_parity(reference, target, image, size, half=half, device=device, conf=conf, iou=iou)
              for size in sizes]
    return ExportResult(path=target, format=fmt, tolerance=_tolerance(half), parity=parity, image=str(image))


def _tolerance(half: bool) -> float:
    """Allowed max |export - torch| relative to the output's magnitude (box coordinates are in pixels)."""
    return 1e-2 if half else 1e-4


def _parity(model: DetectionModel, exported: Path, image_path: Path, size: tuple[int, int], *, half: bool,
            device: str | None, conf: float, iou: float) -> Parity:
    import cv2
    import numpy as np
    from ultralytics.data.augment import LetterBox
    from ultralytics.nn.autobackend import AutoBackend
    from ultralytics.utils.nms import non_max_suppression

    image = cv2.imread(str(image_path))
    letterboxed = LetterBox(size, auto=False)(image=image)
    x = torch.from_numpy(np.ascontiguousarray(letterboxed[..., ::-1].transpose(2, 0, 1))).float()[None] / 255
    dev = torch.device("cuda:0" if device not in (None, "cpu") and torch.cuda.is_available() else "cpu")
    reference = model.to(dev)
    backend = AutoBackend(str(exported), device=dev, fp16=half, verbose=False)
    with torch.inference_mode():
        expected = reference(x.to(dev))
        expected = expected[0] if isinstance(expected, (list, tuple)) else expected
        got = backend(x.to(dev).half() if half else x.to(dev))
        got = got[0] if isinstance(got, (list, tuple)) else got
        got = torch.as_tensor(got, device=dev).float()
    diff = float((got - expected).abs().max())
    scale = max(1.0, float(expected.abs().max()))
    det_a = non_max_suppression(expected, conf, iou)[0]
    det_b = non_max_suppression(got, conf, iou)[0]
    return Parity(imgsz=size, max_abs_diff=diff, scale=scale, detections_torch=len(det_a),
                  detections_export=len(det_b), detections_agree=_same_detections(det_a, det_b))


def _parity_image(ckpt: dict[str, Any]) -> Path:
    """A validation image of the data the model was trained on, when it is here; else a bundled sample."""
    from bracli.engine.data import first_val_image

    data = (ckpt.get("train_args") or {}).get("data")
    image = first_val_image(data) if data and Path(data).is_file() else None
    return image or ASSETS / "bus.jpg"


def _same_detections(a: torch.Tensor, b: torch.Tensor, min_iou: float = 0.9) -> bool:
    """Same count, and every detection has a same-class partner with IoU ≥ min_iou."""
    from torchvision.ops import box_iou

    if len(a) != len(b):
        return False
    if not len(a):
        return True
    ious = box_iou(a[:, :4], b[:, :4])
    same_class = a[:, 5:6] == b[:, 5:6].T
    return bool(((ious >= min_iou) & same_class).any(1).all())
