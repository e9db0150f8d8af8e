"""The declared forms in which an encoding's terms reach an attention kernel.

:class:`ScoreMod` is FlexAttention's score modification ``(score, b, h, q_idx, kv_idx) -> score``
with the tensors it reads listed (so a kernel can send gradients to them); :class:`BlockTerm` is a
term computed for a block of query rows ``s:e`` and keys ``k0:k1`` (a bias ``(b | 1, h | 1, rows,
keys)`` or, for a value term, ``(b, h, rows, dv)`` from the block's weights). Neither holds an
``(n, m)`` table unless the encoding itself needs one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch


class ScoreMod(NamedTuple):
    """``fn(score, b, h, q_idx, kv_idx, *tensors) -> score``, elementwise in its index arguments.

    The indices are integer tensors that broadcast against ``score`` (FlexAttention passes scalars,
    the blocked kernel ``(b, 1, 1, 1)``, ``(1, h, 1, 1)``, ``(1, 1, rows, 1)``, ``(1, 1, 1, keys)``);
    ``q_idx`` counts the n queries, ``kv_idx`` the m keys. ``tensors`` are the (small) tables it reads.

    ``static``: for each tensor, the dimensions whose size does not follow the batch or the sequence
    (heads, buckets, the ``2k + 1`` clipped offsets), which a compiled kernel keeps static; None when
    the score_mod is not declared compilable on CPU. Inductor's CPU template (torch 2.13) builds a
    score_mod with dynamic shapes only when every table read at an index computed from ``q_idx`` or
    ``kv_idx`` is read along a static dimension (an index into a dynamic one emits C++ that does not
    build); a declared score_mod meets that, so :mod:`posenc.attention.flex` compiles it on CPU.
    """

    fn: Callable[..., torch.Tensor]
    tensors: tuple[torch.Tensor, ...] = ()
    static: tuple[tuple[int, ...], ...] | None = None

    def bound(self) -> Callable[..., torch.Tensor]:
        """The score_mod in FlexAttention's five-argument form, closing over ``tensors``."""
        fn, tensors = self.fn, self.tensors

        def score_mod(score, b, h, q_idx, kv_idx):
            return fn(score, b, h, q_idx, kv_idx, *tensors)

        return score_mod


class BlockTerm(NamedTuple):
    """A term of one block of the ``(n, m)`` grid.

    Bias: ``fn(s, e, k0, k1, *tensors) -> (b | 1, h | 1, e - s, k1 - k0)`` in logit units.
    Value: ``fn(weights, s, e, k0, k1, *tensors) -> (b, h, e - s, dv)`` for the block's softmax
    weights ``(b, h, e - s, k1 - k0)`` (the rows' weights outside ``k0:k1`` are zero, so each row of
    the block sums to 1). A value term is linear in the weights (as ``sum_j w_ij a^V_ij`` is): the
    blocked kernel's softmax backward relies on it.

    Optional, for the blocked kernel's speed (without them it adds ``fn``'s result and
    differentiates ``fn`` once more per block in the backward):

    ``add(logits, s, e, k0, k1, *tensors) -> None`` (bias only) adds the term to the block's logits
    ``(b, h, e - s, k1 - k0)`` in place, up to a constant per row (which the softmax ignores).

    ``backward`` accumulates the block's gradients without evaluating the term again. ``grads`` is a
    list aligned with ``tensors``: a zero-initialised tensor shaped like each one whose gradient is
    wanted, else None; ``backward`` adds the block's part to them in place and leaves its other
    arguments unchanged unless stated.

    * Bias: ``backward(grad, s, e, k0, k1, tensors, grads) -> None`` with ``grad`` the gradient of the
      block's logits ``(b, h, e - s, k1 - k0)``.
    * Value: ``backward(grad, weights, s, e, k0, k1, tensors, grads, grad_weights) -> shift | None``
      with ``grad`` the gradient of the block's output ``(b, h, e - s, dv)``: adds the term's
      gradient with respect to the weights to ``grad_weights`` ``(b, h, e - s, k1 - k0)`` in place,
      less a constant per row that it returns as ``shift`` ``(b, h, e - s, 1)`` (None: no shift).

    ``under_mask(mask, n, m) -> BlockTerm`` returns the term for one run of the kernel under ``mask``
    (a :class:`~posenc.attention.masks.MaskSpec`) with n queries and m keys; the kernel calls it once
    before its blocks. The returned term may leave the entries the mask hides out of ``add``, read
    their weights as zero and their logit gradients as zero: the kernel adds its mask after the term,
    and in a row with a visible key a hidden entry's weight and logit gradient are exactly zero (a
    term may rely on that only where each row keeps a visible key, e.g. under a causal mask with no
    key padding).

    ``table`` (value only): the term is ``features @ table`` with ``table`` ``(f, dv)`` or ``(h, f, dv)``
    and ``fn`` giving the block's features ``(b, h, e - s, f)``, linear in the weights (Shaw et al.'s
    weights summed by offset); the kernel multiplies the features of all rows with the table at once,
    forms the table's gradient itself, and hands ``backward`` the gradient of the block's features in
    place of that of its output.

    ``query_shift`` (bias only): an ``(h, d)`` tensor added to every query before the kernel's own
    scaled product ``q k^T * scale``, which then carries the part of the term that is linear in the
    keys, ``shift_h . k_j * scale`` (Transformer-XL's term (c), ``u . k_j / sqrt(d)``), at no cost per
    block; ``fn``, ``add`` and ``backward`` leave that part out. Its gradient flows through the sum.
    """

    fn: Callable[..., torch.Tensor]
    tensors: tuple[torch.Tensor, ...] = ()
    backward: Callable[..., torch.Tensor | None] | None = None
    add: Callable[..., None] | None = None
    under_mask: Callable[..., BlockTerm] | None = None
    query_shift: torch.Tensor | None = None
    table: torch.Tensor | None = None


def position_gap(q_positions, k_positions, device) -> torch.Tensor | None:
    """For implicit positions, key j's offset from query i is ``j - i + gap``: the 0-d int64 ``gap``
    (key offset less query offset), else None. A tensor, so that a compiled score_mod reading it does
    not specialise on its value (cached decoding moves it at every step)."""
    if not (q_positions.is_implicit and k_positions.is_implicit):
        return None
    return torch.tensor(k_positions.offset - q_positions.offset, dtype=torch.int64, device=device)


def block_indices(b: int, h: int, s: int, e: int, k0: int, k1: int, device) -> tuple[torch.Tensor, ...]:
    """Index tensors of one block in the broadcasting layout a :class:`ScoreMod` accepts."""
    return (
        torch.arange(b, device=device).view(b, 1, 1, 1),
        torch.arange(h, device=device).view(1, h, 1, 1),
        torch.arange(s, e, device=device).view(1, 1, e - s, 1),
        torch.arange(k0, k1, device=device).view(1, 1, 1, k1 - k0),
    )


def bias_from_score_mod(mod: ScoreMod, b: int, h: int, *, dtype: torch.dtype = torch.float32) -> BlockTerm:
    """The :class:`BlockTerm` bias of an additive score_mod (its value at score 0 on a block), in
    ``dtype`` (a score_mod returns the score's dtype: float64 queries need a float64 zero)."""
    fn = mod.fn

    def block(s, e, k0, k1, *tensors):
        device = tensors[0].device if tensors else None
        idx = block_indices(b, h, s, e, k0, k1, device)
        zero = torch.zeros((), dtype=dtype, device=device)
        return fn(zero, *idx, *tensors)

    return BlockTerm(block, mod.tensors)


def gathered_bias_mod(bias: torch.Tensor, batch: int) -> ScoreMod:
    """An additive score_mod reading a materialised ``(b | 1, h | 1, n, m)`` bias by ``[b, h, q_idx, kv_idx]``.

    For terms with no smaller form (query-dependent positions, explicit positions of an offset MLP):
    the bias is computed once per call and only gathered inside the kernel.
    """
    table = bias.expand(batch, *bias.shape[1:])
    per_head = table.shape[1] > 1

    def fn(score, b, h, q_idx, kv_idx, table):
        return score + table[b, h if per_head else 0, q_idx, kv_idx].to(score.dtype)

    return ScoreMod(fn, (table,))
