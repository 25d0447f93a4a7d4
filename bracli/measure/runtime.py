"""Latency and peak memory of one forward (and one training forward+backward) of any NCHW module.

Pure torch. On CUDA the allocator's peak is read; on the CPU, tensor storages are tracked at the
dispatcher (one torch thread, so no work escapes the tracker).
"""

from __future__ import annotations

import gc
import itertools
import statistics
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from bracli.errors import BracliError, UsageError
from bracli.measure.flops import as_hw, input_channels, model_device, one_torch_thread

CPU_MEMORY_METHOD = ("peak of tensor memory allocated during the pass (activations, temporaries and, for "
                     "forward+backward, saved tensors and gradients), tracked per operator at the dispatcher with "
                     "one torch thread; weights and the input are not included")
CUDA_MEMORY_METHOD = "CUDA allocator peak (torch.cuda.max_memory_allocated) above what was allocated before the pass"
MIB = 2**20


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



def cpu_threads_text(threads: int) -> str:
    """``"1 CPU thread"`` / ``"2 CPU threads"``: how every report states the torch thread count."""
    return f"{threads} CPU thread{'s' * (threads != 1)}"


def measure_latency(model: nn.Module, imgsz: int | Sequence[int] = 640, batch: int = 1, *, warmup: int = 3,
                    runs: int = 10, channels: int | None = None) -> Latency:
    """Median and spread of eval-mode forward time after ``warmup`` untimed forwards, on the model's device."""
    if runs < 1 or warmup < 0:
        raise UsageError(f"runs must be ≥ 1 and warmup ≥ 0 (got runs={runs}, warmup={warmup})")
    device = model_device(model)
    cuda = device.type == "cuda"
    image = _random_image(imgsz, batch, channels or input_channels(model), device)
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
    device = model_device(model)
    image = _random_image(imgsz, batch, channels or input_channels(model), device)

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

