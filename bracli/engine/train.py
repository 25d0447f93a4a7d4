"""Train (or resume) a BRA model with ultralytics' trainer, after every input was checked.

The model is built from a rendered dict, a model YAML read as data, or a checkpoint read once; the
trainer gets the built model and the source weights as objects (no file is read twice). A run that
fails or is interrupted before it saved anything leaves no folder behind; an interrupted run that has
a ``last.pt`` says how to resume it. Under torchrun every rank runs this: the start-up checks end in an
agreement (``distributed.start_up``), and rank 0 alone writes bracli's files.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from bracli import __version__, options, templates
from bracli.engine import distributed, models
from bracli.engine.checkpoint import Checkpoint, read_checkpoint
from bracli.engine.cost import family_of
from bracli.engine.data import resolve_data
from bracli.engine.devices import check_device
from bracli.engine.extras import validate_extras
from bracli.engine.runs import project_dir, resume_target, tidy_on_failure
from bracli.engine.trainer import TRAINERS
from bracli.errors import BracliError, UsageError, out_of_memory
from bracli.files import atomic_write_text

METRIC_KEYS = {"precision": "metrics/precision(B)", "recall": "metrics/recall(B)",
               "mAP50": "metrics/mAP50(B)", "mAP50-95": "metrics/mAP50-95(B)",
               "mask_precision": "metrics/precision(M)", "mask_recall": "metrics/recall(M)",
               "mask_mAP50": "metrics/mAP50(M)", "mask_mAP50-95": "metrics/mAP50-95(M)"}
INTERRUPTED_EXIT = 130

Notice = Callable[[str], None]


def _log(message: str) -> None:
    logging.getLogger("bracli").warning(message)


class TrainingInterrupted(BracliError):
    """Ctrl-C during training; the message says whether and how the run can be resumed. Under torchrun every
    rank is interrupted alike."""

    exit_code = INTERRUPTED_EXIT
    everywhere = True


class DatasetRefused(BracliError):
    """ultralytics refused a dataset split (no usable image, box-only labels for a segmentation model); every rank
    reads the same labels, so it fails everywhere."""

    everywhere = True


BOXES_WITHOUT_SEGMENTS = "Segment dataset requires equal numbers of boxes and segments"
NO_VALID_IMAGES = "No valid images found in "
CHECK_HINT = "see `bra dataset check DATA`"


def _scanned_labels(error: BaseException) -> Path | None:
    """The labels cache the failing dataset scanned (named after its labels folder), read off the traceback."""
    found = None
    frame = error.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_name in ("verify_labels", "get_labels"):
            found = frame.tb_frame.f_locals.get("cache_path") or found
        frame = frame.tb_next
    return Path(found) if found else None


def dataset_failure(error: BaseException) -> DatasetRefused | None:
    """ultralytics' known refusals of a dataset split, as one line naming the split; None for anything else.

    The one place such failures are recognised, so train and val say the same thing."""
    text = str(error)
    if isinstance(error, ValueError) and text.startswith(BOXES_WITHOUT_SEGMENTS):
        labels = _scanned_labels(error)
        where = f"{labels.stem} labels ({labels.with_suffix('')})" if labels else "the labels"
        return DatasetRefused(f"{where} have boxes but no polygons: a segmentation model needs polygon labels "
                              f"({CHECK_HINT} --task segment)")
    if isinstance(error, RuntimeError) and text.startswith(NO_VALID_IMAGES):
        labels = _scanned_labels(error) or Path(text[len(NO_VALID_IMAGES):].splitlines()[0].rstrip("."))
        issues = [line.strip() for line in text.splitlines()[1:] if line.strip() and "://" not in line]
        why = f" (first problem: {_short_issue(issues[0])})" if issues and issues[0] != "no error details" else ""
        return DatasetRefused(f"no usable image in the {labels.stem} split ({labels.with_suffix('')}): every image "
                              f"or label was refused{why}; {CHECK_HINT}")
    return None


def _short_issue(issue: str) -> str:
    """ultralytics' '<image>: ignoring corrupt image/label: <why>' as '<image name>: <why>'. A file PIL cannot open
    ends in ultralytics' fallback to an optional HEIF reader, whose absence is not the problem."""
    image, _, why = issue.partition(": ignoring corrupt image/label: ")
    if why.startswith("No module named"):
        why = "not an image PIL can read"
    return f"{Path(image).name}: {why}" if why else issue


@dataclass
class ModelChoice:
    """The model to train: a YAML/checkpoint path, or render options for a fresh BRA model."""

    path: Path | None = None
    scale: str | None = None
    placements: tuple[str, ...] = ("p3",)
    bra_options: dict[str, int] = field(default_factory=dict)
    family: str = "yolov8"
    task: str = "detect"

    def describe(self) -> dict[str, Any]:
        if self.path:
            return {"path": str(self.path), **({"scale": self.scale} if self.scale else {})}
        return {"family": self.family, "task": self.task, "scale": self.scale or "n",
                "placements": list(self.placements), **self.bra_options}


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
    world: dict | None = None

    def to_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def metrics_of(results: dict[str, float] | None) -> dict[str, float]:
    results = results or {}
    return {name: float(results[key]) for name, key in METRIC_KEYS.items() if key in results}


@dataclass
class _Model:
    """What the trainer is given: the model dict, a YAML to keep in the run folder, and where it came from."""

    cfg: dict[str, Any]
    name: str
    text: str | None
    source: Checkpoint | None = None


def _materialise(choice: ModelChoice, notice: Notice) -> _Model:
    if choice.path is not None and Path(choice.path).suffix.lower() == ".pt":
        source = read_checkpoint(choice.path)
        return _Model(cfg=dict(source.model.yaml), name=str(source.path), text=None, source=source)
    if choice.path is not None:
        cfg = models.read_model_yaml(choice.path, scale=choice.scale, notice=notice)
        return _Model(cfg=cfg, name=Path(choice.path).name, text=None)
    scale = choice.scale or "n"
    cfg = templates.render(scale, list(choice.placements), family=choice.family, task=choice.task,
                           **choice.bra_options)
    name = templates.model_filename(scale, list(choice.placements), choice.family, choice.task)
    header = f"rendered by bracli {__version__} for bra train: {choice.describe()}"
    return _Model(cfg=cfg, name=name, text=templates.to_yaml(cfg, header))


def _check_weights_fit(weights: Checkpoint, cfg: dict[str, Any]) -> None:
    """Weights of another scale or family would transfer almost nothing (other widths; C2f rows do not pour into
    C3k2 rows): say so instead of training from scratch."""
    model_scale = cfg.get("scale") or None
    if weights.scale and model_scale and weights.scale != model_scale:
        raise UsageError(f"--weights {weights.path.name} is scale '{weights.scale}' but the model is scale "
                         f"'{model_scale}': its tensors would not fit; use --scale {weights.scale} or weights of "
                         f"scale {model_scale}")
    theirs, ours = family_of(getattr(weights.model, "yaml", None) or {}), family_of(cfg)
    if theirs and ours and theirs != ours:
        title = templates.FAMILY_TITLES
        raise UsageError(f"--weights {weights.path.name} is a {title[theirs]} model but the model is {title[ours]}: "
                         f"almost none of its tensors would fit; use --family {theirs} or {title[ours]} weights")


def train(data: str | Path | None = None, model: ModelChoice | None = None, weights: str | Path | None = None, *,
          epochs: int = 50, imgsz: int = 640, batch: int = 16, device: str | None = None, workers: int = 8,
          project: str | Path | None = None, name: str | None = None, seed: int = 0,
          resume: str | Path | bool | None = None, allow_download: bool = False,
          extras: dict[str, Any] | None = None, callbacks: dict[str, Callable] | None = None,
          notice: Notice = _log) -> TrainResult:
    """Train a BRA detector; ``resume`` continues an interrupted run instead of starting one."""
    extras = validate_extras(extras)
    world = distributed.world()
    device = options.device(device)
    if world.distributed:
        distributed.check_batch(batch, world)
        device = distributed.local_device(device, world, torch.cuda.is_available())
    check_device(device)
    distributed.join(world, device)
    if resume:
        return _resume(resume, data, device=device, project=project, allow_download=allow_download,
                       extras=extras, callbacks=callbacks, world=world)
    with distributed.start_up(world):
        imgsz = options.imgsz(imgsz, notice=notice)
        choice = model or ModelChoice()
        built = _materialise(choice, notice)
        task = models.task_of(built.cfg)
        if data is None:
            from bracli.dataset.sample import default_sample

            data = default_sample(task=task)
        data_path = resolve_data(data, allow_download)
        source = read_checkpoint(weights) if weights else None
        if source is not None:
            _check_weights_fit(source, built.cfg)
    initial = source.model if source is not None else built.source.model if built.source is not None else None
    root = project_dir(project, task)
    args = {"model": built.name, "data": str(data_path), "epochs": epochs, "imgsz": imgsz, "batch": batch,
            "workers": workers, "project": str(root), "seed": seed, "exist_ok": False, "pretrained": False,
            **extras}
    if name:
        args["name"] = name
    if device is not None:
        args["device"] = device
    run_info = {"bracli": __version__, "data": str(Path(data).resolve()), "data_resolved": str(data_path),
                "model": choice.describe(), "weights": str(source.path) if source else None, "extras": extras}
    if world.distributed:
        run_info["world"] = {"size": world.size, "nodes": world.nodes}  # completed by _record_world at the end

    def write_run_files(trainer) -> None:
        if not world.main:
            return
        report = trainer.transfer_report
        run_info["transfer"] = report.to_dict() if report else None
        save_dir = Path(trainer.save_dir)
        atomic_write_text(save_dir / "bracli.yaml", yaml.safe_dump(run_info, sort_keys=False), force=True)
        if built.text is not None:
            atomic_write_text(save_dir / built.name, built.text, force=True)

    def build(trainer) -> None:
        trainer.model = trainer.get_model(cfg=built.cfg, weights=initial)

    trainer = _run(TRAINERS[task], args, root,
                   {"on_pretrain_routine_end": write_run_files, **(callbacks or {})}, build, world)
    return _result(trainer, model=str(choice.describe()), data=str(data_path), world=world)


def _resume(resume: str | Path | bool, data: str | Path | None, *, device: str | None, project: str | Path | None,
            allow_download: bool, extras: dict[str, Any], callbacks: dict[str, Callable] | None,
            world: distributed.World) -> TrainResult:
    """Continue a run; its data.yaml gets the same checks as a fresh run's (a `download:` added since is refused)."""
    with distributed.start_up(world) as agreed:
        last = resume_target(resume, project)
        agreed.same("run to resume", str(last.resolve()))
        checkpoint = read_checkpoint(last)
        if not checkpoint.resumable:
            raise BracliError(f"{last} cannot be resumed: its run finished (or it is not a training checkpoint); "
                              "start a new run with --weights to fine-tune from it")
        stored = checkpoint.train_args.get("data")
        if data is None and not (stored and Path(str(stored)).is_file()):
            raise UsageError(f"the run's data file {stored!r} is not here; pass the data.yaml: bra train DATA "
                             "--resume")
        data_path = resolve_data(data if data is not None else stored, allow_download)
    overrides = {"resume": str(last), "data": str(data_path), **extras}
    if device is not None:
        overrides["device"] = device
    root = Path(checkpoint.train_args.get("save_dir") or last.parent.parent).parent
    trainer = _run(TRAINERS.get(checkpoint.task, TRAINERS["detect"]), overrides, root, dict(callbacks or {}),
                   world=world)
    return _result(trainer, model="resumed " + str(last), data=str(trainer.args.data), world=world)


def _run(trainer_class: type, overrides: dict[str, Any], root: Path, callbacks: dict[str, Callable],
         prepare: Callable[[Any], None] | None = None, world: distributed.World | None = None):
    """Construct and run the trainer. On failure or Ctrl-C no empty run folder is left (ultralytics makes it
    while constructing; under torchrun rank 0 made it and tidies it); an interrupted run that saved a last.pt
    says how to resume it."""
    world = world or distributed.World()
    trainer = None
    try:
        with tidy_on_failure(root) if world.main else contextlib.nullcontext():
            trainer = trainer_class(overrides=overrides)
            for event, fn in callbacks.items():
                trainer.add_callback(event, fn)
            if prepare is not None:
                prepare(trainer)
            trainer.train()
    except KeyboardInterrupt:
        last = Path(trainer.last) if trainer is not None else None
        if last is not None and last.is_file():
            how = "torchrun <same options> -m bracli train" if world.distributed else "bra train"
            raise TrainingInterrupted(f"interrupted; resume with: {how} --resume {trainer.save_dir}") from None
        raise TrainingInterrupted("interrupted before the first epoch was saved; nothing to resume") from None
    except NotImplementedError as e:
        if "Optimizer" not in str(e):
            raise
        raise UsageError(f"optimizer=: {str(e).strip().splitlines()[0]}") from e
    except Exception as e:
        if (refused := dataset_failure(e) or out_of_memory(e)) is not None:
            raise refused from e
        if not distributed.is_peer_failure(e):
            raise
        first = re.sub(r"^\[[^]]*\]\s*", "", str(e).strip().splitlines()[0]) if str(e).strip() else type(e).__name__
        waited = int(distributed.timeout().total_seconds())
        raise BracliError(f"lost the other training processes ({first}): one failed, or stalled longer than "
                          f"{waited} s ({distributed.TIMEOUT_ENV}); see the other ranks' logs") from e
    return trainer


def _result(trainer, model: str, data: str, world: distributed.World | None = None) -> TrainResult:
    report = trainer.transfer_report
    best = Path(trainer.best) if Path(trainer.best).exists() else None
    last = Path(trainer.last) if Path(trainer.last).exists() else None
    main = world is None or world.main  # under torchrun, rank 0 holds the gathered metrics
    validator_metrics = getattr(trainer.validator, "metrics", None)
    results = {} if not main else validator_metrics.results_dict if validator_metrics is not None else trainer.metrics
    world_report = trainer.world_report.to_dict() if trainer.world_report is not None else None
    if world_report is not None and main:
        _record_world(Path(trainer.save_dir), world_report)
    return TrainResult(run_dir=Path(trainer.save_dir), best=best, last=last, metrics=metrics_of(results),
                       epochs=trainer.epochs, model=model, data=data, transfer=report.to_dict() if report else None,
                       world=world_report)


def _record_world(run_dir: Path, report: dict[str, Any]) -> None:
    """Add who trained (every rank's host and final parameters digest) to the run's bracli.yaml."""
    path = run_dir / "bracli.yaml"
    info = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {"bracli": __version__}
    info["world"] = report
    atomic_write_text(path, yaml.safe_dump(info, sort_keys=False), force=True)
