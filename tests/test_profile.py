"""`bra profile`: FLOPs against hand counts, ultralytics' figure for vanilla, memory/latency, the command."""

from __future__ import annotations

import io
import json
import math
import threading
from dataclasses import astuple

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from bracli import profile as prof
from bracli import templates
from bracli.engine import models
from bracli.errors import BracliError, UsageError
from bracli.nn import BiLevelRoutingAttention


def bra_flops_by_hand(batch: int, dim: int, height: int, width: int, *, n_win: int, topk: int,
                      qk_dim: int | None = None, side_dwconv: int = 3) -> int:
    """BRA's multiply-adds ×2 from its shape alone.

    The map is zero-padded to an n_win grid and these stages run on the padded tokens: the q/k/v
    projection, the region affinity (S² × S² over qk_dim), each query region's tokens against the
    tokens of its top-k regions (Q·Kᵀ over qk_dim and attention·V over dim; heads only split channels)
    and the depthwise LCE conv on v. The output is cropped back to H×W before the output projection
    (a per-token linear, so cropping first changes no output value), which therefore runs on H·W tokens.
    """
    qk_dim = qk_dim or dim
    padded_h, padded_w = math.ceil(height / n_win) * n_win, math.ceil(width / n_win) * n_win
    tokens = padded_h * padded_w
    regions = n_win * n_win
    per_region = tokens // regions
    projection = tokens * dim * (2 * qk_dim + dim)
    routing = regions * regions * qk_dim
    attention = regions * per_region * topk * per_region * (qk_dim + dim)
    lce = tokens * dim * side_dwconv**2
    output = height * width * dim * dim
    return 2 * batch * (projection + routing + attention + lce + output)


BRA_SHAPES = [  # dim, n_win, heads, topk, qk_dim, side_dwconv, height, width, batch
    (64, 8, 8, 4, None, 3, 40, 40, 1),  # divisible: no padding
    (64, 7, 8, 4, None, 3, 40, 40, 1),  # padded to 42×42
    (32, 8, 4, 4, 16, 3, 20, 28, 2),  # padded, not square, qk_dim ≠ dim, batch 2
    (48, 4, 6, 16, None, 0, 13, 9, 1),  # odd padding on both sides, topk = all regions, no LCE
    (128, 8, 8, 1, None, 5, 64, 64, 1),  # topk 1, wider LCE kernel
]


@pytest.mark.parametrize(("dim", "n_win", "heads", "topk", "qk_dim", "side", "height", "width", "batch"),
                         BRA_SHAPES)
def test_bra_flops_match_hand_count(dim, n_win, heads, topk, qk_dim, side, height, width, batch):
    module = BiLevelRoutingAttention(dim, n_win=n_win, num_heads=heads, topk=topk, qk_dim=qk_dim, side_dwconv=side)
    expected = bra_flops_by_hand(batch, dim, height, width, n_win=n_win, topk=topk, qk_dim=qk_dim, side_dwconv=side)
    count = prof.count_flops(module, (height, width), batch)
    assert count.counted_on == "meta"
    assert count.bra_layers[0] * 1e9 == pytest.approx(expected, rel=0.01)
    assert count.total_gflops == pytest.approx(count.bra_gflops)
    assert count.bra_input_shapes[0] == [batch, dim, height, width]


@pytest.fixture
def two_torch_threads():
    """Two intra-op threads even on a one-core machine, so work split across threads is exercised."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("height", "width"), [(30, 22), (80, 80)])  # padded; many routed chunks
def test_meta_and_real_counts_agree_on_bra(height, width, two_torch_threads):
    module = BiLevelRoutingAttention(64, n_win=7 if height == 30 else 8, num_heads=8, topk=4)
    on_meta = prof.count_flops(module, (height, width), 1)
    on_cpu = prof.count_flops(module, (height, width), 1, device="cpu")
    assert on_cpu.counted_on == "cpu"
    assert on_meta.total_gflops == on_cpu.total_gflops
    assert on_meta.by_operator == on_cpu.by_operator
    assert torch.get_num_threads() == 2


class SplitAcrossThreads(nn.Module):
    """Pixel-by-pixel similarity (L×L over C), its rows shared out to one Python thread per torch thread."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2)[0].T.contiguous()  # L, C
        shares = tokens.chunk(torch.get_num_threads())
        parts: list[torch.Tensor | None] = [None] * len(shares)

        def work(i: int) -> None:
            parts[i] = shares[i] @ tokens.T

        helpers = [threading.Thread(target=work, args=(i,)) for i in range(1, len(shares))]
        for helper in helpers:
            helper.start()
        work(0)
        for helper in helpers:
            helper.join()
        return torch.cat(parts)


def test_work_in_other_threads_is_counted(two_torch_threads):
    tokens, channels = 12 * 10, 16
    count = prof.count_flops(SplitAcrossThreads(), (12, 10), channels=channels, device="cpu")
    assert count.total_gflops * 1e9 == 2 * tokens * tokens * channels
    memory = prof.measure_memory(SplitAcrossThreads(), (12, 10), channels=channels)
    assert memory.forward_bytes >= 2 * tokens * tokens * 4  # every share's product, then their concatenation
    assert torch.get_num_threads() == 2


class TokenAttention(nn.Module):
    """Multi-head self-attention over an NCHW map's pixels, written with matmul or with SDPA."""

    def __init__(self, heads: int, sdpa: bool) -> None:
        super().__init__()
        self.heads, self.sdpa = heads, sdpa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2).reshape(n, h * w, self.heads, c // self.heads).transpose(1, 2)
        if self.sdpa:
            return F.scaled_dot_product_attention(t, t, t)
        return ((t @ t.transpose(-1, -2)) * (c // self.heads) ** -0.5).softmax(-1) @ t


@pytest.mark.parametrize("device", ["meta", "cpu"])  # on CPU, SDPA runs its flash kernel; on meta, its math path
def test_attention_counts_the_same_with_matmul_or_sdpa(device):
    batch, channels, heads, h, w = 2, 32, 4, 6, 8
    expected = 2 * batch * heads * (h * w) * (h * w) * 2 * (channels // heads)
    counts = [prof.count_flops(TokenAttention(heads, sdpa), (h, w), batch, channels=channels, device=device)
              for sdpa in (False, True)]
    assert [c.total_gflops * 1e9 for c in counts] == [pytest.approx(expected)] * 2


def test_bra_layers_inside_a_model_match_hand_count():
    rendered = templates.render("n", ["p3", "p5"], n_win=7)
    model = models.build(rendered)
    count = prof.count_flops(model, 320)
    layers = {layer["index"]: layer for layer in rendered["bra"]["layers"]}
    assert set(count.bra_layers) == set(layers)
    for index, layer in layers.items():
        side = 320 // layer["stride"]  # 40 at P3 (padded to 42), 10 at P5 (padded to 14)
        assert count.bra_input_shapes[index] == [1, layer["channels"], side, side]
        expected = bra_flops_by_hand(1, layer["channels"], side, side, n_win=7, topk=4)
        assert count.bra_layers[index] * 1e9 == pytest.approx(expected, rel=0.01)
        assert count.per_layer[index] == pytest.approx(count.bra_layers[index])
        assert count.bra_shares[index] == pytest.approx(count.bra_layers[index] / count.total_gflops)
    assert sum(count.per_layer.values()) == pytest.approx(count.total_gflops)
    assert count.bra_share == pytest.approx(sum(count.bra_shares.values()))


def test_counting_leaves_the_model_as_it_was():
    model = models.build(templates.render("n", ["p3"]))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prof.count_flops(model, 128)
    assert model.training
    assert all(not layer._forward_hooks and not layer._forward_pre_hooks for layer in model.model)
    after = model.state_dict()
    assert all(after[k].device.type == "cpu" and torch.equal(after[k], v) for k, v in before.items())


def test_count_survives_a_cached_head_and_matches_a_real_forward():
    model = models.build(templates.render("n", ["p3"])).eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 96, 96))  # the head caches real anchors for this size
    on_meta = prof.count_flops(model, 96)
    assert on_meta.counted_on == "meta"
    assert on_meta.total_gflops == prof.count_flops(model, 96, device="cpu").total_gflops


class ReadsValues(nn.Module):
    """A forward that branches on a value: cannot run on shapes alone."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y if y.abs().sum().item() >= 0 else -y


def test_count_falls_back_to_the_real_device_when_values_are_read():
    count = prof.count_flops(ReadsValues(), (8, 10), 1, channels=4)
    assert count.counted_on == "cpu"
    assert count.total_gflops * 1e9 == 2 * 8 * 10 * 6 * 4 * 9


def test_vanilla_yolov8n_at_640_matches_the_published_figure_and_ultralytics():
    model = models.build(templates.render("n", []))
    count = prof.count_flops(model, 640)
    assert 8.7 <= count.total_gflops <= 8.9
    assert count.bra_layers == {} and count.bra_share == 0.0
    ultralytics = prof.ultralytics_gflops(model, 640)
    assert ultralytics == pytest.approx(count.total_gflops, rel=0.03)


def test_tracker_counts_live_bytes_and_their_peak():
    known = torch.zeros(100)
    with prof.TensorMemoryTracker([known]) as tracker:
        a = torch.empty(1000)  # 4000 bytes
        b = torch.empty(2000)  # 8000: peak 12000
        del a
        c = torch.empty(500)  # 2000 on top of b's 8000
        known.add_(1)  # in place on a tensor that existed before: not an allocation
        view = b[:10]  # a view shares b's storage
    assert tracker.peak_bytes == 12000
    assert tracker.live_bytes == 10000
    del b, c, view


def test_memory_of_known_layers():
    conv = nn.Conv2d(3, 8, 1, bias=False)  # output 1×8×32×32 float32 = 32768 bytes
    memory = prof.measure_memory(conv, 32, 1, channels=3)
    assert memory.forward_bytes == 32768
    assert 32768 + conv.weight.numel() * 4 <= memory.train_bytes <= 32768 + 1024  # + weight gradient, scalars
    assert memory.method == prof.CPU_MEMORY_METHOD
    assert conv.weight.grad is None
    two = nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), nn.ReLU())  # conv output and ReLU output alive together
    assert prof.measure_memory(two, 32, 1, channels=3).forward_bytes == 2 * 32768


def test_latency_reports_median_and_spread():
    latency = prof.measure_latency(nn.Conv2d(3, 8, 3), 32, 2, warmup=1, runs=5, channels=3)
    assert 0 < latency.p10_ms <= latency.median_ms <= latency.p90_ms
    assert (latency.runs, latency.warmup, latency.batch) == (5, 1, 2)
    assert latency.cpu_threads == torch.get_num_threads() and not latency.synchronized
    with pytest.raises(UsageError):
        prof.measure_latency(nn.Conv2d(3, 8, 3), 32, runs=0, channels=3)


@pytest.fixture(scope="module")
def profiled(tmp_path_factory) -> prof.Profile:
    """One full profile (all figures, vanilla comparison) of a rendered YAML at two small sizes."""
    rendered = templates.render("n", ["p3"])
    path = tmp_path_factory.mktemp("model") / templates.model_filename("n", ["p3"])
    path.write_text(templates.to_yaml(rendered, templates.default_header(rendered)))
    return prof.profile(path, imgsz=[64, (64, 96)], runs=2, warmup=0)


def test_profile_of_a_yaml_against_vanilla(profiled):
    model, baseline = profiled.model, profiled.baseline
    assert model.name == "yolov8n-bra-p3" and baseline.name == "yolov8n"
    assert model.bra_placements == {16: "p3"} and model.bra_n_win == {16: 8}
    built = models.build(templates.render("n", ["p3"]))
    assert model.params == sum(p.numel() for p in built.parameters())
    assert model.bra_params == {16: sum(p.numel() for p in built.model[16].parameters())}
    assert [s.imgsz for s in model.sizes] == [(64, 64), (64, 96)]
    for mine, base, ratio in zip(model.sizes, baseline.sizes, profiled.ratios(), strict=True):
        assert mine.flops.total_gflops > base.flops.total_gflops
        assert mine.flops.total_gflops - base.flops.total_gflops == pytest.approx(mine.flops.bra_gflops, rel=0.02)
        assert ratio["gflops"] == pytest.approx(mine.flops.total_gflops / base.flops.total_gflops)
        assert ratio["params"] == pytest.approx(model.params / baseline.params)
        assert ratio["latency"] == pytest.approx(mine.latency.median_ms / base.latency.median_ms)
        assert ratio["train_memory"] == pytest.approx(mine.memory.train_bytes / base.memory.train_bytes)
        assert mine.ultralytics_gflops > 0 and mine.memory.forward_bytes > 0
    assert json.loads(json.dumps(profiled.to_dict()))["model"]["sizes"][1]["imgsz"] == [64, 96]


def test_tables_show_what_json_holds(profiled):
    from bracli.commands.profile import _ms, _render

    console = Console(width=250, record=True, file=io.StringIO())
    _render(profiled, console)
    out = console.export_text()
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


def test_plot(profiled, tmp_path):
    from bracli.errors import OutputExistsError
    from bracli.profile_plot import plot_profile

    path = plot_profile(profiled, tmp_path / "cost.png")
    assert path.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(OutputExistsError):
        plot_profile(profiled, path)
    one_size = prof.Profile(model=prof.ModelProfile("m", "n", 1, {}, {}, {}, profiled.model.sizes[:1]),
                            baseline=None, device="cpu", batch=1, cpu_threads=1)
    with pytest.raises(UsageError, match="two --imgsz"):
        plot_profile(one_size, tmp_path / "one.png")


def test_profile_of_a_checkpoint(tmp_path):
    path = tmp_path / "best.pt"
    torch.save({"model": models.build(templates.render("s", ["p4"]))}, path)
    result = prof.profile(path, imgsz=[64], latency=False, memory=False)
    assert result.model.name == "best.pt" and result.baseline.name == "yolov8s"
    assert set(result.model.sizes[0].flops.bra_layers) == set(result.model.bra_params) == {19}
    assert result.model.sizes[0].latency is None and result.model.sizes[0].memory is None


def test_profile_options_are_checked():
    with pytest.raises(UsageError, match="multiple of the model's stride 32"):
        prof.profile(None, imgsz=[100], latency=False, memory=False, compare=False)
    with pytest.raises(UsageError, match="not both"):
        prof.resolve_model("x.yaml", scale="n")
    with pytest.raises(UsageError, match="unknown placement"):
        prof.resolve_model(None, bra_after=["p9"])
    with pytest.raises(UsageError, match="neither"):
        prof.resolve_model("weights.onnx")
    assert prof.resolve_model(templates.render("n", ["p3", "p5"]))[1] == "yolov8n-bra-p3-p5"
    assert prof.parse_imgsz(["320,640", "480x640", "640"]) == [(320, 320), (640, 640), (480, 640)]
    with pytest.raises(UsageError):
        prof.parse_imgsz(["640px"])
    assert prof.torch_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(BracliError, match="no CUDA GPU"):
            prof.torch_device("0")
    with pytest.raises(UsageError):
        prof.torch_device("tpu")


def test_no_comparison_without_a_scale():
    model = models.build(templates.render("s", ["p4"]))
    assert prof.vanilla_for(model)[1] == "yolov8s"
    del model.yaml["scale"]
    assert prof.vanilla_for(model) is None


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
    monkeypatch.setattr("bracli.ui.console", Console(width=250, highlight=False))
    monkeypatch.setattr("bracli.ui.err_console", Console(width=250, stderr=True, highlight=False))
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
    assert f"✔ wrote {out_json}" in out


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
    (["--imgsz", "100"], 2, "multiple of the model's stride"),
    (["--no-gflops", "--no-latency", "--no-memory"], 2, "nothing to measure"),
    (["--imgsz", "32", "--memory", "--no-compare"], 1, "use a larger --imgsz or --batch"),
])
def test_command_errors_are_one_line(wide_bra, monkeypatch, tmp_path, args, code, message):
    monkeypatch.chdir(tmp_path)
    got, _, err = astuple(wide_bra("profile", *args))
    assert got == code
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "one.png").exists()


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
