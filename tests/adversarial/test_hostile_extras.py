"""Extras ultralytics would take but that break or bypass bracli: `classes=` that are not class ids (a crash in
predict, every label filtered out in train/val), `embed=`, `tracker=`, `cfg=`, `freeze=` that is not layers, and
the renamed `half=`. Each is a usage error (exit 2) before anything runs or is written."""

from __future__ import annotations

import pytest

REFUSED = {
    "classes=foo": ("classes=foo", "give a class id or a list of them"),
    "classes=-1": ("classes=-1", "give a class id or a list of them"),
    "classes=[0,x]": ("classes=[0,x]", "give a class id or a list of them"),
    "classes=True": ("classes=True", "give a class id or a list of them"),
    "embed=[1]": ("embed=[1]", "not feature embeddings"),
    "tracker=botsort.yaml": ("tracker=botsort.yaml", "no track mode"),
    "cfg=other.yaml": ("cfg=other.yaml", "give the arguments themselves"),
    "half=True": ("half=True", "use quantize=16"),
}
COMMANDS = {
    "predict": lambda world, tmp: ["predict", world.image, "--model", world.best, "--imgsz", "64", "--device", "cpu",
                                   "--project", tmp / "runs"],
    "val": lambda world, tmp: ["val", world.best, "--data", world.data, "--imgsz", "64", "--device", "cpu",
                               "--project", tmp / "runs"],
    "train": lambda world, tmp: ["train", world.data, "--imgsz", "64", "--epochs", "1", "--batch", "4", "--device",
                                 "cpu", "--project", tmp / "runs"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", REFUSED)
def test_extras_that_break_or_bypass_bracli_are_usage_errors(command, name, world, expect, tmp_path):
    extra, says = REFUSED[name]
    expect(inputs=[world.dataset, world.best]).run(*COMMANDS[command](world, tmp_path), extra, code=2, says=[says])
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("command", ["predict", "val"])
def test_class_ids_the_model_lacks_are_refused(command, world, expect, tmp_path):
    expect(inputs=[world.dataset, world.best]).run(*COMMANDS[command](world, tmp_path), "classes=[0,3]", code=2,
                                                   says=["the model has 3 classes", "no class 3"])


def test_train_freeze_that_is_not_layers_is_refused(world, expect, tmp_path):
    expect(inputs=[world.dataset]).run(*COMMANDS["train"](world, tmp_path), "freeze=backbone", code=2,
                                       says=["freeze='backbone'", "freeze=10"])


def test_control_class_ids_the_model_has_predict(world, expect, tmp_path):
    outcome = expect(inputs=[world.dataset, world.best]).run(*COMMANDS["predict"](world, tmp_path), "classes=[0,2]",
                                                             "--conf", "0.01", "--json", "-", code=0)
    assert '"predictions"' in outcome.out
