"""`bra profile`: parameters, FLOPs that count the attention, latency and memory — next to the plain model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from bracli import options
from bracli.errors import BracliError, UsageError
from bracli.output import Output

if TYPE_CHECKING:
    from bracli.measure.report import CostReport, ModelCost

NAME = "profile"
EPILOG = ("Example: bra profile --scale n --bra-after p3 --imgsz 320,640,1280 --plot cost.png   "
          "(no --gflops/--latency/--memory flag = all three; --no-latency skips one)")


def command(
    ctx: typer.Context,
    model: str | None = typer.Argument(None, help="A model YAML or a .pt checkpoint; default: rendered from "
                                       "--scale/--bra-after.", show_default=False),
    family: options.Family = "yolov8",
    task: options.Task = "detect",
    scale: options.Scale = None,
    bra_after: options.BraAfter = None,
    preset: options.Preset = "bracli",
    region_size: options.RegionSize = None,
    gflops: bool | None = typer.Option(None, "--gflops/--no-gflops", help="Parameters and FLOPs counted at the "
                                       "full input size, per BRA layer, next to ultralytics' estimate.",
                                       show_default=False),
    latency: bool | None = typer.Option(None, "--latency/--no-latency", help="Forward time after warm-up: median "
                                        "and p10–p90.", show_default=False),
    memory: bool | None = typer.Option(None, "--memory/--no-memory", help="Peak memory of a forward and of a "
                                       "forward+backward.", show_default=False),
    imgsz: options.ImgszList = ["640"],  # noqa: B006 -- typer reads the default list, never mutates it
    batch: options.Batch = 1,
    device: options.Device = None,
    compare: bool = typer.Option(True, "--compare/--no-compare", help="Also profile the plain model of the same "
                                 "family, task and scale, and show ratios."),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed forwards before timing."),
    runs: int = typer.Option(10, "--runs", min=1, help="Timed forwards."),
    plot: Path | None = typer.Option(None, "--plot", help="Draw how each figure grows with the input size "
                                     "(a .png file; needs two or more --imgsz).", show_default=False),
    trust_checkpoint: options.TrustCheckpoint = False,
    json_out: options.JsonOut = None,
    force: options.Force = False,
) -> None:
    """Measure a model's true cost: params, FLOPs with attention, latency, memory."""
    out = Output(json_out, force=force)
    measure = _selected(gflops, latency, memory)
    if not measure[1]:
        options.refuse_given(ctx, ("warmup", "runs"), "{flags} only time the latency, which is not measured here")
    if _plain_model(ctx, model, bra_after, family, task):
        if compare:  # --no-compare says the same as what happens
            options.refuse_given(ctx, ("compare",), "--bra-after none profiles the plain model itself; there is "
                                 "nothing to {flags} it with")
        compare = False
    if model is not None and model.isdigit() and not Path(model).exists():
        raise UsageError(f"'{model}' is not a model file; for several sizes write --imgsz 640,{model} "
                         "(or repeat --imgsz)")
    sizes = options.imgsz_sizes(imgsz, notice=out.warn)
    device = options.device(device)
    if plot is not None:
        if len(sizes) < 2:
            raise UsageError("--plot needs at least two --imgsz values, e.g. --imgsz 320,640,1280")
        options.check_png(plot)
        from bracli.files import check_writable

        check_writable(plot, force)

    bra = options.bra_options(preset, region_size=region_size)

    from bracli.engine.setup import setup

    setup(trust_checkpoints=options.trust_checkpoints(trust_checkpoint))
    from bracli.engine.cost import measure_cost

    with out.console.status("profiling…") as status:
        result = measure_cost(model, sizes, batch=batch, device=device, gflops=measure[0], latency=measure[1],
                              memory=measure[2], compare=compare, scale=scale, bra_after=bra_after, family=family,
                              task=task, bra=bra, warmup=warmup, runs=runs,
                              progress=lambda message: status.update(f"profiling: {message}"), notice=out.warn)
    _render(result, out)
    if plot is not None:
        from bracli.measure.plot import plot_cost

        out.wrote(plot_cost(result, plot, force=force))
    out.emit(result)


def _plain_model(ctx: typer.Context, model: str | None, bra_after: list[str] | None, family: str,
                 task: str) -> bool:
    """Whether the model rendered here is the plain one (--bra-after none), after refusing options that would
    shape a model nobody builds: MODEL gives its own; a plain model has no BRA layer."""
    from bracli import templates

    if model is not None:
        if Path(model).is_dir():
            raise BracliError(f"{model} is a folder, not a model file (a .yaml or .pt)")
        options.refuse_given(ctx, options.ARCHITECTURE_OPTION_NAMES, "MODEL gives the architecture; drop {flags} "
                             "or MODEL")
        return False
    if bra_after and not templates.parse_placements(bra_after, family, task):
        options.refuse_given(ctx, options.BRA_OPTION_NAMES, "--bra-after none measures a model without a BRA layer; "
                             "drop {flags}")
        return True
    return False


def _selected(gflops: bool | None, latency: bool | None, memory: bool | None) -> tuple[bool, bool, bool]:
    """Flags given as --x mean 'only these'; flags given only as --no-x mean 'all but these'; none means all."""
    flags = (gflops, latency, memory)
    chosen = tuple(flag is True for flag in flags) if True in flags else tuple(flag is not False for flag in flags)
    if not any(chosen):
        raise UsageError("nothing to measure: drop a --no-gflops/--no-latency/--no-memory")
    return chosen


def _render(result: CostReport, out: Output) -> None:
    from bracli.measure.flops import FLOPS_COUNTED, GFLOPS_UNIT
    from bracli.measure.runtime import cpu_threads_text

    console = out.console

    model = result.model
    bra_total = sum(model.bra_params.values())
    console.print(f"[bold]{model.name}[/]: {model.params:,} parameters ({bra_total:,} in {len(model.bra_params)} "
                  f"BRA layer{'s' * (len(model.bra_params) != 1)}) — device {result.device}, batch {result.batch}, "
                  f"{cpu_threads_text(result.cpu_threads)}", soft_wrap=True)
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
                     f"{lat.batch}, {cpu_threads_text(lat.cpu_threads)}"
                     f"{', CUDA synchronised' if lat.synchronized else ''}.")
    if first.memory:
        lines.append(f"Memory (fwd: inference forward, fwd+bwd: training forward+backward): {first.memory.method}.")
    for line in lines:
        console.print(f"[dim]{line}[/]", soft_wrap=True)
    for note in result.notes:
        out.warn(note)


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


def _cost_table(model: ModelCost):
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


def _bra_table(model: ModelCost):
    table = _table(f"BRA layers of {model.name}", ["layer", "imgsz", "input C×H×W", "regions", "padded", "GFLOPs",
                                                  "share", "params"])
    from bracli.nn.options import region_grid

    for index, params in model.bra_params.items():
        n_win, region_size = model.bra_n_win[index], model.bra_region_size.get(index)
        for size in model.sizes:
            flops = size.flops
            shape = flops.bra_input_shapes.get(index)
            regions = padded = "—"
            if shape:
                height, width = shape[2], shape[3]
                rows, cols, region_h, region_w = region_grid(height, width, n_win, region_size)
                regions = f"{rows}×{cols} of {region_h}×{region_w}"
                if (region_h * rows, region_w * cols) != (height, width):
                    padded = f"{region_h * rows}×{region_w * cols}"
            table.add_row(f"{index} {model.bra_placements.get(index, '')}".strip(), _size(size.imgsz),
                          "×".join(str(v) for v in shape[1:]) if shape else "—", regions, padded,
                          f"{flops.bra_layers.get(index, 0.0):.3f}", f"{flops.bra_shares.get(index, 0.0):.1%}",
                          f"{params:,}")
    return table


def _ratio_table(result: CostReport):
    baseline = result.baseline
    ratios = result.ratios()
    columns = [("imgsz", None), ("params", "params"), ("GFLOPs", "gflops"), ("latency", "latency"),
               ("fwd memory", "forward_memory"), ("fwd+bwd memory", "train_memory")]
    present = [(title, key) for title, key in columns if key is None or any(key in r for r in ratios)]
    table = _table(f"{result.model.name} ÷ {baseline.name} (the same model without BRA)",
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
