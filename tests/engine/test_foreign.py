"""Model YAMLs in the blog's dialect: read, converted to bracli's, built; every refusal is one line, exit 2."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from bracli import templates
from bracli.engine import foreign
from bracli.errors import BracliError, UsageError
from tests.legacy_bra import BLOG_YAML, BLOG_YAML_NAME


@pytest.fixture
def blog_file(tmp_path) -> Path:
    path = tmp_path / BLOG_YAML_NAME
    path.write_text(BLOG_YAML, encoding="utf-8")
    return path


def blog_edited(tmp: Path, old: str, new: str, name: str = BLOG_YAML_NAME) -> Path:
    """The blog's YAML with ``old`` (text that must be in it) replaced by ``new``, written to ``tmp/name``."""
    assert old in BLOG_YAML
    path = tmp / name
    path.write_text(BLOG_YAML.replace(old, new), encoding="utf-8")
    return path


def with_bra_args(args: str, name: str = BLOG_YAML_NAME, tmp: Path | None = None) -> Path:
    """The blog's YAML with its BRA row's args replaced by ``args`` (YAML text)."""
    return blog_edited(tmp, "BiLevelRoutingAttention, []]", f"BiLevelRoutingAttention, {args}]", name)


def refusal(path: Path, scale: str | None = None) -> str:
    """The one-line UsageError reading ``path`` raises."""
    with pytest.raises(UsageError) as caught:
        foreign.read_foreign(foreign.read_yaml(path), source=path, scale=scale)
    message = str(caught.value)
    assert caught.value.exit_code == 2 and "\n" not in message
    return message


def test_blog_yaml_converts_and_builds(blog_file):
    from bracli.engine import models
    from bracli.nn import BiLevelRoutingAttention

    model = foreign.read_yaml(blog_file)
    assert not foreign.is_bracli_dialect(model)
    converted = foreign.read_foreign(model, source=blog_file, scale=None)
    assert converted.scale == "n"
    assert "no scale letter" in converted.notice and "scale n" in converted.notice
    assert converted.filename == "yolov8n-BiLevelRoutingAttention.yaml"
    assert converted.model["head"][6] == [-1, 1, "BiLevelRoutingAttention", [64, 7, 8, 4, 64, 3]]
    assert foreign.is_bracli_dialect(converted.model)

    built = models.build(converted.model)
    layer = built.model[16]
    assert isinstance(layer, BiLevelRoutingAttention)
    assert (layer.dim, layer.n_win, layer.num_heads, layer.topk, layer.side_dwconv, layer.auto_pad) == \
        (64, 7, 8, 4, 3, True)
    assert [m.f for m in built.model][-1] == [16, 19, 22]  # Detect still reads BRA's output


def test_written_conversion_is_read_as_bracli_dialect(blog_file, tmp_path):
    converted = foreign.read_foreign(foreign.read_yaml(blog_file), source=blog_file, scale="s")
    path = tmp_path / converted.filename
    path.write_text(converted.to_yaml(), encoding="utf-8")
    again = foreign.read_yaml(path)
    assert foreign.is_bracli_dialect(again)
    assert again["head"][6][3] == [128, 7, 8, 4, 128, 3]
    with pytest.raises(UsageError, match="already in bracli's dialect"):
        foreign.read_foreign(again, source=path)


def test_rendered_yaml_is_bracli_dialect():
    assert foreign.is_bracli_dialect(templates.render("n", ["p3"]))


def test_input_is_left_untouched_and_nothing_stays_registered(blog_file):
    from ultralytics.nn import tasks

    from bracli.nn import BiLevelRoutingAttention

    model = foreign.read_yaml(blog_file)
    before = copy.deepcopy(model)
    foreign.read_foreign(model, source=blog_file, scale="m")
    assert model == before
    assert tasks.BiLevelRoutingAttention is BiLevelRoutingAttention


@pytest.mark.parametrize(("name", "scale", "dim", "notice"), [
    (BLOG_YAML_NAME, "s", 128, False),
    ("yolov8m-BiLevelRoutingAttention.yaml", None, 192, False),
    ("yolov8x-BiLevelRoutingAttention.yaml", "x", 320, False),
])
def test_scale_from_option_or_name(tmp_path, name, scale, dim, notice):
    path = with_bra_args("[]", name, tmp_path)
    converted = foreign.read_foreign(foreign.read_yaml(path), source=path, scale=scale)
    assert converted.layers[0].settings.dim == dim
    assert (converted.notice is not None) is notice
    assert templates.scale_in_name(converted.filename) == converted.scale


def test_scale_option_contradicting_the_name(tmp_path):
    path = with_bra_args("[]", "yolov8m-BiLevelRoutingAttention.yaml", tmp_path)
    assert "says scale 'm'" in refusal(path, scale="s")


def test_arguments_are_positional_in_biformers_order(tmp_path):
    # num_heads comes before n_win; topk is the 9th argument, side_dwconv the 14th, auto_pad the 15th
    args = "[4, 8, 32, None, 4, 4, None, identity, 2, qkvo, False, False, False, 5, False]"
    path = with_bra_args(args, tmp=tmp_path)
    settings = foreign.read_foreign(foreign.read_yaml(path), source=path, scale="n").layers[0].settings
    assert (settings.num_heads, settings.n_win, settings.qk_dim, settings.topk, settings.side_dwconv) == \
        (4, 8, 32, 2, 5)
    assert settings.bracli_args() == [64, 8, 4, 2, 32, 5, False]


@pytest.mark.parametrize(("args", "named"), [
    ("[8, 7, None, 0.5]", "qk_scale=0.5"),
    ("[8, 7, None, None, 4, 4, None, avgpool]", "kv_downsample_mode='avgpool'"),
    ("[8, 7, None, None, 4, 4, None, identity, 4, qkv]", "param_attention='qkv'"),
    ("[8, 7, None, None, 4, 4, None, identity, 4, qkvo, True, True]", "param_routing=True"),
    ("[8, 7, None, None, 4, 4, None, identity, 4, qkvo, False, True]", "diff_routing=True"),
    ("[8, 7, None, None, 4, 4, None, identity, 4, qkvo, False, False, True]", "soft_routing=True"),
])
def test_settings_bracli_does_not_implement(tmp_path, args, named):
    message = refusal(with_bra_args(args, tmp=tmp_path), scale="n")
    assert "layer 16" in message and named in message and "not implemented" in message


def test_default_qk_scale_written_out_is_accepted(tmp_path):
    path = with_bra_args(f"[8, 7, None, {64 ** -0.5}]", tmp=tmp_path)
    assert foreign.read_foreign(foreign.read_yaml(path), source=path, scale="n").layers[0].settings.dim == 64


@pytest.mark.parametrize(("args", "expected"), [
    ("[n_win=7]", "keyword-style"),
    ("[{n_win: 7}]", "n_win is argument 2"),
    ("{n_win: 7}", "keyword-style"),
    ("['8']", "argument 1 (num_heads) must be an integer, got the string '8'"),
    ("[8, 7.5]", "argument 2 (n_win) must be an integer"),
    ("[8, 7, None, None, 4, 4, None, identity, 4, qkvo, 'no']", "(param_routing) must be a bool"),
    ("[8, 7, None, None, 4, 4, None, identity, 4, qkvo, False, False, False, 3, True, 1]", "16 arguments"),
    ("[6]", "heads=6 does not divide the dim=64 channels it receives at scale n"),
    ("[8, 2, None, None, 4, 4, None, identity, 5]", "topk=5 exceeds"),
])
def test_bad_bra_arguments(tmp_path, args, expected):
    message = refusal(with_bra_args(args, tmp=tmp_path), scale="n")
    assert "layer 16" in message and expected in message


@pytest.mark.parametrize("module", ["CSPStage", "BRABlock", "C2BRA", "BiLevelRoutingAttention_nchw", "eval",
                                    "torch_safe_load", "__builtins__"])
def test_unknown_modules_are_named(tmp_path, module):
    path = blog_edited(tmp_path, "- [-1, 1, BiLevelRoutingAttention, []]", f"- [-1, 1, {module}, []]")
    message = refusal(path)
    assert f"layer 16: unknown module {module}" in message and "BiLevelRoutingAttention" in message


def test_modules_that_download_are_refused(tmp_path):
    path = blog_edited(tmp_path, "- [-1, 1, BiLevelRoutingAttention, []]", "- [-1, 1, TorchVision, [64, resnet18]]")
    assert "TorchVision is refused" in refusal(path)


def test_dataset_yaml_given_as_model(tmp_path):
    path = tmp_path / "data.yaml"
    path.write_text("path: .\ntrain: images/train\nval: images/val\nnames: {0: cat}\n")
    with pytest.raises(UsageError, match="is a dataset YAML"):
        foreign.read_yaml(path)


@pytest.mark.parametrize(("text", "expected"), [
    ("nc: &n 80\ndepth_multiple: *n\n", "anchors"),
    ("base: &b {nc: 80}\nmodel:\n  <<: *b\n", "anchors"),
    ("nc: !!python/object/apply:os.system ['true']\n", "tags"),
    ("{nc: 80, <<: {depth_multiple: 1}}\n", "merge keys"),
    ("backbone: [\n", "not valid YAML (line 2)"),
])
def test_yaml_tricks_are_refused(tmp_path, text, expected):
    path = tmp_path / "yolov8n-tricks.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=re.escape(expected)):
        foreign.read_yaml(path)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("nc", "coco", "nc 'coco' must be the number of classes"),
    ("nc", "'80'", "nc '80' must be the number of classes"),
    ("nc", "1000001", "nc 1000001 must be the number of classes, a whole number from 1 to 100,000"),
    ("activation", "\"__import__('os').system('touch MARKER')\"", "is not a plain nn.Name(...) call"),
    ("activation", "nn.SiLU(inplace=__import__('os'))", "is not a plain nn.Name(...) call"),
])
def test_top_level_tricks_are_refused(tmp_path, key, value, expected):
    path = blog_edited(tmp_path, "nc: 80 # number of classes", f"{key}: {value}")
    assert expected in refusal(path)
    assert not (tmp_path / "MARKER").exists() and not Path("MARKER").exists()


@pytest.mark.parametrize(("old", "new", "row"), [
    ("[-1, 1, BiLevelRoutingAttention, []]", "[-1, 1000000000, BiLevelRoutingAttention, []]", 16),
    ("[-1, 3, C2f, [256]] # 15", "[-1, 1000000, C2f, [256]] # 15", 15),
    ("[-1, 3, C2f, [256]] # 15", "[-1, 0, C2f, [256]] # 15", 15),
])
def test_repeats_are_refused_before_anything_is_built(tmp_path, old, new, row):
    """The channel probe builds the graph: a billion pass-through rows grew to 24 GB before the limit applied."""
    path = blog_edited(tmp_path, old, new)
    assert f"row {row} repeats" in refusal(path) and "1 to 100 times" in refusal(path)


def test_literal_activation_is_accepted(tmp_path):
    path = tmp_path / BLOG_YAML_NAME
    path.write_text("activation: nn.LeakyReLU(0.1)\n" + BLOG_YAML)
    converted = foreign.read_foreign(foreign.read_yaml(path), source=path)
    assert converted.model["activation"] == "nn.LeakyReLU(0.1)"


def test_not_a_model_file(tmp_path):
    with pytest.raises(BracliError, match="model file not found"):
        foreign.read_yaml(tmp_path / "missing.yaml")
    other = tmp_path / "notes.yaml"
    other.write_text("- just\n- a list\n")
    with pytest.raises(UsageError, match="expected a mapping"):
        foreign.read_yaml(other)


def test_bra_row_with_several_inputs(tmp_path):
    path = blog_edited(tmp_path, "- [-1, 1, BiLevelRoutingAttention", "- [[-1, 4], 1, BiLevelRoutingAttention")
    assert "takes one input" in refusal(path)


def test_graph_ultralytics_cannot_build(tmp_path):
    path = blog_edited(tmp_path, "[[16, 19, 22], 1, Detect, [nc]]", "[[16, 19, 99], 1, Detect, [nc]]")
    assert "does not build with ultralytics" in refusal(path)


def test_yaml_without_bra_rows_passes_through(tmp_path):
    path = tmp_path / "yolov8s-plain.yaml"
    plain = yaml.safe_load(BLOG_YAML)
    del plain["head"][6]
    plain["head"][-1][0] = [15, 18, 21]
    path.write_text(yaml.safe_dump(plain))
    converted = foreign.read_foreign(foreign.read_yaml(path), source=path)
    assert converted.layers == [] and converted.scale == "s" and converted.notice is None


def test_a_huge_repeat_in_the_blogs_dialect_exits_at_once(tmp_path, bra):
    """One code path for both dialects: the same limit bracli's own files meet, before the probe builds."""
    path = blog_edited(tmp_path, "[-1, 1, BiLevelRoutingAttention", "[-1, 1000000000, BiLevelRoutingAttention")
    outcome = bra("profile", path, "--scale", "n", "--gflops", "--imgsz", "64", "--device", "cpu")
    code, err = outcome.code, outcome.err
    assert code == 2 and "row 16 repeats 1000000000 times" in err


def test_huge_channels_in_the_blogs_dialect_are_refused_before_building(tmp_path, bra):
    """The channel numbers of a row are not bounded one by one; the parameters they multiply to are."""
    path = blog_edited(tmp_path, "[-1, 3, C2f, [256]] # 15", "[-1, 3, C2f, [100000000]] # 15")
    path.write_text(path.read_text().replace("[0.33, 0.25, 1024]", "[0.33, 0.25, 100000000]"))
    outcome = bra("profile", path, "--scale", "n", "--gflops", "--imgsz", "64", "--device", "cpu")
    assert outcome.code == 2 and "parameters; bracli builds models of up to 1,000,000,000" in outcome.err


def test_a_blog_row_under_a_bra_key_is_named(tmp_path, bra):
    """``bra:`` makes the file bracli's dialect, where a BRA row starts with its channels."""
    path = tmp_path / BLOG_YAML_NAME
    path.write_text("bra: {}\n" + BLOG_YAML, encoding="utf-8")
    outcome = bra("profile", path, "--scale", "n", "--gflops", "--imgsz", "64", "--device", "cpu")
    code, err = outcome.code, outcome.err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "row 16 (BiLevelRoutingAttention) does not start its args with dim" in err
    assert "Without the bra: key the row is read in the blog's dialect" in err
