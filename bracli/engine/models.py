"""Building and loading ultralytics detection models with BRA registered.

Importing this module applies the offline guard first, then imports ultralytics.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from bracli.engine import offline

offline.guard()

import torch  # noqa: E402
from ultralytics.nn.tasks import DetectionModel, guess_model_scale, yaml_model_load  # noqa: E402

from bracli.engine.register import register  # noqa: E402
from bracli.errors import BracliError, UsageError  # noqa: E402

offline.settle_settings()
register()

CHECKPOINT_SUFFIXES = (".pt", ".pth")


def model_dict(spec: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A model YAML as ultralytics reads it (scale taken from the file name, as ultralytics does)."""
    if isinstance(spec, dict):
        return copy.deepcopy(spec)
    path = Path(spec)
    if not path.is_file():
        raise BracliError(f"model file not found: {path}")
    if path.suffix not in (".yaml", ".yml"):
        raise UsageError(f"{path} is not a model YAML (.yaml)")
    if not guess_model_scale(path):
        raise UsageError(f"{path.name} has no scale letter in its name (e.g. yolov8n-bra-p3.yaml); "
                         "ultralytics takes the scale from the file name")
    try:
        return yaml_model_load(path)
    except Exception as e:
        raise BracliError(f"cannot read model YAML {path}: {e}") from e


def build(spec: str | Path | dict[str, Any], nc: int | None = None, verbose: bool = False) -> DetectionModel:
    """Build a detection model from a YAML path or a rendered dict; errors become one-line messages."""
    cfg = model_dict(spec)
    try:
        return DetectionModel(cfg, nc=nc, verbose=verbose)
    except KeyError as e:
        raise BracliError(f"unknown module {e} in model YAML (bracli adds BiLevelRoutingAttention only)") from e
    except (ValueError, TypeError, RuntimeError, IndexError) as e:
        raise BracliError(f"cannot build the model: {e}") from e


def read(weights: str | Path) -> tuple[DetectionModel, dict[str, Any]]:
    """The detection model (fp32) and the whole checkpoint dict of a local file; never downloads."""
    path = Path(weights)
    if not path.is_file():
        raise BracliError(f"weights file not found: {path} (bracli never downloads weights; give a local path)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise BracliError(f"{path} is not a readable PyTorch checkpoint: {e}") from e
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    if not isinstance(model, DetectionModel):
        raise BracliError(f"{path} is not an ultralytics detection checkpoint (no detection model inside)")
    return model.float(), ckpt


def load(weights: str | Path) -> DetectionModel:
    """Load a detection model from a local checkpoint; never downloads."""
    return read(weights)[0]
