"""Real spherical harmonics of unit directions, bands ``0 .. D-1`` (``D^2`` features).

The encoding of viewing directions in Instant-NGP (Müller et al. 2022, arXiv:2201.05989) and
nerfstudio, replacing NeRF's sinusoids of directions. For band ``l`` and order ``m = -l .. l``
(channels in that order, band after band)

    Y_l^m = (-1)^m sqrt(2) K_l^|m| P_l^|m|(z) Im((x + i y)^|m|) / sin^|m|   m < 0
    Y_l^0 =                K_l^0   P_l(z)
    Y_l^m = (-1)^m sqrt(2) K_l^m   P_l^m(z)  Re((x + i y)^m)  / sin^m     m > 0

with ``K_l^m = sqrt((2l + 1) / 4 pi * (l - m)! / (l + m)!)`` and ``P_l^m`` the associated Legendre
functions without the Condon-Shortley phase, which ``(-1)^m`` then puts back: the orthonormal real
basis in tiny-cuda-nn's convention (its ``sh_enc``: ``Y_1^-1 = -0.48860251 y``, ``Y_1^0 =
0.48860251 z``, ``Y_1^1 = -0.48860251 x``, ...), which the issue names. Every one of the 64
channels of bands 0-7 has tiny-cuda-nn's constant and sign. nerfstudio's
``components_from_spherical_harmonics`` (bands 0-4) has the same constants without the phase: its
channel equals ours times ``(-1)^m``, a per-channel sign a following linear layer absorbs.

Input convention: tiny-cuda-nn's encoding takes directions mapped into ``[0, 1]^3`` and applies
``2 d - 1`` itself; this function takes the unit direction ``d`` directly (the same as feeding
tiny-cuda-nn ``(d + 1) / 2``). Written as polynomials in ``x, y, z`` (``P_l^m(z) / sin^m`` by the
three-term recurrence, ``(x + i y)^m`` by repeated multiplication), so no angle is formed.

Directions must have unit norm (checked in eager mode). Verified against the closed forms of
bands 0-3, a table of hand-computed values up to band 7 and orthonormality under quadrature up to
band 7 in ``tests/coordinate/test_spherical_harmonics.py``.
"""

from __future__ import annotations

import math

import torch

from posenc.coordinate.base import Encoding
from posenc.core.precision import arithmetic_dtype
from posenc.core.registry import register
from posenc.core.validation import (
    can_read_values,
    check_finite,
    check_float,
    check_float_tensor,
    check_int,
    check_same_device,
)

MAX_DEGREE = 8


def sh_normalisation(l: int, m: int) -> float:
    """``K_l^m``, times ``sqrt(2)`` for ``m != 0``, with tiny-cuda-nn's sign ``(-1)^m``."""
    k = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - m) / math.factorial(l + m))
    return (-1) ** m * k * math.sqrt(2.0) if m else k


def spherical_harmonics(directions: torch.Tensor, degree: int, *, norm_tolerance: float = 1e-3) -> torch.Tensor:
    """Real spherical harmonics of bands ``0 .. degree-1`` of unit ``directions``.

    directions: ``(*, 3)`` float, finite, unit norm within ``norm_tolerance`` (at least the dtype's
    epsilon; checked in eager mode off the meta device). Returns ``(*, degree^2)`` in the input's
    dtype, computed in float32 or better.
    """
    directions = check_finite("directions", check_float_tensor("directions", directions))
    check_int("degree", degree, minimum=1, maximum=MAX_DEGREE)
    norm_tolerance = check_float("norm_tolerance", norm_tolerance, positive=True, maximum=1.0)
    if directions.ndim == 0 or directions.shape[-1] != 3:
        raise ValueError(f"`directions` must have last dimension 3, got shape {tuple(directions.shape)}")
    if can_read_values(directions) and directions.numel():
        # half precision rounds each component by up to eps / 2, so its norms are off by about as much
        tolerance = max(norm_tolerance, torch.finfo(directions.dtype).eps)
        worst = (directions.float().norm(dim=-1) - 1).abs().max().item()
        if worst > tolerance:
            raise ValueError(
                f"`directions` must have unit norm (within {tolerance:.3g}), got norms off by up to {worst:.3g}"
            )
    d = directions.to(arithmetic_dtype(directions.dtype))
    x, y, z = d.unbind(-1)
    # (x + i y)^m for m = 0 .. degree-1, as real and imaginary parts
    re, im = [torch.ones_like(x)], [torch.zeros_like(x)]
    for _ in range(1, degree):
        re.append(re[-1] * x - im[-1] * y)
        im.append(re[-2] * y + im[-1] * x)
    # q[l][m] = P_l^m(z) / sin^m: the associated Legendre polynomial without its sin^m factor
    q = [[None] * degree for _ in range(degree)]
    for m in range(degree):
        q[m][m] = torch.full_like(z, float(math.prod(range(1, 2 * m, 2))))  # (2m - 1)!!
        if m + 1 < degree:
            q[m + 1][m] = (2 * m + 1) * z * q[m][m]
        for l in range(m + 2, degree):
            q[l][m] = ((2 * l - 1) * z * q[l - 1][m] - (l + m - 1) * q[l - 2][m]) / (l - m)
    out = []
    for l in range(degree):
        for m in range(-l, l + 1):
            a = abs(m)
            trig = im[a] if m < 0 else re[a]
            out.append(sh_normalisation(l, a) * q[l][a] * trig)
    return torch.stack(out, dim=-1).to(directions.dtype)


@register(
    "spherical_harmonics",
    paper="Müller et al. 2022, arXiv:2201.05989 (direction encoding)",
    summary="Real spherical harmonics of unit directions, bands 0..D-1: D^2 features.",
)
class SphericalHarmonics(Encoding):
    """Spherical-harmonic encoding of unit 3-D directions.

    Args:
        in_dim: must be 3 (directions).
        degree: ``D``, number of bands, 1 to 8; the output has ``D^2`` features (4 in Instant-NGP: 16).
        norm_tolerance: largest accepted ``| |d| - 1 |`` (the check is skipped under ``torch.compile``
            and on the meta device).
        device: the device the module expects its inputs on (it holds no values; an empty buffer follows
            ``.to()``).
    """

    def __init__(
        self,
        in_dim: int = 3,
        degree: int = 4,
        *,
        norm_tolerance: float = 1e-3,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(in_dim)
        if in_dim != 3:
            raise ValueError(f"`in_dim` must be 3 (directions), got {in_dim}")
        self.degree = check_int("degree", degree, minimum=1, maximum=MAX_DEGREE)
        if not isinstance(norm_tolerance, float) or not 0 < norm_tolerance < 1:
            raise ValueError(f"`norm_tolerance` must be a float in (0, 1), got {norm_tolerance!r}")
        self.norm_tolerance = norm_tolerance
        # an empty tensor that follows .to(): the device the module lives on, for the input's device check
        self.register_buffer("anchor", torch.empty(0, device=device), persistent=False)

    @property
    def out_dim(self) -> int:
        return self.degree**2

    def forward(self, directions: torch.Tensor) -> torch.Tensor:
        """directions: ``(*, 3)`` of unit norm -> ``(*, degree^2)`` in the input's dtype."""
        directions = self.check_input(directions, "directions")
        check_same_device(directions=directions, module=self.anchor)
        return spherical_harmonics(directions, self.degree, norm_tolerance=self.norm_tolerance)

    def extra_repr(self) -> str:
        return f"degree={self.degree}, out_dim={self.out_dim}"
