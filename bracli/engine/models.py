"""Model YAMLs read as data and built by ultralytics, with one-line reasons when they cannot be.

A model YAML from someone else is parsed (``yaml.safe_load``, no anchors, merge keys or tags), never
evaluated: its ``activation:`` must be a plain ``nn.Name(literals)`` call and every row must name a layer
class, whatever the trust setting for checkpoints. Files bracli did not write are read in BiFormer's
released dialect (``foreign``). ultralytics reads the scale from the file name; bracli says so, and fills
in a missing letter from ``--scale`` (or ``n``, with a notice) instead of letting it be guessed silently.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from ultralytics.nn.tasks import DetectionModel, SegmentationModel, guess_model_task, parse_model

from bracli.engine import foreign
from bracli.engine.foreign import shown
from bracli.engine.legacy import is_int
from bracli.errors import BracliError, UsageError
from bracli.templates import BRA_MODULE, METADATA_KEY

YAML_SUFFIXES = (".yaml", ".yml")
MODEL_CLASSES = {"detect": DetectionModel, "segment": SegmentationModel}
MAX_PARAMETERS = 1_000_000_000  # YOLOv8x-seg has 72 M; a graph beyond a billion is a typo or an attack


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
        model = {**converted.model, "scale": converted.scale or "", "yaml_file": str(path)}
        check_model_dict(model, path)
        check_parameter_count(model, path)
        return model
    check_model_dict(data, path)
    chosen, message = foreign.choose_scale(data, path, scale)
    if message and notice:
        notice(message)
    model = {**data, "scale": chosen or "", "yaml_file": str(path)}
    check_parameter_count(model, path)
    return model


def check_model_dict(data: Any, source: str | Path = "model") -> None:
    """The shape of a model YAML, and nothing in it that would be evaluated, called or that exhausts memory.

    The limits on sizes and ``activation:`` live in ``foreign.check_top_level``, which the blog's dialect passes
    through before its channel probe builds anything: one set of limits for both dialects."""
    if not isinstance(data, dict):
        raise UsageError(f"{source} is not a model YAML (expected a mapping with backbone and head)")
    foreign.check_is_model(data, Path(source))
    foreign.check_top_level(data, Path(source))
    for key in ("backbone", "head"):
        if not all(isinstance(r, list) and len(r) == 4 for r in data[key]):
            raise UsageError(f"{source}: '{key}' must be a list of [from, repeats, module, args] rows")
    for index, (_, _, module, args) in enumerate(data["backbone"] + data["head"]):
        _check_layer(module, index, source)
        if module == BRA_MODULE:
            _check_bra_row(args, index, source)


def check_parameter_count(data: dict[str, Any], source: str | Path = "model", *, strict: bool = True) -> None:
    """Refuse a graph that would allocate more than ``MAX_PARAMETERS`` weights, counted on the meta device with
    ultralytics' own ``parse_model`` (nothing is allocated). Channel numbers in rows, ``scales`` and
    ``channels:`` are not bounded one by one; what they multiply to is. Without a scale, the largest listed
    one counts. ``strict``: a graph ultralytics cannot parse is an error here (else left to whoever builds it).
    """
    scales = [data.get("scale")] if data.get("scale") else list(data.get("scales") or {}) or [None]
    largest = 0
    for scale in scales:
        trial = {**copy.deepcopy(data), **({"scale": scale} if scale else {})}
        try:
            with torch.device("meta"):
                layers, _ = parse_model(trial, ch=trial.get("channels", 3), verbose=False)
            largest = max(largest, sum(p.numel() for p in layers.parameters()))
        except Exception as e:  # any parse failure of a file from someone else is one line
            if strict:
                raise BracliError(f"cannot build the model from {source}: "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    if largest > MAX_PARAMETERS:
        raise UsageError(f"{source}: the model would have {largest:,} parameters; bracli builds models of up to "
                         f"{MAX_PARAMETERS:,} (check the channel numbers in its rows, scales and channels:)")


def _check_layer(module: Any, index: int, source: str | Path) -> None:
    """A row's module must name a layer class the way ultralytics resolves it — never a function it would call
    (``torch_safe_load`` of a pickle, say) whatever the trust setting."""
    if not isinstance(module, str):
        raise UsageError(f"{source}: row {index} names its module {shown(module)}; expected a name such as Conv")
    found = foreign.yaml_module(module)
    if found is None:
        raise UsageError(f"unknown module '{module}' (row {index}) in the model YAML; bracli adds "
                         "BiLevelRoutingAttention to ultralytics' modules")
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise UsageError(f"{source}: row {index} module '{module}' is not a model layer (a torch.nn.Module class); "
                         "bracli never calls other names from a model YAML")


def _check_bra_row(args: Any, index: int, source: str | Path) -> None:
    """In bracli's dialect a BRA row carries its channels first; a blog row (``[]``, channels injected by a
    patched parser) under a ``bra:`` key would otherwise fail deep inside the layer's constructor."""
    if isinstance(args, list) and args and is_int(args[0]) and args[0] >= 1:
        return
    raise UsageError(f"{source}: row {index} ({BRA_MODULE}) does not start its args with dim; in bracli's dialect "
                     f"(a file with a top-level {METADATA_KEY}: key) BRA rows start with dim: [dim, n_win, "
                     f"num_heads, topk, qk_dim, side_dwconv]. Without the {METADATA_KEY}: key the row is read in "
                     "the blog's dialect, which takes the channels from the previous layer")


def model_dict(spec: str | Path | dict[str, Any], *, scale: str | None = None,
               notice: Callable[[str], None] | None = None) -> dict[str, Any]:
    """A model as the dict ultralytics builds from: a rendered dict (copied) or a YAML file."""
    if isinstance(spec, dict):
        check_model_dict(spec)
        check_parameter_count(spec)
        return copy.deepcopy(spec)
    return read_model_yaml(spec, scale=scale, notice=notice)


def task_of(cfg: dict[str, Any]) -> str:
    """detect or segment, from the head module (as ultralytics decides)."""
    task = guess_model_task(cfg)
    if task not in MODEL_CLASSES:
        raise UsageError(f"bracli builds detect and segment models; this model's head is for '{task}'")
    return task


def build(spec: str | Path | dict[str, Any], nc: int | None = None, verbose: bool = False, *,
          scale: str | None = None, notice: Callable[[str], None] | None = None) -> DetectionModel:
    """Build a detection or segmentation model; errors become one-line messages. A YAML path is read (and
    checked) once here: pass the path, not ``read_model_yaml``'s dict, which would be checked again."""
    cfg = model_dict(spec, scale=scale, notice=notice)  # checked: every module name is a known layer
    task = task_of(cfg)
    try:
        return MODEL_CLASSES[task](cfg, nc=nc, verbose=verbose)
    except (ValueError, TypeError, RuntimeError, IndexError, AttributeError, KeyError) as e:
        raise BracliError(f"cannot build the model: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e

