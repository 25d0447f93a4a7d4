"""`bra profile`: parameters, FLOPs that count the attention, latency and memory — next to vanilla YOLOv8."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from bracli.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from bracli.profile import ModelProfile, Profile

NAME = "profile"
EPILOG = ("Example: bra profile --scale n --bra-after p3 --imgsz 320,640,1280 --plot cost.png   "
          "(no --gflops/--latency/--memory flag = all three; --no-latency skips one)")


def command(
    model: str | None = typer.Argument(None, help="A model YAML (bra init) or a .pt checkpoint; default: "
                                       "rendered from --scale/--bra-after.", show_default=False),
    scale: str | None = typer.Option(None, "--scale", "-s", help="Scale to render when no MODEL: n, s, m, l, x.",
                                     show_default="n"),
    bra_after: list[str] | None = typer.Option(None, "--bra-after", "-a", help="Placements to render when no "
                                               "MODEL (repeat or comma list).", show_default="p3"),
    gflops: bool | None = typer.Option(None, "--gflops/--no-gflops", help="Parameters and FLOPs counted at the "
                                       "full input size, per BRA layer, next to ultralytics' estimate.",
                                       show_default=False),
    latency: bool | None = typer.Option(None, "--latency/--no-latency", help="Forward time after warm-up: median "
                                        "and p10–p90.", show_default=False),
    memory: bool | None = typer.Option(None, "--memory/--no-memory", help="Peak memory of a forward and of a "
                                       "forward+backward.", show_default=False),
    imgsz: list[str] = typer.Option(["640"], "--imgsz", help="Input size(s): 640, or 384x640 (height×width); "
                                    "repeat or comma list for a table of growth."),
    batch: int = typer.Option(1, "--batch", min=1, help="Images per forward."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or N."),
    compare: bool = typer.Option(True, "--compare/--no-compare", help="Also profile the vanilla YOLOv8 of the "
                                 "same scale and show ratios."),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed forwards before timing."),
    runs: int = typer.Option(10, "--runs", min=1, help="Timed forwards."),
    json_out: Path | None = typer.Option(None, "--json", help="Write every number as JSON here ('-' = stdout).",
                                         show_default=False),
    plot: Path | None = typer.Option(None, "--plot", help="Draw how each figure grows with the input size "
                                     "(PNG; needs two or more --imgsz).", show_default=False),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite existing --json/--plot files."),
) -> None:
    """Measure a model's true cost: params, FLOPs with attention, latency, memory."""
    from bracli.files import check_writable
    from bracli.ui import console, err_console

    measure = _selected(gflops, latency, memory)
    if model is not None and model.isdigit() and not Path(model).exists():
        raise UsageError(f"'{model}' is not a model file; for several sizes write --imgsz 640,{model} "
                         "(or repeat --imgsz)")
    to_stdout = json_out is not None and str(json_out) == "-"
    if json_out is not None and not to_stdout:
        check_writable(json_out, force)
    if plot is not None:
        check_writable(plot, force)

    from bracli.profile import parse_imgsz, profile

    sizes = parse_imgsz(imgsz)
    if plot is not None and len(sizes) < 2:
        raise UsageError("--plot needs at least two --imgsz values, e.g. --imgsz 320,640,1280")
    with err_console.status("profiling…") as status:
        result = profile(model, sizes, batch=batch, device=device, gflops=measure[0], latency=measure[1],
                         memory=measure[2], compare=compare, scale=scale, bra_after=bra_after, warmup=warmup,
                         runs=runs, progress=lambda message: status.update(f"profiling: {message}"))
    screen = err_console if to_stdout else console  # stdout carries nothing but the JSON then
    _render(result, screen)
    if plot is not None:
        from bracli.profile_plot import plot_profile

        screen.print(f"[green]✔[/] wrote {plot_profile(result, plot, force=force)}", soft_wrap=True)
    if json_out is not None:
        from bracli.files import write_json

        written = write_json(json_out, result.to_dict(), force=force)
        if written is not None:
            screen.print(f"[green]✔[/] wrote {written}", soft_wrap=True)


def _selected(gflops: bool | None, latency: bool | None, memory: bool | None) -> tuple[bool, bool, bool]:
    """Flags given as --x mean 'only these'; flags given only as --no-x mean 'all but these'; none means all."""
    flags = (gflops, latency, memory)
    chosen = tuple(flag is True for flag in flags) if True in flags else tuple(flag is not False for flag in flags)
    if not any(chosen):
        raise UsageError("nothing to measure: drop a --no-gflops/--no-latency/--no-memory")
    return chosen


def _render(result: Profile, console: Console) -> None:
    from bracli.profile import FLOPS_COUNTED, GFLOPS_UNIT

    model = result.model
    bra_total = sum(model.bra_params.values())
    console.print(f"[bold]{model.name}[/]: {model.params:,} parameters ({bra_total:,} in {len(model.bra_params)} "
                  f"BRA layer{'s' * (len(model.bra_params) != 1)}) — device {result.device}, batch {result.batch}, "
                  f"{result.cpu_threads} CPU threads", soft_wrap=True)
    console.print(_cost_table(model))
    if model.bra_params and model.sizes[0].flops:
        console.print(_bra_table(model))
    if result.baseline is not None:
        console.print(_cost_table(result.baseline))
        console.print(_ratio_table(result))
    first = model.sizes[0]
    lines = []
    if first.flops:
        lines += [GFLOPS_UNIT + ".", f"Counted: {FLOPS_COUNTED}.",
                  "info(): what ultralytics' model.info() prints (thop on small proxy images, extrapolated), "
                  "and how far it is from the count per image. BRA: GFLOPs of the BRA layers and their share of "
                  "the total. GFLOPs are for the whole batch."]
    if first.latency:
        lat = first.latency
        lines.append(f"Latency ms: median (p10–p90) of {lat.runs} forwards after {lat.warmup} warm-up, batch "
                     f"{lat.batch}, {lat.cpu_threads} CPU threads{', CUDA synchronised' if lat.synchronized else ''}.")
    if first.memory:
        lines.append(f"Memory (fwd: inference forward, fwd+bwd: training forward+backward): {first.memory.method}.")
    for line in lines:
        console.print(f"[dim]{line}[/]", soft_wrap=True)
    for note in result.notes:
        console.print(f"[yellow]⚠ {note}[/]", soft_wrap=True)


def _table(title: str, columns: list[str]):
    """A compact table whose cells wrap rather than lose digits on a narrow terminal."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for column in columns:
        table.add_column(column, justify="right", overflow="fold")
    return table


def _size(hw: tuple[int, int]) -> str:
    return str(hw[0]) if hw[0] == hw[1] else f"{hw[0]}×{hw[1]}"


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _cost_table(model: ModelProfile):
    first = model.sizes[0]
    columns = ["imgsz"]
    if first.flops:
        columns += ["GFLOPs", "info() (off by)" if first.flops.batch == 1 else "info() per image (off by)",
                    "BRA (share)"]
    if first.latency:
        columns.append("latency ms")
    if first.memory:
        columns += ["fwd MiB", "fwd+bwd MiB"]
    table = _table(f"{model.name} ({model.params:,} params)", columns)
    for size in model.sizes:
        row = [_size(size.imgsz)]
        if size.flops:
            info, off = size.ultralytics_gflops, size.ultralytics_vs_counted
            row += [f"{size.flops.total_gflops:.3f}",
                    "failed (0.0)" if not info else f"{info:.3f} ({'—' if off is None else f'{off:+.1%}'})",
                    f"{size.flops.bra_gflops:.3f} ({size.flops.bra_share:.1%})" if model.bra_params else "—"]
        if size.latency:
            lat = size.latency
            row.append(f"{_ms(lat.median_ms)} ({_ms(lat.p10_ms)}–{_ms(lat.p90_ms)})")
        if size.memory:
            row += [f"{size.memory.forward_mib:.1f}", f"{size.memory.train_mib:.1f}"]
        table.add_row(*row)
    return table


def _bra_table(model: ModelProfile):
    table = _table(f"BRA layers of {model.name}", ["layer", "imgsz", "input C×H×W", "regions", "padded", "GFLOPs",
                                                  "share", "params"])
    for index, params in model.bra_params.items():
        n_win = model.bra_n_win[index]
        for size in model.sizes:
            flops = size.flops
            shape = flops.bra_input_shapes.get(index)
            regions = padded = "—"
            if shape:
                height, width = shape[2], shape[3]
                region_h, region_w = -(-height // n_win), -(-width // n_win)
                regions = f"{n_win}² of {region_h}×{region_w}"
                if (region_h * n_win, region_w * n_win) != (height, width):
                    padded = f"{region_h * n_win}×{region_w * n_win}"
            table.add_row(f"{index} {model.bra_placements.get(index, '')}".strip(), _size(size.imgsz),
                          "×".join(str(v) for v in shape[1:]) if shape else "—", regions, padded,
                          f"{flops.bra_layers.get(index, 0.0):.3f}", f"{flops.bra_shares.get(index, 0.0):.1%}",
                          f"{params:,}")
    return table


def _ratio_table(result: Profile):
    baseline = result.baseline
    ratios = result.ratios()
    columns = [("imgsz", None), ("params", "params"), ("GFLOPs", "gflops"), ("latency", "latency"),
               ("fwd memory", "forward_memory"), ("fwd+bwd memory", "train_memory")]
    present = [(title, key) for title, key in columns if key is None or any(key in r for r in ratios)]
    table = _table(f"{result.model.name} ÷ {baseline.name} (vanilla YOLOv8{baseline.scale})",
                   [title for title, _ in present])
    for row in ratios:
        cells = []
        for _, key in present:
            if key is None:
                cells.append(_size(tuple(row["imgsz"])))
            else:
                value = row.get(key)
                cells.append("—" if value is None else f"×{value:.3f}")
        table.add_row(*cells)
    return table
