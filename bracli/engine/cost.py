"""`bra profile`'s engine half: resolve the models to measure (rendered, YAML, checkpoint, and the vanilla
baseline of the same scale), then measure each at every size with ``bracli.measure``."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bracli import options, templates
from bracli.engine import models
from bracli.engine.checkpoint import read_checkpoint
from bracli.engine.devices import torch_device
from bracli.errors import UsageError
from bracli.measure.flops import as_hw, count_flops, model_layers
from bracli.measure.report import CostReport, ModelCost, SizeCost
from bracli.measure.runtime import measure_latency, measure_memory
from bracli.nn.bra import BiLevelRoutingAttention


@contextlib.contextmanager
def predictor_threads(device: torch.device) -> Iterator[None]:
    """On CPU, measure with the torch threads ultralytics' predictor and validator run with (its
    ``select_device`` sets ``min(8, cores - 1)``); the caller's thread count is restored afterwards."""
    from ultralytics.utils import NUM_THREADS

    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(NUM_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ultralytics_gflops(model: nn.Module, imgsz: int | Sequence[int] = 640) -> float:
    """The GFLOPs ``model.info()`` prints (``get_flops``, on a copy); 0.0 means its counting failed."""
    from ultralytics.utils.torch_utils import get_flops

    return float(get_flops(copy.deepcopy(model), list(as_hw(imgsz))))


def resolve_model(spec: str | Path | dict[str, Any] | None = None, *, scale: str | None = None,
                  bra_after: Sequence[str] | None = None, family: str = "yolov8", task: str = "detect",
                  bra: dict[str, Any] | None = None,
                  notice: Callable[[str], None] | None = None) -> tuple[nn.Module, str]:
    """Build the model to measure and name it: a model YAML, a ``.pt`` checkpoint, a model dict, or — with no
    ``spec`` — ``templates.render(scale, bra_after, family=, task=, **bra)`` (default ``n`` with BRA after
    ``p3``, bracli's preset)."""
    if spec is not None and (bra_after or family != "yolov8" or task != "detect" or bra):
        raise UsageError("give either a MODEL or --bra-after/--family/--task/BRA options, not both")
    if spec is None:
        scale = scale or "n"
        placements = templates.parse_placements(bra_after or ["p3"], family, task)
        name = Path(templates.model_filename(scale, placements, family, task)).stem
        return models.build(templates.render(scale, placements, family=family, task=task, **(bra or {}))), name
    if isinstance(spec, dict):
        meta = spec.get(templates.METADATA_KEY)
        name = Path(templates.model_filename(spec["scale"], meta["placements"], meta.get("family", "yolov8"),
                                             meta.get("task", "detect"))).stem if _rendered(spec) else "model"
        return models.build(spec), name
    path = Path(spec)
    if path.suffix.lower() == ".pt":
        if scale is not None:
            raise UsageError("a checkpoint carries its scale; drop --scale")
        return read_checkpoint(path).model, path.name
    if path.suffix.lower() in models.YAML_SUFFIXES:
        return models.build(path, scale=scale, notice=notice), path.stem
    raise UsageError(f"{path} is neither a model YAML (.yaml) nor a checkpoint (.pt)")


def _rendered(spec: dict[str, Any]) -> bool:
    meta = spec.get(templates.METADATA_KEY)
    return isinstance(meta, dict) and "placements" in meta and spec.get("scale") in templates.SCALES


def family_of(cfg: dict[str, Any]) -> str | None:
    """The family of a model dict: recorded by the renderer, else recognised from its blocks (YOLO26 is the
    C3k2 family trained end to end, YOLO11 the C3k2 family, YOLOv8 the C2f family)."""
    meta = cfg.get(templates.METADATA_KEY)
    if isinstance(meta, dict) and meta.get("family") in templates.FAMILIES:
        return meta["family"]
    modules = {row[2] for row in cfg.get("backbone", []) + cfg.get("head", [])}
    if "C3k2" in modules:
        return "yolo26" if cfg.get("end2end") else "yolo11"
    return "yolov8" if "C2f" in modules else None


def vanilla_for(model: nn.Module) -> tuple[nn.Module, str] | None:
    """The plain model of the same family, task, scale and class count, or None when those are unknown."""
    info = getattr(model, "yaml", None) or {}
    scale, family = info.get("scale"), family_of(info)
    if scale not in templates.SCALES or family is None:
        return None
    task = models.task_of(info)
    plain = templates.render(scale, [], family=family, task=task, nc=int(info.get("nc", 80)))
    return models.build(plain), Path(templates.model_filename(scale, [], family, task)).stem


def _is_plain_twin(model: nn.Module, plain: nn.Module) -> bool:
    """Whether ``model`` is the plain model in all but its weights: no BRA layer, the same layers and parameters
    (a ratio table of a model against itself says nothing)."""
    def shape(net: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
        return [(name, tuple(p.shape)) for name, p in net.named_parameters()]

    has_bra = any(isinstance(m, BiLevelRoutingAttention) for m in model.modules())
    return not has_bra and shape(model) == shape(plain)


def measure_cost(model_spec: str | Path | dict[str, Any] | None = None,
                 imgsz: Sequence[int | Sequence[int]] = (640,), batch: int = 1, device: str | None = None,
                 gflops: bool = True, latency: bool = True, memory: bool = True, compare: bool = True, *,
                 scale: str | None = None, bra_after: Sequence[str] | None = None, family: str = "yolov8",
                 task: str = "detect", bra: dict[str, Any] | None = None, warmup: int = 3, runs: int = 10,
                 progress: Callable[[str], None] | None = None,
                 notice: Callable[[str], None] | None = None) -> CostReport:
    """Measure a model at each input size, and the plain model of its family, task and scale when ``compare``.

    Parameters are always counted. ``gflops`` adds the dispatcher count next to ultralytics' estimate,
    ``latency`` timed forwards, ``memory`` peak memory of a forward and of a forward+backward.
    """
    if batch < 1:
        raise UsageError(f"--batch must be ≥ 1, got {batch}")
    if runs < 1 or warmup < 0:
        raise UsageError(f"--runs must be ≥ 1 and --warmup ≥ 0 (got {runs}, {warmup})")
    torch_dev = torch_device(options.device(device))
    sides = dict.fromkeys(side for size in imgsz for side in as_hw(size))
    rounded = {side: options.imgsz(side, notice=notice) for side in sides}  # one notice per size given
    sizes = list(dict.fromkeys(tuple(rounded[side] for side in as_hw(size)) for size in imgsz))
    report = progress or (lambda _message: None)
    report("building the model")
    model, name = resolve_model(model_spec, scale=scale, bra_after=bra_after, family=family, task=task, bra=bra,
                                notice=notice)
    notes: list[str] = []
    candidates = [(model, name)]
    if compare:
        vanilla = vanilla_for(model)
        if vanilla is None:
            notes.append("comparison skipped: the model records no scale (n/s/m/l/x) or family")
        elif _is_plain_twin(model, vanilla[0]):
            notes.append(f"comparison skipped: the model is the plain {vanilla[1]} itself; nothing to compare")
        else:
            candidates.append(vanilla)
    with predictor_threads(torch_dev):
        results = []
        for net, net_name in candidates:
            net = net.to(torch_dev).float().eval()
            result = _describe(net, net_name)
            for hw in sizes:
                size = SizeCost(imgsz=hw)
                label = f"{net_name} at {hw[0]}×{hw[1]}"
                if gflops:
                    report(f"counting FLOPs: {label}")
                    size.flops = count_flops(net, hw, batch)
                    size.ultralytics_gflops = ultralytics_gflops(net, hw)
                    if size.ultralytics_gflops == 0.0:
                        notes.append(f"ultralytics' get_flops returned 0.0 for {label}: its counting failed")
                if latency:
                    report(f"timing {runs} forwards after {warmup} warm-up: {label}")
                    size.latency = measure_latency(net, hw, batch, warmup=warmup, runs=runs)
                if memory:
                    report(f"measuring memory: {label}")
                    size.memory = measure_memory(net, hw, batch)
                result.sizes.append(size)
            results.append(result)
            del net
        return CostReport(model=results[0], baseline=results[1] if len(results) > 1 else None, device=str(torch_dev),
                          batch=batch, cpu_threads=torch.get_num_threads(), notes=notes)


def _describe(model: nn.Module, name: str) -> ModelCost:
    info = getattr(model, "yaml", None) or {}
    placements = {layer["index"]: layer["placement"]
                  for layer in (info.get(templates.METADATA_KEY) or {}).get("layers", [])}
    bra_params, bra_n_win, bra_region_size = {}, {}, {}
    for index, layer in enumerate(model_layers(model)):
        bras = [m for m in layer.modules() if isinstance(m, BiLevelRoutingAttention)]
        if bras:
            bra_params[index] = sum(p.numel() for m in bras for p in m.parameters())
            bra_n_win[index], bra_region_size[index] = bras[0].n_win, bras[0].region_size
    return ModelCost(name=name, scale=info.get("scale"), params=sum(p.numel() for p in model.parameters()),
                     bra_params=bra_params, bra_placements={i: placements[i] for i in bra_params if i in placements},
                     bra_n_win=bra_n_win, bra_region_size=bra_region_size)
