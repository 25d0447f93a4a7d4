"""``bra migrate``: a checkpoint trained with the blog's patched ultralytics → a checkpoint bracli (and plain
``YOLO('OUT.pt')`` where bracli is installed) loads.

Reading executes nothing from the file. ``torch.serialization.get_unsafe_globals_in_checkpoint`` lists the
classes the pickle names, without running it; each must be on bracli's allow-list (torch and ultralytics
modules, a few data types, bracli's own modules) or be one of BiFormer's legacy classes, which load as
state-only stand-ins. Modules are admitted through factories that only allocate (``cls.__new__``), so a
crafted pickle cannot call a constructor with arguments of its choosing (ultralytics' model constructors
parse YAML and ``eval`` its ``activation:``). The allow-list is registered for this one load
(``torch.serialization.safe_globals``) and only with entries nobody else registered, so nothing leaks and
nothing of others is removed. Each legacy BRA then becomes :class:`bracli.nn.BiLevelRoutingAttention` with
the same hyper-parameters and weights; the model's stored YAML rows are rewritten in bracli's dialect so
fine-tuning and resuming rebuild it; every other key of the checkpoint is kept as it was.

(About 390 lines, on purpose: the allow-list and the conversion share the stand-in classes and change together.)
"""

from __future__ import annotations

import importlib
import io
import math
import pickle
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bracli.engine.legacy import (
    LegacySettings,
    legacy_bra_globals,
    legacy_checkpoint_message,
    unsupported_message,
)
from bracli.errors import BracliError, UsageError
from bracli.files import atomic_write_bytes, check_writable
from bracli.nn.bra import BiLevelRoutingAttention
from bracli.nn.options import BraOptionError, check_bra_options
from bracli.templates import BRA_MODULE, METADATA_KEY

__all__ = ["MigrateResult", "MigratedLayer", "legacy_bra_globals", "migrate", "read_restricted"]

MODULE_PACKAGES = ("torch.nn.modules.", "ultralytics.nn.modules.", "ultralytics.nn.tasks.", "bracli.nn.")
CLASS_MODULES = ("ultralytics.utils.loss.", "ultralytics.utils.tal.")  # training helpers older checkpoints keep
CHECK_SIDES = (3, 5)  # × the model stride: a forward at a size no common n_win divides proves the result runs


class _StandIn(nn.Module):
    """Holds a legacy module's pickled state and the name it was pickled under; has no forward, never runs."""

    pickled_as = ""


class _LegacyBRA(_StandIn):
    pass


@dataclass
class MigratedLayer:
    """One converted BRA layer: where it sits, what it was pickled as, and its settings."""

    index: str  # position in model.model, e.g. "16" (or "16.0" inside a repeated row)
    pickled_as: str
    settings: LegacySettings
    found_in: list[str] = field(default_factory=list)  # checkpoint keys holding it, e.g. ["ema"]

    def describe(self) -> str:
        return f"index {self.index}: {self.settings.describe()}"

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "pickled_as": self.pickled_as, "found_in": self.found_in,
                **self.settings.to_dict()}


@dataclass
class MigrateResult:
    source: Path
    out: Path
    layers: list[MigratedLayer]
    kept: list[str]  # checkpoint keys carried over
    yaml_rows: list[int]  # rows of the stored model YAML rewritten in bracli's dialect
    checked: tuple[int, int] | None  # input size the written checkpoint was reloaded and run at

    def summary(self) -> str:
        count = f"{len(self.layers)} BRA layer{'s' if len(self.layers) != 1 else ''}"
        return f"migrated {count} ({'; '.join(layer.describe() for layer in self.layers)})"

    def to_dict(self) -> dict[str, Any]:
        return {"source": str(self.source), "out": str(self.out), "summary": self.summary(),
                "layers": [layer.to_dict() for layer in self.layers], "kept": self.kept,
                "yaml_rows": self.yaml_rows, "checked": list(self.checked) if self.checked else None}


def migrate(source: str | Path, out: str | Path, *, force: bool = False) -> MigrateResult:
    """Convert every legacy BRA layer of ``source`` and write the checkpoint to ``out`` (atomically)."""
    source, out = Path(source).expanduser(), Path(out).expanduser()
    if not source.is_file():
        what = "is a folder, not a checkpoint file" if source.is_dir() else (
            "is not a regular file" if source.exists() else "not found")
        raise BracliError(f"checkpoint {what}: {source}")
    check_out_suffix(out)
    if out.resolve() == source.resolve():
        raise UsageError("--out must be a new file: bra migrate never writes over its source")
    check_writable(out, force)
    ckpt = read_restricted(source, legacy=True)
    if not isinstance(ckpt, dict):
        raise BracliError(f"{source} is not an ultralytics checkpoint (expected a dict with model/ema)")
    layers: dict[tuple[str, str], MigratedLayer] = {}
    yaml_rows: set[int] = set()
    for key, value in ckpt.items():
        if isinstance(value, nn.Module):
            _check_restored(value, f"{source}: {key}")
            converted = _replace_legacy(value, source)
            for path, layer in converted:
                found = layers.setdefault((path, layer.pickled_as), layer)
                found.found_in.append(key)
            yaml_rows.update(_rewrite_yaml(value, converted, source))
    if not layers:
        raise BracliError(f"{source} holds no legacy BRA layer; it needs no migration")
    for value in ckpt.values():
        if isinstance(value, nn.Module) and (left := [m for m in value.modules() if isinstance(m, _StandIn)]):
            raise BracliError(f"{source}: {left[0].pickled_as} appears outside a BiLevelRoutingAttention "
                              "layer; bracli cannot convert it")
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    checked = _check_written(buffer, source)
    atomic_write_bytes(out, buffer.getvalue(), force=force)
    return MigrateResult(source=source, out=out, layers=sorted(layers.values(), key=_index_order),
                         kept=list(ckpt), yaml_rows=sorted(yaml_rows), checked=checked)


def check_out_suffix(out: Path) -> None:
    """The result is a checkpoint for ultralytics and bra val/predict/train, which load only ``.pt`` files."""
    if out.suffix.lower() != ".pt":
        raise UsageError(f"--out {out.name}: the migrated checkpoint must end in .pt (bra val, predict and train "
                         "load .pt files; export it afterwards with bra export)")


def read_restricted(source: str | Path | io.BytesIO, *, legacy: bool = False) -> Any:
    """``torch.load(weights_only=True)`` with bracli's allow-list; nothing in the file runs.

    A file that pickles BiFormer's legacy BRA classes is refused with the ``bra migrate`` hint, unless
    ``legacy`` (what ``bra migrate`` passes): then they load as state-only stand-ins.
    """
    name = source if isinstance(source, (str, Path)) else "the checkpoint"
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(source)
    except Exception as e:  # not a zip archive, truncated, empty: torch says which
        raise BracliError(f"{name} is not a readable torch.save checkpoint: {_first_line(e)}") from e
    if isinstance(source, io.BytesIO):
        source.seek(0)
    if not legacy and (message := legacy_checkpoint_message(name, needed)):
        raise BracliError(message)
    entries = _allow_list(needed, name)
    registered = set(torch.serialization.get_safe_globals())
    try:
        with torch.serialization.safe_globals([e for e in entries if e not in registered]):
            return torch.load(source, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError, ValueError) as e:
        raise BracliError(f"{name} could not be read with restricted loading: {_first_line(e)}") from e


# ------------------------------------------------------------------------------------------------ allow-list


def _allow_list(needed: list[str], source: object) -> list[Any]:
    """Allow-list entries for exactly the globals ``needed``; the first one bracli will not load is an error."""
    import numpy as np

    legacy = set(legacy_bra_globals(needed))
    entries: list[Any] = []
    for name in needed:
        module, _, attr = name.rpartition(".")
        if name in legacy:
            base = _LegacyBRA if attr == BRA_MODULE else _StandIn
            entries.append((type(attr, (base,), {"pickled_as": name}), name))
        elif (cls := _module_class(module, attr)) is not None:
            entries += _allocate_only(cls, name)
        elif name in _DATA_GLOBALS:
            entries.append((_DATA_GLOBALS[name](), name))
        elif name == "numpy.dtype":
            entries.append(np.dtype)
            entries += [type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_)]
        elif name == "builtins.getattr":
            entries.append((_module_getattr, name))
        else:
            raise BracliError(f"{source} needs the global {name}, which bracli does not load from a checkpoint "
                              "(it reconstructs torch, ultralytics and BiFormer BRA classes only); nothing was run")
    return entries


def _module_class(module: str, attr: str) -> type | None:
    """The torch/ultralytics/bracli class named, when it is a module class (or a training helper class)."""
    if not (f"{module}.".startswith(MODULE_PACKAGES + CLASS_MODULES)) or attr.startswith("_"):
        return None
    try:
        obj = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None
    if not isinstance(obj, type):
        return None
    if f"{module}.".startswith(CLASS_MODULES):
        return obj if obj.__module__ == module else None
    return obj if issubclass(obj, nn.Module) else None


def _allocate_only(cls: type, name: str) -> list[Any]:
    """``cls`` admitted so that both pickle paths only allocate: NEWOBJ and REDUCE get an instance without
    ``__init__``. The class itself is registered under an unguessable name, which ``BUILD`` needs to set state."""

    class Allocate:
        def __new__(factory, *args: Any, **kwargs: Any) -> Any:
            return cls.__new__(cls)

    Allocate.__name__ = Allocate.__qualname__ = cls.__name__
    return [(Allocate, name), (cls, f"bracli.allocated.{secrets.token_hex(16)}.{cls.__name__}")]


def _module_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as checkpoints use it (a module's own forward), and nothing else."""
    if isinstance(obj, nn.Module) and name in ("forward", "forward_fuse"):
        return getattr(type(obj), name).__get__(obj)
    raise pickle.UnpicklingError(f"getattr({type(obj).__name__}, {name!r}) is not allowed in a checkpoint")


def _numpy_scalar() -> Any:
    import numpy as np

    return np.float64(0).__reduce__()[0]


def _simple_namespace() -> type:
    from ultralytics.utils import IterableSimpleNamespace

    return IterableSimpleNamespace


def _path() -> type:
    return type(Path())


_DATA_GLOBALS = {
    "numpy.core.multiarray.scalar": _numpy_scalar, "numpy._core.multiarray.scalar": _numpy_scalar,
    "ultralytics.utils.IterableSimpleNamespace": _simple_namespace,
    "ultralytics.yolo.utils.IterableSimpleNamespace": _simple_namespace,
    **{f"{m}.{c}": _path for m in ("pathlib", "pathlib._local") for c in ("PosixPath", "WindowsPath")},
}


# ------------------------------------------------------------------------------------------------ conversion


def _check_restored(module: nn.Module, where: str) -> None:
    """Every module below ``module`` got its state from the pickle (a constructor call only allocates here)."""
    state = module.__dict__.get("_modules")
    if not isinstance(state, dict):
        raise BracliError(f"{where} holds a {type(module).__name__} the pickle built by calling it, not from "
                          "saved state; bracli refuses such files")
    for child in state.values():
        if isinstance(child, nn.Module):
            _check_restored(child, where)


def _replace_legacy(root: nn.Module, source: Path, prefix: str = "") -> list[tuple[str, MigratedLayer]]:
    """Swap every legacy BRA below ``root`` for bracli's module; returns (path, layer) for each."""
    converted = []
    for name, child in list(root.named_children()):
        path = f"{prefix}{name}"
        if isinstance(child, _LegacyBRA):
            new, layer = _convert(child, path, source)
            root._modules[name] = new
            converted.append((path, layer))
        elif not isinstance(child, _StandIn):
            converted += _replace_legacy(child, source, f"{path}.")
    return converted


def _convert(old: _LegacyBRA, path: str, source: Path) -> tuple[BiLevelRoutingAttention, MigratedLayer]:
    index = path.removeprefix("model.")
    where = f"{source.name}: layer {index} ({old.pickled_as})"
    state = _legacy_state(old, where)
    settings = LegacySettings(**state)
    if (problem := settings.unsupported()) is not None:
        raise UsageError(unsupported_message(where, *problem) + "; nothing was written")
    try:
        check_bra_options(dim=settings.dim, n_win=settings.n_win, num_heads=settings.num_heads, topk=settings.topk,
                          qk_dim=settings.effective_qk_dim, side_dwconv=settings.side_dwconv)
    except BraOptionError as e:
        raise BracliError(f"{where}: {e}") from e
    new = BiLevelRoutingAttention(*settings.bracli_args())
    weights = old.state_dict()
    expected = new.state_dict()
    if set(weights) != set(expected) or any(weights[k].shape != expected[k].shape for k in expected):
        raise BracliError(f"{where}: its tensors {sorted(weights)} do not match BiFormer's released layout "
                          f"{sorted(expected)}")
    dtype = old.qkv.qkv.weight.dtype
    new = new.to(dtype=dtype)
    new.load_state_dict(weights)
    legacy_params = dict(old.named_parameters())
    for name, param in new.named_parameters():
        param.requires_grad_(legacy_params[name].requires_grad)
    new.train(old.training)
    for attr in ("i", "f", "np"):  # what ultralytics' parser attaches to each layer
        if attr in old.__dict__:
            setattr(new, attr, old.__dict__[attr])
    if "type" in old.__dict__:
        new.type = f"{BiLevelRoutingAttention.__module__}.{BiLevelRoutingAttention.__qualname__}"
    return new, MigratedLayer(index=index, pickled_as=old.pickled_as, settings=settings)


def _legacy_state(old: _LegacyBRA, where: str) -> dict[str, Any]:
    """The hyper-parameters a legacy layer pickled, checked against the released structure."""
    attrs = {}
    for name in ("dim", "n_win", "num_heads", "qk_dim", "scale", "topk", "param_attention", "param_routing",
                 "diff_routing", "soft_routing", "kv_downsample_mode", "auto_pad"):
        if name not in old.__dict__:
            raise BracliError(f"{where}: it has no '{name}'; it is not BiFormer's released BiLevelRoutingAttention")
        attrs[name] = old.__dict__[name]
    children = old._modules
    lepe, qkv = children.get("lepe"), children.get("qkv")
    if not isinstance(lepe, nn.Conv2d) or lepe.groups != attrs["dim"] or lepe.stride != (1, 1) \
            or lepe.kernel_size[0] != lepe.kernel_size[1] or lepe.padding != (lepe.kernel_size[0] // 2,) * 2:
        raise BracliError(f"{where}: its lepe is not the released depthwise conv ({lepe!r})")
    if not isinstance(qkv, _StandIn) or not isinstance(qkv._modules.get("qkv"), nn.Linear):
        raise BracliError(f"{where}: its qkv is not the released QKVLinear")
    qk_dim = attrs["qk_dim"]
    scale = attrs.pop("scale")
    return {**attrs, "qk_scale": None if math.isclose(scale, qk_dim ** -0.5, rel_tol=1e-6) else scale,
            "side_dwconv": lepe.kernel_size[0]}


def _rewrite_yaml(model: nn.Module, converted: list[tuple[str, MigratedLayer]], source: Path) -> list[int]:
    """Rows of ``model.yaml`` holding converted layers, rewritten in bracli's dialect (and marked as such)."""
    spec = getattr(model, "yaml", None)
    if not isinstance(spec, dict) or not converted:
        return []
    rows = (spec.get("backbone") or []) + (spec.get("head") or [])
    rewritten = {}
    for path, layer in converted:
        top = path.removeprefix("model.").split(".")[0]
        row = rows[int(top)] if top.isdigit() and int(top) < len(rows) else None
        if isinstance(row, list) and len(row) == 4 and isinstance(row[0], int):
            row[2:] = [BRA_MODULE, layer.settings.bracli_args()]
            rewritten[int(top)] = layer.settings.metadata(int(top), int(top) + row[0] if row[0] < 0 else row[0])
    spec[METADATA_KEY] = {"dialect": "blog", "source": source.name, "migrated": True,
                          "layers": [rewritten[i] for i in sorted(rewritten)]}
    return sorted(rewritten)


def _check_written(buffer: io.BytesIO, source: Path) -> tuple[int, int] | None:
    """The bytes about to be written load restricted, hold no legacy class, and every model in them runs;
    returns the input size it ran them at (None when the checkpoint holds no detection model)."""
    buffer.seek(0)
    needed = torch.serialization.get_unsafe_globals_in_checkpoint(buffer)
    if left := legacy_bra_globals(needed):
        raise BracliError(f"{source}: the converted checkpoint still names {left[0]} (a bug in bra migrate)")
    buffer.seek(0)
    reloaded = read_restricted(buffer)
    generator = torch.Generator().manual_seed(0)
    checked = None
    for key in ("ema", "model"):
        model = reloaded.get(key)
        if isinstance(model, nn.Module) and hasattr(model, "stride"):
            stride = int(torch.as_tensor(model.stride).max())
            checked = (CHECK_SIDES[0] * stride, CHECK_SIDES[1] * stride)
            channels = (getattr(model, "yaml", None) or {}).get("channels", 3)
            try:
                with torch.inference_mode():
                    out = model.float().eval()(torch.rand(1, channels, *checked, generator=generator))
            except Exception as e:
                raise BracliError(f"{source}: the converted {key} does not run: {_first_line(e)}; nothing was "
                                  "written") from e
            first = out[0] if isinstance(out, (list, tuple)) else out
            if isinstance(first, torch.Tensor) and not torch.isfinite(first).all():
                raise BracliError(f"{source}: the converted {key} gives non-finite outputs; nothing was written")
    buffer.seek(0)
    return checked


def _index_order(layer: MigratedLayer) -> list[int]:
    return [int(p) if p.isdigit() else -1 for p in layer.index.split(".")]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
