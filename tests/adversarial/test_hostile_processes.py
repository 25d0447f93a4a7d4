"""What needs a process of its own: restricted loading and telemetry are decided when ultralytics and onnxruntime
are first imported, and a display is a property of the environment.

Three fresh processes start together (from an environment without any of bracli's settings, under an empty
temporary HOME): one restricted (``BRA_TRUST_CHECKPOINTS=0``, ``DISPLAY=:99``) that meets every payload and runs
an ONNX export; one that trusts checkpoints with ``--trust-checkpoint``; and a control that imports onnxruntime
without bracli. The opt-in is shown to be the switch: the same crafted pickle
runs under it and only under it, while model YAMLs stay parsed even then.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib
import pytest
import torch
import yaml

from bracli import templates

pytestmark = pytest.mark.slow

RUNNER = """
import contextlib, io, json, sys, time
start = time.perf_counter()
from bracli.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err, began = io.StringIO(), time.perf_counter()
    with contextlib.redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    results.append({"argv": argv, "code": code, "err": err.getvalue(), "seconds": time.perf_counter() - began})
print("RESULTS " + json.dumps({"results": results, "seconds": time.perf_counter() - start}))
"""
TELEMETRY = ".onnxruntime"  # onnxruntime's device-id folder (~/.cache/Microsoft/DeveloperTools/.onnxruntime)
# onnxruntime stays quiet when one of these says it runs on a build server; a user's machine sets none of them
CI_MARKERS = {"CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "TRAVIS", "JENKINS_URL",
              "CODEBUILD_BUILD_ID", "BUILDKITE", "TEAMCITY_VERSION", "APPVEYOR", "BITBUCKET_BUILD_NUMBER"}


def _environment(home: Path, **extra: str) -> dict[str, str]:
    """The user's environment without anything bracli sets, under an empty HOME."""
    drop = {"YOLO_OFFLINE", "YOLO_AUTOINSTALL", "YOLO_CONFIG_DIR", "ORT_DISABLE_TELEMETRY", "ORT_TELEMETRY_DISABLED",
            "ULTRALYTICS_SAFE_LOAD", "BRA_TRUST_CHECKPOINTS", "DISPLAY", "WAYLAND_DISPLAY", "XDG_CONFIG_HOME",
            *CI_MARKERS}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    home.mkdir(parents=True)
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), BRA_CACHE_DIR=str(home / "bracli-cache"),
               MPLBACKEND="Agg", MPLCONFIGDIR=matplotlib.get_cachedir(), **extra)  # its font list is slow to build
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    return env


def _start(commands: list[list], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    argv = [[str(a) for a in command] for command in commands]
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(RUNNER), json.dumps(argv)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _results(process: subprocess.Popen) -> list[dict]:
    out, err = process.communicate(timeout=600)
    line = next((x for x in out.splitlines() if x.startswith("RESULTS ")), None)
    assert line, out[-3000:] + err[-3000:]
    return json.loads(line[len("RESULTS "):])["results"]


def _model_yaml(path: Path, edit) -> Path:
    model = templates.render("n", ["p3"], nc=3)
    edit(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(model, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def processes(world, kit, tmp_path_factory) -> dict:
    """Start the three processes together; return their per-command results and where their markers would be."""
    root = tmp_path_factory.mktemp("processes")
    markers = root / "markers"
    markers.mkdir(parents=True)
    marker = {name: markers / name for name in ("pickle", "found-best", "found-last", "row", "activation",
                                                  "resume-download", "label-cache", "trusted-flag", "trusted-row",
                                                  "trusted-activation")}
    work = root / "work"
    kit.write_pickle(work / "runs" / "detect" / "x" / "weights" / "best.pt", "os.system", marker["found-best"])
    kit.write_pickle(work / "runs" / "detect" / "x" / "weights" / "last.pt", "exec", marker["found-last"])
    evil = kit.write_pickle(root / "in" / "evil.pt", "exec", marker["pickle"])

    def row_loading(pickle_marker: Path, name: str) -> Path:
        pickle = kit.write_pickle(root / "in" / f"{name}.pt", "exec", pickle_marker)
        return _model_yaml(root / "in" / f"yolov8n-{name}.yaml",
                           lambda m: m["backbone"].__setitem__(0, [-1, 1, "torch_safe_load", [str(pickle)]]))

    def activation(activation_marker: Path, name: str) -> Path:
        code = f"__import__('os').system('touch {activation_marker}')"
        return _model_yaml(root / "in" / f"yolov8n-{name}.yaml", lambda m: m.__setitem__("activation", code))

    # a run whose data.yaml was edited after its first epoch (val images moved away, a download added)
    dataset = world.copy_dataset(root / "ds")
    checkpoint = world.checkpoint("last")
    checkpoint["train_args"].update(data=str(dataset), save_dir=str(root / "edited-run"))
    last = root / "edited-run" / "weights" / "last.pt"
    last.parent.mkdir(parents=True)
    torch.save(checkpoint, last)
    shutil.move(dataset.parent / "images" / "val", dataset.parent / "images" / "moved")
    dataset.write_text(dataset.read_text() + f"download: \"open('{marker['resume-download']}', 'w')\"\n")
    cached = world.copy_dataset(root / "cached")
    kit.write_label_cache_payload(cached.parent / "labels" / "val.cache", marker["label-cache"])
    weights = root / "export" / "best.pt"
    weights.parent.mkdir()
    shutil.copy(world.best, weights)

    restricted = [
        ["val", evil, "--data", world.data],
        ["predict", world.image],
        ["train", "--resume"],
        ["profile", row_loading(marker["row"], "row"), "--imgsz", "64"],
        ["train", world.data, "--model", activation(marker["activation"], "activation"), "--epochs", "1"],
        ["train", "--resume", last],
        ["val", world.best, "--data", cached, "--imgsz", "64"],
        ["export", weights, "--format", "onnx", "--imgsz", "64"],
        ["predict", world.image, "--model", world.best, "--imgsz", "64", "--show", "--project", root / "shown"],
    ]
    trusted_flag = [
        ["profile", row_loading(marker["trusted-row"], "trusted-row"), "--imgsz", "64", "--trust-checkpoint"],
        ["train", world.data, "--model", activation(marker["trusted-activation"], "trusted-activation"),
         "--epochs", "1", "--trust-checkpoint"],
        ["val", kit.write_pickle(root / "in" / "flag.pt", "exec", marker["trusted-flag"]), "--data", world.data,
         "--trust-checkpoint"],
    ]
    started = {
        "restricted": _start(restricted, work, _environment(root / "home-restricted", BRA_TRUST_CHECKPOINTS="0",
                                                            DISPLAY=":99")),
        "trusted by flag": _start(trusted_flag, root, _environment(root / "home-flag")),
        "control": subprocess.Popen([sys.executable, "-c", "import onnxruntime"],
                                    env=_environment(root / "home-control"), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE),
    }
    started["control"].communicate(timeout=120)
    results = {name: _results(p) for name, p in started.items() if name != "control"}
    return {"results": results, "marker": marker, "root": root, "weights": weights}


def _one_line(result: dict, code: int, *says: str) -> None:
    err = result["err"]
    assert result["code"] == code, result
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [line for line in err.splitlines() if line.lstrip().startswith("✘")]
    assert len(lines) == (code != 0), err
    for words in says:
        assert words in lines[0], (words, lines[0])


def test_a_fresh_process_refuses_crafted_pickles_given_and_found(processes):
    """val EVIL.pt; predict with no --model (finds runs/detect/x/weights/best.pt); bare train --resume."""
    val, predict, resume = processes["results"]["restricted"][:3]
    for result in (val, predict, resume):
        _one_line(result, 1, "restricted loading does not allow", "--trust-checkpoint")
    assert not any(processes["marker"][name].exists() for name in ("pickle", "found-best", "found-last"))


def test_a_fresh_process_parses_model_yamls(processes):
    """A row that names torch_safe_load (of a pickle) and an activation: payload, with profile and train."""
    row, activation = processes["results"]["restricted"][3:5]
    _one_line(row, 2, "'torch_safe_load' is not a model layer")
    _one_line(activation, 2, "never evaluates")
    assert not processes["marker"]["row"].exists() and not processes["marker"]["activation"].exists()


def test_a_fresh_process_refuses_an_edited_run_and_a_planted_label_cache(processes):
    resume, val = processes["results"]["restricted"][5:7]
    _one_line(resume, 1, "'download:' entry")
    _one_line(val, 1, "is not a label cache")
    assert not processes["marker"]["resume-download"].exists() and not processes["marker"]["label-cache"].exists()


def test_an_onnx_export_leaves_no_telemetry_folder(processes):
    """The export imports onnxruntime (its parity check runs the model there) under an empty HOME: onnxruntime's
    device-id folder is not created. The control — onnxruntime imported without bracli, in the same environment
    with no build-server variables — creates it."""
    export = processes["results"]["restricted"][7]
    _one_line(export, 0)
    assert processes["weights"].with_suffix(".onnx").is_file()
    assert not list((processes["root"] / "home-restricted").rglob(TELEMETRY))
    if not list((processes["root"] / "home-control").rglob(TELEMETRY)):
        pytest.skip("onnxruntime imported without bracli writes no device id here either: nothing to compare")


def test_show_on_a_display_that_does_not_answer_saves_instead(processes):
    if Path("/tmp/.X11-unix/X99").exists():
        pytest.skip("an X server answers on :99 here (Xvfb's usual display)")
    show = processes["results"]["restricted"][8]
    _one_line(show, 0)
    assert "DISPLAY=:99 does not answer" in show["err"]
    assert list((processes["root"] / "shown" / "predict").glob("*.jpg"))


def test_trust_checkpoint_is_the_switch_and_model_yamls_stay_parsed(processes):
    """--trust-checkpoint: the crafted pickle runs (that is what the flag means) — while a YAML row that would
    load a pickle, and an activation ultralytics would eval when trusted, are still refused unrun."""
    row, activation, val = processes["results"]["trusted by flag"]
    _one_line(row, 2, "'torch_safe_load' is not a model layer")
    _one_line(activation, 2, "never evaluates")
    assert not processes["marker"]["trusted-row"].exists()
    assert not processes["marker"]["trusted-activation"].exists()
    assert processes["marker"]["trusted-flag"].exists(), val


@pytest.mark.parametrize("value, trusted", [("1", True), ("true", True), ("YES", True), ("0", False),
                                            ("", False), ("no", False), ("2", False)])
def test_bra_trust_checkpoints_means_the_flag_only_when_set_to_yes(value, trusted, monkeypatch):
    """The script form of --trust-checkpoint: the commands pass options.trust_checkpoints(flag) to setup(), whose
    effect on a process the flag's test above shows; "0" is part of the restricted process's environment."""
    from bracli import options

    monkeypatch.setenv(options.TRUST_ENV, value)
    assert options.trust_checkpoints(False) is trusted
    assert options.trust_checkpoints(True) is True
