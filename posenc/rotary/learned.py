"""RoPE with learned frequencies: each head's ``d/2`` rotation frequencies are parameters, initialised
to RoPE's ``base^(-2i/d)`` (Su et al. 2021, arXiv:2104.09864; learnable frequencies as in the 1-D
case of RoPE-Mixed, Heo et al. 2024, arXiv:2403.13298).

Pair ``i`` of head ``h`` at position ``p`` turns by ``p * f[h, i]``: the logit still depends on the
offset ``i - j`` only, whatever the frequencies learn. One set of frequencies per block
(``per_layer``), one row per head (``heads=1`` shares them across heads).

Precision: angles ``p * f`` in float64 from the float32 parameters, reduced modulo 2π, then float32
cos/sin, so large positions stay exact and gradients reach the frequencies. Keep the frequencies
in float32 when the model runs in half precision (a bf16 frequency is off by up to 0.4%).

Verified against a float64 transcription of the per-pair rotations, with gradcheck of the
frequency gradient (tests/rotary/test_learned.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from posenc.core.base import PositionEncoding
from posenc.core.frequencies import angle_dtype, inverse_frequencies
from posenc.core.positions import Positions, positions_or_randomized, resolve_positions
from posenc.core.precision import arithmetic_dtype
from posenc.core.registry import register
from posenc.core.validation import (
    check_bool,
    check_even,
    check_float,
    check_float_tensor,
    check_int,
    check_same_device,
    check_table_fits,
)
from posenc.rotary.rope import rotate_pairs


def reduced_cos_sin(theta: torch.Tensor, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin in ``dtype`` of wide angles ``theta``, reduced modulo 2π first when ``dtype`` is narrower."""
    if theta.dtype != dtype:
        theta = (theta - torch.round(theta * (1.0 / (2 * math.pi))) * (2 * math.pi)).to(dtype)
    return theta.cos(), theta.sin()


def apply_rope_learned(
    x: torch.Tensor,
    positions: torch.Tensor | None,
    freqs: torch.Tensor,
    *,
    interleaved: bool = False,
    randomize_positions: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rotate ``x`` ``(b, h, n, d)`` at ``positions`` ``(n,)`` or ``(b | 1, n)`` by ``freqs`` ``(h | 1, r/2)``.

    The first ``r`` features are rotated (``r <= d``), the rest pass through; differentiable in ``freqs``.
    ``positions=None, randomize_positions=L``: each row at ``n`` ordered random positions from ``[0, L)``
    (:func:`~posenc.core.positions.randomized_positions`, drawn from ``generator``). Each call draws
    anew: for queries and keys, draw the positions once and pass them to both calls.
    """
    check_float_tensor("x", x, ndim=4)
    check_float_tensor("freqs", freqs, ndim=2)
    b, h, n, d = x.shape
    if (freqs.shape[0] != 1 and freqs.shape[0] != h) or 2 * freqs.shape[1] > d:
        raise ValueError(f"`freqs` must have shape (1 or {h}, at most {d // 2}), got {tuple(freqs.shape)}")
    check_same_device(x=x, freqs=freqs)
    positions = positions_or_randomized(positions, randomize_positions, n=n, batch=b, generator=generator, device=x.device)
    pos = resolve_positions(positions, n=n, batch=b, device=x.device, name="positions")
    wide = angle_dtype(x.device)
    # (b | 1, 1, n, 1) * (1, h | 1, 1, f) -> (b | 1, h | 1, n, f)
    theta = pos.to(wide)[:, None, :, None] * freqs.to(wide)[None, :, None, :]
    cos, sin = reduced_cos_sin(theta, arithmetic_dtype(x.dtype))
    rot = 2 * freqs.shape[1]
    rotated = rotate_pairs(x[..., :rot], cos, sin, interleaved=interleaved)
    return rotated if rot == d else torch.cat([rotated, x[..., rot:]], dim=-1)


@register(
    "rope_learned",
    paper="Su et al. 2021, arXiv:2104.09864; learned frequencies: Heo et al. 2024, arXiv:2403.13298",
    summary="RoPE whose per-head rotation frequencies are learned (initialised to RoPE's), one set per block.",
)
class LearnedRope(PositionEncoding):
    """RoPE with learnable frequencies ``freqs`` ``(heads, rot/2)``.

    Args:
        head_dim: width of each head's queries and keys.
        heads: rows of frequencies (the model fills in its head count; 1 shares them).
        base: RoPE base of the initial frequencies.
        rotary_fraction: fraction of ``head_dim`` rotated (rounded down to an even width >= 2).
        interleaved: adjacent pairs (True) or split halves (False).
    """

    model_arguments = ("heads", "head_dim")
    hooks = frozenset({"rotary"})
    per_layer = True

    def __init__(
        self,
        head_dim: int,
        *,
        heads: int = 1,
        base: float = 10000.0,
        rotary_fraction: float = 1.0,
        interleaved: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.head_dim = check_even("head_dim", head_dim, why="RoPE rotates feature pairs")
        self.heads = check_int("heads", heads, minimum=1)
        self.base = check_float("base", base, positive=True)
        fraction = check_float("rotary_fraction", rotary_fraction, minimum=0.0, maximum=1.0)
        self.rot_dim = int(head_dim * fraction) // 2 * 2
        if self.rot_dim < 2:
            raise ValueError(f"`rotary_fraction` * `head_dim` must cover at least one feature pair, got {fraction} * {head_dim}")
        self.interleaved = check_bool("interleaved", interleaved)
        check_table_fits({"heads": heads, "head_dim": head_dim}, (heads, self.rot_dim // 2), torch.float32, device)
        self.freqs = nn.Parameter(torch.empty(self.heads, self.rot_dim // 2, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if self.freqs.device.type != "meta":
                init = inverse_frequencies(self.rot_dim, self.base, device=self.freqs.device)
                self.freqs.copy_(init.to(self.freqs.dtype).expand_as(self.freqs))

    def rotate_queries_or_keys(self, t: torch.Tensor, positions: Positions) -> torch.Tensor:
        """t: ``(b, h, n, head_dim)`` rotated at ``positions``."""
        return apply_rope_learned(t, positions.tensor(t.device), self.freqs, interleaved=self.interleaved)

    def rotate(self, q, k, *, q_positions: Positions, k_positions: Positions):
        if self.heads != 1:
            for name, t in (("q", q), ("k", k)):
                if t.shape[1] != self.heads:
                    raise ValueError(
                        f"`{name}` must have {self.heads} heads (dim 1), one per row of the per-head frequencies, "
                        f"got shape {tuple(t.shape)}; grouped-query keys need shared frequencies (heads=1)"
                    )
        return self.rotate_queries_or_keys(q, q_positions), self.rotate_queries_or_keys(k, k_positions)

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor | None = None, offset: int = 0) -> torch.Tensor:
        """x: ``(b, h, n, head_dim)`` -> rotated, same shape and dtype."""
        check_float_tensor("x", x, ndim=4)
        if x.shape[-1] != self.head_dim:
            raise ValueError(f"`x` must have last dimension head_dim={self.head_dim}, got {x.shape[-1]}")
        if self.heads != 1 and x.shape[1] != self.heads:
            raise ValueError(f"`x` must have {self.heads} heads (dim 1), got shape {tuple(x.shape)}")
        pos = resolve_positions(positions, n=x.shape[-2], offset=offset, batch=x.shape[0], device=x.device)
        return self.rotate_queries_or_keys(x, Positions(x.shape[-2], offset, None if positions is None else pos))

    def extra_repr(self) -> str:
        return (
            f"head_dim={self.head_dim}, heads={self.heads}, rot_dim={self.rot_dim}, base={self.base}, "
            f"interleaved={self.interleaved}"
        )
