"""Every family × task trains an epoch through bracli's trainer; a segmentation model validates (mask mAP),
predicts and exports with the parity check on both of its outputs."""

from __future__ import annotations

import pytest

from bracli import templates
from bracli.engine import export, predict, train, val
from bracli.engine.checkpoint import read_checkpoint
from bracli.nn import BiLevelRoutingAttention

pytestmark = pytest.mark.slow

TINY = {"n_train": 8, "n_val": 4, "imgsz": 96}
ONE_EPOCH = {"epochs": 1, "imgsz": 64, "batch": 4, "workers": 0, "device": "cpu",
             "extras": {"plots": False, "warmup_epochs": 0}}
VARIANTS = [(family, task) for family in templates.FAMILIES for task in templates.TASKS]


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    from bracli.dataset.sample import write_sample

    root = tmp_path_factory.mktemp("samples")
    return {task: write_sample(root / task, seed=2, task=task, **TINY) for task in templates.TASKS}


@pytest.fixture(scope="module")
def trained(samples, tmp_path_factory):
    """One epoch of a family × task, trained once per module however many tests ask for it."""
    runs, done = tmp_path_factory.mktemp("runs"), {}

    def run(family: str, task: str) -> train.TrainResult:
        if (family, task) not in done:
            done[family, task] = train.train(samples[task], train.ModelChoice(family=family, task=task),
                                             project=runs, name=f"{family}-{task}", **ONE_EPOCH)
        return done[family, task]

    return run


@pytest.mark.parametrize(("family", "task"), VARIANTS)
def test_one_epoch_of_every_family_and_task(trained, family, task):
    result = trained(family, task)
    assert result.best is not None and result.run_dir.name == f"{family}-{task}"
    model = read_checkpoint(result.best).model
    assert model.task == task
    assert sum(isinstance(m, BiLevelRoutingAttention) for m in model.modules()) == 1
    expected = {"precision", "recall", "mAP50", "mAP50-95"}
    if task == "segment":
        expected |= {"mask_precision", "mask_recall", "mask_mAP50", "mask_mAP50-95"}
    assert set(result.metrics) == expected


def test_segmentation_validates_predicts_and_exports(samples, trained, tmp_path):
    weights = trained("yolov8", "segment").best
    validated = val.val(weights, samples["segment"], imgsz=64, project=tmp_path)
    assert validated.task == "segment" and "mask_mAP50" in validated.metrics
    images = samples["segment"].parent / "images" / "val"
    predicted = predict.predict(str(images), weights, imgsz=64, conf=0.01, project=tmp_path)
    assert len(predicted.predictions) == TINY["n_val"] and predicted.unreadable == {}
    exported = export.export(weights, format="onnx", imgsz=64, dynamic=True, out=tmp_path / "seg.onnx")
    assert exported.ok, exported.to_dict()
    assert [p.imgsz for p in exported.parity] == [(64, 64), (32, 64)]


def test_training_a_segmentation_model_on_box_labels_is_one_line(samples, tmp_path, bra):
    """ultralytics' ValueError about box-only labels becomes the ordinary failure it is, without a run folder."""
    outcome = bra("train", samples["detect"], "--task", "segment", "--imgsz", "64", "--epochs", "1", "--batch", "4",
                  "--device", "cpu", "--project", tmp_path / "train")
    assert outcome.code == 1 and len(outcome.err.strip().splitlines()) == 1, outcome.err
    assert "train labels" in outcome.err and "have boxes but no polygons" in outcome.err
    assert "internal error" not in outcome.err and not (tmp_path / "train").exists()


def test_validating_a_segmentation_model_on_box_labels_is_one_line(samples, trained, tmp_path, bra):
    weights = trained("yolov8", "segment").best
    outcome = bra("val", weights, "--data", samples["detect"], "--imgsz", "64", "--device", "cpu",
                  "--project", tmp_path / "val")
    assert outcome.code == 1 and "val labels" in outcome.err and "have boxes but no polygons" in outcome.err
    assert "internal error" not in outcome.err and not (tmp_path / "val").exists()
