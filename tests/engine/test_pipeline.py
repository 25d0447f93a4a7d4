"""End to end on CPU: train (interrupted and resumed), validate, predict, export, reload elsewhere."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from bracli.engine import export, predict, train, val
from bracli.engine.parity import same_detections
from bracli.errors import OutputExistsError, UsageError

pytestmark = pytest.mark.slow


def test_resume_reaches_the_planned_final_epoch(trained, train_options):
    run_dir, result = trained
    assert result.run_dir == run_dir
    assert result.epochs == train_options["epochs"]
    with open(run_dir / "results.csv") as f:
        epochs = [int(float(row["epoch"])) for row in csv.DictReader(f)]
    assert epochs == list(range(1, train_options["epochs"] + 1))
    assert result.best is not None and result.best.is_file()
    options = yaml.safe_load((run_dir / "bracli.yaml").read_text())
    assert options["model"] == {"family": "yolov8", "task": "detect", "scale": "n", "placements": ["p3"]}
    assert (run_dir / "yolov8n-bra-p3.yaml").is_file()
    assert (run_dir / "args.yaml").is_file()


def test_resuming_a_finished_run_is_refused(trained):
    _, result = trained
    with pytest.raises(Exception, match="cannot be resumed"):
        train.train(resume=result.last)


def test_val_beats_an_untrained_model(trained, tiny_data, tmp_path):
    from ultralytics import YOLO

    _, result = trained
    metrics = val.val(result.best, tiny_data, imgsz=128, project=tmp_path).metrics
    assert set(metrics) == {"precision", "recall", "mAP50", "mAP50-95"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())

    untrained = tmp_path / "untrained.pt"
    YOLO(str(result.run_dir / "yolov8n-bra-p3.yaml")).save(untrained)
    baseline = val.val(untrained, tiny_data, imgsz=128, project=tmp_path).metrics
    assert metrics["mAP50"] > baseline["mAP50"]


def test_val_per_class_rows(trained, tiny_data, tmp_path):
    _, result = trained
    validated = val.val(result.best, tiny_data, imgsz=128, project=tmp_path)
    names = yaml.safe_load(tiny_data.read_text())["names"]
    assert {c.name for c in validated.per_class} <= set(names.values() if isinstance(names, dict) else names)
    assert sum(c.instances for c in validated.per_class) > 0


def test_predict_saves_annotated_images_and_show_falls_back_headless(trained, tiny_data, tmp_path, monkeypatch):
    _, result = trained
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    images = tiny_data.parent / "images" / "val"
    predicted = predict.predict(str(images), result.best, show=True, save=False, imgsz=128, project=tmp_path)
    assert predicted.shown is False
    assert any("no display" in note for note in predicted.notes)
    assert len(predicted.predictions) == len(list(images.glob("*.jpg")))
    assert all(p.saved and os.path.isfile(p.saved) for p in predicted.predictions)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_torch(trained, fmt, tmp_path):
    import shutil

    _, result = trained
    weights = tmp_path / "best.pt"
    shutil.copy2(result.best, weights)
    exported = export.export(weights, format=fmt, imgsz=128, dynamic=fmt == "onnx")
    assert exported.ok, exported.to_dict()
    assert exported.path.is_file()
    assert len(exported.parity) == (2 if fmt == "onnx" else 1)
    before = exported.path.read_bytes()
    with pytest.raises(OutputExistsError):
        export.export(weights, format=fmt, imgsz=128)
    assert exported.path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".bracli-export")] == []


def test_export_errors(trained, tmp_path):
    _, result = trained
    with pytest.raises(UsageError, match="did you mean onnx"):
        export.export(result.best, format="onx")


@pytest.mark.parametrize("restricted", [False, True])
def test_best_loads_in_a_fresh_process_with_plain_ultralytics(trained, tiny_data, tmp_path, restricted):
    """Plain ultralytics loads a bracli checkpoint; with its restricted loading on, after `import bracli`."""
    _, result = trained
    image = next((tiny_data.parent / "images" / "val").glob("*.jpg"))
    code = textwrap.dedent(f"""
        {"import bracli" if restricted else ""}
        from ultralytics import YOLO
        model = YOLO({str(result.best)!r})
        results = model.predict({str(image)!r}, imgsz=128, verbose=False)
        print(type(model.model.model[16]).__name__, len(results))
    """)
    env = {k: v for k, v in os.environ.items() if k != "ULTRALYTICS_SAFE_LOAD"}
    env.update({"YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(tmp_path), **({"ULTRALYTICS_SAFE_LOAD": "1"} if restricted
                                                                           else {})})
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["BiLevelRoutingAttention", "1"]


def test_ddp_worker_file_trains_with_bra(trained, tiny_data, tmp_path):
    """ultralytics' multi-GPU launcher re-imports the trainer class in each worker: BRA must stay known."""
    from ultralytics.utils.dist import generate_ddp_file

    from bracli.engine.trainer import BraDetectionTrainer

    _, result = trained
    trainer = BraDetectionTrainer(overrides={
        "model": str(result.run_dir / "yolov8n-bra-p3.yaml"), "data": str(tiny_data), "epochs": 1, "imgsz": 64,
        "batch": 4, "workers": 0, "device": "cpu", "project": str(tmp_path), "name": "ddp", "plots": False})
    script = generate_ddp_file(trainer)
    try:
        env = {**os.environ, "YOLO_OFFLINE": "1"}
        done = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env, timeout=600)
    finally:
        os.unlink(script)
        os.unlink(script[:-3] + ".pt")
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = torch.load(tmp_path / "ddp" / "weights" / "last.pt", map_location="cpu", weights_only=False)
    assert type(ckpt["model"].model[16]).__name__ == "BiLevelRoutingAttention"


def test_fine_tune_from_a_bra_checkpoint(trained, tiny_data, tmp_path):
    """--model best.pt starts a new run from the trained weights (all of them arrive)."""
    _, result = trained
    tuned = train.train(tiny_data, train.ModelChoice(path=result.best), epochs=1, imgsz=64, batch=4,
                            workers=0, project=tmp_path, extras={"plots": False})
    assert tuned.best is not None
    assert tuned.transfer is not None and tuned.transfer["complete"], tuned.transfer


def test_predict_expands_globs_ultralytics_would_not(trained, tiny_data, tmp_path):
    _, result = trained
    pattern = str(tiny_data.parent / "images" / "val" / "val_0000[0-2].jpg")
    predicted = predict.predict(pattern, result.best, imgsz=128, project=tmp_path)
    assert [os.path.basename(p.source) for p in predicted.predictions] == [
        "val_00000.jpg", "val_00001.jpg", "val_00002.jpg"]


def test_same_detections_needs_count_class_and_overlap():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0, 0.9, 1.0], [20.0, 20.0, 30.0, 30.0, 0.8, 0.0]])
    assert same_detections(a, a.flip(0))
    shifted = a.clone()
    shifted[0, :4] += 3.0  # IoU 0.32 with the original box
    assert not same_detections(a, shifted)
    relabelled = a.clone()
    relabelled[1, 5] = 2.0
    assert not same_detections(a, relabelled)
    assert not same_detections(a, a[:1])
    assert same_detections(a[:0], a[:0])
