"""The one home of option semantics: what `--imgsz`, `--device`, `--batch`, `--json`, `--force`, `--out`,
`--conf`/`--iou` and `KEY=VALUE` extras mean, with one default and one policy each, for every command.

Commands declare these options with the ``Annotated`` types below and normalise values with the functions
here; a test walks every command's parameters and fails when one is declared anywhere else or differs.
Pure Python (no torch, no ultralytics): ``bra --help`` stays instant and every value is checked before
anything heavy is imported. Longer than most modules on purpose: one file is the one place to look.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from bracli.errors import UsageError

STRIDE = 32  # the coarsest YOLO feature stride: input sides are multiples of it
MAX_IMGSZ = 8192  # beyond this a single image does not fit in memory on the machines bracli targets
TRUST_ENV = "BRA_TRUST_CHECKPOINTS"  # "1": the per-script equivalent of --trust-checkpoint
# Classes a detector may have (--nc, a data.yaml's nc/names). The head has a conv output per class and ultralytics
# lists a name for each, so a hostile nc of 10^14 exhausts memory before any check of its own; LVIS has 1,203.
MAX_CLASSES = 100_000

# ---------------------------------------------------------------------------------------- declarations

Imgsz = Annotated[int, typer.Option(
    "--imgsz", help="Input size in pixels; a size that is not a multiple of 32 is rounded up, with a notice.")]
ImgszOrDefault = Annotated[int | None, typer.Option(
    "--imgsz", help="Input size in pixels; a size that is not a multiple of 32 is rounded up, with a notice.",
    show_default=False)]
Device = Annotated[str | None, typer.Option(
    "--device", help="cpu, 0, 0,1, cuda:1 or mps (default: the first GPU, else the CPU).", show_default=False)]
Batch = Annotated[int, typer.Option("--batch", min=1, help="Images per batch.")]
JsonOut = Annotated[str | None, typer.Option(
    "--json", metavar="FILE", help="Also write the result as JSON to FILE; '-' prints it on stdout (messages then "
    "go to stderr).", show_default=False)]
Force = Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing output files.")]
Out = Annotated[Path | None, typer.Option(
    "--out", "-o", help="Output path (default: named after the input, see the command's help); never "
    "overwritten without --force.", show_default=False)]
OutRequired = Annotated[Path | None, typer.Option(
    "--out", "-o", help="Output path (required: this command has no default); never overwritten without --force.",
    show_default=False)]
Conf = Annotated[float | None, typer.Option(
    "--conf", min=0.0, max=1.0, help="Confidence threshold (default: ultralytics' for the mode: 0.25 to predict, "
    "0.001 to validate).", show_default=False)]
Iou = Annotated[float | None, typer.Option(
    "--iou", min=0.0, max=1.0, help="NMS IoU threshold (default: ultralytics' 0.7).", show_default=False)]


def runs_folder(value: Path | None) -> Path | None:
    """--project must be a folder, or not exist yet (it is made); a file there fails before any work starts."""
    if value is not None and value.exists() and not value.is_dir():
        raise UsageError(f"--project {value} is a file, not a folder")
    return value


Project = Annotated[Path | None, typer.Option(
    "--project", help="Runs folder (default: ./runs/<task>).", show_default=False, callback=runs_folder)]
AllowDownload = Annotated[bool, typer.Option(
    "--allow-download", help="Let ultralytics run the data.yaml 'download:' entry (it executes code from that "
    "file).")]
TrustCheckpoint = Annotated[bool, typer.Option(
    "--trust-checkpoint", help=f"Load checkpoints with full unpickling, which can run code from the file; only "
    f"for files you trust (scripts: {TRUST_ENV}=1).")]

ImgszList = Annotated[list[str], typer.Option(
    "--imgsz", help="Input size(s) in pixels: 640, or 384x640 (height×width); repeat or give a comma list. A size "
    "that is not a multiple of 32 is rounded up, with a notice.")]
Seed = Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1,
                                   help="Random seed: the same seed and settings give the same result.")]


def run_name(value: str | None) -> str | None:
    """A run name is one folder inside --project: a path in it would put the run (and its weights) elsewhere."""
    if value is not None and (value in ("", ".", "..") or "/" in value or "\\" in value or os.sep in value):
        raise UsageError(f"--name {value!r} is not a folder name: it names one folder inside --project (no '/', "
                         "'\\' or '..'); put the path in --project")
    return value


Name = Annotated[str | None, typer.Option("--name", help="Run name (default: ultralytics' train, train-2, …).",
                                          show_default=False, callback=run_name)]

# The model a command renders (init, train, profile): one declaration each; None means the render default.
Family = Annotated[str, typer.Option("--family", help="Model family: yolov8, yolo11 or yolo26.")]
Task = Annotated[str, typer.Option("--task", help="detect (boxes) or segment (boxes and instance masks).")]
Scale = Annotated[str | None, typer.Option("--scale", "-s", help="Model scale: n, s, m, l or x (default n; a "
                                           "model YAML without a scale letter in its name takes this one).",
                                           show_default=False)]
BraAfter = Annotated[list[str] | None, typer.Option(
    "--bra-after", "-a", help="Where to insert BRA: p3, p4, p5, sppf, backbone-p3/p4/p5, psa (YOLO11/26), or none "
    "for the plain model (the baseline). Repeat the flag or give a comma list; default p3.", show_default=False)]
NWin = Annotated[int | None, typer.Option("--n-win", help="BRA regions per side at 640 input (default: the "
                                          "preset's, 10; blog 7; at most 64).", show_default=False)]
Topk = Annotated[int | None, typer.Option("--topk", help="BRA regions each query region attends to (≤ n_win²; "
                                          "default 4; at most 4096).", show_default=False)]
Heads = Annotated[int | None, typer.Option("--heads", help="BRA attention heads; must divide every BRA layer's "
                                           "channels (default: a head per 32 channels; blog 8; at most 1024).",
                                           show_default=False)]
SideDwconv = Annotated[int | None, typer.Option("--side-dwconv", help="Kernel of BRA's local context conv on v "
                                                "(odd, at most 31; 0 = off; default 3).", show_default=False)]
Preset = Annotated[str, typer.Option(
    "--preset", help="BRA settings to start from: bracli (measured defaults: n_win 10, a head per 32 channels, "
    "regions that keep their size as the input grows) or blog (n_win 7, 8 heads, a fixed grid).")]
RegionSize = Annotated[str | None, typer.Option(
    "--region-size", metavar="N|auto|none", help="BRA tokens per region side: auto (the grid grows with the input "
    "beyond 640), none (a fixed n_win × n_win grid), or a number up to 1024.", show_default=False)]
QkDim = Annotated[int | None, typer.Option("--qk-dim", help="BRA q/k channels (default: each layer's channels; "
                                           "at most 8192).", show_default=False)]


# Repeatable versions for commands that compare models (bra ablate): each value given is one variant.
def _help(single: Any) -> str:
    return f"{single.__metadata__[0].help} Repeat for variants."


FamilyList = Annotated[list[str] | None, typer.Option("--family", help=_help(Family), show_default=False)]
TaskList = Annotated[list[str] | None, typer.Option("--task", help=_help(Task), show_default=False)]
ScaleList = Annotated[list[str] | None, typer.Option("--scale", "-s", help=_help(Scale), show_default=False)]
NWinList = Annotated[list[int] | None, typer.Option("--n-win", help=_help(NWin), show_default=False)]
TopkList = Annotated[list[int] | None, typer.Option("--topk", help=_help(Topk), show_default=False)]
HeadsList = Annotated[list[int] | None, typer.Option("--heads", help=_help(Heads), show_default=False)]
PresetList = Annotated[list[str] | None, typer.Option("--preset", help=_help(Preset) + " Default: bracli.",
                                                      show_default=False)]
BraAfterVariants = Annotated[list[str] | None, typer.Option(
    "--bra-after", "-a", help="Where to insert BRA, one variant per flag: p3, p4, p5, sppf, backbone-p3/p4/p5, psa "
    "(YOLO11/26), or none for the plain model (the baseline); a comma list (p3,p4) is one variant with several BRA "
    "layers. Default: none and p3.", show_default=False)]


def given(ctx: typer.Context, *names: str) -> list[str]:
    """The options among ``names`` (parameter names) the user gave, on the command line or through the
    environment, as they would type them (``--batch``): a default value is not a choice, a value typed is."""
    typed = ("COMMANDLINE", "ENVIRONMENT")  # typer vendors click: its ParameterSource, told apart by name
    return [max(param.opts, key=len) for param in ctx.command.params  # in the order --help lists them
            if param.name in names and getattr(ctx.get_parameter_source(param.name), "name", None) in typed]


def refuse_given(ctx: typer.Context, names: Iterable[str], message: str) -> None:
    """Exit 2 when any option in ``names`` was given: ``message`` says why, with ``{flags}`` naming them all."""
    flags = given(ctx, *names)
    if flags:
        raise UsageError(message.format(flags=", ".join(flags)))


BRA_OPTION_NAMES = ("preset", "region_size", "n_win", "topk", "heads", "side_dwconv", "qk_dim")
# What a model file decides (--model): --scale stays, it names the scale of a YAML without one in its name.
ARCHITECTURE_OPTION_NAMES = ("family", "task", "bra_after", *BRA_OPTION_NAMES)
RENDER_OPTION_NAMES = ("scale", *ARCHITECTURE_OPTION_NAMES)


# Upper bounds of the BRA options, far above any real use (BiFormer: n_win 7-16, topk 1-16, 2-16 heads, a 5×5
# side conv): past them a layer only exhausts memory, so they are refused with the range before any work starts.
BRA_BOUNDS = {"n_win": 64, "topk": 4096, "heads": 1024, "qk_dim": 8192, "side_dwconv": 31, "region_size": 1024}
BRA_RANGES = {"n_win": "BiFormer uses 7 to 16", "topk": "BiFormer uses 1 to 16", "heads": "BiFormer uses 2 to 16",
              "qk_dim": "the rendered models' layers have under 1,024 channels", "side_dwconv": "BiFormer uses 5",
              "region_size": "the bracli preset's are 2 to 8"}


def check_bra_bounds(**values: int | str | Iterable[int] | None) -> None:
    """Each BRA option given (a value, or a list of them for ``bra ablate``) within ``BRA_BOUNDS``, told with
    the range it is used in; the lower bounds and the checks against a layer's channels are the templates'."""
    for key, given_values in values.items():
        if given_values is None:
            continue
        for value in given_values if isinstance(given_values, (list, tuple)) else [given_values]:
            number = int(value) if isinstance(value, int) or str(value).strip().isdigit() else None
            if number is not None and number > BRA_BOUNDS[key]:
                raise UsageError(f"--{key.replace('_', '-')} {number} is too large: at most {BRA_BOUNDS[key]} "
                                 f"({BRA_RANGES[key]})")


def check_region_size(value: str | None) -> None:
    """``--region-size`` as the command line spells it (auto, none or a positive number), told in those words."""
    if value is None or str(value).strip().lower() in ("auto", "none"):
        return
    if not str(value).strip().isdigit() or int(value) < 1:
        raise UsageError(f"--region-size {value} is not valid: give tokens per region side (a positive number), "
                         "auto (the grid grows with the input) or none (a fixed n_win × n_win grid)")
    check_bra_bounds(region_size=value)


def bra_options(preset: str | None = None, **values: int | str | None) -> dict[str, int | str]:
    """The BRA options that were given (``None`` = the preset's), and the preset when it is not the default."""
    check_region_size(values.get("region_size"))  # type: ignore[arg-type]
    check_bra_bounds(**{key: value for key, value in values.items() if key != "region_size"})
    given = {key: value for key, value in values.items() if value is not None}
    return {"preset": preset, **given} if preset not in (None, DEFAULTS["preset"]) else given


# Where a command's default differs from the usual one, and why (the consistency test reads this table).
DEFAULTS: dict[str, Any] = {"imgsz": 640, "device": None, "batch": 16, "json": None, "force": False, "out": None,
                            "conf": None, "iou": None, "family": "yolov8", "task": "detect", "scale": None,
                            "bra_after": None, "n_win": None, "topk": None, "heads": None, "side_dwconv": None,
                            "qk_dim": None, "project": None, "name": None, "allow_download": False,
                            "trust_checkpoint": False, "seed": 0, "preset": "bracli",
                            "region_size": None}
COMMAND_DEFAULTS: dict[tuple[str, str], tuple[Any, str]] = {
    ("ablate", "preset"): (None, "each value given is one variant; none given means bracli's"),
    ("val", "imgsz"): (None, "the size the checkpoint was trained at"),
    ("demo", "imgsz"): (320, "the demo trains in minutes on a CPU"),
    ("profile", "batch"): (1, "latency is quoted per image, as deployment sees it"),
    ("dataset sample", "imgsz"): (320, "the sample's images are small, so it trains in minutes on a CPU"),
    ("ablate", "family"): (None, "repeatable: each value is a variant (none given: yolov8)"),
    ("ablate", "task"): (None, "repeatable: each value is a variant (none given: detect)"),
    ("ablate", "project"): (None, "the ablation folder goes under ./runs/ablate"),
    ("ablate", "name"): (None, "the ablation folder is named after the data file, so the same command finds it"),
}

# ---------------------------------------------------------------------------------------------- values


def imgsz(value: int, *, option: str = "--imgsz", notice=None) -> int:
    """A usable input size: at least the stride, at most ``MAX_IMGSZ``, rounded up to the stride.

    Rounding is what ultralytics does silently; here ``notice(message)`` is told (a warning on the console).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{option} {value!r} is not a whole number of pixels")
    if value < STRIDE:
        raise UsageError(f"{option} {value} is smaller than the model stride {STRIDE}")
    if value > MAX_IMGSZ:
        raise UsageError(f"{option} {value} is larger than {MAX_IMGSZ} pixels; no single image needs that")
    rounded = -(-value // STRIDE) * STRIDE
    if rounded != value and notice is not None:
        notice(f"{option} {value} is not a multiple of the stride {STRIDE}; using {rounded}")
    return rounded


def imgsz_sizes(values: Iterable[str], *, notice=None) -> list[tuple[int, int]]:
    """Sizes from ``--imgsz`` values that may list several: ``640``, ``480x640`` (height×width), ``320,640``."""
    sizes: list[tuple[int, int]] = []
    rounded: dict[int, int] = {}  # one notice per size given
    for value in values:
        for piece in str(value).split(","):
            piece = piece.strip().lower()
            if not piece:
                continue
            parts = piece.split("x")
            if len(parts) > 2 or not all(p.strip().isdigit() for p in parts):
                raise UsageError(f"--imgsz '{piece}' is not a size; write 640, or 480x640 for height×width")
            sides = [rounded.setdefault(int(p), imgsz(int(p), notice=notice)) if int(p) not in rounded
                     else rounded[int(p)] for p in parts]
            hw = (sides[0], sides[-1])
            if hw not in sizes:
                sizes.append(hw)
    if not sizes:
        raise UsageError("--imgsz needs at least one size, e.g. --imgsz 640")
    return sizes


_DEVICE = re.compile(r"^(cpu|mps|cuda|cuda:\d+|\d+(,\d+)*)$")


def device(value: str | None) -> str | None:
    """A device as ultralytics spells it (``cpu``, ``mps``, ``0``, ``0,1``), or None for its default.

    ``cuda`` and ``cuda:N`` are accepted as torch spells them. Whether the device exists here is checked
    where torch is loaded (``bracli.engine.devices``).
    """
    if value is None:
        return None
    text = str(value).strip().lower().replace(" ", "")
    if not _DEVICE.match(text):
        raise UsageError(f"--device '{value}' is not a device; use cpu, 0, 0,1, cuda:1 or mps")
    if text == "cuda":
        return "0"
    if text.startswith("cuda:"):
        return text.split(":", 1)[1]
    indices = text.split(",")
    if len(set(indices)) != len(indices):
        raise UsageError(f"--device '{value}' names a GPU twice")
    return text


def check_png(path: Path, *, option: str = "--plot") -> None:
    """A figure option's file: the figure is PNG bytes, so a name that says otherwise is refused, not filled."""
    if path.suffix.lower() != ".png":
        raise UsageError(f"{option} {path}: the figure is a PNG; name the file *.png")


def thresholds(conf: float | None = None, iou: float | None = None) -> None:
    """``conf``/``iou`` between 0 and 1, for Python callers as ``Conf``/``Iou`` bound them on the command line."""
    for name, value in (("conf", conf), ("iou", iou)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1):
            raise UsageError(f"{name}={value!r} must be a number between 0 and 1")


def batch(value: int) -> int:
    """A batch of at least one image, for Python callers as ``Batch`` bounds it on the command line."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"batch={value!r} must be a whole number of images, at least 1")
    return value


def trust_checkpoints(flag: bool) -> bool:
    """``--trust-checkpoint``, or ``BRA_TRUST_CHECKPOINTS=1`` for scripts."""
    return flag or os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes")


# ---------------------------------------------------------------------------------------------- extras

# Arguments bracli decides or takes as a positional; an extra may not set them (own options are told apart below).
DECIDED_BY_BRACLI = {
    "model": "give the model with --model (train) or as the first argument",
    "data": "give the data.yaml as the first argument (train) or with --data (val)",
    "source": "give the source as the first argument",
    "mode": "the command is the mode", "task": "the model decides the task",
    "resume": "use --resume", "pretrained": "use --weights",
    "project": "use --project", "name": "use --name", "format": "use --format",
    "exist_ok": "a run never writes into an earlier run's folder (it would replace its weights); choose another "
                "--name",
}


def split_positionals(values: Sequence[str] | None, max_paths: int, what: str) -> tuple[list[str], list[str]]:
    """Separate ``key=value`` extras from plain positional paths (a path containing '=' that exists is a path)."""
    paths, extras = [], []
    for value in values or []:
        (extras if "=" in value and not Path(value).exists() else paths).append(value)
    if len(paths) > max_paths:
        raise UsageError(f"expected at most {max_paths} {what}, got {', '.join(paths)}")
    return paths, extras


def parse_extras(pairs: Sequence[str], own_options: Mapping[str, str] | Iterable[str] = ()) -> dict[str, str]:
    """``key=value`` strings → ``{key: raw value}``: syntax, and keys that belong to an option here.

    ``own_options`` names the command's own options by ultralytics key (``{"conf": "--conf"}``): such a key
    gets a pointer to that option. Keys bracli decides get a pointer to where they are given. Whether a key
    exists in ultralytics and its value type are checked by the engine (ultralytics' own config).
    """
    own = dict(own_options) if isinstance(own_options, Mapping) else {k: f"--{k.replace('_', '-')}"
                                                                      for k in own_options}
    extras: dict[str, str] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise UsageError(f"extra argument {pair!r} is not key=value (e.g. lr0=0.005)")
        if key in own:
            raise UsageError(f"{key}= has its own option here: use {own[key]} {raw.strip() or 'VALUE'}")
        if key in DECIDED_BY_BRACLI:
            raise UsageError(f"{key}= is not an extra: {DECIDED_BY_BRACLI[key]}")
        if key in extras:
            raise UsageError(f"{key}= is given twice")
        extras[key] = raw.strip()
    return extras
