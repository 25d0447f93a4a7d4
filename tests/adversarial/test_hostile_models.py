"""Hostile model YAMLs given to `bra train --model` and `bra profile`: an ``activation:`` that is Python, a layer
row that names a function (``torch_safe_load`` of a pickle), YAML tags, numbers that never finish building.
Parsed, never evaluated: one line, exit 2, the payload's marker absent."""

from __future__ import annotations

import pytest
import yaml

from bracli import templates

PARSED_NOT_EVALUATED = ("not a plain nn.Name(...) call", "never evaluates")


def _model(tmp_path, edit=None, text: str | None = None, name: str = "yolov8n-evil.yaml"):
    """The rendered YOLOv8n + BRA model, edited by ``edit(dict)`` (or replaced by ``text``), as a file."""
    path = tmp_path / "in" / name
    path.parent.mkdir(exist_ok=True)
    if text is None:
        model = templates.render("n", ["p3"], nc=3)
        if edit:
            edit(model)
        text = yaml.safe_dump(model, sort_keys=False)
    path.write_text(text)
    return path


def _activation(value):
    def edit(model):
        model["activation"] = value
    return edit


def _commands(path, tmp_path, world):
    return {"train --model": ["train", world.data, "--model", path, "--epochs", "1", "--imgsz", "64",
                              "--project", tmp_path / "runs"],
            "profile": ["profile", path, "--imgsz", "64", "--no-latency", "--no-memory"]}


ACTIVATIONS = {
    "os.system": "__import__('os').system('touch {m}')",
    "conditional": "nn.SiLU() if open('{m}', 'w') else nn.ReLU()",
    "call in an argument": "nn.LeakyReLU(__import__('os').system('touch {m}'))",
    "lambda": "(lambda: open('{m}', 'w'))()",
    "attribute escape": "nn.Module.__subclasses__()[0]('{m}')",
    "through torch's modules": "torch.nn.modules.activation.os.system('touch {m}')",
    "keyword argument": "nn.SiLU(inplace=open('{m}', 'w'))",
}


@pytest.mark.parametrize("command", ["train --model", "profile"])
@pytest.mark.parametrize("payload", ACTIVATIONS)
def test_activation_payloads_are_parsed_not_evaluated(payload, command, world, expect, marker, tmp_path):
    path = _model(tmp_path, _activation(ACTIVATIONS[payload].format(m=marker)))
    case = expect(inputs=[path, world.dataset], markers=[marker])
    case.run(*_commands(path, tmp_path, world)[command], code=2, says=PARSED_NOT_EVALUATED)


def test_an_activation_with_a_million_weights_is_not_an_activation(world, expect, tmp_path):
    """ultralytics would build one per Conv: nn.Linear(60000, 60000) is 14 GB each (this one is 4 MB)."""
    path = _model(tmp_path, _activation("nn.Linear(1024, 1024)"))
    expect(inputs=[path]).run("profile", path, "--imgsz", "64", code=2, says=["1,049,600 weights"])


def test_an_activation_that_is_not_text(world, expect, tmp_path):
    path = _model(tmp_path, _activation(["nn.SiLU()"]))
    expect(inputs=[path]).run("profile", path, "--imgsz", "64", code=2, says=["activation (a list)"])


def _row_module(name: str, args: list):
    def edit(model):
        model["backbone"][0] = [-1, 1, name, args]
    return edit


@pytest.mark.parametrize("function", ["torch_safe_load", "torch_load", "load_checkpoint", "check_requirements"])
def test_a_layer_row_naming_a_function_is_refused(function, world, kit, expect, marker, tmp_path):
    """ultralytics calls whatever name a row gives (``globals()[name](*args)``): a loader of a pickle, say."""
    evil = kit.write_pickle(tmp_path / "in" / "evil.pt", "exec", marker)
    path = _model(tmp_path, _row_module(function, [str(evil)]))
    case = expect(inputs=[path, evil], markers=[marker])
    case.run("profile", path, "--imgsz", "64", code=2, says=[f"'{function}' is not a model layer"])


@pytest.mark.parametrize("name", ["__import__", "eval", "exec", "os.system"])
def test_a_layer_row_naming_a_builtin_is_unknown(name, world, expect, marker, tmp_path):
    path = _model(tmp_path, _row_module(name, [f"touch {marker}"]))
    expect(inputs=[path], markers=[marker]).run("train", world.data, "--model", path, "--epochs", "1",
                                                "--project", tmp_path / "runs", code=2,
                                                says=[f"unknown module '{name}'"])


def _repeats(model):
    model["backbone"][2][1] = 1000  # a C2f row repeated 1000 times (a billion never finishes building)


def _depth(model):
    model["scales"]["n"][0] = 40.0  # a depth gain that turns YOLO's 3 and 6 repeats into 120 and 240


def _nc(model):
    model["nc"] = 10**15


def _channels(model):
    model["scales"]["n"][2] = 10**8  # max_channels no longer caps the rows' channels
    model["backbone"][2][3][0] = 10**8  # a C2f of a hundred million channels: 10¹⁶ weights


def _input_channels(model):
    model["channels"] = 10**9  # the first conv reads a billion channels


NUMBERS = {"repeats": (_repeats, "repeats 1000 times"), "depth gain": (_depth, "row 2 repeats 3 times"),
           "nc": (_nc, "nc 1000000000000000"), "channels": (_channels, "parameters; bracli builds models of up to"),
           "input channels": (_input_channels, "parameters; bracli builds models of up to")}


@pytest.mark.parametrize("what", NUMBERS)
def test_numbers_that_would_never_finish_building(what, world, expect, tmp_path):
    edit, says = NUMBERS[what]
    path = _model(tmp_path, edit)
    expect(inputs=[path]).run("profile", path, "--imgsz", "64", code=2, says=[says])


@pytest.mark.parametrize(("text", "says"), [
    ("backbone: !!python/object/apply:os.system ['touch {m}']\nhead: []\n", "YAML tags"),
    ("nc: !!python/object/new:os.system ['touch {m}']\nbackbone: []\nhead: []\n", "YAML tags"),
    ("nc: " + "7" * 5000 + "\nbackbone: []\nhead: []\n", "not valid YAML"),
])
def test_tags_and_huge_literals_in_a_model_yaml(text, says, world, expect, marker, tmp_path):
    path = _model(tmp_path, text=text.format(m=marker))
    expect(inputs=[path], markers=[marker]).run("train", world.data, "--model", path, "--project",
                                                tmp_path / "runs", code=2, says=[says])


def test_a_model_yaml_that_is_a_dataset(world, expect, tmp_path):
    path = _model(tmp_path, text=world.data.read_text(), name="yolov8n-data.yaml")
    expect(inputs=[path]).run("profile", path, code=2, says=["is a dataset YAML"])


@pytest.mark.parametrize(("feature", "says"), [("anchor", "anchors"), ("merge", "merge keys")])
def test_anchors_and_merge_keys_are_refused_in_a_model_file(feature, says, world, expect, tmp_path):
    """YAML's reuse features are how an alias bomb is built; a model file never needs them, so bracli asks
    for the values written out (one line, exit 2) instead of expanding them."""
    model = templates.render("n", ["p3"], nc=3)
    flow = [yaml.safe_dump(row, default_flow_style=True).strip() for row in model["head"]]
    rest = {k: v for k, v in model.items() if k not in ("head", "scales")}
    if feature == "anchor":
        head = [f"&up {row}" if i == 0 else "*up" if row == flow[0] else row for i, row in enumerate(flow)]
        scales = yaml.safe_dump({"scales": model["scales"]}, sort_keys=False)
    else:
        head = flow
        scales = "scales:\n  <<: " + yaml.safe_dump(model["scales"], default_flow_style=True).strip() + "\n"
    text = yaml.safe_dump(rest, sort_keys=False) + scales + "head:\n" + "".join(f"  - {row}\n" for row in head)
    path = _model(tmp_path, text=text)
    expect(inputs=[path]).run("profile", path, "--imgsz", "64", "--no-latency", "--no-memory", "--no-compare",
                              code=2, says=[says])


def test_init_refuses_a_class_count_no_head_can_hold(expect, tmp_path):
    expect().run("init", "--nc", "1000000000000000", "--out", tmp_path / "yolov8n-x.yaml", code=2, says=["--nc"])
    assert not (tmp_path / "yolov8n-x.yaml").exists()
