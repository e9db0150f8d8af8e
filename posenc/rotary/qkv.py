"""RoPE of queries and keys that come stacked with the values out of one projection.

A Transformer projects ``x`` once into ``(b, n, 3, h, d)`` and views it as ``(3, b, h, n, d)``. Rotating
the unbound q and k as two tensors costs, in training, a second pass over their gradients: the
rotation's backward writes the rotated gradients into new tensors, then the unbinding's backward
copies them, with v's, into the projection's gradient. :func:`rotate_qkv` is one autograd node over
the stacked tensor instead: its backward writes the rotated gradients of q and k and the gradient of
v straight into the projection's gradient, so the rotation costs no pass of its own there.

Measured (docs/performance.md, A/B in one process): the rope training step of the bf16 reference
Transformer, b8 n256 d128 L2 on 2 CPU threads, went from 1.03-1.07x to 1.02-1.04x of the model
without an encoding (paired per round: 1.04-1.06x to 1.02-1.03x).
"""

from __future__ import annotations

import torch

from posenc.core.transforms import under_transform
from posenc.rotary.fused import (
    _check_flags,
    _kernel_choice,
    _memory_order,
    _rotate_back_differentiably,
    cpp_rotated,
    cpp_tables,
    empty_in_order,
    rotate_tensors,
)


class _CppQKVRotation(torch.autograd.Function):
    """q and k of a stacked ``(3, ...)`` tensor rotated by the C++ function into one new ``(2, ...)``
    buffer (in the stacked tensor's memory order), v passed through; the backward forms the stacked
    tensor's gradient in one new buffer."""

    @staticmethod
    def forward(ctx, cos, sin, interleaved, qkv):
        tables = cpp_tables(cos, sin, qkv)
        order = _memory_order(qkv)
        pair = empty_in_order(torch.Size((2, *qkv.shape[1:])), order, dtype=qkv.dtype, device=qkv.device)
        q = cpp_rotated(qkv[0], tables, interleaved, into=pair[0])
        k = cpp_rotated(qkv[1], tables, interleaved, into=pair[1])
        ctx.save_for_backward(*tables)
        ctx.interleaved, ctx.shape, ctx.order = interleaved, qkv.shape, order
        return q, k, qkv[2]

    @staticmethod
    def backward(ctx, grad_q, grad_k, grad_v):
        tables = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the rotation back as differentiable operations
            back = _rotate_back_differentiably((grad_q, grad_k), *tables, ctx.interleaved)
            return None, None, None, torch.stack((*back, grad_v))
        grad = empty_in_order(ctx.shape, ctx.order, dtype=grad_q.dtype, device=grad_q.device)
        cpp_rotated(grad_q, tables, ctx.interleaved, -1.0, into=grad[0])
        cpp_rotated(grad_k, tables, ctx.interleaved, -1.0, into=grad[1])
        grad[2].copy_(grad_v)
        return None, None, None, grad


def rotate_qkv(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    interleaved: bool = False,
    fused: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """qkv ``(3, ..., n, d)`` (queries, keys and values stacked on the first dimension, e.g. a
    ``(3, b, h, n, d)`` view of one projection) -> ``(q', k', v)``, each ``(..., n, d)``: q and k
    rotated by the same angles (cos, sin broadcastable to ``(..., n, r/2)``, ``r <= d``), v as it is.
    Equal to rotating ``qkv.unbind(0)``'s q and k with :func:`posenc.rotary.fused.rotate_qk`; in
    training on the CPU's C++ path it is one autograd node whose backward adds no pass over the
    gradients. Inputs are assumed validated by the caller."""
    _check_flags(interleaved=interleaved, fused=fused)
    if (
        torch.is_grad_enabled() and qkv.requires_grad and not torch.compiler.is_compiling()
        and not under_transform((qkv, cos, sin)) and _kernel_choice(fused, (qkv,), cos, sin, interleaved) == "cpp"
    ):
        return _CppQKVRotation.apply(cos, sin, interleaved, qkv)
    q, k, v = qkv.unbind(0)
    q, k = rotate_tensors((q, k), cos, sin, interleaved=interleaved, fused=fused)
    return q, k, v
