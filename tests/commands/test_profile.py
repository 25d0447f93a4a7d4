"""`bra profile` on the command line: tables that show what the JSON holds, flags, one-line errors."""

from __future__ import annotations

import io
import json
from dataclasses import astuple

import pytest
from rich.console import Console

from bracli import templates
from bracli.engine import cost
from bracli.output import Output


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """One full profile (all figures, vanilla comparison) of a rendered YAML at two small sizes."""
    rendered = templates.render("n", ["p3"])
    path = tmp_path_factory.mktemp("model") / templates.model_filename("n", ["p3"])
    path.write_text(templates.to_yaml(rendered, templates.default_header(rendered)))
    return cost.measure_cost(path, imgsz=[64, (64, 96)], runs=2, warmup=0)


def test_tables_show_what_json_holds(profiled):
    from bracli.commands.profile import _ms, _render

    output = Output()
    output.console = Console(width=250, record=True, file=io.StringIO())
    _render(profiled, output)
    out = output.console.export_text()
    data = json.loads(json.dumps(profiled.to_dict()))
    for entry in (data["model"], data["baseline"]):
        assert f"{entry['params']:,}" in out
        for size in entry["sizes"]:
            flops, latency, memory = size["flops"], size["latency"], size["memory"]
            assert f"{flops['total_gflops']:.3f}" in out
            assert f"{size['ultralytics_gflops']:.3f} ({size['ultralytics_vs_counted']:+.1%})" in out
            assert f"{_ms(latency['median_ms'])} ({_ms(latency['p10_ms'])}–{_ms(latency['p90_ms'])})" in out
            assert f"{memory['forward_mib']:.1f}" in out and f"{memory['train_mib']:.1f}" in out
    for size in data["model"]["sizes"]:
        bra = size["flops"]["bra_layers"]["16"]
        assert f"{bra['gflops']:.3f} ({bra['share']:.1%})" in out
        assert "×".join(str(v) for v in bra["input_shape"][1:]) in out
    for ratio in data["ratios"]:
        for key in ("params", "gflops", "latency", "forward_memory", "train_memory"):
            assert f"×{ratio[key]:.3f}" in out
    assert "one multiply-add counted as 2" in out and data["unit"].startswith("GFLOPs")


@pytest.mark.parametrize(("flags", "expected"), [
    ((None, None, None), (True, True, True)),
    ((True, None, None), (True, False, False)),
    ((None, False, None), (True, False, True)),
    ((True, False, True), (True, False, True)),
])
def test_flag_selection(flags, expected):
    from bracli.commands.profile import _selected

    assert _selected(*flags) == expected


@pytest.fixture
def wide_bra(bra, monkeypatch):
    """The shared in-process ``bra`` runner, with consoles wide enough that no table cell wraps."""
    monkeypatch.setattr("bracli.output.stdout_console", Console(width=250, highlight=False))
    monkeypatch.setattr("bracli.output.stderr_console", Console(width=250, stderr=True, highlight=False))
    return bra


def test_command_profiles_the_default_model(tmp_path, wide_bra):
    out_json = tmp_path / "profile.json"
    code, out, err = astuple(wide_bra("profile", "--imgsz", "64", "--runs", "1", "--warmup", "0",
                                      "--json", str(out_json)))
    assert code == 0, err
    data = json.loads(out_json.read_text())
    assert data["model"]["name"] == "yolov8n-bra-p3" and data["baseline"]["name"] == "yolov8n"
    for entry in (data["model"], data["baseline"]):
        size = entry["sizes"][0]
        assert size["flops"] and size["latency"] and size["memory"]
        assert f"{size['flops']['total_gflops']:.3f}" in out
    assert f"✔ wrote JSON {out_json}" in out


def test_command_json_to_stdout_stays_pure(wide_bra, tmp_path):
    plot = tmp_path / "cost.png"
    code, out, err = astuple(wide_bra("profile", "--imgsz", "64,96", "--gflops", "--no-compare", "--json", "-",
                                      "--plot", str(plot)))
    assert code == 0, err
    assert plot.read_bytes().startswith(b"\x89PNG") and f"wrote {plot}" in err
    data = json.loads(out)
    size = data["model"]["sizes"][0]
    assert size["latency"] is None and size["memory"] is None and data["baseline"] is None
    assert f"{size['flops']['total_gflops']:.3f}" in err  # the tables went to stderr


@pytest.mark.parametrize(("args", "code", "message"), [
    (["missing.yaml"], 1, "model file not found"),
    (["1280"], 2, "--imgsz 640,1280"),
    (["--imgsz", "640", "--plot", "one.png"], 2, "at least two --imgsz"),
    (["--imgsz", "10"], 2, "smaller than the model stride"),
    (["--no-gflops", "--no-latency", "--no-memory"], 2, "nothing to measure"),
    (["--imgsz", "32", "--memory", "--no-compare"], 1, "use a larger --imgsz or --batch"),
    (["--gflops", "--runs", "3", "--warmup", "9"], 2, "--warmup, --runs only time the latency"),
    (["--no-latency", "--runs", "10"], 2, "--runs only time the latency"),
    (["--imgsz", "64,96", "--plot", "one.txt"], 2, "name the file *.png"),
    (["yolov8n-bra-p3.yaml", "--family", "yolov8", "--preset", "bracli"], 2, "drop --family, --preset or MODEL"),
    (["--bra-after", "none", "--region-size", "auto"], 2, "without a BRA layer; drop --region-size"),
    (["folder.yaml"], 1, "folder.yaml is a folder, not a model file"),
    (["--region-size", "5000"], 2, "--region-size 5000 is too large: at most 1024"),
    (["--bra-after", "none", "--compare"], 2, "profiles the plain model itself; there is nothing to --compare"),
])
def test_command_errors_are_one_line(wide_bra, monkeypatch, tmp_path, args, code, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder.yaml").mkdir()
    got, _, err = astuple(wide_bra("profile", *args))
    assert got == code
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "one.png").exists() and not (tmp_path / "one.txt").exists()


def test_command_reports_a_model_that_cannot_be_built(tmp_path, wide_bra):
    broken = templates.render("n", ["p3"])
    broken["head"][6][3][0] = 60  # BRA dim 60 is not divisible by its 8 heads
    path = tmp_path / "yolov8n-broken.yaml"
    path.write_text(templates.to_yaml(broken, "broken on purpose"))
    code, _, err = astuple(wide_bra("profile", str(path), "--no-latency"))
    assert code == 1
    assert "cannot build the model" in err and "Traceback" not in err


def test_command_refuses_to_overwrite(tmp_path, wide_bra):
    existing = tmp_path / "profile.json"
    existing.write_text("keep me")
    code, _, err = astuple(wide_bra("profile", "--imgsz", "64", "--json", str(existing)))
    assert code == 2 and "--force" in err
    assert existing.read_text() == "keep me"


@pytest.mark.parametrize("args", [["--bra-after", "none"], ["yolov8n.yaml"]])
def test_the_plain_model_is_not_compared_with_itself(tmp_path, monkeypatch, wide_bra, args):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "yolov8n.yaml").write_text(templates.to_yaml(templates.render("n", []), "the plain model"))
    code, out, err = astuple(wide_bra("profile", *args, "--imgsz", "64", "--device", "cpu", "--no-latency",
                                      "--no-memory", "--json", "-"))
    assert code == 0, err
    assert json.loads(out)["baseline"] is None
    assert "÷" not in err
    if args[0] != "--bra-after":  # a model file may be anything: it is told why no ratio follows
        assert "comparison skipped: the model is the plain yolov8n itself" in err
