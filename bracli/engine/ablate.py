"""Train, validate and measure each variant of an ablation: one after another, or one per GPU in subprocesses.

Every variant is a normal run folder under the ablation folder, with a ``variant.json`` record that says
where it stands (``bracli.ablation.plan``). A variant is trained with ``bracli.engine.train`` (resumed when an
earlier run was interrupted, skipped when it finished), validated with ``bracli.engine.val``, and measured
with ``bracli.measure`` (parameters, GFLOPs at the training size, batch-1 latency on its device). A variant
that fails is recorded with its one-line cause and the others go on; Ctrl-C stops the ablation, and the same
command later picks it up where it stopped.

With several devices, each variant runs in its own process (``python -c WORKER``) on one device; the
process reads everything it needs from the variant's folder and writes its log there (``train.log``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from bracli.ablation.plan import (
    FAILED,
    FINISHED,
    LOG_FILE,
    VARIANT_FILE,
    Settings,
    Variant,
    check_folder,
    now,
    read_json,
    run_on_devices,
    start_folder,
    write_json,
)
from bracli.ablation.report import AblationReport, read_report
from bracli.engine import train as training
from bracli.engine import val as validation
from bracli.engine.checkpoint import read_checkpoint
from bracli.engine.cost import predictor_threads
from bracli.engine.data import resolve_data
from bracli.engine.devices import torch_device
from bracli.errors import BracliError
from bracli.measure.flops import count_flops
from bracli.measure.runtime import measure_latency
from bracli.options import TRUST_ENV

Progress = Callable[[dict[str, Any]], None]
LATENCY = {"warmup": 3, "runs": 10}  # one variant alone (a worker on its own GPU): as bra profile's defaults
ROUNDS, RUNS_PER_ROUND = 5, 3  # variants on one device take turns, so load on a shared machine hits all alike
POLL_SECONDS = 0.5
WORKER = ("import sys; from bracli import options; from bracli.engine.setup import setup; "
          "setup(trust_checkpoints=options.trust_checkpoints(False)); "
          "from bracli.engine.ablate import work; sys.exit(work(sys.argv[1:]))")
INTERRUPTED = "interrupted"


class AblationInterrupted(training.TrainingInterrupted):
    """Ctrl-C: the variants stopped where they were; the same command continues them."""


def run_ablation(folder: str | Path, variants: Sequence[Variant], settings: Settings, *,
                 devices: Sequence[str | None] = (None,), workers: int = 8, progress: Progress | None = None,
                 worker_device: Callable[[str | None], str | None] = lambda device: device) -> AblationReport:
    """Run every variant not finished before, then read the table back from the folder.

    ``devices``: one entry per device (``["0", "1"]``); with more than one, variants run in parallel, one
    process per device. ``worker_device`` maps a device to what its process is given (tests run the
    parallel path on the CPU with it).
    """
    folder = Path(folder).expanduser().resolve()
    check_folder(folder, settings, variants)
    if settings.data is not None:  # once, before any variant: a missing dataset is not one variant's failure
        resolve_data(settings.data, allow_download=False)
    start_folder(folder, settings, variants)
    report = progress or (lambda _record: None)
    if len(devices) > 1 and len(variants) > 1:
        actions = _in_processes(folder, variants, devices, workers, report, worker_device)
    else:
        actions = {}
        for variant in variants:
            actions[variant.slug] = run_variant(folder / variant.slug, devices[0], workers=workers, progress=report,
                                                quiet=True, latency=False)
        measure_together(folder, variants, devices[0], report)
    return read_report(folder, [v.slug for v in variants], actions)


def run_variant(variant_dir: Path, device: str | None, *, workers: int = 8, progress: Progress | None = None,
                quiet: bool = False, latency: bool = True) -> str:
    """Bring one variant to the end: train (or resume, or skip), validate, measure. Returns what was done.

    ``latency=False`` leaves the latency to ``measure_together`` (all variants of one device in turns)."""
    record = Record(variant_dir, progress)
    if record.data.get("status") == FINISHED:
        record.update(action="reused")
        return "reused"
    variant = Variant.from_dict(record.data["variant"])
    settings = Settings(**record.data["settings"])
    record.update(status="training", device=device, error=None, attempts=int(record.data.get("attempts", 0)) + 1)
    try:
        with _quiet(variant_dir / LOG_FILE) if quiet else contextlib.nullcontext():
            action = _train(variant_dir, variant, settings, device, workers, record)
            record.update(status="validating", trained=True)
            checkpoint = read_checkpoint(variant_dir / "weights" / "best.pt")
            validated = validation.val(checkpoint, settings.data, imgsz=settings.imgsz, batch=settings.batch,
                                       device=device, project=variant_dir,
                                       extras={"plots": False, "exist_ok": True})
            record.update(status="measuring", metrics=validated.metrics)
            model = checkpoint.model.float().eval()
            place = torch_device(device)
            timed = {}
            if latency:
                alone = measure_latency(model.to(place), settings.imgsz, 1, **LATENCY)
                timed = {"latency_ms": alone.median_ms, "latency": {**alone.to_dict(), "method": "alone"}}
            record.update(status=FINISHED, action=action, device=str(place),
                          params=sum(p.numel() for p in model.parameters()),
                          gflops=count_flops(model, settings.imgsz).total_gflops, **timed)
            return action
    except (KeyboardInterrupt, training.TrainingInterrupted):
        record.update(status=INTERRUPTED, action=INTERRUPTED)
        raise AblationInterrupted("interrupted; run the same command again to continue the ablation") from None
    except Exception as e:  # one variant's failure is recorded; the others go on
        record.update(status=FAILED, action=FAILED, error=one_line(e))
        _drop_empty_folders(variant_dir)
        return FAILED


def _drop_empty_folders(variant_dir: Path) -> None:
    """A failed variant keeps its record (a re-run retries it) but not the empty folders training made."""
    for folder in sorted((p for p in variant_dir.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # only when empty
            folder.rmdir()


def _train(variant_dir: Path, variant: Variant, settings: Settings, device: str | None, workers: int,
           record: Record) -> str:
    """Fresh, resumed, or nothing to do (a finished training whose evaluation did not finish)."""
    last, best = variant_dir / "weights" / "last.pt", variant_dir / "weights" / "best.pt"
    state = read_checkpoint(last) if last.is_file() else None
    resumable = state is not None and state.resumable
    if best.is_file() and state is not None and (not resumable or _all_epochs_saved(state)):
        return "evaluated"
    spent = float(record.data.get("train_seconds") or 0.0)
    started = time.perf_counter()

    def epoch_saved(trainer) -> None:  # after last.pt holds this epoch: from here on it resumes after it
        record.update(epoch=int(trainer.epoch) + 1, epochs=int(trainer.epochs),
                      train_seconds=spent + time.perf_counter() - started)

    callbacks = {"on_model_save": epoch_saved}
    try:
        if resumable:
            training.train(settings.data, resume=last, device=device, callbacks=callbacks)
            return "resumed"
        choice = training.ModelChoice(scale=variant.scale, placements=variant.placements,
                                      bra_options=variant.bra_options, family=variant.family, task=variant.task)
        training.train(settings.data, choice, settings.weights, epochs=settings.epochs, imgsz=settings.imgsz,
                       batch=settings.batch, device=device, workers=workers, project=variant_dir.parent,
                       name=variant_dir.name, seed=settings.seed,
                       extras={**settings.extras, "exist_ok": True}, callbacks=callbacks)
        return "trained"
    finally:
        record.update(train_seconds=spent + time.perf_counter() - started)


def measure_together(folder: Path, variants: Sequence[Variant], device: str | None,
                     progress: Progress | None = None) -> None:
    """When a finished variant has no latency yet: the latency of every finished variant, in interleaved rounds
    on one device.

    Each round times every model a few forwards, one model after the other; the latency is the median of a
    variant's round medians. A slow moment of a shared machine then costs every variant alike, instead of
    whichever happened to be measured during it.
    """
    records = [Record(folder / v.slug, progress) for v in variants]
    finished = [r for r in records if r.data.get("status") == FINISHED]
    if all(r.data.get("latency_ms") is not None for r in finished):
        return  # nothing new: the table keeps the numbers measured together before
    waiting = finished  # all of them again, so every row of the table was timed in the same rounds
    place = torch_device(device)
    models = [read_checkpoint(r.path.parent / "weights" / "best.pt").model.float().eval().to(place) for r in waiting]
    medians: list[list[float]] = [[] for _ in waiting]
    with predictor_threads(place):
        threads = torch.get_num_threads()
        for round_ in range(ROUNDS):
            for record, model, times in zip(waiting, models, medians, strict=True):
                imgsz = record.data["settings"]["imgsz"]
                times.append(measure_latency(model, imgsz, 1, warmup=LATENCY["warmup"] if round_ == 0 else 1,
                                             runs=RUNS_PER_ROUND).median_ms)
    for record, times in zip(waiting, medians, strict=True):
        ordered = sorted(times)
        record.update(latency_ms=statistics.median(times), device=str(place), latency={
            "median_ms": statistics.median(times), "min_ms": ordered[0], "max_ms": ordered[-1], "rounds": times,
            "runs_per_round": RUNS_PER_ROUND, "batch": 1, "device": str(place), "cpu_threads": threads,
            "method": f"interleaved with {len(waiting) - 1} other variant(s)" if len(waiting) > 1 else "alone"})


def _all_epochs_saved(state) -> bool:
    """Stopped after saving its last epoch (ultralytics refuses to resume such a run; its best.pt is final)."""
    return int(state.data.get("epoch", -1)) + 1 >= int(state.train_args.get("epochs") or 0)


class Record:
    """A variant's ``variant.json``: every change is written at once (atomically) and reported."""

    def __init__(self, variant_dir: Path, progress: Progress | None = None) -> None:
        self.path = variant_dir / VARIANT_FILE
        data = read_json(self.path)
        if data is None:
            raise BracliError(f"{self.path} is missing or unreadable; run bra ablate again to recreate it")
        self.data = data
        self.progress = progress

    def update(self, **changes: Any) -> None:
        self.data.update(changes, updated=now())
        write_json(self.path, self.data)
        if self.progress is not None:
            self.progress(dict(self.data))


def one_line(error: BaseException) -> str:
    text = " — ".join(line.strip() for line in str(error).strip().splitlines() if line.strip())
    return text if isinstance(error, BracliError) else f"{type(error).__name__}: {text}".rstrip(": ")


@contextlib.contextmanager
def _quiet(log_path: Path) -> Iterator[None]:
    """ultralytics' log lines and progress bars go to the variant's log instead of the console."""
    with open(log_path, "a", encoding="utf-8") as log:
        handlers = [h for h in logging.getLogger("ultralytics").handlers if isinstance(h, logging.StreamHandler)]
        streams = [h.stream for h in handlers]
        for handler in handlers:
            handler.setStream(log)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        finally:
            for handler, stream in zip(handlers, streams, strict=True):
                handler.setStream(stream)


# ------------------------------------------------------------------------------------------ in parallel


def _in_processes(folder: Path, variants: Sequence[Variant], devices: Sequence[str | None], workers: int,
                  progress: Progress, worker_device: Callable[[str | None], str | None]) -> dict[str, str]:
    """One process per device at a time; a poller reports the records the processes write."""
    env = dict(os.environ)
    if os.environ.get("ULTRALYTICS_SAFE_LOAD") == "0":  # this process trusts checkpoints: so do its workers
        env[TRUST_ENV] = "1"
    done = threading.Event()
    poller = threading.Thread(target=_poll, args=(folder, variants, progress, done), daemon=True)
    poller.start()

    def one(variant: Variant, device: str | None) -> str:
        variant_dir = folder / variant.slug
        with open(variant_dir / LOG_FILE, "a", encoding="utf-8") as log:
            command = [sys.executable, "-c", WORKER, str(variant_dir), worker_device(device) or "", str(workers)]
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False).returncode
        record = read_json(variant_dir / VARIANT_FILE) or {}
        if record.get("status") not in (FINISHED, FAILED, INTERRUPTED):  # died without saying why
            write_json(variant_dir / VARIANT_FILE, {**record, "status": FAILED, "action": FAILED, "updated": now(),
                                                    "error": f"its process exited with code {code}; see "
                                                             f"{variant_dir / LOG_FILE}"})
            return FAILED
        return record.get("action") or FAILED

    try:
        actions = run_on_devices(variants, devices, one)
    except KeyboardInterrupt:
        raise AblationInterrupted("interrupted; run the same command again to continue the ablation") from None
    finally:
        done.set()
        poller.join()
        _poll_once(folder, variants, progress, {})
    if any(action == INTERRUPTED for action in actions):
        raise AblationInterrupted("interrupted; run the same command again to continue the ablation")
    return {variant.slug: action for variant, action in zip(variants, actions, strict=True) if action}


def _poll(folder: Path, variants: Sequence[Variant], progress: Progress, done: threading.Event) -> None:
    seen: dict[str, dict[str, Any]] = {}
    while not done.wait(POLL_SECONDS):
        _poll_once(folder, variants, progress, seen)


def _poll_once(folder: Path, variants: Sequence[Variant], progress: Progress, seen: dict[str, dict[str, Any]]) -> None:
    for variant in variants:
        record = read_json(folder / variant.slug / VARIANT_FILE)
        if record is not None and seen.get(variant.slug) != record:
            seen[variant.slug] = record
            progress(record)


def work(argv: Sequence[str]) -> int:
    """A worker process: ``VARIANT_DIR DEVICE WORKERS``; everything else is in the folder. Exit 130 on Ctrl-C."""
    variant_dir, device, workers = Path(argv[0]), argv[1] or None, int(argv[2])
    try:
        run_variant(variant_dir, device, workers=workers)
    except AblationInterrupted:
        return training.INTERRUPTED_EXIT
    return 0
