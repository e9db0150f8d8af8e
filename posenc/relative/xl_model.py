"""A small Transformer-XL language model with segment-level recurrence (Dai et al. 2019,
arXiv:1901.02860, section 3.2).

A long text is read segment by segment. Each block keeps the last ``mem_len`` hidden states that
entered it (from earlier segments) as memory; the current segment's queries attend to memory plus
segment, causally, with :class:`~posenc.relative.transformer_xl.TransformerXLRelative` supplying the
relative terms. Memory is detached: no gradient flows into earlier segments (the paper's
stop-gradient ``SG``). Blocks are pre-norm, like :class:`posenc.models.Transformer`.

Verified in tests/relative/test_xl_model.py: with ``mem_len`` at least the text length, reading
segment by segment equals one causal pass over the whole text; outputs are causal and finite.
"""

from __future__ import annotations

import torch
from torch import nn

from posenc.attention.dispatch import attend
from posenc.attention.masks import MaskSpec
from posenc.core.positions import Positions
from posenc.core.validation import (
    can_read_values,
    check_float,
    check_int,
    check_on_device,
    check_positive_int,
    check_tensor,
)
from posenc.relative.transformer_xl import TransformerXLRelative

#: One ``(b, mem, dim)`` tensor per block: the hidden states that entered it in earlier segments.
Memory = list[torch.Tensor]


class XLBlock(nn.Module):
    """Pre-norm block whose attention reads ``[memory, segment]`` with relative terms (b)-(d)."""

    def __init__(self, dim: int, heads: int, *, mlp_ratio: float, dropout: float, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.heads, self.head_dim = heads, dim // heads
        self.attn_norm = nn.LayerNorm(dim, **kw)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False, **kw)
        self.proj = nn.Linear(dim, dim, bias=False, **kw)
        self.relative = TransformerXLRelative(dim, heads, dim // heads, causal=True, **kw)
        self.mlp_norm = nn.LayerNorm(dim, **kw)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden, **kw), nn.GELU(), nn.Linear(hidden, dim, **kw), nn.Dropout(dropout)
        )
        self.dropout = dropout

    def attend(self, x: torch.Tensor, memory: torch.Tensor | None) -> torch.Tensor:
        """x ``(b, n, dim)``, memory ``(b, mem, dim)`` or None -> ``(b, n, dim)``."""
        b, n, _ = x.shape
        context = x if memory is None else torch.cat([memory, x], dim=1)
        mem = context.shape[1] - n
        # (b, mem + n, 3 * dim) -> 3 x (b, h, mem + n, head_dim); queries only for the segment
        qkv = self.qkv(self.attn_norm(context)).view(b, mem + n, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        q = q[..., mem:, :]
        out = attend(
            q, k, v, position=self.relative, q_positions=Positions(n, mem), k_positions=Positions(mem + n),
            mask=MaskSpec(causal=True), dropout=self.dropout if self.training else 0.0,
        )
        # (b, h, n, head_dim) -> (b, n, dim)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attend(x, memory)
        return x + self.mlp(self.mlp_norm(x))


class TransformerXL(nn.Module):
    """Causal language model with Transformer-XL attention and segment-level recurrence.

    Args:
        vocab_size: number of token ids.
        dim: model width; even and divisible by ``heads``.
        depth: number of blocks.
        heads: attention heads.
        mem_len: hidden states kept per block between segments (0: no recurrence).
        mlp_ratio, dropout: block hyper-parameters.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        depth: int,
        heads: int,
        *,
        mem_len: int = 0,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("vocab_size", vocab_size)
        check_positive_int("depth", depth)
        check_positive_int("heads", heads)
        if check_positive_int("dim", dim) % heads:
            raise ValueError(f"`dim` must be divisible by `heads`, got dim={dim}, heads={heads}")
        self.mem_len = check_int("mem_len", mem_len, minimum=0)
        check_float("dropout", dropout, minimum=0.0, maximum=1.0)
        kw = {"device": device, "dtype": dtype}
        self.embed = nn.Embedding(vocab_size, dim, **kw)
        self.blocks = nn.ModuleList(
            XLBlock(dim, heads, mlp_ratio=mlp_ratio, dropout=dropout, **kw) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, **kw)
        self.head = nn.Linear(dim, vocab_size, **kw)

    def forward(self, tokens: torch.Tensor, *, memory: Memory | None = None) -> tuple[torch.Tensor, Memory]:
        """tokens ``(b, n)`` -> logits ``(b, n, vocab_size)`` and the memory for the next segment.

        memory: the list returned by the previous segment's call, or None at the start of a text.
        """
        check_tensor("tokens", tokens, ndim=2)
        self._check_token_ids(tokens)
        if memory is not None and len(memory) != len(self.blocks):
            raise ValueError(f"`memory` must hold one tensor per block ({len(self.blocks)}), got {len(memory)}")
        x = self.embed(tokens)
        new_memory = []
        for layer, block in enumerate(self.blocks):
            mem = memory[layer] if memory is not None and memory[layer].shape[1] > 0 else None
            seen = x if mem is None else torch.cat([mem, x], dim=1)
            # the paper's SG(.): later segments read these states but send no gradient into them
            new_memory.append(seen[:, max(seen.shape[1] - self.mem_len, 0) :].detach())
            x = block(x, mem)
        return self.head(self.norm(x)), new_memory

    def _check_token_ids(self, tokens: torch.Tensor) -> None:
        if tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"`tokens` must be integer token ids, int64 or int32 (what nn.Embedding takes), got {tokens.dtype}")
        if not torch.compiler.is_compiling():
            check_on_device("tokens", tokens, self.embed.weight.device, owner="the model")
        # the range is read back only where that is free: on the CPU, outside a compiled graph or a
        # torch.func transform (a CUDA embedding asserts on the device by itself)
        if tokens.device.type == "cpu" and tokens.numel() and can_read_values(tokens):
            vocab = self.embed.num_embeddings
            low, high = (int(t) for t in torch.aminmax(tokens))
            if low < 0 or high >= vocab:
                raise ValueError(f"`tokens` must be ids in [0, {vocab}) (vocab_size), got values in [{low}, {high}]")

    def forward_segments(self, tokens: torch.Tensor, *, segment_len: int) -> torch.Tensor:
        """Read ``tokens`` ``(b, n)`` in segments of ``segment_len`` with memory -> logits ``(b, n, vocab_size)``."""
        check_positive_int("segment_len", segment_len)
        check_tensor("tokens", tokens, ndim=2)
        memory, outputs = None, []
        for s in range(0, tokens.shape[1], segment_len):
            logits, memory = self(tokens[:, s : s + segment_len], memory=memory)
            outputs.append(logits)
        return torch.cat(outputs, dim=1)
