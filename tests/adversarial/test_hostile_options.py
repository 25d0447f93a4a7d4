"""Hostile command lines and output places: numbers out of range, shell text where a device goes, outputs that
exist, read-only and over-long paths, names with spaces, newlines and other scripts, symlinks. Usage mistakes
exit 2 before anything is written; environment problems exit 1 naming the problem; odd but valid names work."""

from __future__ import annotations

import os

import pytest

OUT_OF_RANGE = {
    "train --imgsz 0": (["train", "--imgsz", "0"], "smaller than the model stride"),
    "train --imgsz 100000": (["train", "--imgsz", "100000"], "larger than 8192"),
    "predict --imgsz -32": (["predict", ".", "--imgsz", "-32"], "smaller than the model stride"),
    "val --imgsz 100000": (["val", "w.pt", "--imgsz", "100000"], "larger than 8192"),
    "export --imgsz 0": (["export", "w.pt", "--imgsz", "0"], "smaller than the model stride"),
    "profile --imgsz 100000x64": (["profile", "--imgsz", "100000x64"], "larger than 8192"),
    "profile --imgsz 64;rm": (["profile", "--imgsz", "64;rm"], "is not a size"),
    "demo --imgsz 0": (["demo", "--imgsz", "0"], "smaller than the model stride"),
    "train --batch 0": (["train", "--batch", "0"], "'--batch'"),
    "val --batch -1": (["val", "w.pt", "--batch", "-1"], "'--batch'"),
    "profile --batch 0": (["profile", "--batch", "0"], "'--batch'"),
    "train --epochs 0": (["train", "--epochs", "0"], "'--epochs'"),
    "demo --epochs 0": (["demo", "--epochs", "0"], "'--epochs'"),
    "train --workers -1": (["train", "--workers", "-1"], "'--workers'"),
    "train --seed -1": (["train", "--seed", "-1"], "'--seed'"),
    "train optimizer=__import__": (["train", "DATA", "optimizer=__import__", "--epochs", "1", "--imgsz", "32",
                                    "--batch", "2", "--device", "cpu"], "optimizer="),
    "train --imgsz 1e9": (["train", "--imgsz", "1e9"], "'--imgsz'"),
    "predict --conf 1.5": (["predict", ".", "--conf", "1.5"], "'--conf'"),
    "predict --conf nan": (["predict", ".", "--conf", "nan"], "'--conf'"),
    "val --iou -0.1": (["val", "w.pt", "--iou", "-0.1"], "'--iou'"),
    "export --opset 5": (["export", "w.pt", "--opset", "5"], "'--opset'"),
    "init --nc 10^15": (["init", "--nc", "1000000000000000"], "'--nc'"),
    "init --n-win 0": (["init", "--n-win", "0"], "n_win=0"),
    "train --device shell": (["train", "--device", "cpu;rm -rf /"], "is not a device"),
    "export --device $(...)": (["export", "w.pt", "--device", "$(touch x)"], "is not a device"),
    "predict --imgsz of 50 digits": (["predict", ".", "--imgsz", "9" * 50], "larger than 8192"),
    "dataset sample --n-train 0": (["dataset", "sample", "ds", "--n-train", "0"], "'--n-train'"),
    "dataset check --imgsz 0": (["dataset", "check", "DATA", "--imgsz", "0"], "smaller than the model stride"),
    "dataset check --workers 0": (["dataset", "check", "DATA", "--workers", "0"], "'--workers'"),
    "val __class__=x": (["val", "w.pt", "__class__=x"], "unknown ultralytics argument"),
    "predict model=evil.pt": (["predict", ".", "model=evil.pt"], "not an extra"),
    "train epochs=5": (["train", "epochs=5"], "has its own option"),
    "train exist_ok=True": (["train", "exist_ok=True"], "never writes into an earlier run's folder"),
    "predict exist_ok=True": (["predict", ".", "exist_ok=True"], "never writes into an earlier run's folder"),
}


@pytest.mark.parametrize("name", OUT_OF_RANGE)
def test_out_of_range_values_are_usage_errors(name, world, expect, tmp_path):
    argv, says = OUT_OF_RANGE[name]
    expect(inputs=[world.dataset]).run(*(world.data if a == "DATA" else a for a in argv), code=2, says=[says])
    assert not any(tmp_path.iterdir())  # nothing written, not even a folder


def test_a_gpu_that_is_not_there(world, expect, tmp_path):
    expect(inputs=[world.best]).run("predict", world.image, "--model", world.best, "--device", "99", code=1,
                                    says=["--device cuda:99"])


@pytest.mark.parametrize("command", ["init", "export", "export --out", "train --json", "val --json",
                                     "predict --json", "profile --json", "profile --plot", "dataset check --json",
                                     "dataset sample"])
def test_existing_outputs_are_never_overwritten_without_force(command, world, expect, tmp_path):
    weights = tmp_path / "in" / "best.pt"
    weights.parent.mkdir()
    weights.write_bytes(world.best.read_bytes())
    existing = {"init": tmp_path / "yolov8n-bra-p3.yaml", "export": weights.with_suffix(".onnx"),
                "export --out": tmp_path / "mine.onnx", "profile --plot": tmp_path / "cost.png",
                "dataset sample": tmp_path / "ds" / "keep.txt"}.get(command, tmp_path / "result.json")
    existing.parent.mkdir(exist_ok=True)
    existing.write_text("the user's own file\n")
    argv = {"init": ["init"], "export": ["export", weights, "--imgsz", "64"],
            "export --out": ["export", weights, "--out", existing],
            "train --json": ["train", world.data, "--json", existing],
            "val --json": ["val", weights, "--json", existing],
            "predict --json": ["predict", world.image, "--model", weights, "--json", existing],
            "profile --json": ["profile", "--json", existing],
            "profile --plot": ["profile", "--imgsz", "64,128", "--plot", existing],
            "dataset check --json": ["dataset", "check", world.data, "--json", existing],
            "dataset sample": ["dataset", "sample", existing.parent]}[command]
    expect(inputs=[existing, weights]).run(*argv, code=2, says=["already exists", "--force"])


@pytest.mark.parametrize("command", ["init --out", "export --out", "predict --project", "train --project",
                                     "val --json", "profile --plot", "dataset sample"])
def test_read_only_folders(command, world, kit, expect, tmp_path):
    locked = tmp_path / "locked"
    argv, code = {
        "init --out": (["init", "--out", locked / "yolov8n-bra-p3.yaml"], 2),
        "export --out": (["export", world.best, "--imgsz", "64", "--out", locked / "best.onnx"], 1),
        "predict --project": (["predict", world.image, "--model", world.best, "--imgsz", "64", "--project",
                               locked], 1),
        "train --project": (["train", world.data, "--epochs", "1", "--imgsz", "64", "--project", locked], 1),
        "val --json": (["val", world.best, "--json", locked / "metrics.json"], 2),
        "profile --plot": (["profile", "--imgsz", "64,128", "--plot", locked / "cost.png"], 2),
        "dataset sample": (["dataset", "sample", locked / "ds"], 2),
    }[command]
    with kit.read_only(locked):
        case = expect(inputs=[world.best, world.dataset])
        case.run(*argv, code=code)
        assert list(locked.iterdir()) == []


LONG = "n" * 300  # a file name over the 255 bytes a Linux file system allows


@pytest.mark.parametrize("command", ["init --out", "train --name", "predict --project", "val --json",
                                     "predict a 5000-character path"])
def test_over_long_names(command, world, expect, tmp_path):
    argv, code, says = {
        "init --out": (["init", "--out", tmp_path / f"yolov8n-{LONG}.yaml"], 1, "file name too long"),
        "train --name": (["train", world.data, "--epochs", "1", "--imgsz", "64", "--project", tmp_path / "runs",
                          "--name", LONG], 1, "file name too long"),
        "predict --project": (["predict", world.image, "--model", world.best, "--imgsz", "64", "--project",
                               tmp_path / LONG], 1, "file name too long"),
        "val --json": (["val", world.best, "--json", tmp_path / f"{LONG}.json"], 1, "file name too long"),
        "predict a 5000-character path": (["predict", "a/" * 2500 + "x.jpg", "--model", world.best], 1,
                                          "file name too long"),
    }[command]
    expect(inputs=[world.best]).run(*argv, code=code, says=[says])


ODD = "dätä set 名前\nline two"  # spaces, accents, another script and a newline


def test_an_image_with_an_odd_name_is_predicted(world, expect, tmp_path):
    image = tmp_path / "in" / f"{ODD}.jpg"
    image.parent.mkdir()
    image.write_bytes(world.image.read_bytes())
    expect(inputs=[image]).run("predict", image, "--model", world.best, "--imgsz", "64", "--project",
                               tmp_path / "runs", code=0)
    assert (tmp_path / "runs" / "predict" / image.name).is_file()


def test_an_image_with_an_equals_sign_is_a_path_not_an_extra(world, expect, tmp_path):
    image = tmp_path / "conf=0.9.jpg"
    image.write_bytes(world.image.read_bytes())
    expect(inputs=[image]).run("predict", image, "--model", world.best, "--imgsz", "64", "--project",
                               tmp_path / "runs", code=0)
    assert (tmp_path / "runs" / "predict" / image.name).is_file()


def test_init_writes_into_an_odd_folder(expect, tmp_path):
    out = tmp_path / ODD / "yolov8n-ünï.yaml"
    expect().run("init", "--out", out, code=0)
    assert out.is_file()


def test_a_dataset_in_an_odd_folder_validates(world, expect, tmp_path):
    data = world.copy_dataset(tmp_path / ODD)
    expect(inputs=[data.parent]).run("val", world.best, "--data", data, "--imgsz", "64", "plots=False",
                                     "--project", tmp_path / "runs", code=0)


def test_a_symlinked_output_is_not_followed_into_its_target(expect, tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("the user's own file\n")
    link = tmp_path / "yolov8n-bra-p3.yaml"
    link.symlink_to(target)
    expect(inputs=[target]).run("init", "--out", link, code=2, says=["already exists"])
    expect(inputs=[target]).run("init", "--out", link, "--force", code=0)
    assert not link.is_symlink() and link.read_text().startswith("#")  # the link was replaced, not written through


def test_a_symlink_loop_as_a_source(world, expect, tmp_path):
    loop = tmp_path / "loop.jpg"
    os.symlink(loop, loop)
    expect().run("predict", loop, "--model", world.best, code=1, says=["loop.jpg"])


def test_a_folder_whose_images_link_in_a_circle(world, expect, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.jpg").symlink_to(folder / "b.jpg")
    (folder / "b.jpg").symlink_to(folder / "a.jpg")
    expect().run("predict", folder, "--model", world.best, code=1, says=["no images or videos"])
