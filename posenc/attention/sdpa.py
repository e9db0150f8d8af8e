"""PyTorch's ``scaled_dot_product_attention``, with a materialised bias and the mask folded in."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from posenc.attention.inputs import check_bias, check_mask, check_qkv
from posenc.attention.masks import MaskSpec
from posenc.core.precision import arithmetic_dtype
from posenc.core.validation import check_float


def masked_bias(bias: torch.Tensor, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """Fold a boolean mask into an additive bias with a large finite negative value (a row with no
    visible key then gets uniform weights instead of NaN). The result has rank 4: SDPA reads the
    last two dimensions of its ``attn_mask`` as ``(n, m)`` and refuses one of rank 0 or 1."""
    bias = bias.to(arithmetic_dtype(bias.dtype, dtype))  # float32 or wider
    bias = bias.reshape((1,) * (4 - bias.ndim) + tuple(bias.shape))
    if mask is not None:
        bias = bias.masked_fill(~mask, torch.finfo(dtype).min / 2)
    return bias.to(dtype)


def sdpa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    mask: MaskSpec | None = None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """q ``(b, h, n, d)``, k/v ``(b, h, m, d)`` -> ``(b, h, n, dv)``; bias broadcastable to
    ``(b, h, n, m)``."""
    check_qkv(q, k, v)
    check_bias(bias, q, k)
    check_mask(mask, q, k)
    check_float("dropout", dropout, minimum=0.0, maximum=1.0)
    mask = mask or MaskSpec()
    n, m = q.shape[-2], k.shape[-2]
    if bias is None and mask.only_causal and m == n:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
    if bias is None and mask.is_empty:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    visible = mask.dense(n, m, q.device)
    if bias is None and (mask.key_mask is None and mask.q_docs is None):
        # causal/window only: every row sees at least its own key
        return F.scaled_dot_product_attention(q, k, v, attn_mask=visible, dropout_p=dropout)
    # padding or documents can hide every key of a row: an additive finite mask keeps it NaN-free, and
    # such a row attends to every key with equal weights and sends no gradient to q or k, as in the
    # eager reference (left to the large negative bias, SDPA's kernels gave those rows' gradients
    # their own way: q, k and v off from eager by up to 0.8 where such a row had an upstream gradient)
    folded = masked_bias(bias if bias is not None else q.new_zeros(()), visible, q.dtype)
    if visible is not None:
        has_key = visible.any(-1, keepdim=True)  # (b | 1, 1, n, 1)
        q, folded = torch.where(has_key, q, 0), torch.where(has_key, folded, 0)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=folded, dropout_p=dropout)
