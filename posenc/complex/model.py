"""A small complex-valued Transformer over complex word-order embeddings (Wang et al. 2019,
arXiv:1912.12333, section 3.3): complex embedding, pre-norm blocks of complex self-attention and a
complex feed-forward layer, then a readout to real features and a real output layer.

Checked in tests/complex/test_model.py: it trains (the loss falls) on a task that needs word order,
and gradients reach the amplitude, frequency and phase tables.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from posenc.complex.embedding import ComplexOrderEmbedding, Sharing
from posenc.complex.layers import (
    ComplexLinear,
    ComplexRMSNorm,
    ComplexSelfAttention,
    ComplexToReal,
    check_key_mask,
    crelu,
)
from posenc.core.validation import check_float, check_layers_fit, check_positive_int


class ComplexBlock(nn.Module):
    """``z + attn(norm(z))`` then ``z + W2 crelu(W1 norm(z))``, all complex."""

    def __init__(self, dim: int, heads: int, *, causal: bool, mlp_ratio: float, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        hidden = max(1, int(dim * mlp_ratio))
        self.attn_norm = ComplexRMSNorm(dim, **kw)
        self.attn = ComplexSelfAttention(dim, heads, causal=causal, **kw)
        self.mlp_norm = ComplexRMSNorm(dim, **kw)
        self.up = ComplexLinear(dim, hidden, **kw)
        self.down = ComplexLinear(hidden, dim, **kw)

    def forward(self, z: torch.Tensor, *, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        z = z + self.attn(self.attn_norm(z), key_mask=key_mask)
        return z + self.down(crelu(self.up(self.mlp_norm(z))))


class ComplexOrderTransformer(nn.Module):
    """Token ids ``(b, n)`` -> real outputs ``(b, n, out_dim)`` through a complex network.

    Args:
        vocab_size: number of token ids.
        dim: complex width; divisible by ``heads``.
        depth, heads: blocks and attention heads.
        out_dim: width of the real output (``vocab_size`` by default, for language modelling).
        causal: causal attention.
        frequency, phase: sharing of the embedding's tables (see :class:`ComplexOrderEmbedding`).
        readout: ``"concat"`` (real and imaginary parts) or ``"abs"`` (modulus) before the output layer.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        depth: int,
        heads: int,
        *,
        out_dim: int | None = None,
        causal: bool = False,
        frequency: Sharing = "word",
        phase: Sharing = "word",
        mlp_ratio: float = 2.0,
        readout: Literal["concat", "abs"] = "concat",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("depth", depth)
        check_float("mlp_ratio", mlp_ratio, positive=True)
        kw = {"device": device, "dtype": dtype}
        out_dim = vocab_size if out_dim is None else check_positive_int("out_dim", out_dim)
        # every layer's parameters (complex layers hold two real tensors), named by the model's arguments
        dim = check_positive_int("dim", dim)
        hidden = max(1, int(dim * mlp_ratio))
        block = 2 * (3 * dim * dim + (dim + 1) * dim + (dim + 1) * hidden + (hidden + 1) * dim) + 2 * dim
        count = 3 * check_positive_int("vocab_size", vocab_size) * dim + depth * block + (2 * dim + 1) * out_dim
        sizes = {"vocab_size": vocab_size, "dim": dim, "depth": depth, "out_dim": out_dim}
        check_layers_fit(sizes, count, dtype, device)
        self.embed = ComplexOrderEmbedding(vocab_size, dim, frequency=frequency, phase=phase, **kw)
        self.blocks = nn.ModuleList(
            ComplexBlock(dim, heads, causal=causal, mlp_ratio=mlp_ratio, **kw) for _ in range(depth)
        )
        self.norm = ComplexRMSNorm(dim, **kw)
        self.readout = ComplexToReal(readout)
        self.head = nn.Linear(self.readout.out_dim(dim), out_dim, **kw)

    def forward(
        self,
        tokens: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        offset: int = 0,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tokens ``(b, n)``; positions ``(n,)``/``(b, n)``; key_padding_mask ``(b, n)`` bool -> ``(b, n, out_dim)``."""
        z = self.embed(tokens, positions=positions, offset=offset)
        check_key_mask("key_padding_mask", key_padding_mask, *tokens.shape)
        for block in self.blocks:
            z = block(z, key_mask=key_padding_mask)
        # the complex network runs in complex64 for half-precision parameters (there is no complex bfloat16)
        return self.head(self.readout(self.norm(z)).to(self.head.weight.dtype))
