"""What `bra profile` measured: one model's figures per input size, a baseline's, and their ratios."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bracli.measure.flops import FLOPS_COUNTED, GFLOPS_UNIT, FlopCount
from bracli.measure.runtime import Latency, Memory


@dataclass
class SizeCost:
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
class ModelCost:
    """One model's figures at every requested size."""

    name: str
    scale: str | None
    params: int
    bra_params: dict[int, int]  # parameters of the BRA modules per top-level layer index
    bra_placements: dict[int, str]  # top-level layer index -> placement name, when the model records it
    bra_n_win: dict[int, int]  # top-level layer index -> regions per side of its BRA (the least, with a region size)
    bra_region_size: dict[int, int | None] = field(default_factory=dict)  # tokens per region side, None = fixed grid
    sizes: list[SizeCost] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "scale": self.scale, "params": self.params, "bra_params": self.bra_params,
                "bra_placements": self.bra_placements, "bra_n_win": self.bra_n_win,
                "bra_region_size": self.bra_region_size,
                "sizes": [s.to_dict() for s in self.sizes]}


@dataclass
class CostReport:
    """``bra profile``'s result: the model, optionally the plain model of its family and scale, and their ratios."""

    model: ModelCost
    baseline: ModelCost | None
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

