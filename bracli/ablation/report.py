"""The ablation table, rebuilt from the folders alone: one row per variant, with deltas against the plain model.

Pure Python. Each row compares with the plain (``none``) variant of the same family, task and scale when that
one finished: accuracy as a difference in points, cost as a relative change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bracli.ablation.plan import ABLATION_FILE, FAILED, FINISHED, VARIANT_FILE, Variant, read_json
from bracli.errors import UsageError

ACCURACY = ("mAP50", "mAP50-95")
COST = ("params", "gflops", "latency_ms")


@dataclass
class Row:
    """One variant: its state, its results, and how it differs from its plain model."""

    slug: str
    variant: dict[str, Any]
    status: str  # done, failed, interrupted, queued, or a phase of a run in progress
    metrics: dict[str, float]
    params: int | None
    gflops: float | None
    latency_ms: float | None
    latency: dict[str, Any] | None  # how it was measured: rounds, device, threads, method
    train_seconds: float | None
    epoch: int
    epochs: int | None
    device: str | None
    error: str | None = None
    action: str | None = None  # what this run did: trained, resumed, evaluated, reused, failed
    baseline: str | None = None  # the plain variant the deltas are against
    deltas: dict[str, float] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    def value(self, key: str) -> float | None:
        return self.metrics.get(key) if key in ACCURACY else getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AblationReport:
    folder: Path
    settings: dict[str, Any]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Row]:
        return [row for row in self.rows if row.status == FAILED]

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "settings": self.settings, "rows": [row.to_dict() for row in self.rows],
                "notes": self.notes}


def row_of(record: dict[str, Any], action: str | None = None) -> Row:
    return Row(slug=record["slug"], variant=record["variant"], status=record.get("status", "queued"),
               metrics=dict(record.get("metrics") or {}), params=record.get("params"), gflops=record.get("gflops"),
               latency_ms=record.get("latency_ms"), latency=record.get("latency"),
               train_seconds=record.get("train_seconds"),
               epoch=int(record.get("epoch") or 0), epochs=record.get("epochs"), device=record.get("device"),
               error=record.get("error"), action=action)


def build(folder: Path, settings: dict[str, Any], records: Sequence[dict[str, Any]],
          actions: dict[str, str] | None = None) -> AblationReport:
    """Rows in the given order, each with its deltas against the finished plain model of its family/task/scale."""
    rows = [row_of(record, (actions or {}).get(record["slug"])) for record in records]
    plain = {Variant.from_dict(row.variant).baseline_key: row for row in rows
             if not row.variant["placements"] and row.finished}
    for row in rows:
        base = plain.get(Variant.from_dict(row.variant).baseline_key)
        if base is None or base is row or not row.finished:
            continue
        row.baseline = base.slug
        for key in ACCURACY:
            if key in row.metrics and key in base.metrics:
                row.deltas[key] = row.metrics[key] - base.metrics[key]
        for key in COST:
            mine, theirs = getattr(row, key), getattr(base, key)
            if mine is not None and theirs:
                row.deltas[key] = mine / theirs - 1.0
    notes = []
    devices = {row.device for row in rows if row.finished and row.device}
    if len(devices) > 1:
        notes.append(f"latency was measured on different devices ({', '.join(sorted(devices))}); compare it only "
                     "between rows of one device")
    return AblationReport(folder=folder, settings=settings, rows=rows, notes=notes)


def read_report(folder: str | Path, slugs: Sequence[str] | None = None,
                actions: dict[str, str] | None = None) -> AblationReport:
    """The table of an ablation folder: the variants recorded in ``ablation.json``, then any other variant folder."""
    folder = Path(folder)
    recorded = read_json(folder / ABLATION_FILE)
    if recorded is None:
        why = "does not exist" if not folder.exists() else f"has no readable {ABLATION_FILE}"
        raise UsageError(f"{folder} {why}; give the folder bra ablate wrote (e.g. runs/ablate/NAME)")
    order = list(slugs) if slugs is not None else list(recorded.get("variants") or [])
    if slugs is None:
        order += sorted(p.parent.name for p in folder.glob(f"*/{VARIANT_FILE}") if p.parent.name not in order)
    records, notes = [], []
    for slug in order:
        record = read_json(folder / slug / VARIANT_FILE)
        if record is None:
            notes.append(f"{slug}: no readable {VARIANT_FILE}; left out")
            continue
        records.append(record)
    report = build(folder, recorded.get("settings") or {}, records, actions)
    report.notes[:0] = notes
    return report
