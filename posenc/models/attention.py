"""Multi-head self-attention that lets a position encoding in through the hooks of
:class:`posenc.core.base.PositionEncoding`; the computation itself is chosen and run by
:func:`posenc.attention.attend`."""

from __future__ import annotations

import torch
from torch import nn

from posenc.attention.dispatch import attend, check_backend
from posenc.attention.masks import MaskSpec, attention_mask
from posenc.core.base import PositionEncoding
from posenc.core.positions import Positions
from posenc.core.validation import check_bool, check_float, check_positive_int

__all__ = ["Attention", "attention_mask"]


class Attention(nn.Module):
    """Multi-head self-attention, ``(b, n, dim) -> (b, n, dim)``.

    Args:
        dim, heads: model width and number of heads.
        causal: queries see only keys at or before them.
        dropout: on the attention weights, during training.
        attention: the backend (see :mod:`posenc.attention.dispatch`).
        window: sliding-window attention, or None: causal, each query sees its last ``window`` keys
            (``0 <= i - j < window``); not causal, the keys less than ``window`` away on either side
            (``|i - j| < window``).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        causal: bool = False,
        dropout: float = 0.0,
        attention: str = "auto",
        window: int | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("heads", heads)
        if dim % heads:
            raise ValueError(f"`dim` ({dim}) must be a multiple of `heads` ({heads})")
        check_float("dropout", dropout, minimum=0.0, maximum=1.0)
        self.heads, self.head_dim, self.causal, self.dropout = heads, dim // heads, check_bool("causal", causal), dropout
        self.backend = check_backend(attention)
        self.window = None if window is None else check_positive_int("window", window)
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
        documents: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache=None,
        layer: int = 0,
    ) -> torch.Tensor:
        """x ``(b, n, dim)``; key_mask ``(b, m)`` True for keys that may be seen; documents: the
        ``(b, n)`` query and ``(b, m)`` key document ids (attention stays inside a document)."""
        b, n, _ = x.shape
        # (b, n, 3 * dim) -> (3, b, h, n, head_dim)
        qkv = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if "rotary" in position.hooks:
            new_k_positions = Positions(n, q_positions.offset, q_positions.explicit)
            q, k, v = position.rotate_qkv(qkv, q_positions=q_positions, k_positions=new_k_positions)
        else:
            q, k, v = qkv.unbind(0)
        if cache is not None:
            k, v = cache.extend(layer, k, v)
        q_docs, k_docs = documents if documents is not None else (None, None)
        mask = MaskSpec(causal=self.causal, window=self.window, key_mask=key_mask, q_docs=q_docs, k_docs=k_docs)
        dropout = self.dropout if self.training else 0.0
        out = attend(
            q, k, v, position=position, q_positions=q_positions, k_positions=k_positions,
            mask=mask, backend=self.backend, dropout=dropout,
        )
        # (b, h, n, head_dim) -> (b, n, dim)
        return self.proj(out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))  # also when n = 0
