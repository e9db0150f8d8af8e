"""The blocked CPU attention kernel: ``softmax(q k^T * scale + bias) v (+ value term)`` in blocks of
query rows, in one autograd node.

``scaled_dot_product_attention`` on CPU has no fused kernel that returns the gradient of its
``attn_mask``; with a bias that requires grad it falls back to a composite of a dozen operations.
:func:`blocked_attention` computes the same attention as one :class:`torch.autograd.Function`:

* rows are processed in blocks, each against only the keys it can see (``k0:k1``: the causal
  triangle and the part outside a sliding window are skipped in both products);
* the bias is a tensor broadcastable to ``(b, h, n, m)`` and/or a :class:`BlockTerm` computing it one
  block at a time (so an encoding never needs an ``(n, m)`` table: ALiBi, T5 and Shaw's key term
  come from their ``score_mod``, Transformer-XL from a product per block);
* a bias term's part linear in the keys (Transformer-XL's ``u . k_j``) may come as a
  ``BlockTerm.query_shift`` added to the queries of the kernel's own product;
* a value term (Shaw et al.'s ``a^V``) is a second :class:`BlockTerm` reading each block's weights
  (``BlockTerm.table``: as features of the weights, multiplied with their table once for all rows);
* the forward keeps only the softmax weights (none without gradients, where blocks of at most
  :data:`INFERENCE_ROWS` rows keep the memory linear in n); the backward forms the gradient of the
  logits once per block and reads the gradients of q, k, v and the bias from it. A
  :class:`BlockTerm` with its own ``backward`` adds each block's gradients to its tensors' from the
  block's logit (or output) gradient; the tensors of one without it receive theirs by
  differentiating that block's term again. A term may take a form for the run's mask
  (``BlockTerm.under_mask``: Shaw's terms under a causal mask touch only the visible half of their band).

Verified by float64 ``gradcheck`` and against the eager reference in tests/attention/test_blocked.py.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from posenc.attention.inputs import check_bias, check_mask, check_qkv
from posenc.attention.masks import MaskSpec
from posenc.core.precision import arithmetic_dtype
from posenc.core.tables import building_tables
from posenc.core.terms import BlockTerm
from posenc.core.validation import check_bool, check_float

#: When a mask skips keys: at most this many row blocks of at least MIN_BLOCK_ROWS rows (fewer rows per
#: block skip more of the hidden keys; fewer blocks cost less Python).
MAX_BLOCKS = 16
MIN_BLOCK_ROWS = 64
#: Inference (no gradients): at most this many rows per block, so that the logits held at once grow
#: linearly in n.
INFERENCE_ROWS = 256


def row_blocks(n: int, m: int, mask: MaskSpec, *, training: bool) -> list[tuple[int, int, int, int]]:
    """``(s, e, k0, k1)``: query rows ``s:e`` and the keys ``k0:k1`` they can see.

    Traced by ``torch.compile``, one block of all rows: a loop over blocks fixes the graph to the length
    it was traced at, so every new length would compile again (and ``fullgraph=True`` fail at dynamo's
    recompile limit); the compiled kernel then forms the block's ``(n, m)`` logits, as the eager
    reference does."""
    if torch.compiler.is_compiling():
        return [(0, n, *mask.key_range(0, n, n, m))]
    skips = mask.causal or mask.window is not None
    rows = n if not skips or n <= MIN_BLOCK_ROWS else max(MIN_BLOCK_ROWS, -(-n // MAX_BLOCKS))
    if not training:
        rows = min(rows, INFERENCE_ROWS)
    rows = max(rows, 1)
    return [(s, min(s + rows, n), *mask.key_range(s, min(s + rows, n), n, m)) for s in range(0, n, rows)]


def _grads_of(outputs: torch.Tensor, grad: torch.Tensor, tensors: list[torch.Tensor]) -> tuple:
    wanted = [t for t in tensors if t.requires_grad]
    if not wanted:
        return (None,) * len(tensors)
    got = iter(torch.autograd.grad(outputs, wanted, grad, allow_unused=True))
    return tuple(next(got) if t.requires_grad else None for t in tensors)


def _add(total, part):
    if part is None:
        return total
    return part if total is None else total + part


class _Terms(NamedTuple):
    """The callables of the bias and value :class:`BlockTerm` (their tensors travel separately)."""

    bias_fn: Callable | None = None
    bias_add: Callable | None = None
    bias_backward: Callable | None = None
    value_fn: Callable | None = None
    value_backward: Callable | None = None
    n_bias: int = 0  #: how many of the tensors belong to the bias term
    #: the value term gives features and its last tensor is their table (``BlockTerm.table``)
    factored: bool = False

    @staticmethod
    def of(bias_term: BlockTerm | None, value_term: BlockTerm | None) -> _Terms:
        bias_term = bias_term or BlockTerm(None)
        value_term = value_term or BlockTerm(None)
        return _Terms(
            bias_term.fn,
            bias_term.add,
            bias_term.backward,
            value_term.fn,
            value_term.backward,
            len(bias_term.tensors),
            value_term.table is not None,
        )

    def split(self, tensors) -> tuple[tuple, tuple, torch.Tensor | None]:
        """``tensors`` as (the bias term's, the value term's, the value term's feature table or None)."""
        bias, value = tuple(tensors[: self.n_bias]), tuple(tensors[self.n_bias :])
        return (bias, value[:-1], value[-1]) if self.factored else (bias, value, None)


def _features_product(features: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``(b, h, n, f) @ (f, dv)`` or ``(h, f, dv)`` -> ``(b, h, n, dv)`` in the features' dtype."""
    table = table.to(features.dtype)
    if table.ndim == 2:  # one (b h n, f) @ (f, dv) product
        return (features.reshape(-1, features.shape[-1]) @ table).view(*features.shape[:-1], table.shape[-1])
    return torch.matmul(features, table)


def _forward_blocks(q, k, v, bias, mask, terms, scale, training, tensors):
    """The block loop: ``(out, weights per block (None when not kept), blocks)``; plain tensor
    operations (differentiable as they stand, except a term's in-place ``add``, used only inside the
    autograd node below or without gradients)."""
    b, h, n, _ = q.shape
    m = k.shape[-2]
    blocks = row_blocks(n, m, mask, training=training)
    bias_tensors, value_tensors, table = terms.split(tensors)
    if bias is not None:
        full = (1,) * (4 - bias.ndim) + tuple(bias.shape)
        bias = bias.reshape(full).expand(full[0], full[1], n, m)
    in_place = terms.bias_add is not None and not torch.compiler.is_compiling() and (
        not torch.is_grad_enabled() or not any(t.requires_grad for t in (q, k, bias, *bias_tensors) if t is not None)
    )
    pieces, weights, features = [None] * len(blocks), [None] * len(blocks), [None] * len(blocks)
    neg = torch.finfo(q.dtype).min / 2  # finite: a row with no visible key stays NaN-free
    q = q * scale  # (b, h, n, d): scaling the queries, not each block's (rows, keys) logits
    # the last block first (under a causal mask the largest): the smaller ones after it reuse its freed
    # temporaries instead of faulting in fresh memory
    for index in reversed(range(len(blocks))):
        s, e, k0, k1 = blocks[index]
        if k1 <= k0:
            pieces[index] = q.new_zeros(b, h, e - s, v.shape[-1])
            continue  # (a factored value term's features of these rows: zeros, below)
        # (b, h, rows, d) @ (b, h, d, keys) -> (b, h, rows, keys), scaled and biased
        logits = torch.matmul(q[..., s:e, :], k[..., k0:k1, :].transpose(-1, -2))
        if bias is not None:
            logits = logits + bias[..., s:e, k0:k1]
        if in_place:
            terms.bias_add(logits, s, e, k0, k1, *bias_tensors)
        elif terms.bias_fn is not None:
            logits = logits + terms.bias_fn(s, e, k0, k1, *bias_tensors).to(logits.dtype)
        triangle = _causal_corner(mask, s, e, k0, k1, n, m, logits) if in_place or not logits.requires_grad else None
        visible = None if triangle is not None else mask.block(s, e, k0, k1, n, m, q.device)
        if triangle is not None:
            # causal alone: only the block's last rows x rows columns hold hidden keys (above the diagonal)
            logits[..., k1 - k0 - triangle.shape[-1] :].add_(triangle)
        elif visible is not None and logits.requires_grad:
            # differentiated by autograd (traced by torch.compile): masked_fill, whose gradient at a hidden
            # entry is zero, so a row that sees no key sends none to q, k or the bias, as in the eager
            # reference and the autograd node below (an additive mask sent them that row's gradient)
            logits = logits.masked_fill(~visible, neg)
        elif visible is not None:
            # an additive mask (0 or a large negative number, broadcast over heads): one add, where a
            # broadcast masked_fill takes several times as long on CPU
            hidden = torch.zeros(visible.shape, dtype=logits.dtype, device=q.device).masked_fill_(~visible, neg)
            logits = logits.add_(hidden)
        # the logits are not needed after the softmax: in place (bit for bit the same), unless traced or
        # recorded for autograd
        in_place_softmax = not logits.requires_grad and not torch.compiler.is_compiling()
        w = torch.softmax(logits, dim=-1, out=logits) if in_place_softmax else torch.softmax(logits, dim=-1)
        del logits
        block = torch.matmul(w, v[..., k0:k1, :])
        if terms.factored:
            features[index] = terms.value_fn(w, s, e, k0, k1, *value_tensors)
        elif terms.value_fn is not None:
            block = block + terms.value_fn(w, s, e, k0, k1, *value_tensors).to(block.dtype)
        pieces[index] = block
        weights[index] = w if training else None
    out = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-2)
    if not terms.factored:
        return out, weights, blocks, None
    # a factored value term: the features of every row, then one product with their table
    like = next((f for f in features if f is not None), None)
    dtype = like.dtype if like is not None else arithmetic_dtype(q.dtype)
    features = [
        f if f is not None else q.new_zeros(b, h, e - s, table.shape[-2], dtype=dtype)
        for f, (s, e, _, _) in zip(features, blocks)
    ]
    features = features[0] if len(features) == 1 else torch.cat(features, dim=-2)  # (b, h, n, f)
    return out + _features_product(features, table).to(out.dtype), weights, blocks, features


@functools.lru_cache(maxsize=64)
def _upper_triangle(rows: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(rows, rows)``: a large negative number above the diagonal, 0 on and below it."""
    with building_tables():  # cached: an ordinary tensor even when first built under inference mode
        return torch.full((rows, rows), torch.finfo(dtype).min / 2, dtype=dtype, device=device).triu_(1)


def _causal_corner(mask: MaskSpec, s: int, e: int, k0: int, k1: int, n: int, m: int, logits: torch.Tensor):
    """The additive mask of a block's last ``rows`` columns when the mask is causal alone and they are
    the block's diagonal square (keys ``s + m - n .. e + m - n - 1``, every earlier key visible), else None."""
    if not mask.only_causal or k0 != 0 or k1 != e + m - n or s + m - n < 0:
        return None
    if torch.compiler.is_compiling():
        return _upper_triangle.__wrapped__(e - s, logits.dtype, logits.device)
    return _upper_triangle(e - s, logits.dtype, logits.device)


def _full_weights(weights, blocks, shape, like):
    all_weights = like.new_zeros(shape)
    for (s, e, k0, k1), w in zip(blocks, weights):
        if w is not None:
            all_weights[..., s:e, k0:k1] = w
    return all_weights


#: Arguments of _BlockedAttention.forward before the terms' tensors.
_N_ARGS = 9


class _BlockedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, mask, terms, scale, need_weights, training, *tensors):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        b, h, n, _ = q.shape
        m = k.shape[-2]
        ctx.bias_shapes = None
        if bias is not None:
            ctx.bias_shapes = (bias.shape, (1,) * (4 - bias.ndim) + tuple(bias.shape))
        with torch.no_grad():
            out, weights, blocks, features = _forward_blocks(q, k, v, bias, mask, terms, scale, training, tensors)
        ctx.save_for_backward(q, k, v, out, features, *tensors)
        ctx.weights = weights  # the blocks' softmax weights (not inputs or outputs: held directly)
        ctx.scale, ctx.blocks, ctx.shape, ctx.terms, ctx.mask = scale, blocks, (b, h, n, m), terms, mask
        ctx.set_materialize_grads(False)
        if not need_weights:
            all_weights = q.new_empty(0)
            ctx.mark_non_differentiable(all_weights)
        else:
            all_weights = _full_weights(weights, blocks, (b, h, n, m), q)
        return out, all_weights

    @staticmethod
    def backward(ctx, grad_out, grad_weights):
        if torch.is_grad_enabled():
            # create_graph: the gradients below are formed from saved tensors, outside any graph, so
            # their own derivatives would be missing (once_differentiable leaves them silently out)
            raise RuntimeError(
                "blocked attention is not twice differentiable (a backward with create_graph=True); "
                "use attention='eager' for second derivatives"
            )
        q, k, v, out, features, *tensors = ctx.saved_tensors
        if any(w is None for w, (s, e, k0, k1) in zip(ctx.weights, ctx.blocks) if k1 > k0):
            raise RuntimeError("blocked_attention was run without gradients (training=False); it has no backward")
        terms, n_bias = ctx.terms, ctx.terms.n_bias
        needs = ctx.needs_input_grad
        need_q, need_k, need_v, need_bias = needs[:4]
        _, _, n, m = ctx.shape
        grad_out = torch.zeros_like(out) if grad_out is None else grad_out.contiguous()
        if grad_weights is not None and grad_weights.numel() == 0:
            grad_weights = None
        grad_q = torch.zeros_like(q) if need_q else None
        grad_k = torch.zeros_like(k) if need_k else None
        grad_v = torch.zeros_like(v) if need_v else None
        grad_bias = None
        if need_bias:
            shape, full = ctx.bias_shapes
            grad_bias = q.new_zeros(*full[:2], n, m)
        term_needs = needs[_N_ARGS:]
        live = [t.detach().requires_grad_(need) for t, need in zip(tensors, term_needs)]
        # a factored value term's feature table is the last tensor; its gradient is formed here
        n_own = len(live) - terms.factored
        bias_live, value_live = live[:n_bias], live[n_bias:n_own]
        grad_tensors = [None] * len(live)
        # a term with its own backward adds each block's part to zero-initialised gradients
        for i, (t, need) in enumerate(zip(tensors[:n_own], term_needs)):
            own = terms.bias_backward if i < n_bias else terms.value_backward
            if need and own is not None:
                grad_tensors[i] = torch.zeros_like(t)
        bias_grads, value_grads = grad_tensors[:n_bias], grad_tensors[n_bias:n_own]
        grad_features = None
        if terms.factored:
            # the term is features @ table: one product each for the features' and the table's gradients
            table = tensors[-1].to(features.dtype)
            flat = grad_out.to(features.dtype)
            grad_features = _features_product(flat, table.transpose(-1, -2))  # (b, h, n, f)
            if term_needs[-1]:
                if table.ndim == 2:  # (f, b h n) @ (b h n, dv)
                    grad_table = features.reshape(-1, features.shape[-1]).t() @ flat.reshape(-1, flat.shape[-1])
                else:
                    grad_table = (features.transpose(-1, -2) @ flat).sum(0)
                grad_tensors[-1] = grad_table.to(tensors[-1].dtype)
        need_bias_terms = terms.bias_fn is not None and any(term_needs[:n_bias])
        fast_delta = grad_weights is None
        if fast_delta:
            # sum_j w_ij (grad_out_i . (v_j + value term_ij)) = grad_out_i . out_i (value terms are
            # linear in the weights): a (b, h, n) product, not (b, h, n, m)
            delta = (grad_out * out).sum(-1, keepdim=True)
        # the last block first, as in the forward
        for (s, e, k0, k1), w in reversed(list(zip(ctx.blocks, ctx.weights))):
            if k1 <= k0:
                continue
            g = grad_out[..., s:e, :]
            if need_v:
                grad_v[..., k0:k1, :] += torch.matmul(w.transpose(-1, -2), g)
            grad_w = torch.matmul(g, v[..., k0:k1, :].transpose(-1, -2))
            if grad_weights is not None:
                grad_w = grad_w.add_(grad_weights[..., s:e, k0:k1])
            shift = None  # a per-row constant a value term left out of grad_w
            # the gradient of the value term's block: of its output, or of its features when factored
            g_term = g if grad_features is None else grad_features[..., s:e, :]
            if terms.value_backward is not None:
                shift = terms.value_backward(g_term, w, s, e, k0, k1, value_live, value_grads, grad_w)
            elif terms.value_fn is not None:
                with torch.enable_grad():
                    w_live = w.detach().requires_grad_(True)
                    term = terms.value_fn(w_live, s, e, k0, k1, *value_live)
                    grads = _grads_of(term, g_term.to(term.dtype), [w_live, *value_live])
                grad_w = grad_w.add_(grads[0].to(grad_w.dtype))
                for i, gt in enumerate(grads[1:]):
                    grad_tensors[n_bias + i] = _add(grad_tensors[n_bias + i], gt)
            if fast_delta:
                block_delta = delta[..., s:e, :] if shift is None else delta[..., s:e, :] - shift
            else:  # rows of w sum to 1: a shift left out of grad_w drops out of grad_w - delta
                block_delta = (grad_w * w).sum(-1, keepdim=True)
            # softmax backward in place: gradient of the logits = w * (grad_w - sum_j w grad_w)
            grad_logits = grad_w.sub_(block_delta).mul_(w)
            if ctx.mask.key_mask is not None or ctx.mask.q_docs is not None:
                # a row that sees no key has uniform weights whatever its logits: none of their gradient
                blind = ~ctx.mask.block(s, e, k0, k1, n, m, q.device).any(-1, keepdim=True)
                grad_logits = grad_logits.masked_fill_(blind, 0)
            if need_bias:
                grad_bias[..., s:e, k0:k1] = grad_logits.sum_to_size(*full[:2], e - s, k1 - k0)
            if need_bias_terms and terms.bias_backward is not None:
                terms.bias_backward(grad_logits, s, e, k0, k1, bias_live, bias_grads)
            elif need_bias_terms:
                with torch.enable_grad():
                    term = terms.bias_fn(s, e, k0, k1, *bias_live)
                    grads = _grads_of(term, grad_logits.sum_to_size(term.shape).to(term.dtype), bias_live)
                for i, gt in enumerate(grads):
                    grad_tensors[i] = _add(grad_tensors[i], gt)
            if need_q:
                grad_q[..., s:e, :] = torch.matmul(grad_logits, k[..., k0:k1, :]).mul_(ctx.scale)
            if need_k:
                grad_k[..., k0:k1, :] += torch.matmul(grad_logits.transpose(-1, -2), q[..., s:e, :]).mul_(ctx.scale)
        if need_bias:
            grad_bias = grad_bias.sum_to_size(full).reshape(shape)
        return (grad_q, grad_k, grad_v, grad_bias, *(None,) * (_N_ARGS - 4), *grad_tensors)


def blocked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    bias_term: BlockTerm | None = None,
    value_term: BlockTerm | None = None,
    mask: MaskSpec | None = None,
    scale: float | None = None,
    need_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``softmax(q k^T * scale + bias + bias_term) v + value_term`` and (optionally) the weights.

    q: ``(b, h, n, d)``; k: ``(b, h, m, d)``; v: ``(b, h, m, dv)``; bias: broadcastable to
    ``(b, h, n, m)`` or None; bias_term/value_term: per-block terms (:class:`BlockTerm`); mask: which
    keys each query sees (the queries are the last n of the m keys). ``scale`` defaults to
    ``1/sqrt(d)``. Returns ``(out (b, h, n, dv), weights (b, h, n, m) or None)``; gradients flow to
    q, k, v, the bias, the terms' tensors, and from the weights when the caller uses them. Not twice
    differentiable. Masked weights are zero; a row with no visible key gets uniform weights over
    the keys its block reads.
    """
    check_qkv(q, k, v)
    check_bias(bias, q, k)
    check_mask(mask, q, k)
    check_bool("need_weights", need_weights)
    if bias is not None:
        bias = bias.to(q.dtype)
    mask = MaskSpec() if mask is None else mask
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else check_float("scale", scale)
    if q.shape[-2] == 0 or k.shape[-2] == 0:  # no queries, or nothing to attend to: zeros
        out = q.new_zeros(*q.shape[:-1], v.shape[-1]) + 0 * (q.sum() + k.sum() + v.sum())
        return out, (q.new_zeros(*q.shape[:-1], k.shape[-2]) if need_weights else None)
    if not torch.compiler.is_compiling():  # a term's form for this mask (traced runs keep the general one)
        bias_term, value_term = (
            term.under_mask(mask, q.shape[-2], k.shape[-2]) if term is not None and term.under_mask else term
            for term in (bias_term, value_term)
        )
        if bias_term is not None:
            # one query and one key: a term of other heads (an encoding built for another head count)
            # would otherwise fail inside the first block's in-place add
            with torch.no_grad():
                probe = bias_term.fn(0, 1, 0, 1, *bias_term.tensors)
            b, h = q.shape[:2]
            if probe.ndim != 4 or probe.shape[0] not in (1, b) or probe.shape[1] not in (1, h):
                raise ValueError(
                    f"`bias_term` must give blocks of shape (b | 1, h | 1, rows, keys) with (b, h) = ({b}, {h}) "
                    f"from `q`, got {tuple(probe.shape)} for one query and key (an encoding built for another "
                    "number of heads?)"
                )
    if bias_term is not None and bias_term.query_shift is not None:
        # (h, d) -> (h, 1, d): the term's part linear in the keys, carried by the kernel's own q k^T
        q = q + bias_term.query_shift.to(q.dtype).unsqueeze(-2)
    bias_tensors = tuple(bias_term.tensors) if bias_term is not None else ()
    value_tensors = tuple(value_term.tensors) if value_term is not None else ()
    if value_term is not None and value_term.table is not None:
        value_tensors = (*value_tensors, value_term.table)  # the features' table travels last
    tensors = (q, k, v, bias, *bias_tensors, *value_tensors)
    training = bool(need_weights) or (
        torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    )
    terms = _Terms.of(bias_term, value_term)
    if torch.compiler.is_compiling() or not training:
        # the same blocks as plain operations: traced by torch.compile, no graph kept without gradients
        out, weights, blocks, _ = _forward_blocks(
            q, k, v, bias, mask, terms, scale, bool(need_weights), (*bias_tensors, *value_tensors)
        )
        if not need_weights:
            return out, None
        return out, _full_weights(weights, blocks, (*q.shape[:-1], k.shape[-2]), q)
    out, weights = _BlockedAttention.apply(
        q, k, v, bias, mask, terms, scale, bool(need_weights), training, *bias_tensors, *value_tensors
    )
    return out, (weights if need_weights else None)


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
    """``softmax(q k^T * scale + bias) v`` and the softmax weights (:func:`blocked_attention` with a
    bias tensor and an optional causal mask; key ``j > i + m - n`` is hidden)."""
    return blocked_attention(
        q, k, v, bias, mask=MaskSpec(causal=causal), scale=scale, need_weights=need_weights
    )
