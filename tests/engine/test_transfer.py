"""Pretrained weights move across inserted BRA layers: every vanilla tensor arrives, values equal."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from bracli import templates
from bracli.engine import models
from bracli.engine.checkpoint import read_checkpoint
from bracli.engine.transfer import layer_keys, transfer_weights
from bracli.errors import UsageError
from bracli.nn import BiLevelRoutingAttention


def randomised(model):
    """Give every tensor a distinct random value, so 'equal' cannot happen by accident."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=gen))
    return model


def expected_index(vanilla_index: int, bra_model) -> int:
    plain = [i for i, layer in enumerate(bra_model.model) if not isinstance(layer, BiLevelRoutingAttention)]
    return plain[vanilla_index]


@pytest.mark.parametrize("placements", [["p3"], ["backbone-p4", "p5"], ["sppf", "p3", "p4"]])
def test_every_vanilla_tensor_arrives(placements):
    vanilla = randomised(models.build(templates.render("n", []), nc=3))
    bra = models.build(templates.render("n", placements), nc=3)
    fresh_before = {k: v.clone() for k, v in bra.state_dict().items()}
    report = transfer_weights(bra, vanilla)

    assert report.complete, report.summary()
    assert report.transferred == report.source_tensors == len(vanilla.state_dict())
    target = bra.state_dict()
    for key, value in vanilla.state_dict().items():
        _, index, *rest = key.split(".")
        moved = ".".join(["model", str(expected_index(int(index), bra)), *rest])
        assert torch.equal(target[moved], value), key
    bra_indices = [i for i, layer in enumerate(bra.model) if isinstance(layer, BiLevelRoutingAttention)]
    assert report.fresh_bra_layers == bra_indices
    for i in bra_indices:  # BRA layers keep their own initialisation
        for key in (k for k in target if k.startswith(f"model.{i}.")):
            assert torch.equal(target[key], fresh_before[key])


def test_plain_key_matching_would_lose_most_layers():
    """The problem being solved: ultralytics' key+shape matching misses every layer after the insertion."""
    vanilla = randomised(models.build(templates.render("n", []), nc=3))
    bra = models.build(templates.render("n", ["backbone-p3"]), nc=3)
    target = bra.state_dict()
    same = sum(1 for k, v in vanilla.state_dict().items() if k in target and target[k].shape == v.shape
               and k.split(".")[1].isdigit() and int(k.split(".")[1]) < 5)
    report = transfer_weights(bra, vanilla)
    assert report.transferred > 2 * same


def test_bra_to_bra_keeps_matching_bra_layers():
    source = randomised(models.build(templates.render("n", ["p3", "p4"]), nc=3))
    target = models.build(templates.render("n", ["p4"]), nc=3)
    report = transfer_weights(target, source)
    p4_source = next(i for i, k in layer_keys(source.model).items() if k[0] == "bra" and k[1] == 18)
    p4_target = next(i for i, k in layer_keys(target.model).items() if k[0] == "bra")
    assert torch.equal(target.model[p4_target].qkv.qkv.weight, source.model[p4_source].qkv.qkv.weight)
    assert report.fresh_bra_layers == []
    assert set(report.skipped.values()) == {"layer absent in the model"}  # only the p3 BRA layer stays behind


def test_class_count_change_reports_the_head():
    vanilla = randomised(models.build(templates.render("n", []), nc=80))
    bra = models.build(templates.render("n", ["p3"]), nc=3)
    report = transfer_weights(bra, vanilla)
    assert not report.complete
    assert all(key.split(".")[1] == "22" for key in report.skipped)  # only Detect (vanilla index 22)
    assert "shape differs" in report.summary()


# ---------------------------------------------------------------- every family and task, from checkpoint files

VARIANTS = [pytest.param(family, task, id=f"{family}-{task}") for family in templates.FAMILIES
            for task in templates.TASKS]


def build(family: str, task: str, placements, nc: int = 3):
    """The task's ultralytics model class, built from the rendered YAML (BRA registered by bracli.engine); a fresh
    copy of a model built once per session, since building is the slow part of these tests."""
    return copy.deepcopy(_built(family, task, tuple(placements), nc))


@functools.cache
def _built(family: str, task: str, placements: tuple[str, ...], nc: int):
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel

    cls = {"detect": DetectionModel, "segment": SegmentationModel}[task]
    return cls(templates.render("n", placements, family=family, task=task, nc=nc), nc=nc, verbose=False)


def released_checkpoint(tmp_path, model, task: str):
    """A checkpoint file as ultralytics writes it: a training checkpoint, then its own ``strip_optimizer``
    (fp16 model, no optimizer) — the layout of the released yolo11n.pt / yolov8n-seg.pt."""
    from ultralytics.utils.torch_utils import strip_optimizer

    model.args = {"task": task, "imgsz": 640}
    path = tmp_path / f"vanilla-{task}.pt"
    torch.save({"epoch": 0, "model": None, "ema": model, "updates": 1, "optimizer": {}, "train_args": {"task": task}},
               path)
    strip_optimizer(path)
    return read_checkpoint(path).model


@pytest.mark.parametrize(("family", "task"), VARIANTS)
def test_vanilla_checkpoint_of_every_family_moves_completely(tmp_path, family, task):
    vanilla = randomised(build(family, task, []))
    source = released_checkpoint(tmp_path, vanilla, task)
    assert source is not vanilla and next(iter(source.state_dict().values())).dtype == torch.float32
    bra = build(family, task, templates.placements_for(family, task))
    report = transfer_weights(bra, source)

    n = len(vanilla.state_dict())
    assert report.summary().startswith(f"transferred {n}/{n} source tensors")
    assert report.complete and report.skipped == {} and report.fresh == []
    target = bra.state_dict()
    for key, value in source.state_dict().items():
        _, index, *rest = key.split(".")
        moved = ".".join(["model", str(expected_index(int(index), bra)), *rest])
        assert torch.equal(target[moved], value), key
    assert report.fresh_bra_layers == [i for i, m in enumerate(bra.model) if isinstance(m, BiLevelRoutingAttention)]


@pytest.mark.parametrize("family", ["yolov8", "yolo26"])
def test_detection_checkpoint_fills_a_segment_model_except_its_mask_branches(tmp_path, family):
    detect = randomised(build(family, "detect", []))
    source = released_checkpoint(tmp_path, detect, "detect")
    segment = build(family, "segment", ["p3"])
    report = transfer_weights(segment, source)

    head = len(segment.model) - 1
    detect_head = {k.split(".", 2)[2] for k in detect.state_dict() if k.split(".")[1] == str(len(detect.model) - 1)}
    mask_tensors = [k for k in segment.state_dict() if k.split(".")[1] == str(head) and k.split(".", 2)[2]
                    not in detect_head]
    assert mask_tensors and all(".proto." in k or "cv4" in k for k in mask_tensors)
    assert report.transferred == report.source_tensors == len(detect.state_dict())  # every detection tensor fits
    assert sorted(report.fresh) == sorted(mask_tensors)
    assert f"{len(mask_tensors)} model tensors had no source and start fresh: model.{head}.proto" in report.summary()
    assert f"model.{head}.cv4" in report.summary()


def test_segment_checkpoint_into_a_detect_model_names_the_mask_tensors_left_behind(tmp_path):
    segment = randomised(build("yolo11", "segment", []))
    source = released_checkpoint(tmp_path, segment, "segment")
    detect = build("yolo11", "detect", ["psa"])
    report = transfer_weights(detect, source)

    head = str(len(segment.model) - 1)
    left = {k for k in segment.state_dict() if k.split(".")[1] == head and (".proto." in k or ".cv4." in k)}
    assert not report.complete
    assert set(report.skipped) == left
    assert set(report.skipped.values()) == {"tensor absent in the model"}
    assert report.transferred == len(segment.state_dict()) - len(left)
    assert report.fresh == []  # the detection model got everything it has
    assert f"{len(left)} tensor absent in the model" in report.summary()


def test_checkpoint_of_another_family_is_reported_not_silently_mixed(tmp_path):
    source = released_checkpoint(tmp_path, randomised(build("yolov8", "detect", [])), "detect")
    target = build("yolo11", "detect", ["p3"])
    report = transfer_weights(target, source)
    assert not report.complete
    assert "layer type differs" in report.summary()  # C2f rows do not pour into C3k2 rows
    assert report.fresh  # and the model says which of its own tensors start fresh


def test_weights_of_another_family_are_refused_before_training(tmp_path, bra):
    """A YOLO11 checkpoint into the default YOLOv8 model moved 40 of 511 tensors; like another scale, it is refused."""
    from bracli.dataset.sample import write_sample

    data = write_sample(tmp_path / "data", seed=3, n_train=4, n_val=2, imgsz=64)
    released_checkpoint(tmp_path, randomised(build("yolo11", "detect", [])), "detect")
    outcome = bra("train", data, "--weights", tmp_path / "vanilla-detect.pt", "--epochs", "1", "--imgsz", "64",
                  "--device", "cpu", "--project", tmp_path / "runs")
    assert outcome.code == 2 and len(outcome.err.strip().splitlines()) == 1, outcome.err
    assert "is a YOLO11 model but the model is YOLOv8" in outcome.err and "--family yolo11" in outcome.err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("weights", "model", "refused"), [
    ("yolo11", "yolo11", False), ("yolo26", "yolo26", False), ("yolov8", "yolo26", True), ("yolo26", "yolo11", True),
])
def test_weights_fit_the_family_they_come_from(tmp_path, weights, model, refused):
    from bracli.engine.train import _check_weights_fit

    released_checkpoint(tmp_path, randomised(build(weights, "detect", [])), "detect")
    checkpoint = read_checkpoint(tmp_path / "vanilla-detect.pt")
    cfg = templates.render("n", templates.placements_for(model, "detect")[:1], family=model, task="detect")
    if not refused:
        _check_weights_fit(checkpoint, cfg)
        return
    with pytest.raises(UsageError, match=f"is a {templates.FAMILY_TITLES[weights]} model but the model is "
                                         f"{templates.FAMILY_TITLES[model]}"):
        _check_weights_fit(checkpoint, cfg)
