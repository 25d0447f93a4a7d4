"""Token-level attention of each query region over the union of its routed key/value regions.

Layout: q, k, v are channel-major over region-ordered tokens, ``(channels, regions, tokens)`` — what
one matrix product ``W @ X`` of the projection produces when X holds the tokens region by region.
Every (channel, region) pair is then a contiguous run of ``tokens`` values, so gathering the routed
regions of a query region is a row gather that lands directly in the ``(head_dim, topk * tokens)``
blocks the attention products consume; nothing is concatenated or transposed afterwards. The
result is region-major, ``(regions, channels, tokens)``, so every chunk writes its output in place.

Two interchangeable paths compute the same function:

- chunked (eager CPU, fp32/fp64): query regions are processed a few at a time, so one chunk's
  attention matrix stays in cache and the full matrix never exists. Backward recomputes a chunk's
  probabilities (one product and one softmax) instead of storing them: they would be by far the
  largest tensor. Gradients of routed keys/values are summed back with ``index_add_``, which is
  deterministic on CPU. Chunks are shared out whole between the torch threads.
- fused (everything else: CUDA, autocast, tracing/ONNX export, ``torch.compile``): routed regions
  gathered with ``index_select``, then one ``F.scaled_dot_product_attention`` call, which runs the
  fused GPU kernels and exports to ONNX.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode

CHUNK_BYTES = 2**20
"""Target size of one chunk's attention matrix; 1-2 MiB measured fastest on a 2-core AVX2 CPU."""

Chunks = list[tuple[int, int]]

_THREAD_COUNT_LOCK = threading.Lock()
"""Serialises the threaded sections: each one sets torch's (process-wide) thread count and restores it."""


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, routes: torch.Tensor, num_heads: int,
           scale: float) -> torch.Tensor:
    """Multi-head attention of every query region over the tokens of its routed regions.

    Args:
        q, k: ``(qk_dim, regions, tokens)``; v: ``(dim, regions, tokens)``; all contiguous.
        routes: ``(regions, topk)`` int64, the regions (index into dim 1) each query region attends to.
        num_heads: channels of q, k and v are split into this many consecutive groups.
        scale: factor on the dot products.

    Returns:
        ``(regions, dim, tokens)``: region-major, so each chunk of query regions writes its result in
        place; the caller reads it back into NCHW in the same pass that adds LCE.
    """
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # no-ops for the projection's split
    if not _chunked_ok(q, k, v):
        return attend_fused(q, k, v, routes, num_heads, scale)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _ChunkedAttention.apply(q, k, v, routes, num_heads, scale)
    return attend_chunked(q, k, v, routes, num_heads, scale)


def _chunked_ok(*tensors: torch.Tensor) -> bool:
    """The chunked path is eager CPU code in full precision; the rest goes to the fused kernel."""
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    return all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) for t in tensors)


def attend_fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, routes: torch.Tensor, num_heads: int,
                 scale: float) -> torch.Tensor:
    """Gather routed regions, then one fused attention call (GPU kernels, ONNX export, compile)."""
    dim, regions, tokens = v.shape
    topk = routes.shape[-1]
    flat = routes.reshape(-1)

    def heads_last(t: torch.Tensor, selected: int) -> torch.Tensor:
        """(C, R·selected, T) -> (R, heads, selected·T, C/heads), contiguous: the fused kernels need a
        unit stride on the last dimension and otherwise fall back to materialising the attention."""
        t = t.reshape(num_heads, -1, regions, selected, tokens).permute(2, 0, 3, 4, 1)
        return t.reshape(regions, num_heads, selected * tokens, -1).contiguous()

    out = F.scaled_dot_product_attention(heads_last(q, 1), heads_last(k.index_select(1, flat), topk),
                                         heads_last(v.index_select(1, flat), topk), scale=scale)
    return out.transpose(-1, -2).reshape(regions, dim, tokens)


def chunk_regions(num_heads: int, tokens: int, topk: int, itemsize: int) -> int:
    """Query regions per chunk, so that one chunk's attention matrix is about ``CHUNK_BYTES``."""
    return max(1, CHUNK_BYTES // (num_heads * tokens * topk * tokens * itemsize))


def routed_rows(routes: torch.Tensor, channels: int) -> torch.Tensor:
    """Row indices into ``t.view(channels * regions, tokens)``, ordered (query region, channel, slot).

    Gathering these rows gives, per query region and channel, the tokens of its routed regions side
    by side: per head, the ``(head_dim, topk * tokens)`` block of keys or values.
    """
    regions = routes.shape[0]
    channel_rows = torch.arange(channels, device=routes.device).view(1, channels, 1) * regions
    return (routes.unsqueeze(1) + channel_rows).reshape(-1)


class _Chunked:
    """Everything one call of the chunked path shares between its chunks and threads.

    Per-head blocks are indexed ``region * heads + head``: queries are pre-scaled and arranged so
    once per call, and outputs and query gradients are written there chunk by chunk, in place.
    """

    def __init__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, routes: torch.Tensor, num_heads: int,
                 scale: float) -> None:
        self.k, self.v, self.num_heads, self.scale = k, v, num_heads, scale
        self.qk_dim, self.regions, self.tokens = q.shape
        self.dim, self.topk = v.shape[0], routes.shape[1]
        self.k_rows, self.v_rows = routed_rows(routes, self.qk_dim), routed_rows(routes, self.dim)
        q_heads = q.transpose(0, 1).clone(memory_format=torch.contiguous_format).mul_(scale)  # a copy, never q
        self.q_heads = q_heads.view(-1, self.qk_dim // num_heads, self.tokens)
        step = chunk_regions(num_heads, self.tokens, self.topk, q.element_size())
        self.chunks: Chunks = [(start, min(start + step, self.regions)) for start in range(0, self.regions, step)]

    def blocks(self, t: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """The per-head blocks of query regions start:stop."""
        return t[start * self.num_heads:stop * self.num_heads]

    def gathered(self, t: torch.Tensor, channels: int, start: int, stop: int) -> torch.Tensor:
        """The rows of a gather-ordered tensor that belong to query regions start:stop."""
        return t[start * channels * self.topk:stop * channels * self.topk]

    def probs(self, start: int, stop: int) -> tuple[torch.Tensor, ...]:
        """Scaled queries, attention probabilities and routed keys/values of query regions start:stop.

        Shapes ``(B, dk, T)``, ``(B, T, topk·T)``, ``(B, dk, topk·T)``, ``(B, dv, topk·T)``,
        ``B = (stop - start) · heads``.
        """
        q_c = self.blocks(self.q_heads, start, stop)
        shape = (q_c.shape[0], -1, self.topk * self.tokens)
        k_sel = self.k.view(-1, self.tokens).index_select(0, self.gathered(self.k_rows, self.qk_dim, start, stop))
        v_sel = self.v.view(-1, self.tokens).index_select(0, self.gathered(self.v_rows, self.dim, start, stop))
        k_sel, v_sel = k_sel.view(shape), v_sel.view(shape)
        return q_c, torch.softmax(torch.bmm(q_c.transpose(1, 2), k_sel), dim=-1), k_sel, v_sel

    def forward(self) -> torch.Tensor:
        out = self.v.new_empty(self.regions, self.dim, self.tokens)
        out_blocks = out.view(-1, self.dim // self.num_heads, self.tokens)

        def work(start: int, stop: int) -> None:
            _, probs, _, v_sel = self.probs(start, stop)
            torch.bmm(v_sel, probs.transpose(1, 2), out=self.blocks(out_blocks, start, stop))

        in_threads(work, self.chunks)
        return out

    def backward(self, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gradients of q, k, v; reproducible whatever thread ran which chunk.

        Routed regions of different chunks overlap, so gradients of the gathered keys/values are first
        written, chunk by chunk, into buffers in gather order, then summed into k and v by one
        ``index_add_`` in that fixed order.
        """
        grad_out = grad_out.contiguous().view(-1, self.dim // self.num_heads, self.tokens)
        grad_q = torch.empty_like(self.q_heads)
        grad_k_sel = self.k.new_empty(self.k_rows.numel(), self.tokens)
        grad_v_sel = self.v.new_empty(self.v_rows.numel(), self.tokens)

        def work(start: int, stop: int) -> None:
            q_c, probs, k_sel, v_sel = self.probs(start, stop)
            grad_o = self.blocks(grad_out, start, stop)
            grad_probs = torch.bmm(grad_o.transpose(1, 2), v_sel)
            torch.bmm(grad_o, probs, out=self.gathered(grad_v_sel, self.dim, start, stop).view(v_sel.shape))
            grad_logits = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)  # of scaled logits
            grad_q_c = self.blocks(grad_q, start, stop)
            torch.baddbmm(grad_q_c, k_sel, grad_logits.transpose(1, 2), beta=0, alpha=self.scale, out=grad_q_c)
            torch.bmm(q_c, grad_logits, out=self.gathered(grad_k_sel, self.qk_dim, start, stop).view(k_sel.shape))

        in_threads(work, self.chunks)
        grad_k = torch.zeros_like(self.k)
        grad_k.view(-1, self.tokens).index_add_(0, self.k_rows, grad_k_sel)
        grad_v = torch.zeros_like(self.v)
        grad_v.view(-1, self.tokens).index_add_(0, self.v_rows, grad_v_sel)
        grad_q = grad_q.view(self.regions, self.qk_dim, self.tokens).transpose(0, 1).contiguous()
        return grad_q, grad_k, grad_v


def attend_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, routes: torch.Tensor, num_heads: int,
                   scale: float) -> torch.Tensor:
    """The chunked path's forward, without autograd (inference)."""
    return _Chunked(q, k, v, routes, num_heads, scale).forward()


class _ChunkedAttention(torch.autograd.Function):
    """Chunked attention; backward recomputes each chunk's probabilities instead of storing them."""

    @staticmethod
    def forward(ctx, q, k, v, routes, num_heads, scale):
        ctx.save_for_backward(q, k, v, routes)
        ctx.num_heads, ctx.scale = num_heads, scale
        return attend_chunked(q, k, v, routes, num_heads, scale)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, routes = ctx.saved_tensors
        grads = _Chunked(q, k, v, routes, ctx.num_heads, ctx.scale).backward(grad_out)
        return *grads, None, None, None


def in_threads(work: Callable[[int, int], None], chunks: Chunks) -> None:
    """Run ``work(start, stop)`` for every chunk, spread over the torch threads.

    A chunk is a handful of small products. Splitting each product across threads would cost one
    thread barrier per product — thousands per call, each stalling whenever the CPU is shared — so
    threads take whole chunks from a common queue and run them single-threaded instead (intra-op
    threads are set to 1 for the duration, under a lock, so concurrent callers cannot leave the
    process with the wrong count). ``work`` must write only to its own chunk's outputs.
    """
    errors: list[BaseException] = []
    inference = torch.is_inference_mode_enabled()  # thread-local: helper threads must run in the caller's mode
    # a dispatch mode (FLOP counter, memory tracker) sees only the thread it was entered in: stay in it
    if min(torch.get_num_threads(), len(chunks)) <= 1 or _get_current_dispatch_mode() is not None:
        _drain(work, iter(chunks), threading.Lock(), errors, inference)
    else:
        with _THREAD_COUNT_LOCK:
            _drain_in_threads(work, chunks, errors, inference)
    if errors:
        raise errors[0]


def _drain(work: Callable[[int, int], None], queue, lock: threading.Lock, errors: list[BaseException],
           inference: bool) -> None:
    """Take chunks from ``queue`` until it is empty (or another thread failed)."""
    try:
        # grad and inference mode are per thread; this path builds no graph of its own, and outputs made
        # under inference mode may only be written to under inference mode
        with torch.inference_mode() if inference else torch.no_grad():
            while not errors:
                with lock:
                    chunk = next(queue, None)
                if chunk is None:
                    return
                work(*chunk)
    except BaseException as error:  # re-raised by in_threads once every thread has stopped
        errors.append(error)


def _drain_in_threads(work: Callable[[int, int], None], chunks: Chunks, errors: list[BaseException],
                      inference: bool) -> None:
    configured = torch.get_num_threads()
    threads = min(configured, len(chunks))
    queue, lock = iter(chunks), threading.Lock()
    torch.set_num_threads(1)
    try:
        helpers = [threading.Thread(target=_drain, args=(work, queue, lock, errors, inference), daemon=True)
                   for _ in range(threads - 1)]
        for helper in helpers:
            helper.start()
        _drain(work, queue, lock, errors, inference)
        for helper in helpers:
            helper.join()
    finally:
        torch.set_num_threads(configured)
