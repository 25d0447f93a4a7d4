"""Hostile datasets: a data.yaml that asks ultralytics to run code (fresh, on resume, hidden behind YAML merge
keys, anchors and quoting), YAML tags, class lists that would exhaust memory, a label cache that is a pickle,
and a JPEG ultralytics would rewrite in place. Each is refused in one line; nothing runs, nothing changes."""

from __future__ import annotations

import shutil

import pytest
import torch

DOWNLOAD_REFUSED = ("'download:' entry", "--allow-download")


def _split_lines(data) -> str:
    root = data.parent
    return f"train: {root / 'images' / 'train'}\nval: {root / 'images' / 'val'}\n"


def _download_yamls(data, marker) -> dict[str, str]:
    code = f"open('{marker}', 'w').write('ran')"
    splits = _split_lines(data)
    names = "names: [circle, square, triangle]\n"
    missing_val = splits.replace("images/val", "images/moved-away")  # the state in which ultralytics runs it
    return {
        "python, images present": f"{splits}{names}download: \"{code}\"\n",
        "python, images missing": f"{missing_val}{names}download: \"{code}\"\n",
        "bash line": f"{missing_val}{names}download: bash -c 'touch {marker}'\n",
        "merge key": f"{missing_val}{names}base: &base {{download: \"{code}\"}}\n<<: *base\n",
        "quoted key": f"{missing_val}{names}\"download\": \"{code}\"\n",
        "anchor and alias": f"{missing_val}{names}x-script: &script \"{code}\"\ndownload: *script\n",
        "explicit key syntax": f"{missing_val}{names}? download\n: \"{code}\"\n",
        "block scalar": f"{missing_val}{names}download: |\n  import os\n  {code}\n",
    }


@pytest.mark.parametrize("variant", ["python, images present", "python, images missing", "bash line", "merge key",
                                     "quoted key", "anchor and alias", "explicit key syntax", "block scalar"])
def test_train_refuses_a_download_entry(variant, world, expect, marker, tmp_path):
    data = tmp_path / "evil.yaml"
    data.write_text(_download_yamls(world.data, marker)[variant])
    case = expect(inputs=[data, world.dataset], markers=[marker])
    case.run("train", data, "--epochs", "1", "--imgsz", "64", "--project", tmp_path / "runs", code=1,
             says=DOWNLOAD_REFUSED)


def test_val_refuses_a_download_entry(world, expect, marker, tmp_path):
    data = tmp_path / "evil.yaml"
    data.write_text(_download_yamls(world.data, marker)["python, images missing"])
    case = expect(inputs=[data, world.dataset], markers=[marker])
    case.run("val", world.best, "--data", data, "--project", tmp_path / "runs", code=1, says=DOWNLOAD_REFUSED)


def _checkpoint_trained_on(world, data, path, which="best"):
    """The run's checkpoint as if it had been trained on ``data`` (its train_args name it)."""
    checkpoint = world.checkpoint(which)
    checkpoint["train_args"]["data"] = str(data)
    checkpoint["train_args"]["save_dir"] = str(path.parent.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def _edit_after_first_epoch(data, marker) -> None:
    """What an attacker with write access to the dataset does between epochs: move the val images away (so
    ultralytics looks for a download) and add one."""
    shutil.move(data.parent / "images" / "val", data.parent / "images" / "moved-away")
    data.write_text(data.read_text() + f"download: \"open('{marker}', 'w').write('ran')\"\n")


def test_val_refuses_the_stored_data_yaml_once_edited(world, expect, marker, tmp_path):
    data = world.copy_dataset(tmp_path / "ds")
    weights = _checkpoint_trained_on(world, data, tmp_path / "run" / "weights" / "best.pt")
    _edit_after_first_epoch(data, marker)
    case = expect(inputs=[data.parent, weights], markers=[marker])
    case.run("val", weights, "--project", tmp_path / "runs", code=1, says=DOWNLOAD_REFUSED)


@pytest.mark.parametrize("how", ["run folder", "last.pt", "bare --resume"])
def test_resume_refuses_a_data_yaml_edited_after_the_first_epoch(how, world, expect, marker, tmp_path):
    data = world.copy_dataset(tmp_path / "ds")
    run = tmp_path / "runs" / "detect" / "r"
    last = _checkpoint_trained_on(world, data, run / "weights" / "last.pt", "last")
    _edit_after_first_epoch(data, marker)
    argv = {"run folder": [run], "last.pt": [last], "bare --resume": []}[how]
    case = expect(inputs=[data.parent, run], markers=[marker])
    case.run("train", "--resume", *argv, code=1, says=DOWNLOAD_REFUSED)


def test_resume_refuses_a_download_in_the_data_yaml_given(world, expect, marker, tmp_path):
    data = tmp_path / "evil.yaml"
    data.write_text(_download_yamls(world.data, marker)["merge key"])
    last = _checkpoint_trained_on(world, world.data, tmp_path / "run" / "weights" / "last.pt", "last")
    case = expect(inputs=[data, last, world.dataset], markers=[marker])
    case.run("train", "--resume", last, data, code=1, says=DOWNLOAD_REFUSED)


def test_control_allow_download_is_the_switch(world, bra, marker, tmp_path):
    """The refusal is what stops it: with --allow-download ultralytics does execute the entry (our payload only
    writes the marker; the dataset is still incomplete afterwards, so the command then fails)."""
    data = tmp_path / "evil.yaml"
    data.write_text(_download_yamls(world.data, marker)["python, images missing"])
    outcome = bra("train", data, "--allow-download", "--epochs", "1", "--imgsz", "64", "--project", tmp_path / "r")
    assert marker.exists(), outcome.err
    assert outcome.code == 1 and "images/moved-away" in outcome.err
    assert "internal error" not in outcome.err and "\x1b" not in outcome.err, outcome.err


PYTHON_TAGS = {
    "object/apply": "names: !!python/object/apply:os.system [\"touch {m}\"]\n",
    "object/new": "names: !!python/object/new:subprocess.Popen [[\"touch\", \"{m}\"]]\n",
    "name": "names: !!python/name:os.system\n",
    "module": "names: !!python/module:os\n",
}


@pytest.mark.parametrize("tag", PYTHON_TAGS)
def test_python_tags_in_a_data_yaml_are_refused(tag, world, expect, marker, tmp_path):
    data = tmp_path / "tagged.yaml"
    data.write_text(_split_lines(world.data) + PYTHON_TAGS[tag].format(m=marker))
    case = expect(inputs=[data], markers=[marker])
    case.run("val", world.best, "--data", data, "--project", tmp_path / "runs", code=1, says=["invalid YAML"])


def _laughs(depth: int) -> str:
    """A YAML alias bomb: ``depth`` levels of ten references each (10**depth leaves, a few hundred bytes)."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, depth):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 10)}]")
    return "\n".join(lines) + f"\nnames: *l{depth - 1}\n"


# What follows the train/val lines, and what the one line must say. The sizes are the smallest that cross each
# limit, so that a regression fails here instead of exhausting the machine's memory: a real alias bomb is 10^9
# names in a few hundred bytes (_laughs(9)), a hostile nc 10^14 (ultralytics makes a name for each).
BAD_CLASSES = {
    "alias bomb": (_laughs(5), "each name must be a plain word"),
    "nc above the limit": ("nc: 100001\n", "nc: 100001 classes is implausible"),
    "nc of 5000 digits": ("nc: " + "9" * 5000 + "\n", "invalid YAML"),
    "nc not a number": ("nc: 1e400\n", "is not a positive integer"),
    "nc negative": ("nc: -3\n", "is not a positive integer"),
    "names a number": ("names: 7\n", "names: must be a list or a {id: name} mapping"),
    "names nested": ("names: {0: [a, b], 1: {x: y}}\n", "each name must be a plain word"),
    "names with holes": ("names: {0: a, 5: b}\n", "class ids 0, 1, 2, … without gaps"),
    "names and nc disagree": ("nc: 2\nnames: [a, b, c]\n", "nc: 2 but names: lists 3 classes"),
    "test split an alias bomb": (_laughs(5).replace("names:", "test:") + "names: [a]\n",
                                 "'test:' must be a path or a list of paths"),
}


@pytest.mark.parametrize("name", BAD_CLASSES)
def test_class_lists_and_numbers_that_would_exhaust_memory_or_crash(name, world, expect, tmp_path):
    text, says = BAD_CLASSES[name]
    data = tmp_path / "classes.yaml"
    data.write_text(_split_lines(world.data) + text)
    case = expect(inputs=[data, world.dataset])
    case.run("val", world.best, "--data", data, "--project", tmp_path / "runs", code=1, says=[says])


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just text\n", "\xff\xfe binary"])
def test_data_yaml_that_is_not_a_mapping(text, world, expect, tmp_path):
    data = tmp_path / "odd.yaml"
    data.write_bytes(text.encode("latin-1"))
    expect(inputs=[data]).run("train", data, "--epochs", "1", "--project", tmp_path / "r", code=1,
                              says=[str(data)])


def test_a_nul_byte_in_a_split_path(world, expect, tmp_path):
    data = tmp_path / "nul.yaml"
    data.write_text(f"train: {world.dataset}/images/train\nval: \"{world.dataset}/images/val\\0\"\nnames: [a]\n")
    expect(inputs=[data]).run("val", world.best, "--data", data, "--project", tmp_path / "r", code=1,
                              says=["NUL byte"])


@pytest.mark.parametrize("split", ["val", "train"])
def test_a_label_cache_that_is_a_pickle_payload_is_refused(split, world, kit, expect, marker, tmp_path):
    """ultralytics unpickles labels/<split>.cache in full (numpy allow_pickle) whatever the checkpoint setting."""
    data = world.copy_dataset(tmp_path / "ds")
    kit.write_label_cache_payload(data.parent / "labels" / f"{split}.cache", marker)
    case = expect(inputs=[data.parent], markers=[marker])
    argv = (["val", world.best, "--data", data, "--project", tmp_path / "runs"] if split == "val" else
            ["train", data, "--epochs", "1", "--imgsz", "64", "--project", tmp_path / "runs"])
    case.run(*argv, code=1, says=["is not a label cache", "builtins.exec"])


def test_resume_refuses_a_label_cache_planted_after_the_first_epoch(world, kit, expect, marker, tmp_path):
    data = world.copy_dataset(tmp_path / "ds")
    last = _checkpoint_trained_on(world, data, tmp_path / "run" / "weights" / "last.pt", "last")
    kit.write_label_cache_payload(data.parent / "labels" / "train.cache", marker)
    case = expect(inputs=[data.parent, last], markers=[marker])
    case.run("train", "--resume", last, code=1, says=["is not a label cache"])


def test_control_a_label_cache_payload_runs_when_ultralytics_loads_it(world, kit, marker, tmp_path):
    from ultralytics.data.utils import load_dataset_cache_file

    cache = tmp_path / "train.cache"
    kit.write_label_cache_payload(cache, marker)
    load_dataset_cache_file(cache)
    assert marker.exists()


def test_the_label_caches_ultralytics_wrote_pass(world, expect, tmp_path):
    """No false alarm: the world's training left real caches next to its labels; validation reads them."""
    assert sorted(p.name for p in (world.dataset / "labels").glob("*.cache")) == ["train.cache", "val.cache"]
    case = expect(inputs=[world.dataset])
    case.run("val", world.best, "--data", world.data, "--imgsz", "64", "plots=False", "--project", tmp_path / "runs",
             code=0)


@pytest.mark.parametrize("defect", ["trailing bytes", "no end marker"])
def test_a_jpeg_ultralytics_would_rewrite_in_place_is_refused(defect, world, expect, tmp_path):
    data = world.copy_dataset(tmp_path / "ds")
    image = sorted((data.parent / "images" / "val").glob("*.jpg"))[1]
    original = image.read_bytes()
    image.write_bytes(original + b"\0" * 16 if defect == "trailing bytes" else original[:-2])
    case = expect(inputs=[data.parent])
    case.run("val", world.best, "--data", data, "--imgsz", "64", "--project", tmp_path / "runs", code=1,
             says=[image.name, "re-encode in place"])


def test_training_on_hostile_labels_changes_no_input(world, kit):
    """The world was trained on a dataset with NaN, infinite, negative, 20-digit and binary labels and a line of
    25,000 numbers: ultralytics dropped them; every file (labels, images, data.yaml) is byte-identical."""
    assert world.best.is_file() and world.last.is_file()
    assert world.hashes_after_training == world.hashes_before_training
    labels = world.dataset / "labels" / "train"
    assert {name for name in kit.HOSTILE_LABELS} <= {p.name for p in labels.iterdir()}


def test_a_download_repeated_under_the_same_key_is_refused(world, expect, marker, tmp_path):
    """Duplicate keys: YAML keeps the last one, for bracli and ultralytics alike (both read with PyYAML)."""
    data = tmp_path / "dup.yaml"
    data.write_text(_split_lines(world.data) + f"names: [a, b, c]\ndownload: ''\ndownload: \"open('{marker}', 'w')\"\n")
    expect(inputs=[data], markers=[marker]).run("val", world.best, "--data", data, "--project", tmp_path / "r",
                                                code=1, says=DOWNLOAD_REFUSED)
