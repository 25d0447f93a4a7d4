"""`bra demo`: the whole pipeline on the built-in sample data, as `make demo` runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bracli import options
from bracli.output import Output

NAME = "demo"
DEMO_EPOCHS = 5
EPILOG = ("Example: bra demo --epochs 8   (like: bra train --epochs 8 --imgsz 320 --batch 4 warmup_epochs=1; "
          "bra val …; bra predict …)")
# Measured on the sample (128 train images): batch 4 gives 32 optimizer steps per epoch; with batch 16 a short
# run is mostly warm-up and ends at mAP50 0. One warm-up epoch (ultralytics makes it at least 100 steps).
DEMO_TRAIN = {"batch": 4, "extras": {"warmup_epochs": 1}}
DEMO_CONF = 0.1  # a 5-epoch model is still unsure of itself; show what it finds


def command(
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Training epochs.")] = DEMO_EPOCHS,
    imgsz: options.Imgsz = 320,
    device: options.Device = None,
    project: options.Project = None,
) -> None:
    """Run the whole pipeline on the built-in sample data in a few minutes."""
    from rich.rule import Rule

    from bracli.commands import predict as predict_cmd
    from bracli.commands import train as train_cmd
    from bracli.commands import val as val_cmd
    from bracli.errors import BracliError

    out = Output()
    imgsz = options.imgsz(imgsz, notice=out.warn)
    device = options.device(device)

    from bracli.engine.setup import setup

    setup()
    from bracli.dataset.sample import default_sample
    from bracli.engine import predict, train, val

    out.print(Rule("1/4 sample data"))
    data = default_sample()
    out.info(f"built-in sample dataset: {data}")
    out.print(Rule(f"2/4 train YOLOv8n + BRA after P3 for {epochs} epochs at {imgsz}"))
    trained = train.train(data, train.ModelChoice(), epochs=epochs, imgsz=imgsz, device=device, project=project,
                          name="demo", notice=out.warn, **DEMO_TRAIN)
    train_cmd.render(trained, out)
    if trained.best is None:
        raise BracliError(f"training produced no best.pt in {trained.run_dir}")
    out.print(Rule("3/4 validate"))
    validated = val.val(trained.best, data, imgsz=imgsz, device=device, project=project)
    val_cmd.render(validated, out)
    out.print(Rule("4/4 predict"))
    images = Path(data).parent / "images" / "val" / "val_0000[0-3].jpg"  # four validation images
    predicted = predict.predict(str(images), trained.best, conf=DEMO_CONF, imgsz=imgsz, device=device,
                                project=project)
    predict_cmd.render(predicted, out)
    out.print(Rule("done"))
    out.ok(f"run folder: {trained.run_dir}")
    out.info(f"  weights:    {trained.best}")
    out.info(f"  validation: {validated.save_dir}  (mAP50 {validated.metrics.get('mAP50', 0):.3f})")
    out.info(f"  prediction: {predicted.save_dir}")
    out.info(f"next: bra predict YOUR_IMAGES --model {trained.best}")
