"""Token-level attention of each query region over the union of its routed key/value regions.

Two interchangeable paths compute the same function, each on the layout that makes it cheap; the
caller asks ``use_chunked`` first and projects q, k, v into that path's layout.

- fused (the default): q, k, v token-major, ``(regions, tokens, channels)``, as views of one
  projection. Each query region's routed regions are gathered with one ``index_select`` and the heads
  are strided views, so one ``F.scaled_dot_product_attention`` call runs straight on them: torch's fused
  flash kernels on CPU and GPU, ONNX export, ``torch.compile`` and autocast.
- chunked (eager CPU, fp32/fp64, heads narrower than ``CHUNKED_BELOW_HEAD_DIM`` channels, where the
  fused CPU kernel is slow): q, k, v channel-major, ``(channels, regions, tokens)``. Every (channel,
  region) pair is a contiguous run of tokens, so gathering routed regions is a row gather that lands in
  the ``(head_dim, topk * tokens)`` blocks the products consume. Query regions are processed a few at
  a time, so one chunk's attention matrix stays in cache and the full matrix never exists; each chunk
  is three batched products and a softmax on torch's intra-op threads (nothing here changes thread
  settings). Backward recomputes a chunk's probabilities instead of storing them, and sums gradients
  of routed keys/values with ``index_add_`` (deterministic on CPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

CHUNK_BYTES = 2**20
"""Attention matrix per chunk and torch thread. On a 2-core AVX-512 CPU: with one thread 2 MiB chunks
were slower (a chunk's gathered keys and values outgrow the L2 cache); with two, 0.5-2 MiB per thread
measured alike, and close to the earlier design that ran whole chunks in helper threads."""

FUSED_CHUNK_BYTES = 2**24
"""Routed keys and values gathered per fused call on CPU. Measured on 2 cores with a batch of eight 640
images at scale n: one call for the whole batch (105 MB gathered) took ~1.3x the time of 16-24 MiB
groups forward and ~1.2x forward+backward: every call's gather lands in freshly mapped memory; 2 MiB
groups were slower again in training."""

CHUNKED_BELOW_HEAD_DIM = 16
"""Heads narrower than this take the chunked path on CPU. With 8-channel heads the fused CPU kernel took
~1.5-2x the chunked path's time (forward, and forward+backward, one or two threads); with 32-channel
heads it was as fast or faster."""


def use_chunked(x: torch.Tensor, head_dim: int) -> bool:
    """Whether attention on input like ``x`` with heads of ``head_dim`` channels takes the chunked path."""
    if _capturing_graph():
        return False
    if head_dim >= CHUNKED_BELOW_HEAD_DIM or torch.is_autocast_enabled("cpu"):
        return False
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def _capturing_graph() -> bool:
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()


def attend_fused(q: torch.Tensor, kv: torch.Tensor, routes: torch.Tensor, num_heads: int,
                 scale: float) -> torch.Tensor:
    """Multi-head attention of every query region over the tokens of its routed regions, token-major.

    Args:
        q: ``(regions, tokens, qk_dim)``; kv: ``(regions, tokens, qk_dim + dim)``, keys then values; any
            strides with a unit channel stride (views of one projection).
        routes: ``(regions, topk)`` int64, the regions (index into dim 0) each query region attends to.
        num_heads: channels of q, k and v are split into this many consecutive groups.
        scale: factor on the dot products.

    Returns:
        ``(regions, tokens, dim)``. In eager CPU code the query regions go in groups whose routed keys
        and values are about ``FUSED_CHUNK_BYTES``; elsewhere (GPU, export, compile) in one call.
    """
    step = q.shape[0]
    if q.device.type == "cpu" and not _capturing_graph():
        step = max(1, FUSED_CHUNK_BYTES // (routes.shape[-1] * kv[0].numel() * kv.element_size()))
    outs = [_attend_regions(q[start:start + step], kv, routes[start:start + step], num_heads, scale)
            for start in range(0, q.shape[0], step)]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _attend_regions(q: torch.Tensor, kv: torch.Tensor, routes: torch.Tensor, num_heads: int,
                    scale: float) -> torch.Tensor:
    qk_dim, topk = q.shape[-1], routes.shape[-1]
    k_sel, v_sel = kv.index_select(0, routes.reshape(-1)).split([qk_dim, kv.shape[-1] - qk_dim], dim=-1)

    def heads(t: torch.Tensor, selected: int) -> torch.Tensor:
        """A view (regions, heads, selected·tokens, head_dim): unit stride last, as the fused kernels need."""
        return rearrange(t, "(r s) t (h d) -> r h (s t) d", s=selected, h=num_heads)

    out = F.scaled_dot_product_attention(heads(q, 1), heads(k_sel, topk), heads(v_sel, topk), scale=scale)
    return rearrange(out, "r h t d -> r t (h d)")


def attend_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, routes: torch.Tensor, num_heads: int,
                   scale: float) -> torch.Tensor:
    """The same attention on channel-major q, k ``(qk_dim, regions, tokens)`` and v ``(dim, regions, tokens)``.

    Returns ``(regions, dim, tokens)``: region-major, so each chunk of query regions writes its result in
    place. Autograd goes through ``_ChunkedAttention`` when any input needs a gradient.
    """
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # no-ops for the projection's split
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _ChunkedAttention.apply(q, k, v, routes, num_heads, scale)
    return _Chunked(q, k, v, routes, num_heads, scale).forward()


def chunk_regions(num_heads: int, tokens: int, topk: int, itemsize: int) -> int:
    """Query regions per chunk: about ``CHUNK_BYTES`` of attention matrix for each torch thread."""
    budget = CHUNK_BYTES * torch.get_num_threads()
    return max(1, budget // (num_heads * tokens * topk * tokens * itemsize))


def routed_rows(routes: torch.Tensor, channels: int) -> torch.Tensor:
    """Row indices into ``t.view(channels * regions, tokens)``, ordered (query region, channel, slot).

    Gathering these rows gives, per query region and channel, the tokens of its routed regions side
    by side: per head, the ``(head_dim, topk * tokens)`` block of keys or values.
    """
    regions = routes.shape[0]
    channel_rows = torch.arange(channels, device=routes.device).view(1, channels, 1) * regions
    return (routes.unsqueeze(1) + channel_rows).reshape(-1)


class _Chunked:
    """Everything one call of the chunked path shares between its chunks.

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
        self.chunks = [(start, min(start + step, self.regions)) for start in range(0, self.regions, step)]

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

    def head_blocks(self, t: torch.Tensor) -> torch.Tensor:
        """A ``(regions, dim, tokens)`` tensor as per-head blocks ``(regions·heads, dim/heads, tokens)``."""
        return t.view(-1, self.dim // self.num_heads, self.tokens)

    def forward(self) -> torch.Tensor:
        out = self.v.new_empty(self.regions, self.dim, self.tokens)
        out_blocks = self.head_blocks(out)
        for start, stop in self.chunks:
            _, probs, _, v_sel = self.probs(start, stop)
            torch.bmm(v_sel, probs.transpose(1, 2), out=self.blocks(out_blocks, start, stop))
        return out

    def backward(self, grad_out: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Gradients of q, k, v from the output's gradient and the output itself.

        The softmax backward needs, per query token, ``Σ_j p_j·∂p_j``; that equals the dot product of
        the token's output with its output gradient (FlashAttention's identity), a product over
        channels instead of over all routed keys. Routed regions of different chunks overlap, so
        gradients of the gathered keys/values are first written chunk by chunk in gather order, then
        summed into k and v by one ``index_add_`` in that fixed order.
        """
        grad_out = self.head_blocks(grad_out.contiguous())
        row_dots = (grad_out * self.head_blocks(out)).sum(1, keepdim=True).transpose(1, 2)  # (B, T, 1)
        grad_q = torch.empty_like(self.q_heads)
        grad_k_sel = self.k.new_empty(self.k_rows.numel(), self.tokens)
        grad_v_sel = self.v.new_empty(self.v_rows.numel(), self.tokens)
        for start, stop in self.chunks:
            q_c, probs, k_sel, v_sel = self.probs(start, stop)
            grad_o = self.blocks(grad_out, start, stop)
            torch.bmm(grad_o, probs, out=self.gathered(grad_v_sel, self.dim, start, stop).view(v_sel.shape))
            grad_logits = torch.bmm(grad_o.transpose(1, 2), v_sel)  # of the probabilities, made logits in place
            grad_logits.sub_(self.blocks(row_dots, start, stop)).mul_(probs)
            grad_q_c = self.blocks(grad_q, start, stop)
            torch.baddbmm(grad_q_c, k_sel, grad_logits.transpose(1, 2), beta=0, alpha=self.scale, out=grad_q_c)
            torch.bmm(q_c, grad_logits, out=self.gathered(grad_k_sel, self.qk_dim, start, stop).view(k_sel.shape))
        grad_k = torch.zeros_like(self.k)
        grad_k.view(-1, self.tokens).index_add_(0, self.k_rows, grad_k_sel)
        grad_v = torch.zeros_like(self.v)
        grad_v.view(-1, self.tokens).index_add_(0, self.v_rows, grad_v_sel)
        grad_q = grad_q.view(self.regions, self.qk_dim, self.tokens).transpose(0, 1).contiguous()
        return grad_q, grad_k, grad_v


class _ChunkedAttention(torch.autograd.Function):
    """Chunked attention; backward recomputes each chunk's probabilities instead of storing them."""

    @staticmethod
    def forward(ctx, q, k, v, routes, num_heads, scale):
        out = _Chunked(q, k, v, routes, num_heads, scale).forward()
        ctx.save_for_backward(q, k, v, routes, out)
        ctx.num_heads, ctx.scale = num_heads, scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, routes, out = ctx.saved_tensors
        grads = _Chunked(q, k, v, routes, ctx.num_heads, ctx.scale).backward(grad_out, out)
        return *grads, None, None, None
