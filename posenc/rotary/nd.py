"""N-axis rotary position embedding: a block of each head per coordinate axis (Su et al. 2021,
arXiv:2104.09864; the per-axis layout of Flux's ``EmbedND`` and of CogVideoX's 3-D
(time, height, width) RoPE, arXiv:2408.06072).

A token at position ``p = (p_1, ..., p_k)`` rotates the feature pairs of axis ``a`` (a block of
``axes_dim[a]`` features, the blocks in axis order) by ``p_a * base_a^(-2i / axes_dim[a])``,
``i = 0 .. axes_dim[a]/2 - 1``: the 1-D RoPE frequencies of an ``axes_dim[a]``-wide head. The logit
between two tokens then depends on the difference vector ``p - p'`` only. Positions may take any
finite values (grids, fractional coordinates, timestamps). Features past ``sum(axes_dim)`` pass
through unrotated.

Pair layout: ``interleaved=True`` (the default, as Flux and CogVideoX) pairs adjacent features
within each axis block; ``interleaved=False`` pairs ``(x_j, x_{j + R/2})`` over the rotated width
``R = sum(axes_dim)`` with the axes' frequencies concatenated (the ``rotate_half`` convention).

Verified against a float64 transcription of the per-pair 2x2 rotations, and against diffusers' Flux
``FluxPosEmbed`` and CogVideoX ``get_3d_rotary_pos_embed`` (tests/rotary/test_nd.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from posenc.core.frequencies import cos_sin, inverse_frequencies
from posenc.core.precision import arithmetic_dtype
from posenc.core.validation import (
    check_bool,
    check_even,
    check_float,
    check_float_dtype,
    check_float_tensor,
    check_positions,
    check_same_device,
)
from posenc.rotary.rope import apply_rotary


def _check_axes(axes_dim: Sequence[int], base: float | Sequence[float]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    if isinstance(axes_dim, (int, torch.Tensor)) or not isinstance(axes_dim, Sequence) or not axes_dim:
        raise TypeError(f"`axes_dim` must be a non-empty sequence of even ints (one width per axis), got {axes_dim!r}")
    dims = tuple(check_even(f"axes_dim[{i}]", a, why="each axis rotates feature pairs") for i, a in enumerate(axes_dim))
    if isinstance(base, (int, float)):
        bases = (base,) * len(dims)
    elif isinstance(base, (str, bytes, torch.Tensor)) or not isinstance(base, Iterable):
        raise TypeError(f"`base` must be a number or a sequence of numbers, one per axis, got {type(base).__name__} {base!r}")
    else:
        bases = tuple(base)
    if len(bases) != len(dims):
        raise ValueError(f"`base` must be a number or one per axis ({len(dims)}), got {base!r}")
    return dims, tuple(check_float(f"base[{i}]", b, positive=True) for i, b in enumerate(bases))


def rope_nd_cos_sin(
    positions: torch.Tensor,
    *,
    axes_dim: Sequence[int],
    base: float | Sequence[float] = 10000.0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``(*p, sum(axes_dim) / 2)`` for positions ``(*p, k)``: axis 0's frequencies first.

    Angles are formed in float64 and reduced modulo 2π; the result is float32 unless ``dtype`` says.
    """
    dims, bases = _check_axes(axes_dim, base)
    check_float_dtype("dtype", dtype)
    check_positions("positions", positions)
    if positions.ndim < 1 or positions.shape[-1] != len(dims):
        raise ValueError(
            f"`positions` must have a last axis of size {len(dims)} (one coordinate per entry of `axes_dim`), "
            f"got shape {tuple(positions.shape)}"
        )
    parts = [
        cos_sin(positions[..., a], inverse_frequencies(d, b, device=positions.device), dtype=dtype)
        for a, (d, b) in enumerate(zip(dims, bases))
    ]
    return torch.cat([c for c, _ in parts], dim=-1), torch.cat([s for _, s in parts], dim=-1)


def apply_rope_nd(
    x: torch.Tensor,
    positions: torch.Tensor,
    *,
    axes_dim: Sequence[int],
    base: float | Sequence[float] = 10000.0,
    interleaved: bool = True,
) -> torch.Tensor:
    """Rotate ``x`` ``(b, h, n, d)`` at positions ``(n, k)`` or ``(b | 1, n, k)`` over ``k`` axes.

    axes_dim: the width rotated by each axis (even; ``sum(axes_dim) <= d``), e.g. Flux's
    ``(16, 56, 56)`` or a video's ``(t, h, w)`` split. base: one base, or one per axis.
    """
    check_float_tensor("x", x, ndim=4)
    check_bool("interleaved", interleaved)
    dims, _ = _check_axes(axes_dim, base)
    if sum(dims) > x.shape[-1]:
        raise ValueError(f"`axes_dim` {dims} rotates {sum(dims)} features but `x` has only {x.shape[-1]}")
    check_positions("positions", positions)
    b, _, n, _ = x.shape
    if positions.ndim not in (2, 3) or positions.shape[-2] != n or positions.shape[-1] != len(dims):
        raise ValueError(
            f"`positions` must have shape (n, k) or (b, n, k) with n={n}, k={len(dims)}, got {tuple(positions.shape)}"
        )
    if positions.ndim == 3 and (positions.shape[0] != 1 and positions.shape[0] != b):
        raise ValueError(f"`positions` batch size must be {'1' if b == 1 else f'1 or {b}'}, got shape {tuple(positions.shape)}")
    check_same_device(x=x, positions=positions)
    work = arithmetic_dtype(x.dtype)
    cos, sin = rope_nd_cos_sin(positions, axes_dim=dims, base=base, dtype=work)
    return apply_rotary(x, _heads(cos), _heads(sin), interleaved=interleaved)


def _heads(t: torch.Tensor) -> torch.Tensor:
    # (n, f) -> (1, 1, n, f); (b, n, f) -> (b, 1, n, f): broadcast over heads
    return t.unsqueeze(-3) if t.ndim == 3 else t.unsqueeze(0).unsqueeze(0)
