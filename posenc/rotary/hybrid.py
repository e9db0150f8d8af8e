"""NoPE/RoPE hybrids: attention layers without rotary encoding (Llama 4, SmolLM3), Llama 4's
attention-temperature tuning for those layers, and RoPE on a subset of the heads.

A NoPE layer (no position encoding; Kazemnejad et al. 2023, arXiv:2305.19466) leaves queries and
keys as they are, so with a bidirectional mask it is permutation-equivariant; in a causal model the
mask alone carries order. Llama 4 interleaves such layers with RoPE layers and, in them, scales each
query by a temperature growing with its position (Llama 4's ``attn_temperature_tuning``)::

    scale(p) = 1 + attn_scale * log(1 + floor((p + 1) / floor_scale))

which is 1 for the first ``floor_scale - 1`` positions and grows slowly past them, against the
flattening of attention over very long contexts. Transcribed from the formula in Llama 4's
attention, checked in tests/rotary/test_hybrid.py.

:class:`NoRope` is the encoding of such a layer; :class:`RotaryOnHeads` rotates only the first
``heads`` heads with an inner rotary encoding and leaves the others position-free (a per-head
NoPE/RoPE mix). :class:`posenc.models.PositionPlan` assigns them to the layers of a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from posenc.core.base import PositionEncoding
from posenc.core.positions import Positions
from posenc.core.precision import arithmetic_dtype
from posenc.core.validation import can_read_values, check_float, check_float_dtype, check_int, check_positions
from posenc.rotary.rope import check_token_count


@dataclass(frozen=True)
class AttentionTemperature:
    """Llama 4's query temperature for NoPE layers (its config's ``floor_scale`` and ``attn_scale``)."""

    floor_scale: float = 8192.0
    attn_scale: float = 0.1

    def __post_init__(self) -> None:
        check_float("floor_scale", self.floor_scale, positive=True)
        check_float("attn_scale", self.attn_scale, minimum=0.0)


def attention_temperature(
    positions: torch.Tensor, *, floor_scale: float = 8192.0, attn_scale: float = 0.1, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``1 + attn_scale * log1p(floor((p + 1) / floor_scale))`` for positions ``(*p,)``, formed in float64
    and returned in ``dtype``, at least float32 (float64 for a float64 model's queries).

    Positions are integer or float32/float64, finite and >= 0 (checked in eager mode off the meta
    device): below 0 the floor reaches -1 and the temperature is -inf or NaN."""
    check_float("floor_scale", floor_scale, positive=True)
    check_float("attn_scale", attn_scale, minimum=0.0)
    out = arithmetic_dtype(check_float_dtype("dtype", dtype))
    check_positions("positions", positions)
    if positions.numel() and can_read_values(positions) and bool((positions < 0).any()):
        raise ValueError(
            f"`positions` must be >= 0 (a temperature below position 0 is -inf or NaN), "
            f"got a minimum of {positions.min().item()}"
        )
    p = positions.to(torch.float64)
    return (torch.log1p(torch.floor((p + 1.0) / floor_scale)) * attn_scale + 1.0).to(out)


class NoRope(PositionEncoding):
    """A layer without rotary encoding; with ``temperature``, queries are scaled as in Llama 4."""

    def __init__(self, temperature: AttentionTemperature | None = None) -> None:
        super().__init__()
        if temperature is not None and not isinstance(temperature, AttentionTemperature):
            raise TypeError(f"`temperature` must be an AttentionTemperature or None, got {type(temperature).__name__}")
        self.temperature = temperature
        # the model calls the rotary hook only when there is a temperature to apply
        self.hooks = frozenset({"rotary"}) if temperature is not None else frozenset()

    def rotate(self, q: torch.Tensor, k: torch.Tensor, *, q_positions: Positions, k_positions: Positions):
        if q.shape[-2] != q_positions.n:
            check_token_count(q=(q, q_positions))
        t = self.temperature
        work = arithmetic_dtype(q.dtype)
        positions = q_positions.tensor(q.device)
        scale = attention_temperature(positions, floor_scale=t.floor_scale, attn_scale=t.attn_scale, dtype=work)
        # (b | 1, n) -> (b | 1, 1, n, 1): one factor per query, shared by the heads
        return (q.to(work) * scale[:, None, :, None]).to(q.dtype), k

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}" if self.temperature is not None else ""


class RotaryOnHeads(PositionEncoding):
    """``inner`` (a rotary encoding) applied to the first ``heads`` heads; the rest are not rotated."""

    hooks = frozenset({"rotary"})

    def __init__(self, inner: PositionEncoding, heads: int) -> None:
        super().__init__()
        if not isinstance(inner, PositionEncoding) or inner.hooks != frozenset({"rotary"}):
            raise ValueError(f"`inner` must be an encoding whose only hook is 'rotary', got {type(inner).__name__}")
        self.inner = inner
        self.heads = check_int("heads", heads, minimum=1)
        self.supports_causal = inner.supports_causal

    def rotate(self, q: torch.Tensor, k: torch.Tensor, *, q_positions: Positions, k_positions: Positions):
        r = self.heads
        if r > q.shape[1]:
            raise ValueError(f"`heads`={r} rotated heads but the attention has only {q.shape[1]}")
        # grouped-query attention: query head i reads key head i // group, so the rotated query heads
        # must cover whole groups, and their key heads are the first r // group
        if q.shape[1] % k.shape[1]:
            raise ValueError(
                f"`k` must have a number of heads dividing the {q.shape[1]} query heads, got shape {tuple(k.shape)}"
            )
        group = q.shape[1] // k.shape[1]
        if r % group:
            raise ValueError(
                f"`heads`={r} rotated query heads must be a multiple of the {group} query heads sharing each key "
                f"head ({q.shape[1]} query heads, {k.shape[1]} key heads)"
            )
        rk_heads = r // group
        rq, rk = self.inner.rotate(q[:, :r], k[:, :rk_heads], q_positions=q_positions, k_positions=k_positions)
        return torch.cat([rq, q[:, r:]], dim=1), torch.cat([rk, k[:, rk_heads:]], dim=1)

    def extra_repr(self) -> str:
        return f"heads={self.heads}"


def every_kth_layer(depth: int, k: int) -> tuple[int, ...]:
    """Layers ``k-1, 2k-1, ...`` below ``depth``: Llama 4's and SmolLM3's NoPE layers for ``no_rope_layer_interval=k``."""
    check_int("k", k, minimum=1)
    return tuple(range(k - 1, depth, k))


def nope_layers_from_flags(flags) -> tuple[int, ...]:
    """Transformers' ``no_rope_layers`` list (1: the layer uses RoPE, 0: NoPE) as NoPE layer indices."""
    return tuple(i for i, f in enumerate(flags) if not f)

