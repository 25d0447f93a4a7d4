"""Model YAMLs read as data and built by ultralytics, with one-line reasons when they cannot be.

A model YAML from someone else is parsed (``yaml.safe_load``, no anchors, merge keys or tags), never
evaluated: its ``activation:`` must be a plain ``nn.Name(literals)`` call whatever the trust setting for
checkpoints. Files bracli did not write are read in BiFormer's released dialect (``foreign``).
ultralytics reads the scale from the file name; bracli says so, and fills in a missing letter from
``--scale`` (or ``n``, with a notice) instead of letting it be guessed silently.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ultralytics.nn.tasks import DetectionModel, SegmentationModel, guess_model_task

from bracli.engine import foreign
from bracli.errors import BracliError, UsageError

YAML_SUFFIXES = (".yaml", ".yml")
MODEL_CLASSES = {"detect": DetectionModel, "segment": SegmentationModel}


def read_model_yaml(path: str | Path, *, scale: str | None = None,
                    notice: Callable[[str], None] | None = None) -> dict[str, Any]:
    """A model YAML file as the dict ultralytics builds from, checked, with its scale decided.

    bracli's own files (a top-level ``bra:`` key) are read as they are; any other file — the blog's BRA rows,
    a plain ultralytics model — is read in BiFormer's released dialect (``foreign.read_foreign``). ``scale``
    (``--scale``) fills in a name without a scale letter and must agree with one that has it.
    """
    path = Path(path).expanduser()
    data = foreign.read_yaml(path)
    if not foreign.is_bracli_dialect(data):
        converted = foreign.read_foreign(data, source=path, scale=scale)
        if converted.notice and notice:
            notice(converted.notice)
        return {**converted.model, "scale": converted.scale or "", "yaml_file": str(path)}
    foreign.check_top_level(data, path)
    chosen, message = foreign.choose_scale(data, path, scale)
    if message and notice:
        notice(message)
    return {**data, "scale": chosen or "", "yaml_file": str(path)}


def check_model_dict(data: Any, source: str | Path = "model") -> None:
    """The shape of a model given as a dict, and nothing in it that would be evaluated."""
    if not isinstance(data, dict):
        raise UsageError(f"{source} is not a model (expected a mapping with backbone and head)")
    foreign.check_is_model(data, Path(source))
    foreign.check_top_level(data, Path(source))


def model_dict(spec: str | Path | dict[str, Any], *, scale: str | None = None,
               notice: Callable[[str], None] | None = None) -> dict[str, Any]:
    """A model as the dict ultralytics builds from: a rendered dict (copied) or a YAML file."""
    if isinstance(spec, dict):
        check_model_dict(spec)
        return copy.deepcopy(spec)
    return read_model_yaml(spec, scale=scale, notice=notice)


def task_of(cfg: dict[str, Any]) -> str:
    """detect or segment, from the head module (as ultralytics decides)."""
    task = guess_model_task(cfg)
    if task not in MODEL_CLASSES:
        raise UsageError(f"bracli builds detect and segment models; this model's head is for '{task}'")
    return task


def build(spec: str | Path | dict[str, Any], nc: int | None = None, verbose: bool = False, *,
          scale: str | None = None) -> DetectionModel:
    """Build a detection or segmentation model; errors become one-line messages."""
    cfg = model_dict(spec, scale=scale)
    task = task_of(cfg)
    rows = cfg["backbone"] + cfg["head"]
    try:
        return MODEL_CLASSES[task](cfg, nc=nc, verbose=verbose)
    except KeyError as e:
        name = str(e.args[0]) if e.args else str(e)
        where = next((f" (row {i})" for i, row in enumerate(rows) if row[2] == name), "")
        raise UsageError(f"unknown module '{name}'{where} in the model YAML; bracli adds BiLevelRoutingAttention "
                         "to ultralytics' modules") from e
    except (ValueError, TypeError, RuntimeError, IndexError, AttributeError) as e:
        raise BracliError(f"cannot build the model: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e

