"""Forward+backward time and peak memory of BiLevelRoutingAttention against two baselines.

Baselines:
- ``gather-ref``: the released legacy strategy (expand + gather of routed k/v, explicit matmul and
  softmax), as written in ``tests/nn/reference.py``; outputs are checked equal before timing.
- ``full-attn``: global attention over the whole (padded) map with the same projections and LCE,
  using ``F.scaled_dot_product_attention`` (the fastest global attention a user would reach for).

Timing: every variant runs once to warm up, then ``--reps`` rounds in which the variants take turns,
so load from other processes hits all of them alike. The table shows the fastest round of each
(other load only ever adds time, so the minimum is the best estimate of the undisturbed cost); the
JSON output also keeps the median and every round. Peak memory: bytes allocated above the level
before the call, highest point during forward+backward (CPU: profiler allocation events; CUDA: the
caching allocator's peak).
GFLOP/s uses the nominal cost of the algorithm: 3x the forward FLOPs of the reference
(``torch.utils.flop_counter``; matmul and conv only, softmax not counted). Global attention's
nominal cost is the same with the routed attention term ``2·P·topk·T·(qk_dim + dim)`` per image
replaced by ``2·P·P·(qk_dim + dim)`` (P padded tokens, T tokens per region).

Run: ``.venv/bin/python benchmarks/bra_bench.py`` (add ``--device cuda`` on a GPU, ``--json out.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bracli.nn import BiLevelRoutingAttention  # noqa: E402
from tests.nn.reference import bra_gather  # noqa: E402

# (label, channels, side): P3/P4/P5 of a 640 input for YOLOv8 scales n and s.
YOLO_SHAPES = [("n P3", 64, 80), ("n P4", 128, 40), ("n P5", 256, 20),
               ("s P3", 128, 80), ("s P4", 256, 40), ("s P5", 512, 20)]
GROWTH_SIDES = [(320, 40), (640, 80), (1280, 160)]  # input size -> P3 side, scale n (64 channels)


def full_attention(module: BiLevelRoutingAttention, x: torch.Tensor) -> torch.Tensor:
    """Global multi-head attention over the padded map with the module's weights, plus LCE."""
    n, c, h, w = x.shape
    rows, cols, region_h, region_w = module.region_grid(h, w)
    xp = F.pad(x, (0, cols * region_w - w, 0, rows * region_h - h))
    hp, wp = xp.shape[-2:]
    qkv = F.conv2d(xp, module.qkv.qkv.weight[:, :, None, None], module.qkv.qkv.bias).flatten(2)
    q, k, v = qkv.split([module.qk_dim, module.qk_dim, c], dim=1)

    def heads(t: torch.Tensor) -> torch.Tensor:  # contiguous, or the fused kernels fall back to the math path
        return t.reshape(n, module.num_heads, -1, hp * wp).transpose(-1, -2).contiguous()

    out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), scale=module.scale)
    out = out.transpose(-1, -2).reshape(n, c, hp, wp)
    if module.lepe is not None:
        out = out + module.lepe(v.reshape(n, c, hp, wp))
    return F.conv2d(out[:, :, :h, :w], module.wo.weight[:, :, None, None], module.wo.bias)


def variants(module: BiLevelRoutingAttention, with_full: bool) -> dict[str, Callable]:
    found = {"bracli": module, "gather-ref": lambda x: bra_gather(module, x)}
    if with_full:
        found["full-attn"] = lambda x: full_attention(module, x)
    return found


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step(fn: Callable, x: torch.Tensor, grad: torch.Tensor) -> None:
    fn(x).backward(grad)
    x.grad = None


def peak_bytes(fn: Callable, x: torch.Tensor, grad: torch.Tensor) -> int:
    """Highest allocation above the starting level during one forward+backward."""
    if x.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        step(fn, x, grad)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - start
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(fn, x, grad)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    level = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        level += event.nbytes()
        peak = max(peak, level)
    return peak


def forward_flops(module: BiLevelRoutingAttention, x: torch.Tensor) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        bra_gather(module, x)
    return float(counter.get_total_flops())


def measure(channels: int, side: int, batch: int, args: argparse.Namespace, with_full: bool) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    heads = channels // 32 if args.heads == "per32" else int(args.heads)
    module = BiLevelRoutingAttention(channels, n_win=args.n_win, num_heads=heads, topk=args.topk,
                                     region_size=args.region_size).to(device)
    x = torch.randn(batch, channels, side, side, device=device, requires_grad=True)
    grad = torch.randn(batch, channels, side, side, device=device)
    fns = variants(module, with_full)
    with torch.no_grad():
        error = (module(x) - bra_gather(module, x)).abs().max().item()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        step(fn, x, grad)
    for _ in range(args.reps):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            step(fn, x, grad)
            sync(device)
            times[name].append(time.perf_counter() - start)
    memory = {name: peak_bytes(fn, x, grad) for name, fn in fns.items()} if not args.no_memory else {}
    flops = 3 * forward_flops(module, x.detach())
    rows, cols, region_h, region_w = module.region_grid(side, side)
    tokens, per_region = rows * region_h * cols * region_w, region_h * region_w
    routed = 3 * 2 * batch * tokens * args.topk * per_region * (module.qk_dim + channels)
    global_ = 3 * 2 * batch * tokens * tokens * (module.qk_dim + channels)
    row = {"batch": batch, "channels": channels, "side": side, "grid": f"{rows}×{cols} of {region_h}×{region_w}",
           "region_size": args.region_size, "max_abs_error": error, "nominal_gflop": flops / 1e9,
           "full_nominal_gflop": (flops - routed + global_) / 1e9}
    for name in fns:
        row[f"{name}_s"] = min(times[name])
        row[f"{name}_median_s"] = statistics.median(times[name])
        row[f"{name}_rounds_s"] = times[name]
        if memory:
            row[f"{name}_mib"] = memory[name] / 2**20
    return row


def deterministic_rows(args: argparse.Namespace) -> list[dict]:
    """The goal shape with and without deterministic algorithms (the ultralytics default)."""
    rows = []
    for mode in (False, True):
        torch.use_deterministic_algorithms(mode, warn_only=True)
        try:
            row = measure(64, 80, 8, args, with_full=False)
        finally:
            torch.use_deterministic_algorithms(False)
        rows.append({"deterministic": mode, **row})
    return rows


def fmt_table(rows: list[dict], keys: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(title for title, _ in keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row, key) for _, key in keys) + " |")
    return "\n".join(lines)


def fmt(row: dict, key: str) -> str:
    if key == "ratio_time":
        return f"{row['bracli_s'] / row['gather-ref_s']:.2f}x"
    if key == "ratio_mem":
        return f"{row['bracli_mib'] / row['gather-ref_mib']:.3f}x" if "bracli_mib" in row else "-"
    if key == "gflops":
        return f"{row['nominal_gflop'] / row['bracli_s']:.1f}"
    if key == "shape":
        return f"{row['batch']}x{row['channels']}x{row['side']}x{row['side']}"
    value = row.get(key)
    if value is None:
        return "-"
    if key.endswith("_s"):
        return f"{value * 1e3:.1f}"
    if key.endswith("_mib"):
        return f"{value:.0f}"
    if key == "max_abs_error":
        return f"{value:.1e}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


MAIN_KEYS = [("shape", "shape"), ("label", "label"), ("bracli ms", "bracli_s"), ("gather-ref ms", "gather-ref_s"),
             ("time ratio", "ratio_time"), ("bracli MiB", "bracli_mib"), ("gather-ref MiB", "gather-ref_mib"),
             ("mem ratio", "ratio_mem"), ("nominal GFLOP", "nominal_gflop"), ("bracli GFLOP/s", "gflops"),
             ("full-attn ms", "full-attn_s"), ("full-attn MiB", "full-attn_mib"), ("max abs err", "max_abs_error")]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--n-win", type=int, default=8)
    parser.add_argument("--heads", default="8", help="heads per layer, or 'per32': channels / 32")
    parser.add_argument("--topk", type=int, default=4)
    parser.add_argument("--only", nargs="*", default=None, help="labels to run, e.g. 'n P3'")
    parser.add_argument("--full-max-tokens", type=int, default=6400 * 1,
                        help="run full attention only up to this many tokens per batch (it is slow on CPU)")
    parser.add_argument("--region-size", type=int, default=None, help="tokens per region side (grid follows the map)")
    parser.add_argument("--growth-reps", type=int, default=2, help="rounds for the 320-1280 growth table")
    parser.add_argument("--growth-region-size", type=int, default=None,
                        help="also run the growth table with this region_size (the grid follows the input)")
    parser.add_argument("--skip-main", action="store_true", help="skip the table of YOLO levels")
    parser.add_argument("--skip-growth", action="store_true")
    parser.add_argument("--skip-deterministic", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_name()
    print(f"# {time.strftime('%Y-%m-%d')} device {args.device} ({device_name}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}, n_win {args.n_win}, "
          f"heads {args.heads}, topk {args.topk}, region_size {args.region_size}, reps {args.reps}", flush=True)

    rows = []
    for label, channels, side in YOLO_SHAPES:
        if args.skip_main or (args.only and label not in args.only):
            continue
        for batch in args.batches:
            with_full = batch * side * side <= args.full_max_tokens
            row = {"label": label, **measure(channels, side, batch, args, with_full)}
            rows.append(row)
            print(fmt_table([row], MAIN_KEYS).splitlines()[-1], flush=True)
    if rows:
        print("\n" + fmt_table(rows, MAIN_KEYS))

    growth = []
    if not args.skip_growth:
        for region_size in dict.fromkeys([args.region_size, args.growth_region_size]):
            growth_args = argparse.Namespace(**{**vars(args), "reps": args.growth_reps, "region_size": region_size})
            for image, side in GROWTH_SIDES:
                row = {"label": f"{image} input", **measure(64, side, 1, growth_args, with_full=True)}
                growth.append(row)
                print(fmt_table([row], [("input", "label"), ("grid", "grid"), ("bracli ms", "bracli_s")])
                      .splitlines()[-1], flush=True)
        keys = [("input", "label"), ("region_size", "region_size"), ("grid", "grid"),
                ("nominal GFLOP", "nominal_gflop"),
                ("full-attn nominal GFLOP", "full_nominal_gflop"), ("bracli ms", "bracli_s"),
                ("gather-ref ms", "gather-ref_s"), ("full-attn ms", "full-attn_s"),
                ("bracli MiB", "bracli_mib"), ("full-attn MiB", "full-attn_mib")]
        print("\n" + fmt_table(growth, keys))

    determinism = []
    if not args.skip_deterministic:
        determinism = deterministic_rows(args)
        keys = [("deterministic", "deterministic"), ("shape", "shape"), ("bracli ms", "bracli_s"),
                ("gather-ref ms", "gather-ref_s"), ("time ratio", "ratio_time")]
        print("\n" + fmt_table(determinism, keys))

    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "device_name": device_name,
                                         "load_average_end": os.getloadavg()[0],
                                         "torch": torch.__version__, "threads": torch.get_num_threads(),
                                         "rows": rows, "growth": growth, "deterministic": determinism}, indent=1))


if __name__ == "__main__":
    main()
