"""BiLevelRoutingAttention against plain references, plus export, precision and determinism checks."""

from __future__ import annotations

import io

import pytest
import torch

from bracli.nn import BiLevelRoutingAttention, routed
from tests.nn.reference import bra_gather, bra_loops, full_attention

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

RELEASED_KEYS = {"qkv.qkv.weight", "qkv.qkv.bias", "lepe.weight", "lepe.bias", "wo.weight", "wo.bias"}

# (batch, dim, h, w, n_win, heads, topk, qk_dim, side_dwconv[, region_size])
SHAPES = {
    "divisible": (2, 16, 12, 12, 3, 4, 2, None, 3),
    "not-divisible": (1, 16, 9, 11, 3, 2, 3, None, 3),
    "h-below-n_win": (2, 8, 3, 10, 4, 2, 2, None, 3),
    "both-below-n_win": (1, 8, 2, 3, 4, 2, 5, None, 5),
    "topk-1": (2, 16, 10, 7, 3, 4, 1, None, 3),
    "qk_dim-differs": (1, 16, 8, 13, 4, 2, 3, 8, 3),
    "no-lepe": (2, 16, 7, 9, 2, 4, 2, None, 0),
    "one-region": (1, 8, 5, 6, 1, 2, 1, None, 3),
    "region_size-grid-grows": (2, 16, 13, 9, 2, 4, 3, None, 3, 4),  # 4×3 regions of 4×3 tokens, padded
    "region_size-n_win-floor": (1, 16, 7, 6, 3, 2, 4, None, 3, 5),  # small map: n_win×n_win, as without it
}


@pytest.fixture(params=["chunked", "fused"])
def path(request, monkeypatch):
    """Run a test through each attention path; the fused one is what GPU, export and compile use."""
    monkeypatch.setattr(routed, "use_chunked", lambda x, head_dim: request.param == "chunked")
    return request.param


def make(shape, dtype=torch.float32, seed=0):
    n, dim, h, w, n_win, heads, topk, qk_dim, side, *region_size = shape
    torch.manual_seed(seed)
    module = BiLevelRoutingAttention(dim, n_win, heads, topk=topk, qk_dim=qk_dim, side_dwconv=side,
                                     region_size=region_size[0] if region_size else None).to(dtype)
    with torch.no_grad():  # non-zero biases, so padded tokens differ from zeros
        for parameter in module.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return module, torch.randn(n, dim, h, w, dtype=dtype)


def call(module, x):
    return module(x)


def run(module, x, fn, grad_out):
    """Output, input gradient and parameter gradients of one forward+backward of ``fn(module, x)``."""
    module.zero_grad()
    x = x.detach().requires_grad_()
    out = fn(module, x)
    out.backward(grad_out)
    return [out.detach(), x.grad, *(p.grad.clone() for p in module.parameters())]


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_forward_matches_loop_reference(shape, path):
    module, x = make(shape)
    expected = bra_loops(module, x)
    assert module(x).shape == x.shape
    torch.testing.assert_close(module(x), expected, atol=1e-5, rtol=0)
    with torch.no_grad():  # inference takes a path without autograd bookkeeping
        torch.testing.assert_close(module(x), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_gradients_match_gather_reference(shape, path):
    module, x = make(shape, dtype=torch.float64)
    grad_out = torch.randn_like(x)
    expected = run(module, x, bra_gather, grad_out)
    actual = run(module, x, call, grad_out)
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("side", [3, 0])
def test_topk_all_regions_is_full_attention(side, path):
    module, x = make((2, 16, 7, 10, 3, 4, 9, None, side))
    torch.testing.assert_close(module(x), full_attention(module, x), atol=1e-5, rtol=0)


def test_fused_path_reaches_the_fused_cpu_kernel(monkeypatch):
    """Inputs must have a unit last stride, or SDPA silently falls back to materialising attention."""
    kernel = "_scaled_dot_product_flash_attention_for_cpu"
    if not hasattr(torch.ops.aten, kernel):
        pytest.skip(f"this torch has no {kernel}")
    monkeypatch.setattr(routed, "use_chunked", lambda x, head_dim: False)
    module, x = make(SHAPES["divisible"])
    with torch.profiler.profile() as profiler:
        module(x).sum().backward()
    names = {event.name for event in profiler.events()}
    assert f"aten::{kernel}" in names and f"aten::{kernel}_backward" in names


@pytest.fixture
def torch_threads():
    """Sets torch's thread count for a test and restores it afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_many_chunks_agree_with_one(monkeypatch, torch_threads):
    """Small chunks give the result of one big chunk."""
    torch_threads(1)
    module, x = make((2, 16, 16, 16, 4, 4, 3, None, 3), dtype=torch.float64)
    grad_out = torch.randn_like(x)
    single = run(module, x, call, grad_out)
    monkeypatch.setattr(routed, "CHUNK_BYTES", 1)
    for got, want in zip(run(module, x, call, grad_out), single, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_fused_groups_agree_with_one_call(monkeypatch):
    """On CPU the fused path goes through query regions in groups; one region per group changes nothing."""
    monkeypatch.setattr(routed, "use_chunked", lambda x, head_dim: False)
    module, x = make((2, 16, 16, 16, 4, 4, 3, None, 3), dtype=torch.float64)
    grad_out = torch.randn_like(x)
    whole = run(module, x, call, grad_out)
    monkeypatch.setattr(routed, "FUSED_CHUNK_BYTES", 1)
    for got, want in zip(run(module, x, call, grad_out), whole, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_path_follows_head_width_and_precision():
    x = torch.zeros(1, 8, 4, 4)
    assert routed.use_chunked(x, 8)
    assert routed.use_chunked(x.double(), 8)
    assert not routed.use_chunked(x, 16)  # wide heads: the fused kernel is as fast
    assert not routed.use_chunked(x.half(), 8)
    assert not routed.use_chunked(x.to("meta"), 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not routed.use_chunked(x, 8)


@pytest.mark.parametrize("path_name", ["chunked", "fused"])
def test_thread_count_does_not_change_the_result(monkeypatch, torch_threads, path_name):
    monkeypatch.setattr(routed, "use_chunked", lambda x, head_dim: path_name == "chunked")
    monkeypatch.setattr(routed, "CHUNK_BYTES", 2**12)  # several chunks, split differently per thread count
    module, x = make((2, 16, 16, 16, 4, 4, 3, None, 3), dtype=torch.float64)
    grad_out = torch.randn_like(x)
    torch_threads(1)
    single = run(module, x, call, grad_out)
    torch_threads(3)
    for got, want in zip(run(module, x, call, grad_out), single, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_attention_leaves_the_thread_settings_alone(monkeypatch, path):
    """Thread counts are process-wide: changing them, even briefly, would throttle other torch code."""
    def refuse(*args):
        raise AssertionError("BRA changed torch's thread settings")

    monkeypatch.setattr(routed, "CHUNK_BYTES", 1)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # as on a multi-core machine, where threads get used
    for name in ("set_num_threads", "set_num_interop_threads"):
        monkeypatch.setattr(torch, name, refuse)
    module, x = make((2, 16, 16, 16, 4, 4, 3, None, 3))
    module(x.requires_grad_()).sum().backward()
    with torch.inference_mode():
        module(x)


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_grad_free_modes_give_the_same_output(monkeypatch, mode):
    """Predictors run under inference mode, validation under no_grad; both skip the autograd function."""
    module, x = make((2, 16, 16, 16, 4, 4, 3, None, 3))
    expected = module(x).detach()
    monkeypatch.setattr(routed, "CHUNK_BYTES", 1)
    with mode():
        torch.testing.assert_close(module(x), expected)


def test_deterministic_mode_reproduces_bitwise():
    module, x = make((2, 16, 11, 13, 3, 4, 3, None, 3))
    grad_out = torch.randn_like(x)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        runs = [run(module, x, call, grad_out) for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(before)
    for first, second in zip(*runs, strict=True):
        assert torch.equal(first, second)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cpu_autocast_runs_with_finite_gradients(dtype):
    module, x = make((2, 32, 10, 13, 4, 4, 3, None, 3))
    x.requires_grad_()
    with torch.autocast("cpu", dtype=dtype):
        out = module(x)
    assert out.dtype == dtype
    out.float().square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())
    assert_close_where_routes_agree(module, x.detach(), out, dtype)


def assert_close_where_routes_agree(module, x, low: torch.Tensor, dtype: torch.dtype) -> None:
    """Compare a low-precision output with fp32 on the query regions whose routing did not change.

    With random weights, region affinities are close together and low-precision q/k legitimately
    flip some near-tied routes; a flipped region attends elsewhere, so only agreeing ones compare.
    """
    with torch.autocast(x.device.type, dtype=dtype):
        low_routes = module.route(x).sort(-1).values
    agree = (low_routes == module.route(x).sort(-1).values).all(-1)  # (n, n_win²)
    assert agree.float().mean() > 0.5, "most routes should survive the lower precision"
    n, _, h, w = x.shape
    s = module.n_win
    grid = agree.view(n, 1, s, s).float()
    rh, rw = -(-h // s), -(-w // s)
    pixels = grid.repeat_interleave(rh, 2).repeat_interleave(rw, 3)[..., :h, :w].bool().expand_as(low)
    full = module(x).detach()
    torch.testing.assert_close(low.float()[pixels], full[pixels], atol=0.05, rtol=0.05)


def test_state_dict_has_released_keys_and_loads_strictly():
    dim, qk_dim, side = 32, 16, 5
    module = BiLevelRoutingAttention(dim, 7, 8, qk_dim=qk_dim, side_dwconv=side)
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert shapes == {"qkv.qkv.weight": (2 * qk_dim + dim, dim), "qkv.qkv.bias": (2 * qk_dim + dim,),
                      "lepe.weight": (dim, 1, side, side), "lepe.bias": (dim,),
                      "wo.weight": (dim, dim), "wo.bias": (dim,)}
    released = {k: torch.randn(v) for k, v in shapes.items()}
    module.load_state_dict(released, strict=True)
    assert torch.equal(module.qkv.qkv.weight, released["qkv.qkv.weight"])
    assert set(BiLevelRoutingAttention(dim, side_dwconv=0).state_dict()) == RELEASED_KEYS - {"lepe.weight",
                                                                                              "lepe.bias"}


def test_positional_arguments_follow_the_yolo_variant():
    module = BiLevelRoutingAttention(64, 7, 8)
    assert (module.dim, module.n_win, module.num_heads, module.topk, module.qk_dim) == (64, 7, 8, 4, 64)
    assert module.side_dwconv == 3 and module.auto_pad
    assert module.scale == pytest.approx(64 ** -0.5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dim": 30, "num_heads": 8}, "dim=30"),
    ({"dim": 32, "num_heads": 8, "qk_dim": 12}, "qk_dim=12"),
    ({"dim": 32, "topk": 0}, "topk"),
    ({"dim": 32, "n_win": 0}, "n_win"),
    ({"dim": 32, "side_dwconv": 4}, "side_dwconv"),
    ({"dim": 32, "n_win": 2, "topk": 5}, "topk=5"),
])
def test_invalid_construction_names_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BiLevelRoutingAttention(**kwargs)


def test_without_auto_pad_an_indivisible_map_is_an_error():
    module = BiLevelRoutingAttention(8, 4, 2, auto_pad=False)
    assert module(torch.randn(1, 8, 8, 12)).shape == (1, 8, 8, 12)
    with pytest.raises(ValueError, match="not divisible by n_win=4"):
        module(torch.randn(1, 8, 9, 12))


def test_channels_last_input_gives_the_same_output():
    module, x = make(SHAPES["not-divisible"])
    torch.testing.assert_close(module(x.to(memory_format=torch.channels_last)), module(x), atol=1e-6, rtol=0)


def test_runs_on_the_meta_device():
    """FLOP counting runs the module on meta tensors (shapes only)."""
    module = BiLevelRoutingAttention(16, 4, 2).to("meta")
    assert module(torch.zeros(2, 16, 9, 13, device="meta")).shape == (2, 16, 9, 13)


def test_wrong_channel_count_is_a_clear_error():
    with pytest.raises(ValueError, match="expected 8 input channels, got 16"):
        BiLevelRoutingAttention(8, 4, 2)(torch.randn(1, 16, 8, 8))


def test_route_lists_the_regions_each_query_region_attends():
    module, x = make((2, 16, 9, 11, 3, 4, 3, None, 3))
    routes = module.route(x)
    assert routes.shape == (2, 9, 3)
    assert routes.min() >= 0 and routes.max() < 9
    assert all(len(set(row.tolist())) == 3 for row in routes.flatten(0, 1))
    # the module with topk=1 keeps exactly the first choice of the full ranking
    module.topk = 1
    assert torch.equal(module.route(x)[..., 0], routes[..., 0])


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch's note that jit.trace is deprecated
def test_torchscript_trace_generalises_to_other_sizes():
    module, x = make((1, 16, 12, 12, 4, 4, 2, None, 3))
    traced = torch.jit.trace(module.eval(), x)
    for shape in [(1, 16, 12, 12), (2, 16, 9, 14), (1, 16, 3, 5)]:
        other = torch.randn(*shape)
        torch.testing.assert_close(traced(other), module(other), atol=1e-5, rtol=0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's note on the TorchScript-based exporter
@pytest.mark.parametrize("dynamic", [False, True], ids=["fixed", "dynamic"])
def test_onnx_export_matches_torch(dynamic):
    ort = pytest.importorskip("onnxruntime")
    module, x = make((1, 16, 20, 22, 4, 2, 3, None, 3))
    module.eval()
    buffer = io.BytesIO()
    axes = {"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}} if dynamic else None
    torch.onnx.export(module, (x,), buffer, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"],
                      dynamic_axes=axes)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    sizes = [(1, 16, 20, 22), (2, 16, 17, 29), (1, 16, 3, 5)] if dynamic else [(1, 16, 20, 22)]
    for shape in sizes:
        other = torch.randn(*shape)
        got = torch.from_numpy(session.run(None, {"x": other.numpy()})[0])
        torch.testing.assert_close(got, module(other).detach(), atol=1e-4, rtol=0)


def test_torch_compile_captures_one_graph():
    module, x = make((2, 16, 10, 12, 4, 4, 3, None, 3))
    compiled = torch.compile(module, backend="eager", fullgraph=True, dynamic=False)
    torch.testing.assert_close(compiled(x), module(x), atol=1e-5, rtol=0)


@pytest.fixture
def exact_cuda():
    """Full fp32 on CUDA (cuDNN convs default to TF32, about 1e-3 off)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield torch.device("cuda")
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@cuda
@pytest.mark.parametrize("shape", [SHAPES[k] for k in ("not-divisible", "both-below-n_win", "qk_dim-differs")],
                         ids=["not-divisible", "both-below-n_win", "qk_dim-differs"])
def test_cuda_matches_reference(shape, exact_cuda):
    module, x = make(shape)
    grad_out = torch.randn_like(x)
    expected = run(module, x, bra_gather, grad_out)
    actual = run(module.to(exact_cuda), x.to(exact_cuda), call, grad_out.to(exact_cuda))
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got.cpu(), want, atol=1e-5, rtol=1e-5)


@cuda
def test_cuda_fp32_does_not_materialise_attention(exact_cuda):
    """The fused kernels keep memory linear in tokens; a math fallback would store the attention."""
    module, x = make((2, 64, 80, 80, 8, 8, 4, None, 3))
    module, x = module.to(exact_cuda), x.to(exact_cuda).requires_grad_()
    attention_bytes = 2 * 64 * 8 * 100 * 400 * 4  # regions x heads x queries x keys x fp32
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    module(x).sum().backward()
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - start < attention_bytes


@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_runs_with_finite_gradients(dtype):
    module, x = make((2, 64, 20, 20, 8, 8, 4, None, 3))
    module, x = module.cuda(), x.cuda().requires_grad_()
    with torch.autocast("cuda", dtype=dtype):
        out = module(x)
    assert out.dtype == dtype
    out.float().square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())
    assert_close_where_routes_agree(module, x.detach(), out, dtype)


@cuda
def test_cuda_deterministic_mode_runs_and_agrees(exact_cuda):
    module, x = make((2, 32, 24, 24, 4, 4, 4, None, 3))
    module, x = module.to(exact_cuda), x.to(exact_cuda)
    grad_out = torch.randn_like(x)
    free = run(module, x, call, grad_out)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        strict = run(module, x, call, grad_out)
    finally:
        torch.use_deterministic_algorithms(before)
    for got, want in zip(strict, free, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ region_size


def test_region_grid_follows_the_map_with_region_size():
    fixed = BiLevelRoutingAttention(64, 8, 2, region_size=None)
    sized = BiLevelRoutingAttention(64, 8, 2, region_size=10)
    assert fixed.region_grid(160, 120) == (8, 8, 20, 15)
    assert sized.region_grid(80, 80) == (8, 8, 10, 10)  # up to n_win · region_size: the fixed grid
    assert sized.region_grid(20, 20) == (8, 8, 3, 3)  # n_win is the floor
    assert sized.region_grid(160, 120) == (16, 12, 10, 10)
    assert sized.region_grid(81, 80) == (9, 8, 9, 10)  # at most region_size tokens, least padding


def test_region_size_changes_nothing_up_to_its_threshold():
    module, x = make((1, 16, 12, 12, 3, 4, 2, None, 3))
    sized = BiLevelRoutingAttention(16, 3, 4, topk=2, region_size=4)
    sized.load_state_dict(module.state_dict())
    torch.testing.assert_close(sized(x), module(x), atol=0, rtol=0)
    larger = torch.randn(1, 16, 20, 12)  # 5×3 regions of 4×4 tokens instead of 3×3 of 7×4
    assert sized.route(larger).shape == (1, 15, 2)
    assert module.route(larger).shape == (1, 9, 2)
    torch.testing.assert_close(sized(larger), bra_loops(sized, larger), atol=1e-5, rtol=0)


def test_region_size_attention_cost_grows_linearly():
    """Tokens ×4 with the grid following the map: FLOPs ×4 (plus the small regions² routing term), not ×16."""
    from torch.utils.flop_counter import FlopCounterMode

    def flops(module, side):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(torch.zeros(1, 16, side, side, device="meta"))
        return counter.get_total_flops()

    fixed = BiLevelRoutingAttention(16, 4, 2, topk=2).to("meta")
    sized = BiLevelRoutingAttention(16, 4, 2, topk=2, region_size=4).to("meta")
    assert flops(sized, 16) == flops(fixed, 16)
    assert flops(sized, 32) == pytest.approx(4 * flops(sized, 16), rel=0.03)
    assert flops(fixed, 32) > 6 * flops(fixed, 16)


def test_invalid_region_size_names_the_value():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="region_size"):
            BiLevelRoutingAttention(16, 4, 2, region_size=bad)


def test_modules_saved_before_region_size_existed_still_run():
    """Pickled modules carry their instance attributes only; the class supplies the missing default."""
    module, x = make(SHAPES["divisible"])
    expected = module(x)
    del module.region_size
    assert module.region_size is None
    torch.testing.assert_close(module(x), expected, atol=0, rtol=0)
    assert "region_size" not in repr(module)
    assert "region_size=5" in repr(BiLevelRoutingAttention(16, 4, 2, region_size=5))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_export_with_region_size_follows_the_grid():
    """Exported once, the graph re-derives the grid for every input size (it grows past 4·3 = 12)."""
    ort = pytest.importorskip("onnxruntime")
    module, x = make((1, 16, 12, 12, 3, 2, 3, None, 3, 4))
    module.eval()
    buffer = io.BytesIO()
    axes = {"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}}
    torch.onnx.export(module, (x,), buffer, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"],
                      dynamic_axes=axes)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(1, 16, 12, 12), (2, 16, 21, 30), (1, 16, 5, 3)]:
        other = torch.randn(*shape)
        got = torch.from_numpy(session.run(None, {"x": other.numpy()})[0])
        torch.testing.assert_close(got, module(other).detach(), atol=1e-4, rtol=0)


def test_torch_compile_with_region_size_captures_one_graph():
    module, x = make((2, 16, 18, 10, 2, 4, 3, None, 3, 4))
    compiled = torch.compile(module, backend="eager", fullgraph=True, dynamic=False)
    torch.testing.assert_close(compiled(x), module(x), atol=1e-5, rtol=0)
