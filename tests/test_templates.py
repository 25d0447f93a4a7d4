"""The template renderer: pure graph rewriting (fast) for every family × task × scale, then every rendering
built by ultralytics — shape-only on the meta device at every scale, for real (forward at 640×640 and
320×480) at scale n."""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bracli import templates
from bracli.errors import BracliError, UsageError
from bracli.templates import BRA_MODULE, FAMILIES, METADATA_KEY, SCALES, TASKS

VARIANTS = [(family, task) for family in FAMILIES for task in TASKS]
# Every placement's meaning, written out independently of the renderer: (vanilla layer, module, stride).
MEANING = {
    "yolov8": {"backbone-p3": (4, "C2f", 8), "backbone-p4": (6, "C2f", 16), "backbone-p5": (8, "C2f", 32),
               "sppf": (9, "SPPF", 32), "p3": (15, "C2f", 8), "p4": (18, "C2f", 16), "p5": (21, "C2f", 32)},
    "yolo11": {"backbone-p3": (4, "C3k2", 8), "backbone-p4": (6, "C3k2", 16), "backbone-p5": (8, "C3k2", 32),
               "sppf": (9, "SPPF", 32), "psa": (10, "C2PSA", 32), "p3": (16, "C3k2", 8), "p4": (19, "C3k2", 16),
               "p5": (22, "C3k2", 32)},
}
MEANING["yolo26"] = MEANING["yolo11"]
HEADS = {("yolov8", "detect"): "Detect", ("yolo11", "detect"): "Detect", ("yolo26", "detect"): "Detect",
         ("yolov8", "segment"): "Segment", ("yolo11", "segment"): "Segment", ("yolo26", "segment"): "Segment26"}
COMBINATIONS = [("p3", "p4"), ("p3", "p4", "p5"), ("sppf", "p3"), ("backbone-p4", "p4"),
                ("backbone-p3", "backbone-p4", "backbone-p5", "sppf")]


def placement_sets(family: str) -> list[tuple[str, ...]]:
    every = tuple(MEANING[family])
    return [(p,) for p in every] + COMBINATIONS + [every] + ([("psa", "p3")] if "psa" in every else [])


def shipped(family: str, task: str) -> dict:
    """ultralytics' own graph, read as data from the installed package (without importing it)."""
    package = Path(importlib.util.find_spec("ultralytics").origin).parent
    folder = {"yolov8": "v8", "yolo11": "11", "yolo26": "26"}[family]
    name = f"{family}{'-seg' if task == 'segment' else ''}.yaml"
    return yaml.safe_load((package / "cfg" / "models" / folder / name).read_text())


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


def expected_channels(family: str, scale: str, nominal: int) -> int:
    """The issue's formula, with ultralytics' shipped scale table."""
    _, width, max_channels = shipped(family, "detect")["scales"][scale]
    scaled = min(nominal, max_channels) * width
    return int(-(-scaled // 8) * 8)


VARIANT_PARAMS = [pytest.param(family, task, id=f"{family}-{task}") for family, task in VARIANTS]


# ---------------------------------------------------------------- pure renderer


def test_renderer_imports_neither_torch_nor_ultralytics():
    code = ("import sys\nfrom bracli import templates\n"
            "for f in templates.FAMILIES:\n    for t in templates.TASKS:\n"
            "        templates.render('x', templates.placements_for(f, t), family=f, task=t)\n"
            "print(sorted(m for m in ('torch', 'ultralytics', 'cv2') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(("family", "task"), VARIANT_PARAMS)
def test_shipped_templates_are_ultralytics_graphs(family, task):
    assert templates.load_template(family, task) == shipped(family, task)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize(("family", "task"), VARIANT_PARAMS)
@pytest.mark.parametrize("vanilla", [(), ("none",), "None"], ids=["empty", "none", "none-str"])
def test_vanilla_render_is_the_graph_ultralytics_ships(family, task, scale, vanilla):
    rendered = templates.render(scale, vanilla, family=family, task=task, nc=80)
    assert {k: v for k, v in rendered.items() if k not in ("scale", METADATA_KEY)} == shipped(family, task)
    assert list(rendered)[:2] == ["nc", *(["end2end"] if family == "yolo26" else ["scale"])]
    assert rendered["scale"] == scale
    assert rendered[METADATA_KEY]["layers"] == []
    assert rendered[METADATA_KEY]["placements"] == []


def test_yolo26_keeps_its_top_level_keys():
    for task in TASKS:
        model = templates.render("s", ["p3"], family="yolo26", task=task)
        assert (model["end2end"], model["reg_max"]) == (True, 1)
        text = templates.to_yaml(model, "x")
        assert "\nend2end: true\n" in text and "\nreg_max: 1\n" in text
        assert "end2end" not in templates.render("s", ["p3"], family="yolo11", task=task)


def test_templates_are_found_in_the_wheel_first_then_the_repository(tmp_path, monkeypatch):
    repository = tmp_path / "repo"
    package = repository / "bracli"
    (repository / "templates").mkdir(parents=True)
    (package / "_templates").mkdir(parents=True)
    monkeypatch.setattr(templates.graphs, "__file__", str(package / "templates" / "graphs.py"))
    with pytest.raises(BracliError, match="reinstall"):
        templates.template_dir()
    (repository / "templates" / "yolov8.yaml").write_text("{}")
    assert templates.template_dir() == repository / "templates"  # editable install
    (package / "_templates" / "yolov8.yaml").write_text("{}")
    assert templates.template_dir() == package / "_templates"  # wheel


def test_every_template_file_is_shipped_in_the_wheel():
    """pyproject's force-include ships the repository's templates/ as bracli/_templates: every variant is there."""
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"templates" = "bracli/_templates"' in pyproject
    folder = Path(__file__).resolve().parents[1] / "templates"
    assert sorted(p.name for p in folder.glob("*.yaml")) == sorted(templates.template_file(f, t) for f, t in VARIANTS)


@pytest.mark.parametrize(("family", "task"), VARIANT_PARAMS)
def test_each_family_has_its_placements_in_graph_order(family, task):
    assert templates.placements_for(family, task) == tuple(MEANING[family])
    assert templates.catalogue()[family][task] == tuple(MEANING[family])
    assert tuple(templates.scale_table(family, task)) == SCALES


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
    assert model["backbone"] == shipped("yolov8", "detect")["backbone"]
    graph = rows(model)
    assert graph[16] == [-1, 1, BRA_MODULE, [64, 10, 2, 4, 64, 3, True, 8]]  # bracli's preset
    blog = rows(templates.render("n", ["p3"], preset="blog"))
    assert blog[16] == [-1, 1, BRA_MODULE, [64, 7, 8, 4, 64, 3]]  # the tutorials' own settings, one flag away
    assert model[METADATA_KEY]["layers"] == [{"index": 16, "placement": "p3", "follows": 15, "channels": 64,
                                             "stride": 8, "n_win": 10, "heads": 2, "topk": 4, "qk_dim": 64,
                                             "side_dwconv": 3, "region_size": 8}]


REWIRE_CASES = [pytest.param(family, task, scale, placements, id=f"{family}-{task}-{scale}-{'+'.join(placements)}")
                for family, task in VARIANTS for scale in SCALES for placements in placement_sets(family)]


@pytest.mark.parametrize(("family", "task", "scale", "placements"), REWIRE_CASES)
def test_render_rewires_every_consumer_through_bra(family, task, scale, placements):
    vanilla = shipped(family, task)
    model = templates.render(scale, placements, family=family, task=task)
    graph, vanilla_rows = rows(model), rows(vanilla)
    assert len(graph) == len(vanilla_rows) + len(placements)
    assert graph[-1][2:] == [HEADS[family, task], vanilla_rows[-1][3]]  # the head, its args untouched

    # Treating BRA as the identity gives back the vanilla graph layer by layer: nothing else moved or changed.
    exprs, vanilla_exprs = dataflow(model), dataflow(vanilla)
    assert [without_bra(e) for e in exprs if e[0] != BRA_MODULE] == vanilla_exprs

    bra_rows = [i for i, row in enumerate(graph) if row[2] == BRA_MODULE]
    assert len(bra_rows) == len(placements)
    followed = {}
    for i in bra_rows:
        frm, repeats, _, args = graph[i]
        assert (frm, repeats) == (-1, 1)
        matches = [p for p in placements if without_bra(exprs[i - 1]) == vanilla_exprs[MEANING[family][p][0]]]
        assert len(matches) == 1  # BRA sits right after the layer its placement names
        placement = matches[0]
        layer, module, _ = MEANING[family][placement]
        assert vanilla_rows[layer][2] == module
        dim = expected_channels(family, scale, vanilla_rows[layer][3][0])
        stride = {m["index"]: m["stride"] for m in model["bra"]["layers"]}[i]
        # bracli's preset: n_win 10, a head per 32 channels, regions of ⌈640 / (stride · n_win)⌉ tokens a side
        assert args == [dim, 10, max(1, dim // 32), 4, dim, 3, True, -(-640 // (stride * 10))]
        followed[placement] = exprs[i - 1]

    # No consumer bypasses BRA: only BRA layers read a followed layer's raw output.
    for expr in exprs:
        if expr[0] != BRA_MODULE:
            assert not any(x in followed.values() for x in expr[3])

    # Relative sources stay relative, absolute ones stay absolute.
    mapping = templates.index_map(placements, family, task)
    for old, row in enumerate(vanilla_rows):
        new_from, old_from = graph[mapping[old]][0], row[0]
        assert type(new_from) is type(old_from)
        for new_source, old_source in zip(*(([f] if isinstance(f, int) else f) for f in (new_from, old_from)),
                                          strict=True):
            assert (new_source < 0) == (old_source < 0)
            if old_source == -1:
                assert new_source == -1


@pytest.mark.parametrize(("family", "task"), VARIANT_PARAMS)
def test_metadata_points_at_the_bra_layers(family, task):
    for placements in placement_sets(family):
        model = templates.render("s", placements, family=family, task=task)
        graph = rows(model)
        meta = model[METADATA_KEY]
        assert (meta["family"], meta["task"], meta["template"]) == (family, task, templates.template_file(family, task))
        assert meta["placements"] == [p for p in MEANING[family] if p in placements]
        assert [layer["placement"] for layer in meta["layers"]] == meta["placements"]
        for layer in meta["layers"]:
            assert graph[layer["index"]][2] == BRA_MODULE
            assert graph[layer["index"]][3][0] == layer["channels"]
            assert layer["follows"] == layer["index"] - 1
            assert layer["stride"] == MEANING[family][layer["placement"]][2]


def test_placement_order_does_not_matter():
    assert templates.render("m", ["p5", "sppf", "p3"]) == templates.render("m", ["p3", "sppf", "p5"])
    assert templates.parse_placements(["p5", "p3,backbone-p4", " P4 "]) == ["backbone-p4", "p3", "p4", "p5"]
    assert templates.parse_placements("p4,p3") == ["p3", "p4"]
    assert templates.parse_placements(["p3", "psa"], "yolo11") == ["psa", "p3"]
    assert templates.parse_placements(["NONE"], "yolo26", "segment") == []
    assert templates.render("n", "p3") == templates.render("n", ["p3"])


def test_rendering_leaves_the_template_untouched():
    before = templates.load_template("yolo11", "segment")
    model = templates.render("n", ["p3", "psa"], family="yolo11", task="segment")
    model["head"][-1][3].append("edited")
    model["scales"]["n"][0] = 9
    assert templates.load_template("yolo11", "segment") == before


def test_bra_options_reach_every_bra_layer():
    model = templates.render("l", ["p3", "p5"], nc=3, n_win=10, topk=7, heads=4, side_dwconv=5, qk_dim=128)
    assert model["nc"] == 3
    assert [row[3] for row in rows(model) if row[2] == BRA_MODULE] == [[256, 10, 4, 7, 128, 5, True, 8],
                                                                       [512, 10, 4, 7, 128, 5, True, 2]]
    fixed = templates.render("l", ["p3"], region_size="none", heads=4)
    assert [row[3] for row in rows(fixed) if row[2] == BRA_MODULE] == [[256, 10, 4, 4, 256, 3]]
    blog = templates.render("n", ["p3"], preset="blog")
    assert [row[3] for row in rows(blog) if row[2] == BRA_MODULE] == [[64, 7, 8, 4, 64, 3]]
    assert model["head"][-1][3] == ["nc"]  # Detect reads nc from the top level, as in ultralytics' files
    segment = templates.render("n", ["p4"], family="yolo26", task="segment", nc=2)
    assert segment["nc"] == 2 and segment["head"][-1][3] == ["nc", 32, 256]


def test_file_names_carry_the_scale_in_canonical_order():
    assert templates.model_filename("n", ["p3"]) == "yolov8n-bra-p3.yaml"
    assert templates.model_filename("s", ["p4", "p3"]) == "yolov8s-bra-p3-p4.yaml"
    assert templates.model_filename("x", ["p3", "backbone-p5"]) == "yolov8x-bra-backbone-p5-p3.yaml"
    assert templates.model_filename("n", ["p3"], family="yolo11") == "yolo11n-bra-p3.yaml"
    assert templates.model_filename("s", ["p4", "p3"], "yolo26", "segment") == "yolo26s-seg-bra-p3-p4.yaml"
    assert templates.model_filename("n", [], "yolo11") == "yolo11n.yaml"
    assert templates.model_filename("n", ["none"], "yolov8", "segment") == "yolov8n-seg.yaml"
    for family, task in VARIANTS:
        for scale in SCALES:
            for placements in ([], templates.placements_for(family, task)):
                name = templates.model_filename(scale, placements, family, task)
                assert templates.scale_in_name(name) == scale
                assert ("-seg" in name) == (task == "segment")  # what ultralytics' guess_model_task reads
    assert templates.scale_in_name("my-model.yaml") is None
    assert templates.scale_in_name("runs/yolov8l-custom.yml") == "l"


@pytest.mark.parametrize(("family", "task"), VARIANT_PARAMS)
@pytest.mark.parametrize("placements", [("p3",), ("sppf", "p4"), ()], ids=["p3", "sppf+p4", "vanilla"])
def test_yaml_text_round_trips(family, task, placements):
    model = templates.render("m", placements, family=family, task=task, qk_dim=64)
    text = templates.to_yaml(model, templates.default_header(model))
    assert yaml.safe_load(text) == model
    header = text.split("\n\n", 1)[0].splitlines()
    assert header and all(line.startswith("#") for line in header)
    assert templates.command_line(model) in text
    assert f"'{family}m' in it" in text
    for layer in model[METADATA_KEY]["layers"]:
        assert f"# {layer['index']} BRA after {layer['placement']}" in text
    if not placements:
        assert "plain (no BRA layer)" in text


@pytest.mark.parametrize(
    ("family", "task", "placements", "options"),
    [("yolov8", "detect", ["p4", "backbone-p3"], {"nc": 5, "n_win": 4, "topk": 2, "heads": 2, "side_dwconv": 0,
                                                  "qk_dim": 32}),
     ("yolo26", "segment", ["psa", "p3"], {"nc": 3}),
     ("yolo11", "detect", [], {"nc": 7})],
    ids=["v8", "yolo26-seg", "yolo11-vanilla"],
)
def test_command_line_renders_the_same_model(family, task, placements, options):
    model = templates.render("s", placements, family=family, task=task, **options)
    words = templates.command_line(model).split()[2:]
    given = dict(zip(words[::2], words[1::2], strict=True))
    names = {"--n-win": "n_win", "--topk": "topk", "--heads": "heads", "--side-dwconv": "side_dwconv",
             "--qk-dim": "qk_dim", "--nc": "nc"}
    again = templates.render(given["--scale"], given["--bra-after"].split(","),
                             family=given.get("--family", "yolov8"), task=given.get("--task", "detect"),
                             **{names[k]: int(v) for k, v in given.items() if k in names})
    assert again == model


@pytest.mark.parametrize(("family", "task"), VARIANT_PARAMS)
def test_describe_placements_agrees_with_the_graph(family, task):
    infos = {info.name: info for info in templates.describe_placements(family, task)}
    assert list(infos) == list(MEANING[family])
    for name, (layer, module, stride) in MEANING[family].items():
        info = infos[name]
        assert (info.follows, info.module, info.stride) == (layer, module, stride)
        assert info.to_dict()["channels"] == info.channels
        for scale in SCALES:
            rendered = templates.render(scale, [name], family=family, task=task)
            assert info.channels[scale] == rendered[METADATA_KEY]["layers"][0]["channels"]


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: templates.render("q", ["p3"]), "'q'"),
        (lambda: templates.render("n", ["p6"]), "'p6'"),
        (lambda: templates.render("n", ["p3", "p3"]), "'p3'"),
        (lambda: templates.parse_placements(["p4,p4"]), "'p4'"),
        (lambda: templates.render("n", ["psa"]), "YOLOv8 has no placement 'psa'; it has backbone-p3"),
        (lambda: templates.render("n", ["none", "p3"]), "'none'"),
        (lambda: templates.render("n", ["p3"], family="yolov9"), "'yolov9'"),
        (lambda: templates.render("n", ["p3"], task="pose"), "'pose'"),
        (lambda: templates.model_filename("n", ["p3"], family="YOLO11"), "'YOLO11'"),
        (lambda: templates.render("n", ["p3"], heads=7), "heads=7 does not divide the dim=64 channels at p3"),
        (lambda: templates.render("m", ["p5"], heads=5), "heads=5 does not divide the dim=576 channels at p5"),
        (lambda: templates.render("n", ["psa"], family="yolo11", heads=7), "dim=256 channels at psa"),
        (lambda: templates.render("n", ["p3"], qk_dim=12, heads=8), "qk_dim=12"),
        (lambda: templates.render("n", ["p3"], topk=101), "topk=101"),
        (lambda: templates.render("n", ["p3"], region_size="big"), "region_size='big'"),
        (lambda: templates.render("n", ["p3"], preset="paper"), "unknown preset 'paper'"),
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


# ---------------------------------------------------------------- built by ultralytics


def _bra_hooks(model_layers, layers_meta, seen):
    hooks = []
    for layer in layers_meta:
        module = model_layers[layer["index"]]
        hooks.append(module.register_forward_hook(
            lambda m, inputs, output, i=layer["index"]: seen.setdefault(i, []).append(
                (tuple(inputs[0].shape), tuple(output.shape)))))
    return hooks


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize(("family", "task"), VARIANT_PARAMS)
def test_every_placement_builds_at_every_scale(family, task, scale):
    """ultralytics' parse_model builds the graph with a BRA layer at every placement (shapes only, on the meta
    device), and a forward through it shows each BRA layer receives exactly the channels it was rendered with."""
    import torch
    from ultralytics.nn.tasks import parse_model

    from bracli.engine import models  # noqa: F401
    from bracli.nn import BiLevelRoutingAttention

    rendered = templates.render(scale, templates.placements_for(family, task), family=family, task=task, nc=3)
    meta = rendered[METADATA_KEY]["layers"]
    seen: dict[int, list[tuple]] = {}
    with torch.device("meta"):
        layers, _ = parse_model(copy.deepcopy(rendered), ch=3, verbose=False)
        assert [i for i, m in enumerate(layers) if isinstance(m, BiLevelRoutingAttention)] == [x["index"] for x in meta]
        for layer in meta:
            assert [getattr(layers[layer["index"]], name) for name in templates.BRA_ARGS] == \
                rows(rendered)[layer["index"]][3]
        _bra_hooks(layers, meta, seen)
        outputs: list = []
        x = torch.zeros(1, 3, 640, 640)
        for module in layers.train():  # ultralytics' routing: `f` names the inputs
            sources = [module.f] if isinstance(module.f, int) else module.f
            inputs = [x if s == -1 else outputs[s] for s in sources]
            x = module(inputs[0] if isinstance(module.f, int) else inputs)
            outputs.append(x)
    for layer in meta:
        stride = layer["stride"]
        assert seen[layer["index"]] == [((1, layer["channels"], 640 // stride, 640 // stride),) * 2]


def _model_class(task: str):
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel

    return {"detect": DetectionModel, "segment": SegmentationModel}[task]


@pytest.mark.parametrize("placements", ["all", "none"])
@pytest.mark.parametrize(("family", "task"), VARIANT_PARAMS)
def test_rendered_model_builds_and_runs(family, task, placements):
    """The task's ultralytics model class builds the rendered dict and predicts at 640×640 and 320×480."""
    import torch

    from bracli.engine import models  # noqa: F401
    from bracli.nn import BiLevelRoutingAttention

    nc = 3
    chosen = templates.placements_for(family, task) if placements == "all" else []
    rendered = templates.render("n", chosen, family=family, task=task, nc=nc)
    model = _model_class(task)(copy.deepcopy(rendered), nc=nc, verbose=False).eval()
    layers = rendered[METADATA_KEY]["layers"]
    assert len(model.model) == len(rows(rendered))
    assert model.stride.tolist() == [8, 16, 32]
    assert type(model.model[-1]).__name__ == HEADS[family, task]
    assert [i for i, m in enumerate(model.model) if isinstance(m, BiLevelRoutingAttention)] == \
        [x["index"] for x in layers]
    seen: dict[int, list[tuple]] = {}
    hooks = _bra_hooks(model.model, layers, seen)
    sizes = ((640, 640), (320, 480)) if chosen else ((320, 480),)
    for height, width in sizes:
        with torch.no_grad():
            output = model(torch.zeros(1, 3, height, width))[0]
        prediction = output[0] if task == "segment" else output
        anchors = sum((height // s) * (width // s) for s in (8, 16, 32))
        assert tuple(prediction.shape) == (1, 4 + nc + (32 if task == "segment" else 0), anchors)
        assert torch.isfinite(prediction).all()
        if task == "segment":
            assert tuple(output[1].shape) == (1, 32, height // 4, width // 4)  # mask prototypes
    for hook in hooks:
        hook.remove()
    for layer in layers:
        (in_640, out_640), (in_rect, out_rect) = seen[layer["index"]]
        stride = layer["stride"]
        assert in_640 == out_640 == (1, layer["channels"], 640 // stride, 640 // stride)
        assert in_rect == out_rect == (1, layer["channels"], 320 // stride, 480 // stride)


@pytest.mark.parametrize(("family", "task"), [("yolo11", "segment"), ("yolo26", "detect")])
def test_ultralytics_reads_scale_and_task_from_the_written_file(tmp_path, family, task):
    """YOLO('<rendered file>') after `import bracli`: the scale from the name, the task from the head."""
    import bracli  # noqa: F401
    from bracli.engine.setup import setup

    setup()  # before ultralytics is imported, as every command does
    from ultralytics import YOLO

    rendered = templates.render("n", ["p3"], family=family, task=task, nc=4)
    path = tmp_path / templates.model_filename("n", ["p3"], family, task)
    path.write_text(templates.to_yaml(rendered, templates.default_header(rendered)))
    model = YOLO(str(path))
    assert model.task == task
    assert isinstance(model.model, _model_class(task))
    assert model.model.yaml["scale"] == "n"
    index = rendered[METADATA_KEY]["layers"][0]["index"]
    assert type(model.model.model[index]).__name__ == BRA_MODULE
