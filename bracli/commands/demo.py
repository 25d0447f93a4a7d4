"""`bra demo`: the whole pipeline on the built-in sample data, as `make demo` runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bracli.commands import _shared as opt

NAME = "demo"
EPILOG = ("Example: bra demo --epochs 8   (like: bra train --epochs 8 --imgsz 320 --batch 4 warmup_epochs=1; "
          "bra val …; bra predict …)")
# Measured on the sample (128 train images): batch 4 gives 32 optimizer steps per epoch; with batch 16 a short
# run is mostly warm-up and ends at mAP50 0. One warm-up epoch (ultralytics makes it at least 100 steps).
DEMO_TRAIN = {"batch": 4, "extras": {"warmup_epochs": 1}}
DEMO_CONF = 0.1  # a 5-epoch model is still unsure of itself; show what it finds


def command(
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Training epochs.")] = 5,
    imgsz: opt.Imgsz = 320,
    device: opt.Device = None,
    project: opt.Project = None,
) -> None:
    """Run the whole pipeline on the built-in sample data in a few minutes."""
    from rich.rule import Rule

    from bracli.commands import predict as predict_cmd
    from bracli.commands import train as train_cmd
    from bracli.commands import val as val_cmd
    from bracli.dataset.sample import default_sample
    from bracli.engine import lifecycle
    from bracli.ui import console, success

    imgsz = opt.rounded_imgsz(imgsz)
    console.print(Rule("1/4 sample data"))
    data = default_sample()
    console.print(f"built-in sample dataset: {data}")
    console.print(Rule(f"2/4 train YOLOv8n + BRA after P3 for {epochs} epochs at {imgsz}"))
    trained = lifecycle.train(data, lifecycle.ModelChoice(), epochs=epochs, imgsz=imgsz, device=device,
                              project=project, name="demo", **DEMO_TRAIN)
    train_cmd._render(trained)
    if trained.best is None:
        from bracli.errors import BracliError

        raise BracliError(f"training produced no best.pt in {trained.run_dir}")
    console.print(Rule("3/4 validate"))
    validated = lifecycle.val(trained.best, data, imgsz=imgsz, device=device, project=project)
    val_cmd._render(validated)
    console.print(Rule("4/4 predict"))
    images = Path(data).parent / "images" / "val" / "val_0000[0-3].jpg"  # four validation images
    predicted = lifecycle.predict(str(images), trained.best, conf=DEMO_CONF, imgsz=imgsz, device=device,
                                  project=project)
    predict_cmd._render(predicted)
    console.print(Rule("done"))
    success(f"run folder: {trained.run_dir}")
    console.print(f"  weights:    {trained.best}")
    console.print(f"  validation: {validated.save_dir}  (mAP50 {validated.metrics.get('mAP50', 0):.3f})")
    console.print(f"  prediction: {predicted.save_dir}")
    console.print(f"next: bra predict YOUR_IMAGES --model {trained.best}")
