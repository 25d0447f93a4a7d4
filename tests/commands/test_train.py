"""`bra train`: bad input fails in one line with the right exit code, before any training starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


def test_missing_data_file(bra, tmp_path):
    r = bra("train", tmp_path / "missing.yaml", "--epochs", "1")
    assert r.code == 1
    assert "data file not found" in r.err
    assert "Traceback" not in r.err


def test_data_without_val(bra, tmp_path):
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump({"train": "images", "names": ["a"]}))
    r = bra("train", path)
    assert r.code == 1
    assert "no 'val:' entry" in r.err


def test_download_key_refused(bra, tiny_data, tmp_path):
    data = yaml.safe_load(tiny_data.read_text())
    data["download"] = "https://example.invalid/data.zip"
    data["path"] = str(tiny_data.parent)
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump(data))
    r = bra("train", path, "--epochs", "1")
    assert r.code == 1
    assert "--allow-download" in r.err


def test_unknown_extra_suggests(bra):
    r = bra("train", "mosaik=0.5")
    assert r.code == 2
    assert "did you mean mosaic=" in r.err


def test_missing_weights_is_an_error_not_a_download(bra, tiny_data, tmp_path):
    r = bra("train", tiny_data, "--weights", tmp_path / "yolov8n.pt")
    assert r.code == 1
    assert "never downloads" in r.err


def test_weights_that_are_not_a_checkpoint(bra, tiny_data, tmp_path):
    fake = tmp_path / "fake.pt"
    fake.write_bytes(b"not a checkpoint")
    r = bra("train", tiny_data, "--weights", fake)
    assert r.code == 1
    assert "not a readable PyTorch checkpoint" in r.err


@pytest.mark.parametrize("args, message", [
    (["--bra-after", "p7"], "p7"),
    (["--bra-after", "p3,p3"], "p3"),
    (["--scale", "q"], "q"),
    (["--heads", "7"], "heads"),
])
def test_bad_model_options(bra, args, message):
    r = bra("train", "--epochs", "1", *args)
    assert r.code == 2
    assert message in r.err


def test_model_and_render_options_conflict(bra, tmp_path):
    r = bra("train", "--model", tmp_path / "yolov8n-bra-p3.yaml", "--bra-after", "p4")
    assert r.code == 2
    assert "--model takes the architecture" in r.err


def test_resume_without_runs(bra, tmp_path):
    r = bra("train", "--resume", "--project", tmp_path)
    assert r.code == 1
    assert "no run to resume" in r.err


@pytest.mark.slow
def test_weights_transfer_reported(bra, tiny_data, tmp_path):
    from ultralytics import YOLO

    from bracli import templates

    nc = len(yaml.safe_load(tiny_data.read_text())["names"])  # same class count: every tensor can transfer
    vanilla_yaml = tmp_path / "yolov8n.yaml"
    vanilla_yaml.write_text(templates.to_yaml(templates.render("n", [], nc=nc), "vanilla"))
    vanilla = tmp_path / "vanilla.pt"
    YOLO(str(vanilla_yaml)).save(vanilla)
    r = bra("train", tiny_data, "--weights", vanilla, "--epochs", "1", "--imgsz", "64", "--batch", "4",
            "--project", tmp_path / "runs", "--device", "cpu")
    assert r.code == 0, r.err
    assert "transferred 355/355 source tensors" in r.out
    assert "BRA layers [16] initialised fresh" in r.out
    options = yaml.safe_load((tmp_path / "runs" / "train" / "bracli.yaml").read_text())
    assert options["transfer"]["complete"] is True


@pytest.mark.parametrize("given, named", [
    (["--epochs", "2", "--seed", "5", "--name", "renamed"], "--epochs, --name, --seed"),
    (["--epochs", "50"], "--epochs"),  # the default, typed: still a choice the resume would drop
    (["--family", "yolov8", "--scale", "n"], "--family, --scale"),
    (["--bra-after", "p4", "--topk", "8"], "--bra-after, --topk"),
])
def test_resume_refuses_options_it_would_ignore(bra, tmp_path, given, named):
    r = bra("train", "--resume", tmp_path / "run", *given)
    assert r.code == 2
    assert f"it does not take {named}" in r.err


def test_resume_of_a_named_run_refuses_project(bra, tmp_path):
    r = bra("train", "--resume", tmp_path / "run", "--project", tmp_path / "elsewhere")
    assert r.code == 2
    assert "--resume RUN names the run; --project only says" in r.err


def test_resume_refuses_extras_it_would_ignore(bra, tmp_path):
    r = bra("train", "--resume", tmp_path / "run", "lr0=0.1")
    assert r.code == 2
    assert "it does not take lr0=" in r.err


@pytest.mark.slow
def test_resume_applies_the_options_it_takes(bra, tiny_data, tmp_path):
    from bracli.engine import train

    class Stop(Exception):
        pass

    def stop_after_first_epoch(trainer) -> None:
        if trainer.epoch == 0:
            raise Stop

    with pytest.raises(Stop):
        train.train(tiny_data, train.ModelChoice(), project=tmp_path, name="run", epochs=2, imgsz=64, batch=4,
                    device="cpu", workers=0, extras={"val": False, "plots": False},
                    callbacks={"on_model_save": stop_after_first_epoch})
    r = bra("train", "--resume", tmp_path / "run", "--imgsz", "96", "--batch", "2", "--device", "cpu", "patience=7")
    assert r.code == 0, r.err
    args = yaml.safe_load((tmp_path / "run" / "args.yaml").read_text())
    assert (args["imgsz"], args["batch"], args["patience"], args["epochs"]) == (96, 2, 7, 2)


@pytest.mark.parametrize("given, named", [
    (["--family", "yolov8"], "--family"),
    (["--task", "detect", "--preset", "bracli"], "--task, --preset"),
])
def test_model_refuses_render_options_even_at_their_defaults(bra, tmp_path, given, named):
    r = bra("train", "--model", tmp_path / "yolov8n-bra-p3.yaml", *given)
    assert r.code == 2
    assert f"drop {named} or --model" in r.err


@pytest.mark.parametrize("given, named", [
    (["--topk", "8", "--preset", "blog"], "--preset, --topk"),
    (["--region-size", "none"], "--region-size"),
])
def test_bra_options_for_a_plain_model_are_refused(bra, given, named):
    r = bra("train", "--bra-after", "none", *given)
    assert r.code == 2
    assert f"without a BRA layer; drop {named}" in r.err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_an_unwritable_json_target_is_refused_before_training(bra, tiny_data, tmp_path):
    r = bra("train", tiny_data, "--json", "/proc/x.json", "--project", tmp_path / "runs", "--epochs", "1")
    assert r.code == 2
    assert "cannot write /proc/x.json" in r.err
    assert not (tmp_path / "runs").exists()


def test_a_checkpoint_carries_its_scale(bra, tiny_data, tmp_path):
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"")  # never read: the option is refused first
    r = bra("train", tiny_data, "--model", checkpoint, "--scale", "s", "--epochs", "1", "--project", tmp_path / "runs")
    assert r.code == 2
    assert "a checkpoint carries its scale; drop --scale" in r.err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--n-win", "100000"], "--n-win 100000 is too large: at most 64"),
    (["--region-size", "4096"], "--region-size 4096 is too large: at most 1024"),
])
def test_bra_options_past_their_bounds_are_refused(bra, tiny_data, tmp_path, args, message):
    r = bra("train", tiny_data, *args, "--epochs", "1", "--project", tmp_path / "runs")
    assert r.code == 2
    assert message in r.err
    assert not (tmp_path / "runs").exists()
