"""The template renderer: pure graph rewriting (fast), then every rendering built and run by ultralytics."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bracli import templates
from bracli.errors import BracliError, UsageError
from bracli.templates import BRA_MODULE, METADATA_KEY, PLACEMENTS, SCALES

COMBINATIONS = [
    ("p3", "p4"),
    ("p3", "p4", "p5"),
    ("sppf", "p3"),
    ("backbone-p4", "p4"),
    ("backbone-p3", "backbone-p4", "backbone-p5", "sppf"),
    PLACEMENTS,
]
SINGLE_AND_COMBINED = [(p,) for p in PLACEMENTS] + COMBINATIONS
# Every placement's meaning, written out independently of the renderer: (template layer, module, stride).
MEANING = {"backbone-p3": (4, "C2f", 8), "backbone-p4": (6, "C2f", 16), "backbone-p5": (8, "C2f", 32),
           "sppf": (9, "SPPF", 32), "p3": (15, "C2f", 8), "p4": (18, "C2f", 16), "p5": (21, "C2f", 32)}


def shipped_yolov8() -> dict:
    """ultralytics' own yolov8.yaml, read as data (without importing ultralytics)."""
    package = Path(importlib.util.find_spec("ultralytics").origin).parent
    return yaml.safe_load((package / "cfg" / "models" / "v8" / "yolov8.yaml").read_text())


def rows(model: dict) -> list:
    return model["backbone"] + model["head"]


def dataflow(model: dict) -> list[tuple]:
    """Each layer's output as an expression tree over the image: (module, repeats, args, inputs)."""
    exprs: list[tuple] = []
    for i, (frm, repeats, module, args) in enumerate(rows(model)):
        sources = [frm] if isinstance(frm, int) else frm
        inputs = tuple(exprs[i + s if s < 0 else s] if i + s >= 0 or s >= 0 else "image" for s in sources)
        exprs.append((module, repeats, repr(args), inputs))
    return exprs


def without_bra(expr):
    """The expression with every BRA layer treated as the identity."""
    if expr == "image":
        return expr
    module, repeats, args, inputs = expr
    if module == BRA_MODULE:
        return without_bra(inputs[0])
    return module, repeats, args, tuple(without_bra(x) for x in inputs)


def expected_channels(scale: str, nominal: int) -> int:
    """The issue's formula, with ultralytics' shipped scale table."""
    _, width, max_channels = shipped_yolov8()["scales"][scale]
    scaled = min(nominal, max_channels) * width
    return int(-(-scaled // 8) * 8)


# ---------------------------------------------------------------- pure renderer


def test_renderer_imports_neither_torch_nor_ultralytics():
    code = ("import sys\nfrom bracli import templates\ntemplates.render('x', templates.PLACEMENTS)\n"
            "print(sorted(m for m in ('torch', 'ultralytics', 'cv2') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("scale", SCALES)
def test_vanilla_render_is_the_graph_ultralytics_ships(scale):
    shipped = shipped_yolov8()
    rendered = templates.render(scale, (), nc=80)
    for key in ("nc", "scales", "backbone", "head"):
        assert rendered[key] == shipped[key], key
    assert rendered["scale"] == scale
    assert rendered[METADATA_KEY]["layers"] == []


def test_templates_are_found_in_the_wheel_first_then_the_repository(tmp_path, monkeypatch):
    repository = tmp_path / "repo"
    package = repository / "bracli"
    (repository / "templates").mkdir(parents=True)
    (package / "_templates").mkdir(parents=True)
    monkeypatch.setattr(templates, "__file__", str(package / "templates.py"))
    with pytest.raises(BracliError, match="reinstall"):
        templates.template_dir()
    (repository / "templates" / templates.TEMPLATE).write_text("{}")
    assert templates.template_dir() == repository / "templates"  # editable install
    (package / "_templates" / templates.TEMPLATE).write_text("{}")
    assert templates.template_dir() == package / "_templates"  # wheel


def test_scales_constant_matches_template():
    assert tuple(templates.scale_table()) == SCALES


def test_n_p3_is_the_tutorial_graph():
    # The hand-written YAML of the BiFormer-in-YOLOv8 tutorials: BRA as layer 16 after the P3 C2f.
    tutorial_head = [
        [-1, 1, "nn.Upsample"], [[-1, 6], 1, "Concat"], [-1, 3, "C2f"],
        [-1, 1, "nn.Upsample"], [[-1, 4], 1, "Concat"], [-1, 3, "C2f"],
        [-1, 1, "BiLevelRoutingAttention"],
        [-1, 1, "Conv"], [[-1, 12], 1, "Concat"], [-1, 3, "C2f"],
        [-1, 1, "Conv"], [[-1, 9], 1, "Concat"], [-1, 3, "C2f"],
        [[16, 19, 22], 1, "Detect"],
    ]
    model = templates.render("n", ["p3"])
    assert [row[:3] for row in model["head"]] == tutorial_head
    assert model["backbone"] == shipped_yolov8()["backbone"]
    graph = rows(model)
    assert graph[16] == [-1, 1, BRA_MODULE, [64, 8, 8, 4, 64, 3]]
    assert graph[15][2] == "C2f"
    assert graph[-1][0] == [16, 19, 22]
    assert model[METADATA_KEY]["layers"] == [{"index": 16, "placement": "p3", "follows": 15, "channels": 64,
                                             "stride": 8}]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("placements", SINGLE_AND_COMBINED, ids="+".join)
def test_render_rewires_every_consumer_through_bra(scale, placements):
    vanilla = shipped_yolov8()
    model = templates.render(scale, placements)
    graph, vanilla_rows = rows(model), rows(vanilla)
    assert len(graph) == len(vanilla_rows) + len(placements)

    # Treating BRA as the identity gives back vanilla YOLOv8 layer by layer: nothing else moved or changed.
    exprs, vanilla_exprs = dataflow(model), dataflow(vanilla)
    assert [without_bra(e) for e in exprs if e[0] != BRA_MODULE] == vanilla_exprs

    bra_rows = [i for i, row in enumerate(graph) if row[2] == BRA_MODULE]
    assert len(bra_rows) == len(placements)
    followed = {}
    for i in bra_rows:
        frm, repeats, _, args = graph[i]
        assert (frm, repeats) == (-1, 1)
        matches = [p for p in placements if without_bra(exprs[i - 1]) == vanilla_exprs[MEANING[p][0]]]
        assert len(matches) == 1  # BRA sits right after the layer its placement names
        placement = matches[0]
        layer, module, _ = MEANING[placement]
        assert vanilla_rows[layer][2] == module
        dim = expected_channels(scale, vanilla_rows[layer][3][0])
        assert args == [dim, 8, 8, 4, dim, 3]
        followed[placement] = exprs[i - 1]

    # No consumer bypasses BRA: only BRA layers read a followed layer's raw output.
    for expr in exprs:
        if expr[0] != BRA_MODULE:
            assert not any(x in followed.values() for x in expr[3])

    # Relative sources stay relative, absolute ones stay absolute.
    mapping = templates.index_map(placements)
    for old, row in enumerate(vanilla_rows):
        new_from, old_from = graph[mapping[old]][0], row[0]
        assert type(new_from) is type(old_from)
        for new_source, old_source in zip(*(([f] if isinstance(f, int) else f) for f in (new_from, old_from)),
                                          strict=True):
            assert (new_source < 0) == (old_source < 0)
            if old_source == -1:
                assert new_source == -1


@pytest.mark.parametrize("placements", SINGLE_AND_COMBINED, ids="+".join)
def test_metadata_points_at_the_bra_layers(placements):
    model = templates.render("s", placements)
    graph = rows(model)
    meta = model[METADATA_KEY]
    assert meta["placements"] == [p for p in PLACEMENTS if p in placements]
    assert [layer["placement"] for layer in meta["layers"]] == meta["placements"]
    for layer in meta["layers"]:
        assert graph[layer["index"]][2] == BRA_MODULE
        assert graph[layer["index"]][3][0] == layer["channels"]
        assert layer["follows"] == layer["index"] - 1
        assert layer["stride"] == MEANING[layer["placement"]][2]


def test_placement_order_does_not_matter():
    assert templates.render("m", ["p5", "sppf", "p3"]) == templates.render("m", ["p3", "sppf", "p5"])
    assert templates.parse_placements(["p5", "p3,backbone-p4", " P4 "]) == ["backbone-p4", "p3", "p4", "p5"]
    assert templates.parse_placements("p4,p3") == ["p3", "p4"]
    assert templates.render("n", "p3") == templates.render("n", ["p3"])


def test_bra_options_reach_every_bra_layer():
    model = templates.render("l", ["p3", "p5"], nc=3, n_win=10, topk=7, heads=4, side_dwconv=5, qk_dim=128)
    assert model["nc"] == 3
    assert [row[3] for row in rows(model) if row[2] == BRA_MODULE] == [[256, 10, 4, 7, 128, 5],
                                                                       [512, 10, 4, 7, 128, 5]]
    assert model["head"][-1][3] == ["nc"]  # Detect reads nc from the top level, as in ultralytics' files


def test_file_names_carry_the_scale_in_canonical_order():
    assert templates.model_filename("n", ["p3"]) == "yolov8n-bra-p3.yaml"
    assert templates.model_filename("s", ["p4", "p3"]) == "yolov8s-bra-p3-p4.yaml"
    assert templates.model_filename("x", ["p3", "backbone-p5"]) == "yolov8x-bra-backbone-p5-p3.yaml"
    for scale in SCALES:
        assert templates.scale_in_name(templates.model_filename(scale, PLACEMENTS)) == scale
    assert templates.scale_in_name("my-model.yaml") is None
    assert templates.scale_in_name("runs/yolov8l-custom.yml") == "l"


@pytest.mark.parametrize("placements", [("p3",), ("sppf", "p4"), PLACEMENTS], ids="+".join)
def test_yaml_text_round_trips(placements):
    model = templates.render("m", placements, qk_dim=64)
    text = templates.to_yaml(model, templates.default_header(model))
    assert yaml.safe_load(text) == model
    header = text.split("\n\n", 1)[0].splitlines()
    assert header and all(line.startswith("#") for line in header)
    assert templates.command_line(model) in text
    for layer in model[METADATA_KEY]["layers"]:
        assert f"# {layer['index']} BRA after {layer['placement']}" in text


def test_command_line_renders_the_same_model():
    model = templates.render("s", ["p4", "backbone-p3"], nc=5, n_win=4, topk=2, heads=2, side_dwconv=0, qk_dim=32)
    words = templates.command_line(model).split()[2:]
    options = dict(zip(words[::2], words[1::2], strict=True))
    again = templates.render(options["--scale"], options["--bra-after"].split(","), nc=int(options["--nc"]),
                             n_win=int(options["--n-win"]), topk=int(options["--topk"]),
                             heads=int(options["--heads"]), side_dwconv=int(options["--side-dwconv"]),
                             qk_dim=int(options["--qk-dim"]))
    assert again == model


def test_describe_placements_agrees_with_the_graph():
    infos = {info.name: info for info in templates.describe_placements()}
    assert list(infos) == list(PLACEMENTS)
    for name, (layer, module, stride) in MEANING.items():
        info = infos[name]
        assert (info.follows, info.module, info.stride) == (layer, module, stride)
        for scale in SCALES:
            assert info.channels[scale] == templates.render(scale, [name])[METADATA_KEY]["layers"][0]["channels"]
    # `bra init --list` prints one channel count per stride: backbone and head placements must agree.
    for backbone, head in (("backbone-p3", "p3"), ("backbone-p4", "p4"), ("backbone-p5", "p5"), ("sppf", "p5")):
        assert infos[backbone].channels == infos[head].channels


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: templates.render("q", ["p3"]), "'q'"),
        (lambda: templates.render("n", ["p6"]), "'p6'"),
        (lambda: templates.render("n", ["p3", "p3"]), "'p3'"),
        (lambda: templates.parse_placements(["p4,p4"]), "'p4'"),
        (lambda: templates.render("n", ["p3"], heads=7), "heads=7 does not divide the dim=64 channels at p3"),
        (lambda: templates.render("m", ["p5"], heads=5), "heads=5 does not divide the dim=576 channels at p5"),
        (lambda: templates.render("n", ["p3"], qk_dim=12), "qk_dim=12"),
        (lambda: templates.render("n", ["p3"], topk=65), "topk=65"),
        (lambda: templates.render("n", ["p3"], n_win=0), "n_win=0"),
        (lambda: templates.render("n", ["p3"], heads=0), "heads=0"),
        (lambda: templates.render("n", ["p3"], topk=-1), "topk=-1"),
        (lambda: templates.render("n", ["p3"], side_dwconv=4), "side_dwconv=4"),
        (lambda: templates.render("n", ["p3"], side_dwconv=-3), "side_dwconv=-3"),
        (lambda: templates.render("n", ["p3"], nc=0), "nc=0"),
        (lambda: templates.render("n", ["p3"], n_win=True), "n_win=True"),
        (lambda: templates.model_filename("z", ["p3"]), "'z'"),
    ],
)
def test_bad_options_are_usage_errors_naming_the_value(call, named):
    with pytest.raises(UsageError) as info:
        call()
    message = str(info.value)
    assert named in message
    assert "\n" not in message


def test_topk_may_cover_every_region():
    model = templates.render("n", ["p5"], n_win=2, topk=4)
    assert rows(model)[22][3][3] == 4


# ---------------------------------------------------------------- built and run by ultralytics

BUILD_CASES = [(scale, (p,)) for scale in SCALES for p in PLACEMENTS] + [("n", c) for c in COMBINATIONS] + [
    ("s", PLACEMENTS)]
HEAVY_SCALES = ("l", "x")


def _case_param(scale: str, placements: tuple[str, ...]):
    marks = [pytest.mark.slow] if scale in HEAVY_SCALES else []
    return pytest.param(scale, placements, id=f"{scale}-{'+'.join(placements)}", marks=marks)


@pytest.mark.parametrize(("scale", "placements"), [_case_param(*case) for case in BUILD_CASES])
def test_rendered_model_builds_and_runs(scale, placements):
    import torch

    from bracli.engine import models
    from bracli.nn import BiLevelRoutingAttention

    nc = 3
    rendered = templates.render(scale, placements, nc=nc)
    model = models.build(rendered).eval()
    layers = rendered[METADATA_KEY]["layers"]
    assert len(model.model) == len(rows(rendered))
    assert model.stride.tolist() == [8, 16, 32]

    seen: dict[int, list[tuple]] = {}
    hooks = []
    for layer in layers:
        module = model.model[layer["index"]]
        assert isinstance(module, BiLevelRoutingAttention)
        assert [getattr(module, name) for name in templates.BRA_ARGS] == rows(rendered)[layer["index"]][3]
        hooks.append(module.register_forward_hook(
            lambda m, inputs, output, i=layer["index"]: seen.setdefault(i, []).append(
                (tuple(inputs[0].shape), tuple(output.shape)))))

    for height, width in ((640, 640), (320, 480)):
        with torch.no_grad():
            prediction = model(torch.zeros(1, 3, height, width))[0]
        anchors = sum((height // s) * (width // s) for s in (8, 16, 32))
        assert tuple(prediction.shape) == (1, 4 + nc, anchors)
        assert torch.isfinite(prediction).all()
    for hook in hooks:
        hook.remove()

    for layer in layers:
        (in_640, out_640), (in_rect, out_rect) = seen[layer["index"]]
        stride = layer["stride"]
        # BRA's args carry its real input channels, and the stride the summary uses is the real one.
        assert in_640 == out_640 == (1, layer["channels"], 640 // stride, 640 // stride)
        assert in_rect == out_rect == (1, layer["channels"], 320 // stride, 480 // stride)
