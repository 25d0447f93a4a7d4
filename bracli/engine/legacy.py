"""BiFormer's released BiLevelRoutingAttention, as the blog posts patch it into ultralytics — facts, not code.

The blog's model YAMLs and checkpoints speak this signature: ``(dim, num_heads=8, n_win=7, qk_dim=None,
qk_scale=None, kv_per_win=4, kv_downsample_ratio=4, kv_downsample_kernel=None, kv_downsample_mode='identity',
topk=4, param_attention='qkvo', param_routing=False, diff_routing=False, soft_routing=False, side_dwconv=3,
auto_pad=True)`` (the blog's NCHW variant pads by default). bracli implements the configuration the blog uses;
:meth:`LegacySettings.unsupported` names the first setting it does not. Pure Python, so the checkpoint
reader can call :func:`legacy_bra_globals` without importing anything heavy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from bracli.errors import UsageError

LEGACY_CLASSES = ("BiLevelRoutingAttention", "TopkRouting", "KVGather", "QKVLinear")
BRACLI_PACKAGE = "bracli."

# Parameters after ``dim``, positional in BiFormer's order, with the blog variant's defaults.
LEGACY_PARAMETERS: tuple[tuple[str, Any], ...] = (
    ("num_heads", 8), ("n_win", 7), ("qk_dim", None), ("qk_scale", None), ("kv_per_win", 4),
    ("kv_downsample_ratio", 4), ("kv_downsample_kernel", None), ("kv_downsample_mode", "identity"), ("topk", 4),
    ("param_attention", "qkvo"), ("param_routing", False), ("diff_routing", False), ("soft_routing", False),
    ("side_dwconv", 3), ("auto_pad", True),
)
# The type each position takes in a YAML row (named as the error says it).
INT, OPTIONAL_INT, NUMBER, TEXT, FLAG = "an integer", "an integer or None", "a number or None", "a string", "a bool"
KINDS = {"num_heads": INT, "n_win": INT, "qk_dim": OPTIONAL_INT, "qk_scale": NUMBER, "kv_per_win": OPTIONAL_INT,
         "kv_downsample_ratio": OPTIONAL_INT, "kv_downsample_kernel": OPTIONAL_INT, "kv_downsample_mode": TEXT,
         "topk": INT, "param_attention": TEXT, "param_routing": FLAG, "diff_routing": FLAG, "soft_routing": FLAG,
         "side_dwconv": INT, "auto_pad": FLAG}
# What bracli implements of the settings it does not take as arguments.
IMPLEMENTED = {"param_attention": "qkvo", "kv_downsample_mode": "identity", "param_routing": False,
               "diff_routing": False, "soft_routing": False}


@dataclass(frozen=True)
class LegacySettings:
    """One legacy BRA layer's hyper-parameters (``dim`` is the input channels the blog's parser injected)."""

    dim: int
    num_heads: int = 8
    n_win: int = 7
    qk_dim: int | None = None
    qk_scale: float | None = None
    kv_per_win: int | None = 4
    kv_downsample_ratio: int | None = 4
    kv_downsample_kernel: int | None = None
    kv_downsample_mode: str = "identity"
    topk: int = 4
    param_attention: str = "qkvo"
    param_routing: bool = False
    diff_routing: bool = False
    soft_routing: bool = False
    side_dwconv: int = 3
    auto_pad: bool = True

    @property
    def effective_qk_dim(self) -> int:
        return self.qk_dim or self.dim

    def unsupported(self) -> tuple[str, Any] | None:
        """The first ``(setting, value)`` bracli's module does not implement, or None."""
        for name, implemented in IMPLEMENTED.items():
            value = getattr(self, name)
            if value != implemented:
                return name, value
        if self.qk_scale and not math.isclose(self.qk_scale, self.effective_qk_dim ** -0.5, rel_tol=1e-6):
            return "qk_scale", self.qk_scale  # the released code treats None and 0 alike: qk_dim ** -0.5
        return None

    def bracli_args(self) -> list[Any]:
        """Args of a bracli YAML row: ``[dim, n_win, num_heads, topk, qk_dim, side_dwconv]`` (+ ``False`` when
        padding is off, bracli's seventh positional argument)."""
        args = [self.dim, self.n_win, self.num_heads, self.topk, self.effective_qk_dim, self.side_dwconv]
        return args if self.auto_pad else [*args, False]

    def describe(self) -> str:
        """``dim 64, n_win 7, heads 8, topk 4`` (+ the settings that differ from bracli's defaults)."""
        text = f"dim {self.dim}, n_win {self.n_win}, heads {self.num_heads}, topk {self.topk}"
        if self.effective_qk_dim != self.dim:
            text += f", qk_dim {self.effective_qk_dim}"
        if self.side_dwconv != 3:
            text += f", side_dwconv {self.side_dwconv}"
        return text if self.auto_pad else text + ", auto_pad off"

    def metadata(self, index: int, follows: int) -> dict[str, Any]:
        """This layer's entry under a converted model's ``bra: layers:`` (the keys rendered models use, and more)."""
        return {"index": index, "placement": f"layer {follows}", "follows": follows, "channels": self.dim,
                "n_win": self.n_win, "heads": self.num_heads, "topk": self.topk, "qk_dim": self.effective_qk_dim,
                "side_dwconv": self.side_dwconv, "auto_pad": self.auto_pad}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def unsupported_message(where: str, setting: str, value: Any) -> str:
    """One line naming a legacy setting bracli does not implement, and what it does implement."""
    implemented = ", ".join(f"{k}={v!r}" for k, v in IMPLEMENTED.items())
    return (f"{where}: {setting}={value!r} is not implemented by bracli's BiLevelRoutingAttention "
            f"(it implements {implemented} and the default qk_scale)")


def legacy_bra_globals(names: Iterable[str]) -> list[str]:
    """The globals among ``names`` that are BiFormer's legacy BRA classes pickled outside bracli.

    Give it ``torch.serialization.get_unsafe_globals_in_checkpoint(path)``: a non-empty answer means the file
    was trained with a patched ultralytics and ``bra migrate`` converts it.
    """
    return [name for name in names
            if name.rpartition(".")[2] in LEGACY_CLASSES and "." in name and not name.startswith(BRACLI_PACKAGE)]


def legacy_checkpoint_message(path: object, names: Iterable[str]) -> str | None:
    """The one-line error for a checkpoint that pickles legacy BRA classes, or None when it does not."""
    found = legacy_bra_globals(names)
    if not found:
        return None
    return (f"{path} was trained with a patched ultralytics (it pickles {found[0]}); convert it with "
            f"`bra migrate {path} --out NEW.pt`, then use NEW.pt")


def parse_legacy_arguments(args: list[Any], where: str) -> dict[str, Any]:
    """A blog YAML row's positional values by BiFormer's parameter names, each checked for its type.

    ``"None"`` counts as None (ultralytics' own YAMLs write it so); anything keyword-like, and a string where a
    number or bool belongs, is a ``UsageError`` naming the argument — nothing is evaluated.
    """
    if len(args) > len(LEGACY_PARAMETERS):
        names = ", ".join(name for name, _ in LEGACY_PARAMETERS)
        raise UsageError(f"{where}: {len(args)} arguments, but BiFormer's signature takes at most "
                         f"{len(LEGACY_PARAMETERS)} after the injected channels ({names})")
    values = {}
    for position, ((name, _), value) in enumerate(zip(LEGACY_PARAMETERS, args, strict=False), start=1):
        if isinstance(value, dict) or (isinstance(value, str) and "=" in value):
            raise UsageError(f"{where}: argument {position} is keyword-style ({_short(value)}); the blog's dialect "
                             f"is positional in BiFormer's order{_keyword_hint(value)}")
        values[name] = _typed(name, None if value == "None" else value, where, position)
    return values


def _keyword_hint(value: dict | str) -> str:
    """Where the keyword the user wrote belongs, e.g. ``: n_win is argument 2``."""
    keyword = str(next(iter(value), "")) if isinstance(value, dict) else value.partition("=")[0].strip()
    positions = {name: position for position, (name, _) in enumerate(LEGACY_PARAMETERS, start=1)}
    if keyword in positions:
        return f": write only values; {keyword} is argument {positions[keyword]}"
    return f" ({', '.join(name for name, _ in LEGACY_PARAMETERS[:3])}, ...): write only values"


def _typed(name: str, value: Any, where: str, position: int) -> Any:
    kind = KINDS[name]
    ok = {INT: is_int(value), OPTIONAL_INT: value is None or is_int(value),
          NUMBER: value is None or is_number(value), TEXT: isinstance(value, str),
          FLAG: isinstance(value, bool)}[kind]
    if not ok:
        got = f"the string {value!r}" if isinstance(value, str) else repr(value)
        raise UsageError(f"{where}: argument {position} ({name}) must be {kind}, got {got}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
