"""Attention with an additive bias that is learned or depends on the queries, in one autograd node.

``scaled_dot_product_attention`` on CPU has no fused kernel that returns the gradient of its
``attn_mask``; with a bias that requires grad it falls back to a composite of a dozen operations
(its safe softmax alone adds three passes over the ``(b, h, n, m)`` logits). :func:`attention_with_bias`
computes the same attention as one :class:`torch.autograd.Function`: the forward keeps only the
softmax weights (and the output), the backward forms the gradient of the logits once and reads the
gradients of q, k and the bias from it. It also returns the weights, so an encoding with a term on
the values (Shaw et al.'s ``a^V``) can use them and send their gradient back through the same node.

Verified by float64 ``gradcheck`` and against ``scaled_dot_product_attention`` in
tests/bias/test_fused.py.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from posenc.core.validation import check_float_tensor


#: Causal attention is computed in blocks of query rows against the keys they can see; at most this
#: many blocks (smaller ones skip more of the masked triangle but cost more calls).
MAX_BLOCKS = 16
MIN_BLOCK_ROWS = 64


def _row_blocks(n: int, m: int, causal: bool) -> list[tuple[int, int, int]]:
    """``(start, end, keys)``: query rows ``start:end`` and the number of keys they can see (the
    queries are the last n of the m keys)."""
    if not causal or n <= MIN_BLOCK_ROWS:
        return [(0, n, m)]
    rows = max(MIN_BLOCK_ROWS, -(-n // MAX_BLOCKS))
    return [(s, min(s + rows, n), min(s + rows, n) + m - n) for s in range(0, n, rows)]


class _AttentionWithBias(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, scale, causal, need_weights):
        # contiguous once, so that every block below is a batched matrix view (no copy per product)
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        n, m = q.shape[-2], k.shape[-2]
        blocks = _row_blocks(n, m, causal)
        ctx.bias_shapes = None
        if bias is not None:
            # (.., n | 1, m | 1) -> (b | 1, h | 1, n, m) view, so that blocks of rows can be sliced
            full = (1,) * (4 - bias.ndim) + tuple(bias.shape)
            ctx.bias_shapes = (bias.shape, full)
            bias = bias.reshape(full).expand(full[0], full[1], n, m)
        weights, out = [], None
        if len(blocks) > 1:
            out = q.new_empty(*q.shape[:-1], v.shape[-1])
        for s, e, keys in blocks:
            # (b, h, rows, d) @ (b, h, d, keys) -> (b, h, rows, keys), scaled and biased in place
            logits = torch.matmul(q[..., s:e, :], k[..., :keys, :].transpose(-1, -2)).mul_(scale)
            if bias is not None:
                logits = logits.add_(bias[..., s:e, :keys])
            if causal:
                # row s + r sees keys up to s + r + m - n: the strict upper triangle of the last e - s keys
                hidden = torch.ones(e - s, e - s, dtype=torch.bool, device=q.device).triu_(1)
                logits[..., keys - (e - s) :].masked_fill_(hidden, float("-inf"))
            w = torch.softmax(logits, dim=-1)
            del logits
            if out is None:
                out = torch.matmul(w, v)
            else:
                out[..., s:e, :] = torch.matmul(w, v[..., :keys, :])
            weights.append(w)
        ctx.save_for_backward(q, k, v, out, *weights)
        ctx.scale, ctx.blocks = scale, blocks
        ctx.set_materialize_grads(False)  # unused outputs get None, not a tensor of zeros
        if not need_weights:
            all_weights = q.new_empty(0)
            ctx.mark_non_differentiable(all_weights)
        elif len(blocks) == 1:
            all_weights = weights[0]
        else:
            all_weights = q.new_empty(*q.shape[:-1], m)
            for (s, e, keys), w in zip(blocks, weights):
                all_weights[..., s:e, :keys] = w
                all_weights[..., s:e, keys:] = 0
        return out, all_weights

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_weights):
        q, k, v, out, *weights = ctx.saved_tensors
        need_q, need_k, need_v, need_bias = ctx.needs_input_grad[:4]
        n, m = q.shape[-2], k.shape[-2]
        grad_out = torch.zeros_like(out) if grad_out is None else grad_out.contiguous()
        if grad_weights is not None and grad_weights.numel() == 0:
            grad_weights = None
        grad_q = torch.empty_like(q) if need_q else None
        grad_k = torch.zeros_like(k) if need_k else None
        grad_v = torch.zeros_like(v) if need_v else None
        grad_bias = None
        if need_bias:
            shape, full = ctx.bias_shapes
            grad_bias = q.new_empty(*full[:2], n, m)  # every block writes its rows, zeros past its keys
        if grad_weights is None:
            # sum_j w_ij (grad_out_i . v_j) = grad_out_i . out_i: a (b, h, n) product, not (b, h, n, m)
            delta = (grad_out * out).sum(-1, keepdim=True)
        for (s, e, keys), w in zip(ctx.blocks, weights):
            g = grad_out[..., s:e, :]
            if need_v:
                grad_v[..., :keys, :] += torch.matmul(w.transpose(-1, -2), g)
            # gradient of the weights: from the output, plus whatever the caller did with them
            grad_w = torch.matmul(g, v[..., :keys, :].transpose(-1, -2))
            if grad_weights is not None:
                grad_w = grad_w.add_(grad_weights[..., s:e, :keys])
                block_delta = (grad_w * w).sum(-1, keepdim=True)
            else:
                block_delta = delta[..., s:e, :]
            # softmax backward in place: gradient of the logits = w * (grad_w - sum_j w grad_w)
            grad_logits = grad_w.sub_(block_delta).mul_(w)
            if need_bias:
                grad_bias[..., s:e, :keys] = grad_logits.sum_to_size(*full[:2], e - s, keys)
                grad_bias[..., s:e, keys:] = 0
            if need_q:
                grad_q[..., s:e, :] = torch.matmul(grad_logits, k[..., :keys, :]).mul_(ctx.scale)
            if need_k:
                grad_k[..., :keys, :] += torch.matmul(grad_logits.transpose(-1, -2), q[..., s:e, :]).mul_(ctx.scale)
        if need_bias:
            grad_bias = grad_bias.sum_to_size(full).reshape(shape)
        return grad_q, grad_k, grad_v, grad_bias, None, None, None


def attention_with_bias(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    causal: bool = False,
    need_weights: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``softmax(q k^T * scale + bias) v`` and the softmax weights.

    q: ``(b, h, n, d)``; k: ``(b, h, m, d)``; v: ``(b, h, m, dv)``; bias: broadcastable to
    ``(b, h, n, m)`` (a mask is folded in as a large finite negative value), or None. ``scale``
    defaults to ``1/sqrt(d)``. ``causal=True`` masks every key after its query (key ``j > i + m - n``,
    the queries being the last n of the m keys); those weights are left at zero without being
    computed. Returns ``(out (b, h, n, dv), weights (b, h, n, m))`` (weights None unless
    ``need_weights``); gradients flow to q, k, v and the bias, and from the weights when the caller
    uses them. Not twice differentiable.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_float_tensor(name, t, ndim=4)
    if k.shape[-1] != q.shape[-1] or k.shape[:-1] != v.shape[:-1] or k.shape[:2] != q.shape[:2]:
        raise ValueError(
            f"`q`, `k`, `v` must be (b, h, n, d), (b, h, m, d), (b, h, m, dv), "
            f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if bias is not None:
        check_float_tensor("bias", bias)
        target = (*q.shape[:-1], k.shape[-2])
        try:
            fits = bias.ndim <= 4 and torch.broadcast_shapes(bias.shape, target) == target
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(f"`bias` must broadcast to (b, h, n, m) = {target}, got {tuple(bias.shape)}")
        bias = bias.to(q.dtype)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    out, weights = _AttentionWithBias.apply(q, k, v, bias, scale, bool(causal), bool(need_weights))
    return out, (weights if need_weights else None)
