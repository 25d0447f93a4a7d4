"""A checkpoint, read once and restricted, then handed to every step that needs it.

Checkpoints are pickles: a crafted one runs code the moment it is unpickled. bracli reads them with
ultralytics' own restricted loader (torch's ``weights_only`` unpickler with ultralytics' allow-list,
plus bracli's classes; switched on by ``setup()``), and only a user who trusts a file opts into full
unpickling (``--trust-checkpoint``). The model is read once: the ultralytics facade for val, predict
and export is built around the object already read, never from the path again.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel, load_checkpoint

from bracli.engine.legacy import legacy_checkpoint_message
from bracli.errors import BracliError, UsageError

SUFFIX = ".pt"  # the only checkpoint suffix ultralytics loads as a model
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
# Module prefixes the restricted loader reconstructs (ultralytics' allow-list, torch's own types, bracli).
_ALLOWED_PREFIXES = ("ultralytics.", "torch.", "collections.", "numpy.", "builtins.", "pathlib.", "bracli.nn.")


@dataclass
class Checkpoint:
    """One checkpoint file: the whole dict as saved and the model it holds (fp32, eval mode)."""

    path: Path
    data: dict[str, Any]
    model: DetectionModel

    @property
    def task(self) -> str:
        return getattr(self.model, "task", "detect")

    @property
    def train_args(self) -> dict[str, Any]:
        return dict(self.data.get("train_args") or {})

    @property
    def scale(self) -> str | None:
        return (getattr(self.model, "yaml", None) or {}).get("scale") or None

    @property
    def resumable(self) -> bool:
        """An unfinished run: ultralytics keeps the optimizer and a non-negative epoch until the run ends."""
        return self.data.get("optimizer") is not None and self.data.get("epoch", -1) >= 0

    def yolo(self) -> YOLO:
        """ultralytics' YOLO facade around this checkpoint (no second read of the file)."""
        return _CheckpointYOLO(self)


def read_checkpoint(weights: str | Path, *, trusted: bool = False) -> Checkpoint:
    """Read a local ultralytics checkpoint; one-line errors for anything that is not one.

    ``trusted`` must match how ``setup()`` was called (it decides ultralytics' loader for the process);
    it only changes the messages here.
    """
    path = Path(weights).expanduser()
    if path.suffix.lower() != SUFFIX:
        hint = "; ultralytics loads checkpoints named .pt — rename it" if path.suffix.lower() == ".pth" else ""
        raise UsageError(f"{path} is not a .pt checkpoint{hint}")
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "is not a regular file" if path.exists() else "not found"
        raise BracliError(f"weights file {what}: {path} (bracli never downloads weights; give a local .pt file)")
    _refuse_legacy_bra(path)
    try:
        model, data = load_checkpoint(path)
    except (TypeError, EOFError, RuntimeError, ModuleNotFoundError, AttributeError, KeyError, ValueError) as e:
        raise BracliError(_unreadable(path, e, trusted)) from e
    except Exception as e:  # the unpickler raises what the file makes it raise
        if trusted:
            raise BracliError(f"{path} could not be loaded: {type(e).__name__}: {_first_line(e)}") from e
        raise BracliError(_unreadable(path, e, trusted)) from e
    if not isinstance(model, DetectionModel):
        raise BracliError(f"{path} is not an ultralytics detection or segmentation checkpoint "
                          f"(it holds a {type(model).__name__})")
    _check_stored_yaml(model, path)
    return Checkpoint(path=path.resolve(), data=data, model=model)


def _check_stored_yaml(model: DetectionModel, path: Path) -> None:
    """Fine-tuning and resume rebuild the model from the YAML stored inside: it gets a model YAML's checks
    (an ``activation:`` that ultralytics would ``eval`` when trusted), whatever the trust setting."""
    from bracli.engine.models import check_model_dict, check_parameter_count

    stored = getattr(model, "yaml", None)
    if not isinstance(stored, dict):
        return  # nothing to rebuild from; val, predict and export use the model as loaded
    try:
        check_model_dict(stored, f"{path} (its stored model YAML)")
        check_parameter_count(stored, f"{path} (its stored model YAML)", strict=False)
    except UsageError as e:
        raise BracliError(str(e)) from e


def _refuse_legacy_bra(path: Path) -> None:
    """A checkpoint from an ultralytics patched with blog code pickles BRA classes bracli can convert."""
    message = legacy_checkpoint_message(path, _globals_needed(path))
    if message:
        raise BracliError(message)


def _globals_needed(path: Path) -> list[str]:
    """What the pickle refers to beyond torch's default allow-list (without running it)."""
    if not zipfile.is_zipfile(path):
        return []
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # unreadable: the load reports it
        return []


def _unreadable(path: Path, error: BaseException, trusted: bool) -> str:
    """One line for a checkpoint that would not load: a refused class (and the opt-in), or a damaged file."""
    refused = _refused_global(error, path)
    if refused and not trusted:
        return (f"{path} needs {refused}, which restricted loading does not allow (a checkpoint can run code when "
                f"unpickled); if you trust this file, pass --trust-checkpoint (scripts: {_trust_env()}=1)")
    if not zipfile.is_zipfile(path):
        return f"{path} is not a readable PyTorch checkpoint (empty, truncated or another kind of file)"
    if "outside the supported" in str(error):
        return f"{path} is not an ultralytics checkpoint (it holds no YOLO model)"
    if isinstance(error, ModuleNotFoundError):
        return f"{path} needs the Python module '{error.name}', which is not installed"
    return f"{path} is not a readable ultralytics checkpoint: {_first_line(error)}"


def _refused_global(error: BaseException, path: Path) -> str | None:
    for link in _chain(error):
        match = _REFUSED_GLOBAL.search(str(link))
        if match:
            return match.group(1)
    if any(isinstance(link, pickle.UnpicklingError) or "outside the supported" in str(link) for link in _chain(error)):
        outside = [n for n in _globals_needed(path) if not n.startswith(_ALLOWED_PREFIXES)]
        return outside[0] if outside else None
    return None


def _chain(error: BaseException) -> Iterable[BaseException]:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    text = re.sub(r"^(ERROR\s*)?❌️?\s*", "", text)
    return text.splitlines()[0] if text else type(error).__name__


def _trust_env() -> str:
    from bracli.options import TRUST_ENV

    return TRUST_ENV


def restricted_loading_active() -> bool:
    """Whether ultralytics was imported with restricted loading on (it reads the switch once)."""
    from ultralytics.utils import SAFE_LOAD as active

    return bool(active)


class _CheckpointYOLO(YOLO):
    """ultralytics' facade, loading from a ``Checkpoint`` instead of reading the file again.

    Mirrors what ``Model._load`` does after ``load_checkpoint`` (ultralytics 8.4): the same attributes,
    from the same objects.
    """

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.__dict__["_bracli_checkpoint"] = checkpoint  # nn.Module's __setattr__ needs __init__ to have run
        super().__init__(str(checkpoint.path), task=checkpoint.task)

    def _load(self, weights: str, task: str | None = None) -> None:
        checkpoint: Checkpoint = self.__dict__["_bracli_checkpoint"]
        self.model, self.ckpt = checkpoint.model, checkpoint.data
        self.task = self.model.task
        self.overrides = self.model.args = self._reset_ckpt_args(self.model.args)
        self.ckpt_path = self.model.pt_path
        self.overrides["model"] = weights
        self.overrides["task"] = self.task
        self.model_name = weights

