"""The eager reference: every logit formed, in float32 (float64 for float64 inputs)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from posenc.attention.inputs import check_bias, check_mask, check_qkv
from posenc.attention.masks import MaskSpec
from posenc.core.precision import arithmetic_dtype
from posenc.core.terms import ScoreMod, block_indices
from posenc.core.validation import check_float


def eager_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    score_mod: ScoreMod | None = None,
    mask: MaskSpec | None = None,
    value: Callable[[torch.Tensor], torch.Tensor | None] | None = None,
    scale: float | None = None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """``softmax(q k^T * scale + bias) v + value(weights)``, q ``(b, h, n, d)``, k/v ``(b, h, m, d)``
    -> ``(b, h, n, dv)`` in v's dtype. bias: broadcastable to ``(b, h, n, m)``; score_mod: applied to
    the whole grid; value: maps the ``(b, h, n, m)`` weights (in v's dtype) to a term on the output.
    A row whose keys are all masked gets uniform weights (never NaN)."""
    check_qkv(q, k, v)
    check_bias(bias, q, k)
    check_mask(mask, q, k)
    check_float("dropout", dropout, minimum=0.0, maximum=1.0)
    b, h, n, d = q.shape
    m = k.shape[-2]
    work = arithmetic_dtype(q.dtype)
    scale = 1.0 / math.sqrt(d) if scale is None else check_float("scale", scale)
    # (b, h, n, d) @ (b, h, d, m) -> (b, h, n, m)
    logits = torch.matmul(q.to(work), k.to(work).transpose(-1, -2)) * scale
    if bias is not None:
        logits = logits + bias.to(work)
    if score_mod is not None:
        idx = block_indices(b, h, 0, n, 0, m, q.device)
        logits = score_mod.fn(logits, *idx, *score_mod.tensors).to(work)
    visible = (mask or MaskSpec()).dense(n, m, q.device)
    if visible is not None:
        logits = logits.masked_fill(~visible, torch.finfo(work).min / 2)
    weights = logits.softmax(dim=-1)
    if dropout > 0:  # a branch, not ``training=dropout > 0``: under a dynamic compile that is a SymBool
        weights = F.dropout(weights, p=dropout)
    out = torch.matmul(weights, v.to(work)).to(v.dtype)
    extra = value(weights.to(v.dtype)) if value is not None else None
    return out if extra is None else out + extra.to(out.dtype)
