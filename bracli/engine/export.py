"""Export a checkpoint to ONNX, TorchScript or OpenVINO, then prove the export computes what torch computes.

The export is written in a temporary folder beside the target and moved into place only when complete,
so a failed export never leaves half a file or replaces an existing one without ``--force``.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ultralytics.engine.exporter import export_formats

from bracli import options
from bracli.engine.checkpoint import Checkpoint, read_checkpoint
from bracli.engine.devices import check_device
from bracli.engine.parity import Parity, check_parity, parity_image
from bracli.engine.runs import discard_if_empty, missing_parents
from bracli.errors import BracliError, MissingDependencyError, OutputExistsError, UsageError
from bracli.files import refuse_directory

FORMATS = {"onnx": ("onnx", "onnxruntime"), "torchscript": (), "openvino": ("openvino",)}
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript"}  # other formats are folders
MIN_OPSET = 17  # the oldest opset whose export of BRA's topk/gather onnxruntime matches


@dataclass
class ExportResult:
    path: Path
    format: str
    tolerance: float
    parity: list[Parity]
    image: str = ""

    @property
    def ok(self) -> bool:
        return all(p.agrees(self.tolerance) for p in self.parity)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "format": self.format, "tolerance": self.tolerance, "ok": self.ok,
                "image": self.image, "parity": [asdict(p) for p in self.parity]}


def default_target(weights: Path, fmt: str) -> Path:
    suffix = SUFFIXES.get(fmt)
    return weights.with_suffix(suffix) if suffix else weights.parent / f"{weights.stem}_{fmt}_model"


def _check_format(fmt: str) -> str:
    fmt = fmt.lower()
    if fmt not in FORMATS:
        close = difflib.get_close_matches(fmt, FORMATS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"unknown export format {fmt!r} (choose {', '.join(FORMATS)}){hint}")
    return fmt


def _check_packages(fmt: str, simplify: bool) -> None:
    for package in FORMATS[fmt] + (("onnxslim",) if fmt == "onnx" and simplify else ()):
        if importlib.util.find_spec(package) is None:
            raise MissingDependencyError(package, f"export to {fmt}")


def _check_options_apply(fmt: str, given: dict[str, str]) -> None:
    """Refuse an option the format does not take before any work; ultralytics would refuse it only at the end.

    ``given`` maps ultralytics' argument name to the flag the user typed; what each format takes is read from
    ultralytics' own export table, so the two never disagree.
    """
    table = export_formats()
    takes = dict(zip(table["Argument"], table["Arguments"], strict=True))
    names = dict(zip(table["Argument"], table["Format"], strict=True))
    for argument, flag in given.items():
        if argument not in takes[fmt]:
            which = " or ".join(names[f] for f in FORMATS if argument in takes[f])
            raise UsageError(f"{flag} applies to {which} export only (not {names[fmt]})")


def max_opset() -> int:
    """The newest opset the exporter ultralytics uses (torch's TorchScript-based one, ``dynamo=False``) writes.

    torch exposes the value only in ``torch.onnx._constants``; there is no public name for it.
    """
    from torch.onnx import _constants

    return _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET


def _check_opset(opset: int | None) -> None:
    if opset is not None and not MIN_OPSET <= opset <= max_opset():
        raise UsageError(f"--opset {opset} is not supported: the installed torch exports ONNX opsets "
                         f"{MIN_OPSET}–{max_opset()}")


def export(weights: str | Path | Checkpoint, *, format: str = "onnx", imgsz: int = 640, dynamic: bool = False,
           half: bool = False, simplify: bool | None = None, opset: int | None = None, device: str | None = None,
           out: str | Path | None = None, force: bool = False, conf: float | None = None,
           iou: float | None = None) -> ExportResult:
    """Export and then check the export against the torch model on the same letterboxed image.

    ``simplify`` None keeps ultralytics' default (simplified ONNX); a value for a format without it is refused.
    """
    fmt = _check_format(format)
    _check_options_apply(fmt, {name: flag for name, flag, given in (
        ("opset", "--opset", opset is not None),
        ("simplify", "--simplify/--no-simplify", simplify is not None),
        ("dynamic", "--dynamic", dynamic),
        ("quantize", "--half", half)) if given})
    _check_opset(opset)
    _check_packages(fmt, simplify is not False)
    device = options.device(device)
    if half and device in (None, "cpu"):
        raise UsageError("--half needs a GPU: pass --device 0 (FP16 export is not supported on CPU)")
    check_device(device)
    imgsz = options.imgsz(imgsz)
    source = weights.path if isinstance(weights, Checkpoint) else Path(weights).expanduser()
    target = Path(out).expanduser().resolve() if out else default_target(source, fmt)
    if target.exists() and not force:
        raise OutputExistsError(target)
    if fmt in SUFFIXES:
        refuse_directory(target)  # a folder where the file goes is never replaced, not even with --force
        if target.suffix != SUFFIXES[fmt]:
            raise UsageError(f"--out {target.name}: a {fmt} export ends in {SUFFIXES[fmt]}")
    checkpoint = weights if isinstance(weights, Checkpoint) else read_checkpoint(weights)
    # ultralytics 8.4 folds the deprecated half= into quantize= and warns whenever half is passed, even False
    args = dict(imgsz=imgsz, dynamic=dynamic, **({"quantize": 16} if half else {}),
                **({"simplify": simplify} if simplify is not None else {}),
                **({"opset": opset} if opset is not None else {}),
                **({"device": device} if device is not None else {}))
    produced = _export(checkpoint, target, fmt, args, force)
    sizes: list[tuple[int, int]] = [(imgsz, imgsz)]
    if dynamic:
        shorter = max(options.STRIDE, imgsz * 3 // 4 // options.STRIDE * options.STRIDE)
        sizes.append((shorter, imgsz))  # a rectangular input proves the dynamic axes
    image = parity_image(checkpoint)
    parity = check_parity(checkpoint.model, produced, image, sizes, half=half, device=device, conf=conf, iou=iou)
    return ExportResult(path=produced, format=fmt, tolerance=tolerance(half), parity=parity, image=str(image))


def tolerance(half: bool) -> float:
    """Allowed max |export - torch| relative to the output's magnitude (box coordinates are in pixels)."""
    return 1e-2 if half else 1e-4


def _export(checkpoint: Checkpoint, target: Path, fmt: str, args: dict, force: bool) -> Path:
    """Run ultralytics' exporter on a copy of the model, in a temporary folder; move the result to ``target``."""
    created = missing_parents(target.parent)  # removed again if the export fails
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".bracli-export-", dir=target.parent)
    except OSError as e:
        discard_if_empty(None, created)
        raise BracliError(f"cannot write the export next to {target}: {e.strerror}") from e
    try:
        model = copy.deepcopy(checkpoint.model)  # the exporter fuses and switches heads to export mode in place
        model.pt_path = str(Path(staging) / f"{target.stem}.pt")  # it names its output after this
        staged = Checkpoint(path=checkpoint.path, data=checkpoint.data, model=model)
        try:
            produced = Path(staged.yolo().export(format=fmt, **args))
        except (OSError, MemoryError):  # full disk, read-only folder, …: named as such by the CLI
            raise
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BracliError(f"export to {fmt} failed: {first}") from e
        if target.exists() and force:
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(produced, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # first, so the folders made for --out are empty again
        discard_if_empty(None, created)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return target

