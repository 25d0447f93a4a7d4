"""FLOPs that count the attention: one forward at the full input size under torch's dispatcher-level counter.

ultralytics' ``model.info()`` estimates GFLOPs on small proxy images and extrapolates, with per-module hooks
that miss functional matmuls, and returns 0.0 when counting fails. Users choose a BRA placement by its cost,
so here every matrix product and convolution the forward really runs is counted
(``torch.utils.flop_counter.FlopCounterMode``), however the attention is written (matmul, bmm, einsum, SDPA).
Pure torch: works on any module taking NCHW input.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bracli.errors import UsageError
from bracli.nn.bra import BiLevelRoutingAttention

GFLOPS_UNIT = "GFLOPs: 10⁹ floating-point operations, one multiply-add counted as 2 (FLOPs, not MACs)"
FLOPS_COUNTED = ("matrix products and convolutions at the full input size (eval mode); "
                 "element-wise ops, softmax, normalisation and biases are not counted")


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
    channels = channels or input_channels(model)
    if device == "meta":
        for copy_of in (_meta_copy, lambda m: _meta_copy(m).to("meta")):
            try:
                return _count(copy_of(model), hw, batch, channels, torch.device("meta"))
            except (RuntimeError, NotImplementedError, TypeError, ValueError):
                continue  # an op read values (.item()) or met a real tensor: try the next way
        device = str(model_device(model))
    return _count(model, hw, batch, channels, torch.device(device))


def _count(model: nn.Module, hw: tuple[int, int], batch: int, channels: int, device: torch.device) -> FlopCount:
    layers = model_layers(model)
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


def model_layers(model: nn.Module) -> list[nn.Module]:
    inner = getattr(model, "model", None)
    return list(inner) if isinstance(inner, nn.Sequential) else [model]


def input_channels(model: nn.Module) -> int:
    yaml = getattr(model, "yaml", None)
    if isinstance(yaml, dict) and yaml.get("channels"):
        return int(yaml["channels"])
    if isinstance(model, BiLevelRoutingAttention):
        return model.dim
    raise UsageError(f"cannot tell how many input channels {type(model).__name__} takes; pass channels=")


def model_device(model: nn.Module) -> torch.device:
    return next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device




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

