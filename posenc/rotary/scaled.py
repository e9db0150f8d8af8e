"""The functional form of scaled RoPE and p-RoPE: ``apply_scaled_rope(x, positions, scaling=...)``.

The same frequencies as :class:`posenc.rotary.RotaryPositionEncoding` with the same arguments
(:func:`posenc.rotary.scaling.rope_frequencies`), applied at explicit positions; length-dependent
scalings (``dynamic_ntk``, ``longrope``) see one past the largest position (a 0-d tensor, no host sync).
"""

from __future__ import annotations

import torch

from posenc.core.frequencies import cos_sin
from posenc.core.precision import arithmetic_dtype
from posenc.rotary.rope import apply_rotary, rope_positions
from posenc.rotary.scaling import RopeScaling, ScalingKind, length_of, rope_frequencies


def apply_scaled_rope(
    x: torch.Tensor,
    positions: torch.Tensor,
    *,
    scaling: ScalingKind | RopeScaling = "none",
    base: float = 10000.0,
    interleaved: bool = False,
    p: float = 1.0,
    randomize_positions: int | None = None,
    generator: torch.Generator | None = None,
    **scaling_kwargs,
) -> torch.Tensor:
    """RoPE with a context-extension ``scaling`` (its parameters in ``scaling_kwargs``: ``factor``,
    ``original_max_len``, ...) and p-RoPE's ``p`` on ``x`` ``(b, h, n, d)`` at positions ``(n,)`` or ``(b, n)``.

    ``positions=None, randomize_positions=L``: each row at ``n`` ordered random positions from ``[0, L)``
    (:func:`~posenc.core.positions.randomized_positions`, drawn from ``generator``). Each call draws
    anew: for queries and keys, draw the positions once and pass them to both calls. Dynamic NTK's
    ``dynamic_update="grow_only"`` needs state between calls and is refused here (the module keeps it)."""
    pos = rope_positions(x, positions, randomize_positions, generator)
    if not isinstance(scaling, RopeScaling):
        scaling = RopeScaling(scaling, **scaling_kwargs)
        scaling_kwargs = {}
    if scaling.grow_only:
        raise ValueError(
            "`dynamic_update`='grow_only' keeps the longest length seen between calls, which this stateless "
            "function cannot; use dynamic_update='recompute' (the length of this call) or the module "
            "RotaryPositionEncoding(scaling='dynamic_ntk', dynamic_update='grow_only'), which keeps it"
        )
    seq_len = length_of(pos) if scaling.depends_on_length and pos.numel() else None
    inv_freq, scale = rope_frequencies(
        x.shape[-1], base=base, scaling=scaling, seq_len=seq_len, p=p, device=x.device, **scaling_kwargs
    )
    work = arithmetic_dtype(x.dtype)
    cos, sin = cos_sin(pos, inv_freq, scale=scale, dtype=work)
    # (b | 1, n, d/2) -> (b | 1, 1, n, d/2): the same for every head
    return apply_rotary(x, cos.unsqueeze(1), sin.unsqueeze(1), interleaved=interleaved)
