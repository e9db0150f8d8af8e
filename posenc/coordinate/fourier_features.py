"""Fourier feature mappings (Tancik et al. 2020, arXiv:2006.10739, section 6.1).

    gamma(v) = [cos(2 pi B v), sin(2 pi B v)]

with one of the paper's three choices of ``B``:

``"basic"``       ``B = I``: ``[cos 2 pi v, sin 2 pi v]``.
``"positional"``  per coordinate, the log-spaced scales ``sigma^(j/m)``, ``j = 0 .. m-1``
                  (rows ordered scale-major: all coordinates at scale 0, then at scale 1, ...).
``"gaussian"``    ``B ~ N(0, sigma^2)`` of shape ``(m, c)``, drawn once from ``seed``.

The Gaussian matrix is fixed, not trained, and kept as a persistent buffer so that a saved model
reloads the same features; it stays in float32 when the module is cast to half precision (the
derived matrices of the other two mappings are float64 and rebuilt on every move or cast). All
cosines come before all sines, as in the paper. Angles ``2 pi v B^T`` are formed in float64 and the
result is cast to the input dtype. Verified against a float64 transcription of the mapping,
written row by row in ``tests/coordinate/test_fourier_features.py``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from posenc.coordinate.base import Encoding
from posenc.core.base import DerivedTablesMixin
from posenc.core.frequencies import angle_dtype
from posenc.core.registry import register
from posenc.core.validation import (
    check_choice,
    check_finite,
    check_fits,
    check_float,
    check_float_tensor,
    check_int,
    check_positive_int,
    check_same_device,
)

Mapping = Literal["basic", "positional", "gaussian"]
MAX_SEED = 2**64 - 1  #: the largest seed torch.Generator.manual_seed takes


def fourier_features(x: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``[cos(2 pi x B^T), sin(2 pi x B^T)]``.

    x: ``(*, c)`` float; B: ``(m, c)``. Returns ``(*, 2m)`` in ``x``'s dtype.
    """
    x = check_finite("x", check_float_tensor("x", x))
    B = check_finite("B", check_float_tensor("B", B, ndim=2))
    if x.ndim == 0 or x.shape[-1] != B.shape[1]:
        raise ValueError(
            f"`x` must have last dimension c={B.shape[1]} to match `B` of shape {tuple(B.shape)}, got {tuple(x.shape)}"
        )
    check_same_device(x=x, B=B)
    dtype = angle_dtype(x.device)
    # (*, c) @ (c, m) -> (*, m) angles in float64
    theta = (x.to(dtype) @ B.to(dtype).T) * (2 * math.pi)
    return torch.cat((theta.cos(), theta.sin()), dim=-1).to(x.dtype)


def basic_matrix(in_dim: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """``B = I``: ``(in_dim, in_dim)`` float64."""
    check_fits("in_dim", check_positive_int("in_dim", in_dim), (in_dim, in_dim), angle_dtype(device), device)
    return torch.eye(in_dim, device=device, dtype=angle_dtype(device))


def positional_matrix(
    in_dim: int, num_scales: int, sigma: float, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """Rows ``sigma^(j/m) e_k`` for ``j = 0 .. m-1`` (outer), ``k = 0 .. c-1`` (inner): ``(m c, c)`` float64."""
    check_positive_int("in_dim", in_dim)
    check_positive_int("num_scales", num_scales)
    sigma = check_float("sigma", sigma, positive=True)
    dtype = angle_dtype(device)
    check_fits("num_scales", num_scales, (num_scales * in_dim, in_dim), dtype, device)
    scales = sigma ** (torch.arange(num_scales, device=device, dtype=dtype) / num_scales)
    # (m, 1, 1) * (1, c, c) -> (m, c, c) -> (m c, c)
    eye = torch.eye(in_dim, device=device, dtype=dtype)
    return (scales[:, None, None] * eye).flatten(0, 1)


def gaussian_matrix(
    in_dim: int, num_features: int, sigma: float, *, seed: int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """``B ~ N(0, sigma^2)`` of shape ``(num_features, in_dim)``, float32, the same for the same ``seed``.

    Drawn on the CPU so that a seed gives the same matrix on every device.
    """
    check_positive_int("in_dim", in_dim)
    check_positive_int("num_features", num_features)
    sigma = check_float("sigma", sigma, positive=True)
    check_fits("num_features", num_features, (num_features, in_dim), torch.float64, device)
    gen = torch.Generator(device="cpu").manual_seed(check_int("seed", seed, minimum=0, maximum=MAX_SEED))
    return (torch.randn(num_features, in_dim, generator=gen, dtype=torch.float64) * sigma).float().to(device)


@register(
    "fourier_features",
    paper="Tancik et al. 2020, arXiv:2006.10739",
    summary="[cos 2 pi Bv, sin 2 pi Bv] with B the identity, log-spaced scales, or a fixed Gaussian matrix.",
)
class FourierFeatures(DerivedTablesMixin, Encoding):
    """Fourier feature mapping of ``in_dim`` coordinates.

    Args:
        in_dim: number of coordinates ``c``.
        mapping: ``"basic"``, ``"positional"`` or ``"gaussian"`` (see the module docstring).
        num_features: ``m``, rows of ``B`` (Gaussian) or scales per coordinate (positional);
            unused by ``"basic"``.
        sigma: standard deviation of ``B`` (Gaussian) or largest scale bound (positional); > 0.
        seed: seed of the Gaussian matrix.
    """

    keep_dtype_buffers = ("B",)

    def __init__(
        self,
        in_dim: int = 2,
        mapping: Mapping = "gaussian",
        *,
        num_features: int = 256,
        sigma: float = 10.0,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(in_dim)
        self.mapping = check_choice("mapping", mapping, ("basic", "positional", "gaussian"))
        self.num_features = check_positive_int("num_features", num_features)
        self.sigma = check_float("sigma", sigma, positive=True)
        self.seed = check_int("seed", seed, minimum=0, maximum=MAX_SEED)
        rows = {"basic": in_dim, "positional": num_features * in_dim, "gaussian": num_features}[mapping]
        # refused by the argument that makes B too large, before the buffer is allocated
        larger = "in_dim" if mapping == "basic" or in_dim >= num_features else "num_features"
        check_fits(larger, {"in_dim": in_dim, "num_features": num_features}[larger], (rows, in_dim), torch.float64, device)
        # only the random matrix is state; the other two are derived from the configuration
        persistent = mapping == "gaussian"
        self.register_buffer("B", torch.empty(rows, in_dim, device=device), persistent=persistent)
        if persistent:
            if self.B.device.type != "meta":
                self.reset_parameters()
        else:
            self.init_non_persistent_buffers(device)

    def reset_parameters(self) -> None:
        """Redraw the Gaussian matrix from ``seed`` (after ``to_empty`` from the meta device)."""
        if self.mapping == "gaussian":
            self.B = gaussian_matrix(self.in_dim, self.num_features, self.sigma, seed=self.seed, device=self.B.device)

    def init_non_persistent_buffers(self, device: torch.device | None = None) -> None:
        if self.mapping == "basic":
            self.B = basic_matrix(self.in_dim, device=device)
        elif self.mapping == "positional":
            self.B = positional_matrix(self.in_dim, self.num_features, self.sigma, device=device)

    @property
    def out_dim(self) -> int:
        return 2 * self.B.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(*, in_dim)`` -> ``(*, out_dim)`` in ``x``'s dtype."""
        return fourier_features(self.check_input(x), self.B)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, mapping={self.mapping!r}, out_dim={self.out_dim}, sigma={self.sigma}"
