"""Crafted checkpoints: a pickle that runs code when loaded, delivered every way a command takes one — and files
that are not checkpoints at all. Restricted loading refuses each in one line, naming what it refused."""

from __future__ import annotations

import contextlib
import os
import zipfile

import pytest
import torch

REFUSED = ("restricted loading does not allow", "--trust-checkpoint")
# How a pickle can ask for code: a builtin, an OS call, a torch or numpy function (to a loader that allows torch's
# and numpy's data types), a chain built from __import__/getattr, the legacy (non-zip) torch format, a bare pickle,
# and one extra value inside an otherwise real checkpoint.
KINDS = ("exec", "os.system", "torch.save", "numpy.save", "import-chain", "legacy-format", "raw-pickle",
         "inside-a-real-checkpoint")


@pytest.mark.parametrize("kind", KINDS)
def test_val_refuses_every_kind_of_payload(kind, world, kit, expect, marker, tmp_path):
    evil = kit.write_pickle(tmp_path / "in" / "evil.pt", kind, marker, world)
    case = expect(inputs=[evil, world.dataset], markers=[marker])
    case.run("val", evil, "--data", world.data, "--project", tmp_path / "runs", code=1, says=REFUSED)


DELIVERIES = {
    "predict --model": lambda w, evil, t: ["predict", w.image, "--model", evil, "--project", t / "runs"],
    "export": lambda w, evil, t: ["export", evil, "--imgsz", "64"],
    "profile": lambda w, evil, t: ["profile", evil, "--imgsz", "64"],
    "train --model": lambda w, evil, t: ["train", w.data, "--model", evil, "--epochs", "1", "--project", t / "runs"],
    "train --weights": lambda w, evil, t: ["train", w.data, "--weights", evil, "--epochs", "1",
                                           "--project", t / "runs"],
    "train --resume FILE": lambda w, evil, t: ["train", "--resume", evil, w.data],
}


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_every_command_refuses_a_crafted_pickle(delivery, world, kit, expect, marker, tmp_path):
    evil = kit.write_pickle(tmp_path / "in" / "evil.pt", "exec", marker)
    case = expect(inputs=[evil, world.dataset], markers=[marker])
    case.run(*DELIVERIES[delivery](world, evil, tmp_path), code=1, says=REFUSED)
    assert not evil.with_suffix(".onnx").exists()


def test_predict_without_model_refuses_the_newest_best_it_finds(world, kit, expect, marker, tmp_path):
    """No --model: predict takes the newest runs/detect/**/weights/best.pt — someone else's file, maybe."""
    evil = kit.write_pickle(tmp_path / "runs" / "detect" / "planted" / "weights" / "best.pt", "os.system", marker)
    case = expect(inputs=[evil, world.image], markers=[marker])
    case.run("predict", world.image, code=1, says=REFUSED)


def test_predict_with_project_but_no_model_refuses_what_it_finds(world, kit, expect, marker, tmp_path):
    evil = kit.write_pickle(tmp_path / "elsewhere" / "x" / "weights" / "best.pt", "import-chain", marker)
    case = expect(inputs=[evil], markers=[marker])
    case.run("predict", world.image, "--project", tmp_path / "elsewhere", code=1, says=REFUSED)


def test_bare_resume_refuses_the_newest_last_it_finds(world, kit, expect, marker, tmp_path):
    evil = kit.write_pickle(tmp_path / "runs" / "detect" / "planted" / "weights" / "last.pt",
                            "inside-a-real-checkpoint", marker, world)
    case = expect(inputs=[evil, world.dataset], markers=[marker])
    case.run("train", "--resume", code=1, says=REFUSED)


def test_resume_of_a_run_folder_refuses_its_last(world, kit, expect, marker, tmp_path):
    run = tmp_path / "run"
    kit.write_pickle(run / "weights" / "last.pt", "legacy-format", marker)
    case = expect(inputs=[run, world.dataset], markers=[marker])
    case.run("train", "--resume", run, world.data, code=1, says=REFUSED)


def _with_stored_activation(world, tmp_path, which: str, marker) -> os.PathLike:
    """A real checkpoint, loadable restricted, whose stored model YAML carries an activation payload: resume and
    fine-tuning rebuild the model from it (ultralytics evals it unless loading is restricted)."""
    checkpoint = world.checkpoint(which)
    model = checkpoint["model"] or checkpoint["ema"]
    model.yaml["activation"] = f"__import__('os').system('touch {marker}')"
    path = tmp_path / "run" / "weights" / f"{which}.pt"
    path.parent.mkdir(parents=True)
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("how", ["train --model", "train --resume", "val"])
def test_a_stored_activation_payload_is_refused_on_reading(how, world, expect, marker, tmp_path):
    path = _with_stored_activation(world, tmp_path, "last" if how == "train --resume" else "best", marker)
    argv = {"train --model": ["train", world.data, "--model", path, "--epochs", "1", "--project", tmp_path / "r"],
            "train --resume": ["train", "--resume", path, world.data],
            "val": ["val", path, "--data", world.data, "--project", tmp_path / "r"]}[how]
    case = expect(inputs=[path, world.dataset], markers=[marker])
    case.run(*argv, code=1, says=["stored model YAML", "never evaluates"])


def _zero(path):
    path.write_bytes(b"")


def _random(path):
    path.write_bytes(os.urandom(4096))


def _truncated(path, world):
    data = world.best.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _foreign_zip(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not a checkpoint")


def _dict_without_model(path):
    torch.save({"model": {"weights": [1, 2, 3]}, "train_args": {}}, path)


NOT_CHECKPOINTS = {
    "zero bytes": (_zero, "not a readable PyTorch checkpoint"),
    "random bytes": (_random, "not a readable PyTorch checkpoint"),
    "truncated best.pt": (_truncated, "not a readable PyTorch checkpoint"),
    "a zip of something else": (_foreign_zip, "not a readable"),
    "a dict, no model": (_dict_without_model, "not an ultralytics"),
}


@pytest.mark.parametrize("name", NOT_CHECKPOINTS)
def test_files_that_are_not_checkpoints(name, world, expect, tmp_path):
    make, says = NOT_CHECKPOINTS[name]
    path = tmp_path / "in" / "weights.pt"
    path.parent.mkdir()
    make(path, world) if make is _truncated else make(path)
    case = expect(inputs=[path])
    case.run("val", path, "--data", world.data, "--project", tmp_path / "runs", code=1, says=[says])


def test_a_sparse_gigabyte_of_zeros_is_refused_without_reading_it(world, expect, tmp_path):
    path = tmp_path / "in" / "huge.pt"
    path.parent.mkdir()
    with open(path, "wb") as f:
        f.truncate(1 << 30)
    stat = path.stat()
    case = expect()
    case.run("export", path, "--imgsz", "64", code=1, says=["not a readable PyTorch checkpoint"])
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)


@pytest.mark.parametrize("kind", ["folder", "fifo", "symlink loop", "dangling symlink"])
def test_paths_that_are_not_files(kind, world, expect, tmp_path):
    path = tmp_path / "in" / "weights.pt"
    path.parent.mkdir()
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink loop":
        os.symlink(path, path)
    else:
        os.symlink(tmp_path / "nowhere.pt", path)
    case = expect(inputs=[path.parent])
    case.run("predict", world.image, "--model", path, code=1, says=[str(path)])


def test_a_pth_file_is_a_usage_error(expect, tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"whatever")
    expect(inputs=[path]).run("val", path, code=2, says=["rename it"])


@pytest.mark.parametrize("kind", KINDS)
def test_control_each_payload_runs_when_unpickled_in_full(kind, world, kit, marker, tmp_path):
    """The markers can appear: full unpickling (what restricted loading prevents) runs every payload above."""
    evil = kit.write_pickle(tmp_path / "evil.pt", kind, marker, world)
    with contextlib.suppress(Exception):  # the raw pickle runs, then is not a torch file
        torch.load(evil, weights_only=False)
    assert marker.exists() or marker.with_suffix(".npy").exists()
