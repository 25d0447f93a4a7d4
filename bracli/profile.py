"""The true cost of a model: parameters, FLOPs that count the attention, latency and memory.

ultralytics' ``model.info()`` estimates GFLOPs on small proxy images and extrapolates, with per-module
hooks that miss functional matmuls, and returns 0.0 when counting fails. Users choose a BRA placement by
its cost, so here FLOPs are counted at the full input size by a dispatcher-level counter
(``torch.utils.flop_counter.FlopCounterMode``): every matrix product and convolution the forward
really runs is counted, however the attention is written (matmul, bmm, einsum or SDPA).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import itertools
import statistics
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from bracli import templates
from bracli.engine import models  # applies the offline guard before ultralytics is imported
from bracli.errors import BracliError, UsageError
from bracli.nn import BiLevelRoutingAttention

GFLOPS_UNIT = "GFLOPs: 10⁹ floating-point operations, one multiply-add counted as 2 (FLOPs, not MACs)"
FLOPS_COUNTED = ("matrix products and convolutions at the full input size (eval mode); "
                 "element-wise ops, softmax, normalisation and biases are not counted")
CPU_MEMORY_METHOD = ("peak of tensor memory allocated during the pass (activations, temporaries and, for "
                     "forward+backward, saved tensors and gradients), tracked per operator at the dispatcher with "
                     "one torch thread; weights and the input are not included")
CUDA_MEMORY_METHOD = "CUDA allocator peak (torch.cuda.max_memory_allocated) above what was allocated before the pass"
MIB = 2**20


def _sdpa_flops(query_shape: Sequence[int], key_shape: Sequence[int], value_shape: Sequence[int], *args: Any,
                out_shape: Any = None, **kwargs: Any) -> int:
    """Q·Kᵀ and P·V of scaled-dot-product attention (batch, heads, tokens, channels), 2 FLOPs per multiply-add."""
    batch, heads, queries, qk_channels = query_shape
    keys, v_channels = key_shape[-2], value_shape[-1]
    return 2 * batch * heads * queries * keys * (qk_channels + v_channels)


# SDPA kernels FlopCounterMode has no formula for; without these, CPU attention counts as 0 FLOPs.
_SDPA_WITHOUT_FORMULA = ("_scaled_dot_product_flash_attention_for_cpu",
                         "_scaled_dot_product_fused_attention_overrideable")


# Normalisation is not counted (FLOPS_COUNTED); a zero formula also spares the counter decomposing
# batch-norm into primitives at every call, which is most of the time a count of a YOLO model takes.
_BATCH_NORM = ("native_batch_norm", "_native_batch_norm_legit_no_training")


def _no_flops(*args: Any, **kwargs: Any) -> int:
    return 0


def flop_counter() -> FlopCounterMode:
    """A silent ``FlopCounterMode`` that also counts the SDPA kernels torch has no formula for."""
    mapping = {getattr(torch.ops.aten, name): _sdpa_flops
               for name in _SDPA_WITHOUT_FORMULA if hasattr(torch.ops.aten, name)}
    for name in _BATCH_NORM:  # the counter looks an op up by overload to decide on decomposing, by packet to count
        if hasattr(torch.ops.aten, name):
            packet = getattr(torch.ops.aten, name)
            mapping.update({packet: _no_flops, packet.default: _no_flops})
    return FlopCounterMode(display=False, custom_mapping=mapping)


@dataclass
class FlopCount:
    """FLOPs of one forward at one input size, total and per top-level layer (GFLOPs, see ``GFLOPS_UNIT``)."""

    imgsz: tuple[int, int]
    batch: int
    total_gflops: float
    per_layer: dict[int, float]
    layer_types: dict[int, str]
    bra_layers: dict[int, float]  # GFLOPs of the BRA modules in each top-level layer that has one
    bra_input_shapes: dict[int, list[int]]  # N, C, H, W reaching each BRA layer (before its padding)
    by_operator: dict[str, float]
    counted_on: str  # "meta" (shapes only) or the device the counting forward ran on

    @property
    def bra_gflops(self) -> float:
        return sum(self.bra_layers.values(), 0.0)

    @property
    def bra_shares(self) -> dict[int, float]:
        """Each BRA layer's fraction of the total."""
        return {i: g / self.total_gflops if self.total_gflops else 0.0 for i, g in self.bra_layers.items()}

    @property
    def bra_share(self) -> float:
        return self.bra_gflops / self.total_gflops if self.total_gflops else 0.0

    def to_dict(self) -> dict[str, Any]:
        shares = self.bra_shares
        return {
            "unit": GFLOPS_UNIT,
            "counted": FLOPS_COUNTED,
            "imgsz": list(self.imgsz),
            "batch": self.batch,
            "total_gflops": self.total_gflops,
            "bra_gflops": self.bra_gflops,
            "bra_share": self.bra_share,
            "bra_layers": {i: {"gflops": g, "share": shares[i], "input_shape": self.bra_input_shapes.get(i)}
                           for i, g in self.bra_layers.items()},
            "per_layer": {i: {"type": self.layer_types[i], "gflops": g} for i, g in self.per_layer.items()},
            "by_operator": self.by_operator,
            "counted_on": self.counted_on,
        }


@dataclass
class Latency:
    """Forward time after warm-up: median and the 10th/90th percentiles over ``runs`` timed forwards."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    warmup: int
    batch: int
    device: str
    cpu_threads: int
    synchronized: bool  # CUDA synchronised around every timed forward

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Memory:
    """Peak memory of one inference forward and of one training forward+backward (bytes)."""

    forward_bytes: int
    train_bytes: int
    method: str

    @property
    def forward_mib(self) -> float:
        return self.forward_bytes / MIB

    @property
    def train_mib(self) -> float:
        return self.train_bytes / MIB

    def to_dict(self) -> dict[str, Any]:
        return {"forward_mib": self.forward_mib, "train_mib": self.train_mib, "forward_bytes": self.forward_bytes,
                "train_bytes": self.train_bytes, "method": self.method}


@dataclass
class SizeProfile:
    """Every figure measured at one input size."""

    imgsz: tuple[int, int]
    flops: FlopCount | None = None
    ultralytics_gflops: float | None = None  # what model.info() prints (one image); 0.0 means its counting failed
    latency: Latency | None = None
    memory: Memory | None = None

    @property
    def ultralytics_vs_counted(self) -> float | None:
        """ultralytics' one-image estimate relative to the count per image (+0.01 = 1% over); None if either is 0."""
        if not self.flops or not self.ultralytics_gflops or not self.flops.total_gflops:
            return None
        return self.ultralytics_gflops / (self.flops.total_gflops / self.flops.batch) - 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "imgsz": list(self.imgsz),
            "flops": self.flops.to_dict() if self.flops else None,
            "ultralytics_gflops": self.ultralytics_gflops,
            "ultralytics_failed": self.ultralytics_gflops == 0.0,
            "ultralytics_vs_counted": self.ultralytics_vs_counted,
            "latency": self.latency.to_dict() if self.latency else None,
            "memory": self.memory.to_dict() if self.memory else None,
        }


@dataclass
class ModelProfile:
    """One model's figures at every requested size."""

    name: str
    scale: str | None
    params: int
    bra_params: dict[int, int]  # parameters of the BRA modules per top-level layer index
    bra_placements: dict[int, str]  # top-level layer index -> placement name, when the model records it
    bra_n_win: dict[int, int]  # top-level layer index -> regions per side of its BRA
    sizes: list[SizeProfile] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "scale": self.scale, "params": self.params, "bra_params": self.bra_params,
                "bra_placements": self.bra_placements, "bra_n_win": self.bra_n_win,
                "sizes": [s.to_dict() for s in self.sizes]}


@dataclass
class Profile:
    """``bra profile``'s result: the model, optionally the vanilla YOLOv8 of its scale, and their ratios."""

    model: ModelProfile
    baseline: ModelProfile | None
    device: str
    batch: int
    cpu_threads: int
    notes: list[str] = field(default_factory=list)

    def ratios(self) -> list[dict[str, Any]]:
        """Model ÷ baseline for every figure both have, one entry per size."""
        if self.baseline is None:
            return []
        rows = []
        for mine, base in zip(self.model.sizes, self.baseline.sizes, strict=True):
            row: dict[str, Any] = {"imgsz": list(mine.imgsz), "params": _ratio(self.model.params, self.baseline.params)}
            if mine.flops and base.flops:
                row["gflops"] = _ratio(mine.flops.total_gflops, base.flops.total_gflops)
            if mine.latency and base.latency:
                row["latency"] = _ratio(mine.latency.median_ms, base.latency.median_ms)
            if mine.memory and base.memory:
                row["forward_memory"] = _ratio(mine.memory.forward_bytes, base.memory.forward_bytes)
                row["train_memory"] = _ratio(mine.memory.train_bytes, base.memory.train_bytes)
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"unit": GFLOPS_UNIT, "flops_counted": FLOPS_COUNTED, "device": self.device, "batch": self.batch,
                "cpu_threads": self.cpu_threads, "model": self.model.to_dict(),
                "baseline": self.baseline.to_dict() if self.baseline else None, "ratios": self.ratios(),
                "notes": self.notes}


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


# ---------------------------------------------------------------------------------------------- FLOPs


def count_flops(model: nn.Module, imgsz: int | Sequence[int] = 640, batch: int = 1, *, channels: int | None = None,
                device: str = "meta") -> FlopCount:
    """Count one eval-mode forward's FLOPs at the full input size, per top-level layer and per BRA layer.

    ``model`` is a YOLO ``DetectionModel`` (layers = ``model.model``) or any module taking NCHW input
    (one layer, index 0). By default the forward runs on a weightless ``meta`` copy — shapes only, cheap,
    the model itself untouched. A copy keeps its other tensor attributes real (a head may read its strides
    as numbers) or, failing that, has them on meta too (a head may have cached real anchors); a model whose
    forward needs real values either way is counted on its own device. ``device`` set to a real device
    counts there instead (the model must already be on it).
    """
    hw = as_hw(imgsz)
    channels = channels or _input_channels(model)
    if device == "meta":
        for copy_of in (_meta_copy, lambda m: _meta_copy(m).to("meta")):
            try:
                return _count(copy_of(model), hw, batch, channels, torch.device("meta"))
            except (RuntimeError, NotImplementedError, TypeError, ValueError):
                continue  # an op read values (.item()) or met a real tensor: try the next way
        device = str(_model_device(model))
    return _count(model, hw, batch, channels, torch.device(device))


def _count(model: nn.Module, hw: tuple[int, int], batch: int, channels: int, device: torch.device) -> FlopCount:
    layers = _layers(model)
    counter = flop_counter()
    per_layer: dict[int, float] = dict.fromkeys(range(len(layers)), 0.0)
    bra_layers: dict[int, float] = {}
    bra_shapes: dict[int, list[int]] = {}
    handles = []

    def attribute(module: nn.Module, into: dict[int, float], index: int) -> None:
        start: list[int] = []
        handles.append(module.register_forward_pre_hook(lambda *_: start.append(counter.get_total_flops())))

        def done(*_: Any) -> None:
            into[index] = into.get(index, 0.0) + (counter.get_total_flops() - start.pop()) / 1e9

        handles.append(module.register_forward_hook(done))

    for index, layer in enumerate(layers):
        attribute(layer, per_layer, index)
        for module in layer.modules():
            if isinstance(module, BiLevelRoutingAttention):
                attribute(module, bra_layers, index)
                handles.append(module.register_forward_pre_hook(partial(_record_shape, into=bra_shapes, index=index)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), one_torch_thread(), counter:
            model(torch.zeros(batch, channels, *hw, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return FlopCount(
        imgsz=hw, batch=batch, total_gflops=counter.get_total_flops() / 1e9, per_layer=per_layer,
        layer_types={i: type(layer).__name__ for i, layer in enumerate(layers)}, bra_layers=bra_layers,
        bra_input_shapes=bra_shapes,
        by_operator={str(op): n / 1e9 for op, n in counter.get_flop_counts().get("Global", {}).items() if n},
        counted_on=device.type if device.type == "meta" else str(device))


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run with one torch intra-op thread, so that no work escapes a dispatch mode.

    A dispatch mode sees only the thread it was entered in; a module that spreads work over Python
    threads by torch's thread count (as BRA's CPU path does) keeps it all in this thread with one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _record_shape(_module: nn.Module, args: tuple[Any, ...], *, into: dict[int, list[int]], index: int) -> None:
    into.setdefault(index, list(args[0].shape))  # a pre-hook must return None, or it replaces the input


def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy whose weights and buffers are on the meta device, never copied (shapes are all a count needs).

    Other tensor attributes (e.g. a head's strides, read as numbers) stay real: meta tensors hold no values.
    """
    memo: dict[int, Any] = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        meta = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(meta, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else meta
    return copy.deepcopy(model, memo)


def _layers(model: nn.Module) -> list[nn.Module]:
    inner = getattr(model, "model", None)
    return list(inner) if isinstance(inner, nn.Sequential) else [model]


def _input_channels(model: nn.Module) -> int:
    yaml = getattr(model, "yaml", None)
    if isinstance(yaml, dict) and yaml.get("channels"):
        return int(yaml["channels"])
    if isinstance(model, BiLevelRoutingAttention):
        return model.dim
    raise UsageError(f"cannot tell how many input channels {type(model).__name__} takes; pass channels=")


def _model_device(model: nn.Module) -> torch.device:
    return next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device


def ultralytics_gflops(model: nn.Module, imgsz: int | Sequence[int] = 640) -> float:
    """The GFLOPs ``model.info()`` prints (``get_flops``, on a copy); 0.0 means its counting failed."""
    from ultralytics.utils.torch_utils import get_flops

    return float(get_flops(copy.deepcopy(model), list(as_hw(imgsz))))


# ------------------------------------------------------------------------------------ latency, memory


def measure_latency(model: nn.Module, imgsz: int | Sequence[int] = 640, batch: int = 1, *, warmup: int = 3,
                    runs: int = 10, channels: int | None = None) -> Latency:
    """Median and spread of eval-mode forward time after ``warmup`` untimed forwards, on the model's device."""
    if runs < 1 or warmup < 0:
        raise UsageError(f"runs must be ≥ 1 and warmup ≥ 0 (got runs={runs}, warmup={warmup})")
    device = _model_device(model)
    cuda = device.type == "cuda"
    image = _random_image(imgsz, batch, channels or _input_channels(model), device)
    times = []
    model.eval()
    with torch.inference_mode():
        for step in range(warmup + runs):
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(image)
            if cuda:
                torch.cuda.synchronize(device)
            if step >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    p10, p90 = _percentiles(times)
    return Latency(median_ms=statistics.median(times), p10_ms=p10, p90_ms=p90, runs=runs, warmup=warmup,
                   batch=batch, device=str(device), cpu_threads=torch.get_num_threads(), synchronized=cuda)


def _percentiles(times: list[float]) -> tuple[float, float]:
    if len(times) == 1:
        return times[0], times[0]
    deciles = statistics.quantiles(times, n=10, method="inclusive")
    return deciles[0], deciles[-1]


def measure_memory(model: nn.Module, imgsz: int | Sequence[int] = 640, batch: int = 1, *,
                   channels: int | None = None) -> Memory:
    """Peak memory of an inference forward and of a training forward+backward on the model's device.

    The training pass runs in train mode (batch-norm statistics move) and leaves no gradients behind.
    """
    device = _model_device(model)
    image = _random_image(imgsz, batch, channels or _input_channels(model), device)

    def forward() -> None:
        model.eval()
        with torch.no_grad():
            model(image)

    def forward_backward() -> None:
        model.train()
        try:
            outputs = model(image)
        except ValueError as e:  # batch-norm in train mode needs more than one value per channel
            raise BracliError(f"a training forward at {image.shape[2]}×{image.shape[3]}, batch {batch} fails ({e}); "
                              "use a larger --imgsz or --batch") from e
        sums = [t.float().sum() for t in _tensors(outputs) if t.requires_grad]
        if sums:  # a module without trainable parameters has no backward to run
            sum(sums).backward()
        del outputs, sums

    peaks = []
    try:
        for run in (forward, forward_backward):
            if device.type == "cuda":
                peaks.append(_cuda_peak(run, device))
            else:
                known = itertools.chain(model.parameters(), model.buffers(), [image])
                with one_torch_thread(), TensorMemoryTracker(known) as tracker:
                    run()
                peaks.append(tracker.peak_bytes)
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    return Memory(forward_bytes=peaks[0], train_bytes=peaks[1],
                  method=CUDA_MEMORY_METHOD if device.type == "cuda" else CPU_MEMORY_METHOD)


def _cuda_peak(run: Callable[[], None], device: torch.device) -> int:
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


class TensorMemoryTracker(TorchDispatchMode):
    """Tracks the bytes of tensor storages that operators allocate while active, and their peak.

    Every storage an operator returns is counted once, from its first appearance until it is freed
    (a weak reference tells when). Storages of ``known`` tensors (weights, input) are never counted.
    Kernel-internal scratch memory and allocator caching are not visible at this level.
    """

    def __init__(self, known: Iterator[torch.Tensor] | Sequence[torch.Tensor] = ()) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._refs: dict[int, weakref.ref] = {}
        for tensor in known:
            storage = tensor.untyped_storage()
            self._refs[id(storage)] = weakref.ref(storage)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in _tensors(out):
            self._track(tensor.untyped_storage())
        return out

    def _track(self, storage: torch.UntypedStorage) -> None:
        key = id(storage)
        ref = self._refs.get(key)
        if ref is not None and ref() is storage:
            return
        size = storage.nbytes()
        self.live_bytes += size
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)

        def freed(_: weakref.ref, key: int = key, size: int = size) -> None:
            self.live_bytes -= size
            self._refs.pop(key, None)

        self._refs[key] = weakref.ref(storage, freed)


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple, dict)):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _tensors(item)


def _random_image(imgsz: int | Sequence[int], batch: int, channels: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(batch, channels, *as_hw(imgsz), generator=generator).to(device)


# ------------------------------------------------------------------------------------------- profile


def as_hw(imgsz: int | Sequence[int]) -> tuple[int, int]:
    """An input size as (height, width): 640 → (640, 640)."""
    if isinstance(imgsz, int):
        return imgsz, imgsz
    values = tuple(int(v) for v in imgsz)
    if len(values) == 1:
        return values[0], values[0]
    if len(values) != 2:
        raise UsageError(f"imgsz {imgsz!r} must be one size or (height, width)")
    return values


def parse_imgsz(values: Sequence[str]) -> list[tuple[int, int]]:
    """Sizes from ``--imgsz`` values: ``640``, ``480x640`` (height×width), comma lists, repeated flags."""
    sizes = []
    for value in values:
        for piece in str(value).split(","):
            piece = piece.strip().lower()
            if not piece:
                continue
            parts = piece.split("x")
            if len(parts) > 2 or not all(p.strip().isdigit() for p in parts):
                raise UsageError(f"--imgsz '{piece}' is not a size; write 640, or 480x640 for height×width")
            hw = as_hw([int(p) for p in parts])
            if hw not in sizes:
                sizes.append(hw)
    if not sizes:
        raise UsageError("--imgsz needs at least one size, e.g. --imgsz 640")
    return sizes


def torch_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:1`` or ultralytics' ``0`` → a device that exists here, or a one-line error."""
    text = str(name).strip().lower()
    if text.isdigit():
        text = f"cuda:{text}"
    try:
        device = torch.device(text)
    except RuntimeError as e:
        raise UsageError(f"--device '{name}' is not a device; use cpu, cuda or cuda:N") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BracliError(f"--device {name}: torch sees no CUDA GPU here; use --device cpu")
        if (device.index or 0) >= torch.cuda.device_count():
            raise BracliError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type != "cpu":
        raise UsageError(f"--device '{name}' is not supported; use cpu, cuda or cuda:N")
    return device


def resolve_model(spec: str | Path | dict[str, Any] | None = None, *, scale: str | None = None,
                  bra_after: Sequence[str] | None = None) -> tuple[nn.Module, str]:
    """Build the model to profile and name it: a rendered YAML, a ``.pt`` checkpoint, a model dict, or —
    with no ``spec`` — ``templates.render(scale, bra_after)`` (default ``n`` with BRA after ``p3``)."""
    if spec is not None and (scale is not None or bra_after):
        raise UsageError("give either a MODEL or --scale/--bra-after, not both")
    if spec is None:
        scale = scale or "n"
        placements = templates.parse_placements(bra_after or ["p3"])
        name = Path(templates.model_filename(scale, placements)).stem
        return models.build(templates.render(scale, placements)), name
    if isinstance(spec, dict):
        meta = spec.get(templates.METADATA_KEY)
        rendered = meta is not None and spec.get("scale") in templates.SCALES
        name = Path(templates.model_filename(spec["scale"], meta["placements"])).stem if rendered else "model"
        return models.build(spec), name
    path = Path(spec)
    if path.suffix in models.CHECKPOINT_SUFFIXES:
        return models.load(path), path.name
    if path.suffix in (".yaml", ".yml"):
        return models.build(path), path.stem
    raise UsageError(f"{path} is neither a model YAML (.yaml) nor a checkpoint (.pt)")


def vanilla_for(model: nn.Module) -> tuple[nn.Module, str] | None:
    """The plain YOLOv8 of the model's scale and class count, or None when the scale is unknown."""
    info = getattr(model, "yaml", None) or {}
    scale = info.get("scale")
    if scale not in templates.SCALES:
        return None
    return models.build(templates.render(scale, [], nc=int(info.get("nc", 80)))), f"yolov8{scale}"


def profile(model_spec: str | Path | dict[str, Any] | None = None, imgsz: Sequence[int | Sequence[int]] = (640,),
            batch: int = 1, device: str = "cpu", gflops: bool = True, latency: bool = True, memory: bool = True,
            compare: bool = True, *, scale: str | None = None, bra_after: Sequence[str] | None = None,
            warmup: int = 3, runs: int = 10, progress: Callable[[str], None] | None = None) -> Profile:
    """Profile a model at each input size, and the vanilla YOLOv8 of its scale when ``compare``.

    Parameters are always counted. ``gflops`` adds the dispatcher count next to ultralytics' estimate,
    ``latency`` timed forwards, ``memory`` peak memory of a forward and of a forward+backward.
    """
    if batch < 1:
        raise UsageError(f"--batch must be ≥ 1, got {batch}")
    if runs < 1 or warmup < 0:
        raise UsageError(f"--runs must be ≥ 1 and --warmup ≥ 0 (got {runs}, {warmup})")
    torch_dev = torch_device(device)
    sizes = [as_hw(s) for s in imgsz]
    report = progress or (lambda _message: None)
    report("building the model")
    model, name = resolve_model(model_spec, scale=scale, bra_after=bra_after)
    _check_sizes(model, sizes)
    notes: list[str] = []
    candidates = [(model, name)]
    if compare:
        vanilla = vanilla_for(model)
        if vanilla is None:
            notes.append("comparison skipped: the model records no YOLOv8 scale (n/s/m/l/x)")
        else:
            candidates.append(vanilla)
    results = []
    for net, net_name in candidates:
        net = net.to(torch_dev).float().eval()
        result = _describe(net, net_name)
        for hw in sizes:
            size = SizeProfile(imgsz=hw)
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
    return Profile(model=results[0], baseline=results[1] if len(results) > 1 else None, device=str(torch_dev),
                   batch=batch, cpu_threads=torch.get_num_threads(), notes=notes)


def _describe(model: nn.Module, name: str) -> ModelProfile:
    info = getattr(model, "yaml", None) or {}
    placements = {layer["index"]: layer["placement"]
                  for layer in (info.get(templates.METADATA_KEY) or {}).get("layers", [])}
    bra_params, bra_n_win = {}, {}
    for index, layer in enumerate(_layers(model)):
        bras = [m for m in layer.modules() if isinstance(m, BiLevelRoutingAttention)]
        if bras:
            bra_params[index] = sum(p.numel() for m in bras for p in m.parameters())
            bra_n_win[index] = bras[0].n_win
    return ModelProfile(name=name, scale=info.get("scale"), params=sum(p.numel() for p in model.parameters()),
                        bra_params=bra_params, bra_placements={i: placements[i] for i in bra_params if i in placements},
                        bra_n_win=bra_n_win)


def _check_sizes(model: nn.Module, sizes: list[tuple[int, int]]) -> None:
    stride = int(max(getattr(model, "stride", torch.tensor([32])).max().item(), 32))
    for height, width in sizes:
        for side in (height, width):
            if side < stride or side % stride:
                nearest = max(stride, round(side / stride) * stride)
                raise UsageError(f"imgsz {height}×{width}: each side must be a positive multiple of the model's "
                                 f"stride {stride} (try {nearest})")
