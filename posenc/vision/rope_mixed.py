"""RoPE-Mixed: 2-D rotary embedding with learned, mixed-axis frequencies for vision Transformers
(Heo et al. 2024, "Rotary Position Embedding for Vision Transformer", arXiv:2403.13298, section 3.2).

Each feature pair ``j`` (adjacent features) of head ``h`` turns, at the patch in row ``y`` and
column ``x``, by ``x * fx[h, j] + y * fy[h, j]``: a frequency *vector* per pair, learned per head
and per block (``per_layer``), so a pair may respond to diagonal directions, unlike axial
``rope_2d`` where each pair follows one axis. The logit between two patches still depends on their
offset ``(dy, dx)`` only.

Initialisation as in the paper's code: magnitudes ``base^(-4t/d)``, ``t = 0 .. d/4 - 1``
(``base = 10``), the first ``d/4`` pairs pointing in a random direction ``phi_h`` per head and the
last ``d/4`` at ``phi_h + pi/2`` (``rotate=False``: ``phi_h = 0``, the axial frequencies of
``rope_2d``). Prefix tokens (class token, registers) are not rotated.

Precision: angles in float64 from the float32 parameters, reduced modulo 2π before float32
cos/sin. Verified against a float64 transcription of the per-pair rotations
(tests/vision/test_rope_mixed.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from posenc.core.base import PositionEncoding
from posenc.core.frequencies import angle_dtype
from posenc.core.positions import Positions, resolve_positions
from posenc.core.precision import arithmetic_dtype
from posenc.core.registry import register
from posenc.core.validation import (
    check_bool,
    check_float,
    check_float_tensor,
    check_int,
    check_positions,
    check_positive_int,
    check_same_device,
    check_table_fits,
)
from posenc.rotary.learned import reduced_cos_sin
from posenc.rotary.rope import rotate_pairs
from posenc.vision.grid import check_grid, token_coords


def rope_mixed_init(head_dim: int, heads: int, *, base: float = 10.0, rotate: bool = True, generator=None) -> torch.Tensor:
    """Heo et al.'s initial frequencies ``(2, heads, head_dim / 2)``: ``[0]`` along x (columns), ``[1]`` along y (rows)."""
    if check_positive_int("head_dim", head_dim) % 4:
        raise ValueError(f"`head_dim` must be divisible by 4 (two directions of d/4 pairs), got {head_dim}")
    check_positive_int("heads", heads)
    check_float("base", base, positive=True)
    check_bool("rotate", rotate)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}")
    mag = base ** (-torch.arange(0, head_dim, 4, dtype=torch.float64) / head_dim)  # (d/4,)
    phi = torch.rand(heads, 1, generator=generator, dtype=torch.float64) * 2 * math.pi if rotate else torch.zeros(heads, 1, dtype=torch.float64)
    # (heads, d/2): the first d/4 pairs at angle phi, the last d/4 at phi + pi/2
    fx = torch.cat([mag * torch.cos(phi), mag * torch.cos(phi + math.pi / 2)], dim=-1)
    fy = torch.cat([mag * torch.sin(phi), mag * torch.sin(phi + math.pi / 2)], dim=-1)
    return torch.stack([fx, fy]).float()


def apply_rope_mixed(x: torch.Tensor, coords: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``(b, h, n, d)`` at patch coordinates ``(n, 2)`` or ``(b | 1, n, 2)`` (row, col;
    may be fractional) by frequencies ``(2, h | 1, d/2)`` (x then y); differentiable in ``freqs``."""
    check_float_tensor("x", x, ndim=4)
    check_float_tensor("freqs", freqs, ndim=3)
    b, h, n, d = x.shape
    if freqs.shape[0] != 2 or (freqs.shape[1] != 1 and freqs.shape[1] != h) or 2 * freqs.shape[2] != d:
        raise ValueError(f"`freqs` must have shape (2, 1 or {h}, {d // 2}), got {tuple(freqs.shape)}")
    check_positions("coords", coords)
    if coords.ndim not in (2, 3) or coords.shape[-2:] != (n, 2) or (coords.ndim == 3 and coords.shape[0] != 1 and coords.shape[0] != b):
        raise ValueError(f"`coords` must have shape (n, 2) or (b, n, 2) with n={n}, b={b}, got {tuple(coords.shape)}")
    check_same_device(x=x, coords=coords, freqs=freqs)
    # (n, 2) -> (1, n, 2)
    coords = coords.unsqueeze(0) if coords.ndim == 2 else coords
    return rotate_pairs(x, *_cos_sin(coords, freqs, x.dtype), interleaved=True)


def _cos_sin(coords: torch.Tensor, freqs: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    wide = angle_dtype(coords.device)
    f = freqs.to(wide)
    # (b | 1, 1, n, 1) * (1, h, 1, d/2), summed over the two axes -> (b | 1, h, n, d/2)
    y, x = coords.to(wide)[:, None, :, None, 0], coords.to(wide)[:, None, :, None, 1]
    theta = x * f[0][None, :, None, :] + y * f[1][None, :, None, :]
    return reduced_cos_sin(theta, arithmetic_dtype(dtype))


@register(
    "rope_mixed",
    paper="Heo et al. 2024, arXiv:2403.13298",
    summary="RoPE-Mixed: per-head, per-block learned 2-D frequency vectors; a pair turns with x*fx + y*fy.",
)
class RopeMixed(PositionEncoding):
    """RoPE-Mixed over a patch grid, as a ``"rotary"`` hook; one instance per block.

    Args:
        head_dim: width of each head (divisible by 4).
        grid: ``(h, w)`` patch grid (a vision Transformer fills it in).
        heads: attention heads (the model fills it in).
        num_prefix_tokens: tokens before the patches; they are not rotated.
        base: base of the initial frequency magnitudes (10 in Heo et al.).
        rotate: random initial direction per head (True, the paper) or the axial one (False).
    """

    model_arguments = ("heads", "head_dim", "grid", "num_prefix_tokens")
    hooks = frozenset({"rotary"})
    per_layer = True
    supports_causal = False

    def __init__(
        self,
        head_dim: int,
        grid: int | tuple[int, int] = 14,
        *,
        heads: int = 1,
        num_prefix_tokens: int = 0,
        base: float = 10.0,
        rotate: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.head_dim = check_positive_int("head_dim", head_dim)
        if head_dim % 4:
            raise ValueError(f"`head_dim` must be divisible by 4 (two directions of d/4 pairs), got {head_dim}")
        self.heads = check_positive_int("heads", heads)
        self.grid = check_grid("grid", grid)
        self.num_prefix_tokens = check_int("num_prefix_tokens", num_prefix_tokens, minimum=0)
        self.base = check_float("base", base, positive=True)
        self.rotate_init = check_bool("rotate", rotate)
        check_table_fits({"heads": heads, "head_dim": head_dim}, (2, heads, head_dim // 2), torch.float32, device)
        self.freqs = nn.Parameter(torch.empty(2, heads, head_dim // 2, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.freqs.device.type != "meta":
            with torch.no_grad():
                self.freqs.copy_(rope_mixed_init(self.head_dim, self.heads, base=self.base, rotate=self.rotate_init))

    def rotate_queries_or_keys(self, t: torch.Tensor, positions: Positions) -> torch.Tensor:
        """t: ``(b, h, n, head_dim)`` rotated at ``positions`` (flat token indices)."""
        coords, is_patch = token_coords(positions, grid=self.grid, num_prefix_tokens=self.num_prefix_tokens, device=t.device)
        cos, sin = _cos_sin(coords, self.freqs, t.dtype)
        # prefix tokens: the identity rotation
        mask = is_patch[:, None, :, None]
        return rotate_pairs(t, torch.where(mask, cos, 1.0), torch.where(mask, sin, 0.0), interleaved=True)

    def rotate(self, q, k, *, q_positions: Positions, k_positions: Positions):
        return self.rotate_queries_or_keys(q, q_positions), self.rotate_queries_or_keys(k, k_positions)

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor | None = None) -> torch.Tensor:
        """x: ``(b, heads, n, head_dim)`` -> rotated; ``positions``: ``(n,)`` or ``(b, n)`` token indices."""
        check_float_tensor("x", x, ndim=4)
        if x.shape[-1] != self.head_dim or x.shape[1] != self.heads:
            raise ValueError(
                f"`x` must have shape (b, heads={self.heads}, n, head_dim={self.head_dim}), got {tuple(x.shape)}"
            )
        n = x.shape[-2]
        explicit = None if positions is None else resolve_positions(positions, n=n, batch=x.shape[0], device=x.device)
        return self.rotate_queries_or_keys(x, Positions(n, explicit=explicit))

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, heads={self.heads}, grid={self.grid}, num_prefix_tokens={self.num_prefix_tokens}"
