"""Axial 2-D rotary position embedding for vision Transformers (Heo et al. 2024, arXiv:2403.13298;
RoPE: Su et al. 2021, arXiv:2104.09864).

The head width ``d`` (divisible by 4) is split in two: the first ``d/2`` features, as adjacent
pairs, are rotated by angles proportional to the patch's column ``x``, the last ``d/2`` by angles
proportional to its row ``y``, with the frequencies ``base^(-4t/d)``, ``t = 0 .. d/4 - 1`` (the
1-D RoPE frequencies of a ``d/2``-wide head) and ``base = 100`` (Heo et al.'s axial setting). The
logit between two patches then depends on their offset ``(dy, dx)`` only. This is their
``compute_axial_cis``/``apply_rotary_emb`` (complex pairs of adjacent features), written with
:func:`posenc.rotary.rope.rotate_pairs` (``interleaved=True``).

Prefix tokens (class token, registers) are not rotated, as in Heo et al.'s ViT. Coordinates may be
fractional (for instance patch centres of a resampled grid) through :func:`apply_rope_2d`.

Verified against a float64 transcription of the per-pair 2x2 rotation matrices
(``tests/vision/test_rope_2d.py``).
"""

from __future__ import annotations

import torch

from posenc.core.base import DerivedTablesMixin, PositionEncoding
from posenc.core.frequencies import cos_sin, inverse_frequencies
from posenc.core.positions import Positions, resolve_positions
from posenc.core.precision import arithmetic_dtype
from posenc.core.registry import register
from posenc.core.validation import (
    check_float,
    check_float_dtype,
    check_float_tensor,
    check_int,
    check_positions,
    check_positive_int,
    check_same_device,
    check_table_fits,
)
from posenc.rotary.rope import rotate_pairs
from posenc.vision.grid import check_grid, grid_coords, token_coords


def _check_head_dim(head_dim: int, name: str = "head_dim") -> int:
    check_positive_int(name, head_dim)
    if head_dim % 4:
        raise ValueError(f"`{name}` must be divisible by 4 (a rotated pair per frequency on each of 2 axes), got {head_dim}")
    return head_dim


def rope_2d_cos_sin(
    coords: torch.Tensor, head_dim: int, *, base: float = 100.0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape ``(*p, head_dim / 2)`` in ``dtype`` (float32, or float64 for float64 queries) for
    ``(row, col)`` coordinates ``(*p, 2)``: x pairs, then y pairs."""
    check_positions("coords", coords)
    if coords.ndim == 0 or coords.shape[-1] != 2:
        raise ValueError(f"`coords` must have shape (..., 2) holding (row, col), got {tuple(coords.shape)}")
    _check_head_dim(head_dim)
    check_float_dtype("dtype", dtype)  # integer tables would truncate every cos and sin to -1, 0 or 1
    inv_freq = inverse_frequencies(head_dim // 2, base, device=coords.device)
    cos_x, sin_x = cos_sin(coords[..., 1], inv_freq, dtype=dtype)
    cos_y, sin_y = cos_sin(coords[..., 0], inv_freq, dtype=dtype)
    return torch.cat([cos_x, cos_y], dim=-1), torch.cat([sin_x, sin_y], dim=-1)


def apply_rope_2d(x: torch.Tensor, coords: torch.Tensor, *, base: float = 100.0) -> torch.Tensor:
    """Rotate ``x`` ``(b, h, n, d)`` at patch coordinates ``(n, 2)`` or ``(b, n, 2)`` (row, col; may be fractional)."""
    check_float_tensor("x", x, ndim=4)
    _check_head_dim(x.shape[-1], "x.shape[-1]")
    check_positions("coords", coords)
    b, _, n, _ = x.shape
    if coords.ndim not in (2, 3) or coords.shape[-2:] != (n, 2) or (coords.ndim == 3 and coords.shape[0] != 1 and coords.shape[0] != b):
        raise ValueError(
            f"`coords` must have shape (n, 2) or (b | 1, n, 2) matching `x` {tuple(x.shape)}, got {tuple(coords.shape)}"
        )
    check_same_device(x=x, coords=coords)
    cos, sin = rope_2d_cos_sin(coords, x.shape[-1], base=base, dtype=arithmetic_dtype(x.dtype))
    # (n, f) or (b, n, f) -> broadcast over heads
    cos, sin = (cos.unsqueeze(-3), sin.unsqueeze(-3)) if cos.ndim == 3 else (cos, sin)
    return rotate_pairs(x, cos, sin, interleaved=True)



@register(
    "rope_2d",
    paper="Heo et al. 2024, arXiv:2403.13298; Su et al. 2021, arXiv:2104.09864",
    summary="Axial 2-D RoPE: half of each head rotated by the patch column, half by its row.",
)
class Rope2d(DerivedTablesMixin, PositionEncoding):
    """Axial 2-D RoPE over a patch grid, as a ``"rotary"`` hook.

    Args:
        head_dim: width of each head (divisible by 4).
        grid: ``(h, w)`` patch grid (a vision Transformer fills it in).
        num_prefix_tokens: tokens before the patches; they are not rotated.
        base: frequency base (100 in Heo et al.).
    """

    model_arguments = ("head_dim", "grid", "num_prefix_tokens")
    hooks = frozenset({"rotary"})
    supports_causal = False

    def __init__(
        self,
        head_dim: int,
        grid: int | tuple[int, int] = 14,
        *,
        num_prefix_tokens: int = 0,
        base: float = 100.0,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.head_dim = _check_head_dim(head_dim)
        self.grid = check_grid("grid", grid)
        self.num_prefix_tokens = check_int("num_prefix_tokens", num_prefix_tokens, minimum=0)
        self.base = check_float("base", base, positive=True)
        tokens = self.num_prefix_tokens + self.grid[0] * self.grid[1]
        sizes = {"num_prefix_tokens": self.num_prefix_tokens, "grid": self.grid, "head_dim": head_dim}
        check_table_fits(sizes, (2, tokens, head_dim // 2), torch.float32, device)
        self.register_buffer("cos_cached", torch.empty(0, head_dim // 2, device=device), persistent=False)
        self.register_buffer("sin_cached", torch.empty(0, head_dim // 2, device=device), persistent=False)
        self.init_non_persistent_buffers(device)

    def init_non_persistent_buffers(self, device: torch.device | None = None) -> None:
        cos, sin = rope_2d_cos_sin(grid_coords(self.grid, device=device), self.head_dim, base=self.base)
        # prefix tokens: the identity rotation
        p = self.num_prefix_tokens
        self.cos_cached = torch.cat([cos.new_ones(p, cos.shape[-1]), cos])
        self.sin_cached = torch.cat([sin.new_zeros(p, sin.shape[-1]), sin])

    def cos_sin(
        self, positions: Positions, *, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin ``(b | 1, n, head_dim / 2)`` of the tokens at ``positions`` in ``dtype`` (float32:
        the cached tables; float64: formed from the coordinates, the tables being float32)."""
        device = self.cos_cached.device
        coords, is_patch = token_coords(positions, grid=self.grid, num_prefix_tokens=self.num_prefix_tokens, device=device)
        if positions.is_implicit and dtype == torch.float32:
            sl = slice(positions.offset, positions.end)
            return self.cos_cached[sl].unsqueeze(0), self.sin_cached[sl].unsqueeze(0)
        cos, sin = rope_2d_cos_sin(coords, self.head_dim, base=self.base, dtype=dtype)
        mask = is_patch.unsqueeze(-1)
        return torch.where(mask, cos, 1.0), torch.where(mask, sin, 0.0)

    def rotate_queries_or_keys(self, t: torch.Tensor, positions: Positions) -> torch.Tensor:
        """t: ``(b, h, n, head_dim)`` rotated at ``positions``."""
        cos, sin = self.cos_sin(positions, dtype=arithmetic_dtype(t.dtype))
        return rotate_pairs(t, cos.unsqueeze(1), sin.unsqueeze(1), interleaved=True)

    def rotate(self, q, k, *, q_positions: Positions, k_positions: Positions):
        return self.rotate_queries_or_keys(q, q_positions), self.rotate_queries_or_keys(k, k_positions)

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor | None = None) -> torch.Tensor:
        """x: ``(b, h, n, head_dim)`` -> rotated; ``positions``: ``(n,)`` or ``(b, n)`` token indices."""
        check_float_tensor("x", x, ndim=4)
        if x.shape[-1] != self.head_dim:
            raise ValueError(f"`x` must have last dimension head_dim={self.head_dim}, got {x.shape[-1]}")
        n = x.shape[-2]
        explicit = None if positions is None else resolve_positions(positions, n=n, batch=x.shape[0], device=x.device)
        pos = Positions(n, explicit=explicit)
        return self.rotate_queries_or_keys(x, pos)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, grid={self.grid}, num_prefix_tokens={self.num_prefix_tokens}, base={self.base}"
