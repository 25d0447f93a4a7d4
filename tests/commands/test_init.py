"""`bra init`: writes the rendered YAML with a header, summarises it, never overwrites or half-writes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bracli import templates
from bracli.cli import main
from bracli.templates import SCALES


def run_init(*args: str) -> int:
    """Run `bra init ARGS` in this process; returns the exit code."""
    with pytest.raises(SystemExit) as exit_info:
        main(["init", *args])
    return exit_info.value.code or 0


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_writes_the_rendered_yaml_and_summarises_it(workdir, capsys):
    assert run_init("--scale", "n", "--bra-after", "p3", "--nc", "5") == 0
    out = capsys.readouterr().out
    path = workdir / "yolov8n-bra-p3.yaml"
    assert sorted(workdir.iterdir()) == [path]
    text = path.read_text()
    assert text.startswith("# ")
    assert "bra init --scale n --bra-after p3 --nc 5" in text
    assert yaml.safe_load(text) == templates.render("n", ["p3"], nc=5)

    from bracli.engine import models
    from bracli.measure.flops import count_flops

    built = models.build(path)  # from the file, as ultralytics reads it: scale from the name
    params = sum(p.numel() for p in built.parameters())
    flops = count_flops(built, 640)
    assert f"{params:,} parameters" in out
    assert f"{flops.total_gflops:.2f} GFLOPs at 640" in out
    assert type(built.model[16]).__name__ == "BiLevelRoutingAttention"
    assert re.search(rf"16\s+p3\s+64×80×80\s+2\s+10×10 of 8×8\s+[\d,]+\s+{flops.bra_layers[16]:.3f}", out)


def test_the_blog_preset_writes_the_blog_row_and_marks_padded_maps(workdir, capsys):
    assert run_init("--preset", "blog", "--out", "yolov8n-blog.yaml") == 0
    model = yaml.safe_load((workdir / "yolov8n-blog.yaml").read_text())
    row, = [row for row in model["backbone"] + model["head"] if row[2] == "BiLevelRoutingAttention"]
    assert row == [-1, 1, "BiLevelRoutingAttention", [64, 7, 8, 4, 64, 3]]
    out = capsys.readouterr().out
    assert re.search(r"16\s+p3\s+64×80×80\s+8\s+7×7 of 12×12\*", out), out
    assert "* the map is zero-padded to whole regions" in out
    assert "--preset blog" in (workdir / "yolov8n-blog.yaml").read_text()


def test_warns_when_n_win_exceeds_the_feature_map(workdir, capsys):
    assert run_init("--bra-after", "p5", "--n-win", "32") == 0
    assert "n_win=32 exceeds the 20×20 map at p5" in capsys.readouterr().err
    assert (workdir / "yolov8n-bra-p5.yaml").is_file()


def test_placements_combine_from_flags_and_comma_lists(workdir, capsys):
    assert run_init("--scale", "s", "-a", "p4", "-a", "sppf,p3", "--out", "models/yolov8s-mine.yaml") == 0
    text = (workdir / "models" / "yolov8s-mine.yaml").read_text()
    assert yaml.safe_load(text) == templates.render("s", ["sppf", "p3", "p4"])
    out = capsys.readouterr().out
    for placement in ("sppf", "p3", "p4"):
        assert re.search(rf"\s{placement}\s", out)


def test_refuses_to_overwrite_without_force(workdir, capsys):
    path = workdir / "yolov8n-bra-p3.yaml"
    path.write_text("mine\n")
    assert run_init("--scale", "n") == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err
    assert path.read_text() == "mine\n"
    assert sorted(workdir.iterdir()) == [path]

    assert run_init("--scale", "n", "--force") == 0
    assert yaml.safe_load(path.read_text()) == templates.render("n", ["p3"])


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--bra-after", "p6"], "'p6'"),
        (["--scale", "q"], "'q'"),
        (["-a", "p3", "-a", "p3"], "'p3'"),
        (["-a", "p4,p4"], "'p4'"),
        (["-a", ","], "--bra-after"),
        (["--heads", "7"], "heads=7 does not divide the dim=64 channels at p3 for scale n"),
        (["--topk", "101"], "topk=101"),
        (["--n-win", "0"], "n_win=0"),
        (["--side-dwconv", "4"], "side_dwconv=4"),
        (["--qk-dim", "12", "--heads", "8"], "qk_dim=12"),
        (["--nc", "0"], "nc=0"),
        (["--out", "model.yaml"], "model.yaml"),
        (["--out", "yolov8s-mine.yaml"], "yolov8s-mine.yaml"),
        (["--out", "yolov8n-mine.txt"], "yolov8n-mine.txt"),
        (["--family", "yolov9"], "'yolov9'"),
        (["--task", "pose"], "'pose'"),
        (["-a", "psa"], "YOLOv8 has no placement 'psa'; it has backbone-p3, backbone-p4, backbone-p5, sppf, p3, p4"),
        (["--family", "yolo11", "-a", "p6"], "'p6'"),
        (["-a", "none,p3"], "'none'"),
        (["--family", "yolo11", "--out", "model.yaml"], "e.g. yolo11n-custom.yaml"),
        (["--list", "--family", "v8"], "'v8'"),
        (["--list", "--family", "yolo11", "--json", "-", "--out", "yolov8n-zz.yaml"], "writes no model; drop --out"),
        (["--list", "--scale", "s", "--topk", "4"], "drop --scale, --topk"),
        (["--list", "--force"], "drop --force"),
        (["--bra-after", "none", "--topk", "8", "--preset", "blog"], "without a BRA layer; drop --preset, --topk"),
        (["-a", "none", "--region-size", "none"], "without a BRA layer; drop --region-size"),
        (["--region-size", "0"], "give tokens per region side (a positive number), auto"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(workdir, capsys, args, named):
    assert run_init(*args) == 2
    captured = capsys.readouterr()
    assert named in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert "Traceback" not in captured.err + captured.out
    assert list(workdir.iterdir()) == []


def test_unwritable_output_exits_2_and_writes_nothing(workdir, capsys):
    blocker = workdir / "a-file"
    blocker.write_text("")
    assert run_init("--out", str(blocker / "yolov8n-bra-p3.yaml")) == 2
    assert "cannot write" in capsys.readouterr().err
    assert sorted(workdir.iterdir()) == [blocker]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_folder_exits_2(workdir, capsys):
    folder = workdir / "locked"
    folder.mkdir(mode=0o500)
    try:
        assert run_init("--out", str(folder / "yolov8n-bra-p3.yaml")) == 2
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize(("family", "task"), [("yolov8", "detect"), ("yolo11", "detect"), ("yolo26", "segment")])
def test_list_shows_the_family_placements_with_layer_stride_and_channels(workdir, capsys, family, task):
    assert run_init("--list", "--family", family, "--task", task) == 0
    out = capsys.readouterr().out
    for info in templates.describe_placements(family, task):
        channels = "/".join(str(info.channels[s]) for s in SCALES)
        assert re.search(rf"^\s*{info.name}\s+{info.follows} {info.module}\s+{info.stride}\s+{channels}\s", out,
                         re.MULTILINE), info.name
    assert ("psa" in out) == (family != "yolov8")
    for scale in SCALES:
        assert re.search(rf"^\s*{scale}\s", out, re.MULTILINE)
    assert list(workdir.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_an_unwritable_json_target_leaves_no_yaml(workdir, capsys):
    assert run_init("--json", "/proc/x.json") == 2
    assert "cannot write /proc/x.json" in capsys.readouterr().err
    assert list(workdir.iterdir()) == []


def test_list_as_json_holds_what_the_tables_show(workdir, capsys):
    import json

    assert run_init("--list", "--family", "yolo11", "--json", "-") == 0
    captured = capsys.readouterr()
    listing = json.loads(captured.out)
    assert listing["family"] == "yolo11" and listing["template"] == templates.template_file("yolo11", "detect")
    assert [p["name"] for p in listing["placements"]] == list(templates.placements_for("yolo11", "detect"))
    assert set(listing["scales"]) == set(SCALES)
    assert "placements (--bra-after" in captured.err  # the tables moved to stderr
    assert list(workdir.iterdir()) == []


def test_list_of_yolov8_keeps_its_numbers(workdir, capsys):
    assert run_init("--list") == 0
    out = capsys.readouterr().out
    assert re.search(r"^\s*p3\s+15 C2f\s+8\s+64/128/192/256/320\s", out, re.MULTILINE)
    assert re.search(r"^\s*sppf\s+9 SPPF\s+32\s+256/512/576/512/640\s", out, re.MULTILINE)


@pytest.mark.parametrize(
    ("args", "name", "head"),
    [
        (["--family", "yolo11", "-a", "p3,psa"], "yolo11n-bra-psa-p3.yaml", "Detect"),
        (["--family", "yolo26", "--task", "segment", "--scale", "s", "-a", "p4", "-a", "p3"],
         "yolo26s-seg-bra-p3-p4.yaml", "Segment26"),
        (["--task", "segment", "-a", "p3"], "yolov8n-seg-bra-p3.yaml", "Segment"),
    ],
    ids=["yolo11", "yolo26-seg", "yolov8-seg"],
)
def test_families_and_tasks_render_under_ultralytics_names(workdir, capsys, args, name, head):
    assert run_init(*args) == 0
    path = workdir / name
    assert sorted(workdir.iterdir()) == [path]
    model = yaml.safe_load(path.read_text())
    meta = model[templates.METADATA_KEY]
    family = args[args.index("--family") + 1] if "--family" in args else "yolov8"
    task = args[args.index("--task") + 1] if "--task" in args else "detect"
    assert model == templates.render(model["scale"], meta["placements"], family=family, task=task)
    assert model["head"][-1][2] == head
    out = capsys.readouterr().out
    assert f"{templates.title(model)} + BRA" in out
    for layer in meta["layers"]:
        assert re.search(rf"^\s*{layer['index']}\s+{layer['placement']}\s", out, re.MULTILINE)


@pytest.mark.parametrize(("family", "task", "name"), [("yolov8", "detect", "yolov8n.yaml"),
                                                      ("yolo11", "detect", "yolo11n.yaml"),
                                                      ("yolov8", "segment", "yolov8n-seg.yaml")])
def test_bra_after_none_writes_the_vanilla_baseline(workdir, capsys, family, task, name):
    assert run_init("--family", family, "--task", task, "--bra-after", "none") == 0
    path = workdir / name
    text = path.read_text()
    assert yaml.safe_load(text) == templates.render("n", [], family=family, task=task)
    assert "--bra-after none" in text and "BiLevelRoutingAttention" not in text
    out = capsys.readouterr().out
    assert "no BRA layer (the baseline)" in out and "BRA layers" not in out

    from bracli.engine import models

    params = sum(p.numel() for p in models.build(path).parameters())
    assert f"{params:,} parameters" in out


def test_bad_bra_options_fail_before_torch_is_imported(tmp_path):
    code = ("import sys\nfrom bracli.cli import main\ntry:\n    main(['init', '--heads', '7'])\n"
            "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules, 'ultralytics' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.stdout.split() == ["2", "False", "False"]
    assert list(tmp_path.iterdir()) == []
