"""The one place BRA's hyper-parameters are validated: the module, the renderer and the CLI all call this.

Pure Python (no torch), so the renderer can check options before anything heavy is imported. The
error is a ``UsageError`` (exit 2 on the command line) that is also a ``ValueError`` (what Python
callers of the module expect).
"""

from __future__ import annotations

from bracli.errors import UsageError


class BraOptionError(UsageError, ValueError):
    """A BRA hyper-parameter the attention cannot be built with."""


def check_bra_options(*, n_win: int, num_heads: int, topk: int, side_dwconv: int, qk_dim: int | None = None,
                      dim: int | None = None, where: str = "") -> None:
    """Raise ``BraOptionError`` naming the first invalid option.

    ``dim`` (the channels the layer sees) is checked when known; ``qk_dim`` defaults to ``dim``.
    ``where`` is appended to divisibility messages (e.g. " at p3 for scale n").
    """
    named = {"n_win": n_win, "heads": num_heads, "topk": topk}
    if qk_dim is not None:
        named["qk_dim"] = qk_dim
    if dim is not None:
        named["dim"] = dim
    for name, value in named.items():
        if not _is_int(value) or value < 1:
            raise BraOptionError(f"{name}={value!r} is invalid; it must be a positive integer")
    if topk > n_win**2:
        raise BraOptionError(f"topk={topk} exceeds the n_win²={n_win**2} regions there are (n_win={n_win})")
    if not _is_int(side_dwconv) or side_dwconv < 0 or (side_dwconv and side_dwconv % 2 == 0):
        raise BraOptionError(f"side_dwconv={side_dwconv!r} is invalid; it must be an odd kernel size (e.g. 3, 5), "
                             "or 0 to switch the local context conv off")
    if dim is not None and dim % num_heads:
        raise BraOptionError(f"heads={num_heads} does not divide the dim={dim} channels{where}")
    effective_qk = qk_dim if qk_dim is not None else dim
    if effective_qk is not None and effective_qk % num_heads:
        raise BraOptionError(f"heads={num_heads} does not divide qk_dim={effective_qk}{where}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def region_grid(height, width, n_win: int, region_size: int | None = None) -> tuple:
    """``(rows, cols, region_h, region_w)``: BRA's region grid and region size for a height×width map.

    Without ``region_size`` the grid is ``n_win × n_win``; with it, ``max(n_win, ⌈side / region_size⌉)``
    regions per side, so regions hold at most ``region_size`` tokens per side and the grid grows with the
    map. The map is padded right/bottom to ``rows·region_h × cols·region_w``. Sizes may be ints or the
    size tensors ``torch.jit.trace`` produces (the arithmetic then stays in the traced graph).
    """
    rows = cols = n_win
    if region_size is not None:
        rows = _at_least(_ceil_div(height, region_size), n_win)
        cols = _at_least(_ceil_div(width, region_size), n_win)
    return rows, cols, _ceil_div(height, rows), _ceil_div(width, cols)


def _ceil_div(size, parts):
    """⌈size / parts⌉ with positive operands only: ONNX integer division truncates, so ``-(-a // b)`` exports wrong."""
    return (size + parts - 1) // parts


def _at_least(size, floor: int):
    """max(size, floor); a traced size tensor is clamped instead (Python's max would freeze its value)."""
    return size.clamp(min=floor) if hasattr(size, "clamp") else max(size, floor)


def check_region_size(region_size: int | None) -> None:
    """Raise ``BraOptionError`` unless ``region_size`` (tokens per region side, or None) is valid."""
    if region_size is not None and (not _is_int(region_size) or region_size < 1):
        raise BraOptionError(f"region_size={region_size!r} is invalid; it must be a positive integer "
                             "(tokens per region side), or None for a fixed n_win × n_win grid")
