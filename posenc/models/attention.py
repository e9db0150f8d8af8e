"""Multi-head self-attention that lets a position encoding in through the four hooks of
:class:`posenc.core.base.PositionEncoding`, on ``scaled_dot_product_attention`` wherever possible."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from posenc.bias.fused import attention_with_bias
from posenc.core.base import PositionEncoding
from posenc.core.positions import Positions


def attention_mask(
    n: int, m: int, *, causal: bool, key_mask: torch.Tensor | None, device: torch.device
) -> torch.Tensor | None:
    """Boolean ``(b | 1, 1, n, m)`` mask, True where query i may attend to key j, or None for all.

    Causal masking aligns the n queries with the last n of the m keys (a cache holds the rest).
    """
    mask = None
    if causal:
        i = torch.arange(n, device=device).unsqueeze(1) + (m - n)
        mask = (torch.arange(m, device=device).unsqueeze(0) <= i).view(1, 1, n, m)
    if key_mask is not None:
        keys = key_mask.view(key_mask.shape[0], 1, 1, m)
        mask = keys if mask is None else mask & keys
    return mask


class Attention(nn.Module):
    """Multi-head self-attention, ``(b, n, dim) -> (b, n, dim)``."""

    def __init__(self, dim: int, heads: int, *, causal: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads, self.head_dim, self.causal, self.dropout = heads, dim // heads, causal, dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        *,
        position: PositionEncoding,
        q_positions: Positions,
        k_positions: Positions,
        key_mask: torch.Tensor | None = None,
        cache=None,
        layer: int = 0,
    ) -> torch.Tensor:
        b, n, _ = x.shape
        # (b, n, 3 * dim) -> 3 x (b, h, n, head_dim)
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        hooks = position.hooks
        if "rotary" in hooks:
            new_k_positions = Positions(n, q_positions.offset, q_positions.explicit)
            q, k = position.rotate(q, k, q_positions=q_positions, k_positions=new_k_positions)
        if cache is not None:
            k, v = cache.extend(layer, k, v)
        m = k.shape[-2]
        mask = attention_mask(n, m, causal=self.causal, key_mask=key_mask, device=x.device)
        dropout = self.dropout if self.training else 0.0
        fused = None
        if key_mask is None and dropout == 0 and hasattr(position, "fused_attention"):
            # an encoding may compute its bias (and value) terms inside one attention (None: not here)
            fused = position.fused_attention(
                q, k, v, q_positions=q_positions, k_positions=k_positions, causal=self.causal
            )
        bias = None
        if "bias" in hooks and fused is None:
            bias = position.score_bias(q, k, q_positions=q_positions, k_positions=k_positions)
        causal = self.causal and key_mask is None  # the mask is then the causal one alone
        if fused is not None:
            out = fused
        elif "value" in hooks:
            out = self._explicit_attention(q, k, v, bias, mask, dropout, position, q_positions, k_positions, causal)
        else:
            if bias is not None and _learned_bias_on_cpu(q, bias, dropout):
                # CPU's sdpa has no fused gradient for attn_mask: one autograd node, which applies a
                # causal mask itself
                bias = bias if causal else _masked_bias(bias, mask, q.dtype)
                out = attention_with_bias(q, k, v, bias, causal=causal, need_weights=False)[0]
            elif bias is not None or key_mask is not None:
                # padding can hide every key of a row: an additive finite mask keeps it NaN-free
                bias = _masked_bias(bias if bias is not None else q.new_zeros(()), mask, q.dtype)
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
            elif self.causal and m == n:
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
            else:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        # (b, h, n, head_dim) -> (b, n, dim)
        return self.proj(out.transpose(1, 2).flatten(2))  # (b, n, h * d), also when n = 0

    def _explicit_attention(self, q, k, v, bias, mask, dropout, position, q_positions, k_positions, causal=False):
        if dropout == 0 and q.dtype in (torch.float32, torch.float64):
            if not causal and (bias is not None or mask is not None):
                bias = _masked_bias(bias if bias is not None else q.new_zeros(()), mask, q.dtype)
            out, weights = attention_with_bias(q, k, v, bias, causal=causal)
            extra = position.value_term(weights, q_positions=q_positions, k_positions=k_positions)
            return out if extra is None else out + extra.to(out.dtype)
        logits = (q @ k.transpose(-1, -2)).float() / math.sqrt(self.head_dim)
        if bias is not None:
            logits = logits + bias.float()
        if mask is not None:
            logits = logits.masked_fill(~mask, torch.finfo(torch.float32).min)
        weights = F.dropout(logits.softmax(dim=-1), p=dropout, training=dropout > 0).to(v.dtype)
        out = weights @ v
        extra = position.value_term(weights, q_positions=q_positions, k_positions=k_positions)
        return out if extra is None else out + extra.to(out.dtype)


def _learned_bias_on_cpu(q: torch.Tensor, bias: torch.Tensor, dropout: float) -> bool:
    return (
        bias.requires_grad
        and torch.is_grad_enabled()
        and dropout == 0
        and q.device.type == "cpu"
        and q.dtype in (torch.float32, torch.float64)
    )


def _masked_bias(bias: torch.Tensor, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """Fold a boolean mask into an additive bias with a large finite negative value (a row with no
    visible key then gets uniform weights instead of NaN)."""
    bias = bias.float()
    if mask is not None:
        bias = bias.masked_fill(~mask, torch.finfo(dtype).min / 2)
    return bias.to(dtype)
