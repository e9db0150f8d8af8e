"""Integrated positional encoding (mip-NeRF, Barron et al. 2021, arXiv:2103.13415, section 3.1).

The expected NeRF encoding of a Gaussian ``x ~ N(mu, diag(sigma^2))``, coordinate by coordinate:

    E[sin(2^l x)] = sin(2^l mu) exp(-4^l sigma^2 / 2),   E[cos(2^l x)] = cos(2^l mu) exp(-4^l sigma^2 / 2)

for ``l = 0 .. L-1`` (eq. 13-14; mip-NeRF uses ``L = 16`` and no factor pi, ``use_pi=False``). As the
covariance goes to zero this is NeRF's encoding without the raw input, and channels are laid out
as :func:`posenc.coordinate.nerf.nerf_encoding` lays them out (per frequency, the sines of all
coordinates then their cosines) so the two agree exactly at zero covariance; the official mip-NeRF
code concatenates all sines before all cosines, a fixed permutation of the same channels.

Angles and attenuations are formed in float64. Verified against a Monte-Carlo expectation and
against NeRF's encoding at zero covariance in ``tests/coordinate/test_integrated_pe.py``.
"""

from __future__ import annotations

import torch

from posenc.coordinate.base import Encoding
from posenc.coordinate.nerf import MAX_FREQUENCIES, nerf_frequencies
from posenc.core.registry import register
from posenc.core.validation import (
    can_read_values,
    check_bool,
    check_finite,
    check_fits,
    check_float_tensor,
    check_int,
    check_same_device,
)


def integrated_positional_encoding(
    mean: torch.Tensor, covariance_diagonal: torch.Tensor, num_frequencies: int, *, use_pi: bool = False
) -> torch.Tensor:
    """Expected sin/cos features of ``N(mean, diag(covariance_diagonal))``.

    mean, covariance_diagonal: ``(*, c)`` float of the same shape, finite, variances >= 0 (checked in
    eager mode off the meta device); num_frequencies: 1 to ``MAX_FREQUENCIES``.
    Returns ``(*, 2 c num_frequencies)`` in ``mean``'s dtype.
    """
    mean = check_finite("mean", check_float_tensor("mean", mean))
    covariance_diagonal = check_float_tensor("covariance_diagonal", covariance_diagonal)
    covariance_diagonal = check_finite("covariance_diagonal", covariance_diagonal)
    check_int("num_frequencies", num_frequencies, minimum=1, maximum=MAX_FREQUENCIES)
    check_bool("use_pi", use_pi)
    check_same_device(mean=mean, covariance_diagonal=covariance_diagonal)
    if mean.ndim == 0 or covariance_diagonal.shape != mean.shape:
        raise ValueError(
            f"`covariance_diagonal` must have the shape of `mean` (*, c), got {tuple(covariance_diagonal.shape)} "
            f"and {tuple(mean.shape)}"
        )
    check_fits("num_frequencies", num_frequencies, (*mean.shape, 2 * num_frequencies), torch.float64, mean.device)
    if can_read_values(covariance_diagonal) and covariance_diagonal.numel() and bool((covariance_diagonal < 0).any()):
        raise ValueError(
            f"`covariance_diagonal` must be >= 0 (variances), got a minimum of {covariance_diagonal.min().item():.4g}"
        )
    freq = nerf_frequencies(num_frequencies, use_pi=use_pi, device=mean.device)
    # (*, 1, c) * (L, 1) -> (*, L, c): angles and variances of the scaled coordinates
    theta = mean.to(freq.dtype).unsqueeze(-2) * freq.unsqueeze(-1)
    var = covariance_diagonal.to(freq.dtype).unsqueeze(-2) * freq.square().unsqueeze(-1)
    damp = torch.exp(-0.5 * var)
    # (*, L, 2, c) -> (*, 2 L c): per frequency, sin of every coordinate then cos of every coordinate
    return torch.stack((theta.sin() * damp, theta.cos() * damp), dim=-2).flatten(-3).to(mean.dtype)


@register(
    "integrated_pe",
    paper="Barron et al. 2021, arXiv:2103.13415",
    summary="mip-NeRF's expected sin/cos of a Gaussian: NeRF's bands damped by exp(-4^l sigma^2 / 2).",
)
class IntegratedPE(Encoding):
    """Integrated positional encoding of Gaussians given by ``(mean, covariance_diagonal)``.

    Args:
        in_dim: number of coordinates ``c``.
        num_frequencies: ``L`` (16 in mip-NeRF).
        use_pi: frequencies ``2^l pi`` (NeRF's paper) instead of mip-NeRF's ``2^l``.
        device: accepted for a uniform constructor; the encoding holds no tensors.
    """

    def __init__(
        self,
        in_dim: int = 3,
        num_frequencies: int = 16,
        *,
        use_pi: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(in_dim)
        self.num_frequencies = check_int("num_frequencies", num_frequencies, minimum=1, maximum=MAX_FREQUENCIES)
        self.use_pi = check_bool("use_pi", use_pi)

    @property
    def out_dim(self) -> int:
        return 2 * self.in_dim * self.num_frequencies

    def forward(self, mean: torch.Tensor, covariance_diagonal: torch.Tensor) -> torch.Tensor:
        """mean, covariance_diagonal: ``(*, in_dim)`` -> ``(*, out_dim)`` in ``mean``'s dtype."""
        mean = self.check_input(mean, "mean")
        covariance_diagonal = self.check_input(covariance_diagonal, "covariance_diagonal")
        return integrated_positional_encoding(mean, covariance_diagonal, self.num_frequencies, use_pi=self.use_pi)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, num_frequencies={self.num_frequencies}, use_pi={self.use_pi}"
