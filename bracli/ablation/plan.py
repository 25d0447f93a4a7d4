"""What `bra ablate` trains, and where: variants from the command line, shared settings, records in folders.

Pure Python (templates, no torch): every variant is rendered once here, so an unknown placement or a BRA
option a layer cannot take exits 2 before anything is imported or trained. An ablation folder holds
``ablation.json`` (the shared settings and the variants in order) and one normal run folder per variant
whose ``variant.json`` records that variant, the settings, its state and its results. The folders alone
rebuild the table; a re-run reads them to skip finished variants and resume an interrupted one.
"""

from __future__ import annotations

import itertools
import json
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from bracli import __version__, templates
from bracli.errors import UsageError
from bracli.files import atomic_write_text

ABLATION_FILE = "ablation.json"
VARIANT_FILE = "variant.json"
LOG_FILE = "train.log"
DEFAULT_PLACEMENTS = ("none", "p3")
# A variant's BRA settings; its folder name shows the preset and each option that differs from that preset's
BRA_KEYS = ("preset", "n_win", "topk", "heads", "side_dwconv", "qk_dim", "region_size")
SHORT = {"n_win": "nwin", "topk": "topk", "heads": "heads", "side_dwconv": "dw", "qk_dim": "qk",
         "region_size": "region"}
FINISHED, FAILED = "done", "failed"

T = TypeVar("T")
D = TypeVar("D")
R = TypeVar("R")


@dataclass(frozen=True)
class Variant:
    """One model to train: family, task, scale, BRA placements (none = the plain model) and BRA options."""

    family: str
    task: str
    scale: str
    placements: tuple[str, ...]
    bra: tuple[tuple[str, int | str | None], ...] = ()  # resolved BRA settings; empty for the plain model

    @property
    def slug(self) -> str:
        """The variant's folder name: the rendered model's name, the preset when it is not the default, and
        each BRA option that differs from the preset."""
        stem = Path(templates.model_filename(self.scale, list(self.placements), self.family, self.task)).stem
        options = dict(self.bra)
        preset = options.pop("preset", templates.DEFAULT_PRESET)
        defaults = templates.PRESETS[preset]
        parts = [f"-{preset}"] if preset != templates.DEFAULT_PRESET else []
        parts += [f"-{SHORT[key]}{'none' if value is None else value}" for key, value in options.items()
                  if value != defaults.get(key)]
        return stem + "".join(parts)

    @property
    def bra_options(self) -> dict[str, int | str]:
        """What renders this variant again: the preset, the options over it (a fixed grid as ``"none"``)."""
        options = dict(self.bra)
        if "region_size" in options and options["region_size"] is None:
            options["region_size"] = "none"
        return {key: value for key, value in options.items() if value is not None}

    @property
    def baseline_key(self) -> tuple[str, str, str]:
        """Rows with the same key are compared with the plain model of that key."""
        return self.family, self.task, self.scale

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "task": self.task, "scale": self.scale, "placements": list(self.placements),
                "bra": dict(self.bra)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Variant:
        return cls(data["family"], data["task"], data["scale"], tuple(data["placements"]),
                   tuple((data.get("bra") or {}).items()))


@dataclass(frozen=True)
class Settings:
    """What every variant shares; a re-run into the same folder must give the same (else results would mix)."""

    data: str | None  # absolute path of the data.yaml; None = the built-in sample of each variant's task
    epochs: int
    imgsz: int
    batch: int
    seed: int
    weights: str | None = None
    extras: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def expand(bra_after: Sequence[str] | None = None, *, families: Sequence[str] | None = None,
           tasks: Sequence[str] | None = None, scales: Sequence[str] | None = None,
           presets: Sequence[str] | None = None, n_win: Sequence[int] | None = None,
           topk: Sequence[int] | None = None, heads: Sequence[int] | None = None, side_dwconv: int | None = None,
           qk_dim: int | None = None, region_size: str | None = None) -> list[Variant]:
    """Every combination of the axes, each rendered once to check it; the plain model once per family/task/scale.

    Each ``bra_after`` value is one variant (a comma list: several BRA layers in one model). A value given
    twice on any axis, or two values that make the same model, is a usage error.
    """
    axes = {"--family": families or ["yolov8"], "--task": tasks or ["detect"], "--scale": scales or ["n"],
            "--preset": presets or [templates.DEFAULT_PRESET], "--n-win": n_win or [None], "--topk": topk or [None],
            "--heads": heads or [None]}
    for flag, values in axes.items():
        normalised = [v.strip().lower() if isinstance(v, str) else v for v in values]
        twice = [v for i, v in enumerate(normalised) if v in normalised[:i]]
        if twice:
            raise UsageError(f"{flag} {twice[0]} is given twice; each value is one variant")
        axes[flag] = normalised
    for family in axes["--family"]:
        templates.check_family(family)
    for task in axes["--task"]:
        templates.check_task(task)
    for scale in axes["--scale"]:
        templates.check_scale(scale)
    variants: list[Variant] = []
    given: dict[Variant, str] = {}
    for family, task, scale in itertools.product(axes["--family"], axes["--task"], axes["--scale"]):
        for value in bra_after or DEFAULT_PLACEMENTS:
            placements = tuple(templates.parse_placements([value], family, task))
            bra_axes = itertools.product(axes["--preset"], axes["--n-win"], axes["--topk"],
                                         axes["--heads"]) if placements else [()]
            for combo in bra_axes:
                options = {k: v for k, v in zip(("preset", "n_win", "topk", "heads"), combo, strict=False)
                           if v is not None}
                if placements:
                    options.update({k: v for k, v in (("side_dwconv", side_dwconv), ("qk_dim", qk_dim),
                                                      ("region_size", region_size)) if v is not None})
                meta = templates.render(scale, list(placements), family=family, task=task,
                                        **options)[templates.METADATA_KEY]
                bra = tuple((key, meta[key]) for key in BRA_KEYS) if placements else ()
                variant = Variant(family, task, scale, placements, bra)
                if variant in given:
                    raise UsageError(f"variant {variant.slug} is given twice (--bra-after {given[variant]} and "
                                     f"--bra-after {value})")
                given[variant] = value
                variants.append(variant)
    return variants


# ------------------------------------------------------------------------------------------------ records


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_json(path: Path) -> dict[str, Any] | None:
    """A record, or None when it is missing or unreadable (a half-written file is never left: writes are atomic)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n", force=True)


def new_record(variant: Variant, settings: Settings) -> dict[str, Any]:
    """A variant's record before it first runs."""
    return {"slug": variant.slug, "variant": variant.to_dict(), "settings": settings.to_dict(), "status": "queued",
            "epoch": 0, "epochs": settings.epochs, "attempts": 0, "train_seconds": 0.0, "trained": False,
            "device": None, "metrics": {}, "params": None, "gflops": None, "latency_ms": None, "latency": None,
            "error": None, "updated": now()}


def check_folder(folder: Path, settings: Settings, variants: Sequence[Variant]) -> None:
    """Refuse (exit 2) to mix results: the folder's settings, and each existing variant's model, must match."""
    recorded = read_json(folder / ABLATION_FILE)
    if recorded is None:
        if folder.is_dir() and any(folder.iterdir()):
            raise UsageError(f"{folder} exists and is not an ablation folder; choose another --name or --project")
        return
    before = recorded.get("settings") or {}
    current = settings.to_dict()
    differ = [f"{key} {before.get(key)!r} → {current[key]!r}" for key in current if before.get(key) != current[key]]
    if differ:
        raise UsageError(f"{folder} holds an ablation with other settings ({'; '.join(differ)}); run it with its "
                         "settings to continue it, or give another --name")
    for variant in variants:
        record = read_json(folder / variant.slug / VARIANT_FILE)
        if record is not None and record.get("variant") != variant.to_dict():
            raise UsageError(f"{folder / variant.slug} holds another model ({record.get('variant')}); give another "
                             "--name")


def start_folder(folder: Path, settings: Settings, variants: Sequence[Variant]) -> list[Variant]:
    """Write ``ablation.json`` (the variants so far, in order) and a record for each new variant."""
    recorded = read_json(folder / ABLATION_FILE) or {}
    order = list(dict.fromkeys([*recorded.get("variants", []), *(v.slug for v in variants)]))
    write_json(folder / ABLATION_FILE, {"bracli": __version__, "settings": settings.to_dict(), "variants": order,
                                        "created": recorded.get("created", now()), "updated": now()})
    for variant in variants:
        path = folder / variant.slug / VARIANT_FILE
        if read_json(path) is None:
            write_json(path, new_record(variant, settings))
    return list(variants)


# --------------------------------------------------------------------------------------------- scheduling


def run_on_devices(items: Sequence[T], devices: Sequence[D], work: Callable[[T, D], R],
                   stop: threading.Event | None = None) -> list[R | None]:
    """Run every item, each on the first device that is free, one item per device at a time.

    Results come back in item order (None for items not started because ``stop`` was set). An exception from
    ``work`` stops the handing-out of further items and is raised once the running ones have finished.
    """
    if not devices:
        raise ValueError("at least one device is needed")
    stop = stop or threading.Event()
    pending: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(items)):
        pending.put(index)
    results: list[R | None] = [None] * len(items)
    errors: list[BaseException] = []

    def device_loop(device: D) -> None:
        while not stop.is_set():
            try:
                index = pending.get_nowait()
            except queue.Empty:
                return
            try:
                results[index] = work(items[index], device)
            except BaseException as e:  # handed to the caller's thread
                errors.append(e)
                stop.set()

    threads = [threading.Thread(target=device_loop, args=(device,), daemon=True) for device in devices]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        stop.set()  # the children got the same Ctrl-C; wait for them to write down where they stopped
        for thread in threads:
            thread.join()
        raise
    if errors:
        raise errors[0]
    return results
