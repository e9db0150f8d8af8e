"""NeRF positional encoding (Mildenhall et al. 2020, arXiv:2003.08934, section 5.1).

    gamma(p) = (p, sin(2^0 pi p), cos(2^0 pi p), ..., sin(2^(L-1) pi p), cos(2^(L-1) pi p))

applied to every coordinate of ``p``. Channel order follows the official code
(``run_nerf_helpers.py``, ``Embedder``): the raw input first, then for each frequency in turn the
sine of all coordinates followed by the cosine of all coordinates. The paper multiplies by pi
(``use_pi=True``); the official code does not (``use_pi=False``), so its lowest band has a period of
2 pi instead of 2. ``bands="log"`` gives the octaves ``2^0 .. 2^(L-1)``; ``bands="linear"`` gives the
official code's ``log_sampling=False`` alternative, ``L`` frequencies evenly spaced from 1 to
``2^(L-1)``. The paper uses ``L = 10`` for positions and ``L = 4`` for viewing directions
(:meth:`NeRFEncoding.for_positions`, :meth:`NeRFEncoding.for_directions`).

Angles are formed in float64 and only the result is cast to the input dtype. Verified against a
float64 transcription of the formula above, written channel by channel in
``tests/coordinate/test_nerf.py``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from posenc.coordinate.base import Encoding
from posenc.core.base import DerivedTablesMixin
from posenc.core.frequencies import angle_dtype
from posenc.core.registry import register
from posenc.core.validation import check_bool, check_choice, check_finite, check_fits, check_float_tensor, check_int

Bands = Literal["log", "linear"]
MAX_FREQUENCIES = 64  #: the top band 2^63 already rotates a coordinate's last float64 bit by whole turns


def nerf_frequencies(
    num_frequencies: int,
    *,
    bands: Bands = "log",
    use_pi: bool = True,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The ``L`` angular frequencies, ``2^l`` (times pi when ``use_pi``). Returns ``(L,)`` float64."""
    # past 2^63 no significant bit of a float64 coordinate is left in the phase (and 2^1024 overflows)
    check_int("num_frequencies", num_frequencies, minimum=0, maximum=MAX_FREQUENCIES)
    check_choice("bands", bands, ("log", "linear"))
    check_bool("use_pi", use_pi)
    dtype = angle_dtype(device)
    if bands == "log":
        freq = 2.0 ** torch.arange(num_frequencies, device=device, dtype=dtype)
    else:
        freq = torch.linspace(1.0, 2.0 ** (num_frequencies - 1), num_frequencies, device=device, dtype=dtype)
    return freq * math.pi if use_pi else freq


def _encode(x: torch.Tensor, freq: torch.Tensor, include_input: bool) -> torch.Tensor:
    # (*, 1, c) * (L, 1) -> (*, L, c) angles in float64
    theta = x.to(freq.dtype).unsqueeze(-2) * freq.to(x.device).unsqueeze(-1)
    # (*, L, 2, c) -> (*, 2 L c): per frequency, sin of every coordinate then cos of every coordinate
    features = torch.stack((theta.sin(), theta.cos()), dim=-2).flatten(-3).to(x.dtype)
    return torch.cat((x, features), dim=-1) if include_input else features


def nerf_encoding(
    x: torch.Tensor,
    num_frequencies: int,
    *,
    include_input: bool = True,
    use_pi: bool = True,
    bands: Bands = "log",
) -> torch.Tensor:
    """NeRF's encoding of coordinates ``x``.

    x: ``(*, c)`` float. Returns ``(*, c * (2 * num_frequencies + include_input))`` in ``x``'s dtype.
    """
    x = check_finite("x", check_float_tensor("x", x))
    if x.ndim == 0:
        raise ValueError("`x` must have a last (coordinate) dimension, got a 0-d tensor")
    check_int("num_frequencies", num_frequencies, minimum=0, maximum=MAX_FREQUENCIES)
    check_bool("include_input", include_input)
    check_bool("use_pi", use_pi)
    width = x.shape[-1] * (2 * num_frequencies + include_input)
    check_fits("num_frequencies", num_frequencies, (*x.shape[:-1], width), torch.float64, x.device)
    freq = nerf_frequencies(num_frequencies, bands=bands, use_pi=use_pi, device=x.device)
    if num_frequencies == 0 and not include_input:
        raise ValueError("`num_frequencies` must be >= 1 when include_input=False (the output would be empty)")
    return _encode(x, freq, include_input)


@register(
    "nerf",
    paper="Mildenhall et al. 2020, arXiv:2003.08934",
    summary="Sin/cos of every coordinate at octave frequencies 2^0..2^(L-1), after the raw input.",
)
class NeRFEncoding(DerivedTablesMixin, Encoding):
    """NeRF positional encoding of ``in_dim`` coordinates.

    Args:
        in_dim: number of coordinates ``c`` (3 for positions and directions in NeRF).
        num_frequencies: ``L``, bands per coordinate (10 for positions, 4 for directions in NeRF).
        include_input: put the raw coordinates first, as the official code does.
        use_pi: the paper's ``sin(2^l pi p)`` (True) or the official code's ``sin(2^l p)`` (False).
        bands: octaves ``"log"`` or evenly spaced ``"linear"`` frequencies.
    """

    def __init__(
        self,
        in_dim: int = 3,
        num_frequencies: int = 10,
        *,
        include_input: bool = True,
        use_pi: bool = True,
        bands: Bands = "log",
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(in_dim)
        self.num_frequencies = check_int("num_frequencies", num_frequencies, minimum=0, maximum=MAX_FREQUENCIES)
        if num_frequencies == 0 and not include_input:
            raise ValueError("`num_frequencies` must be >= 1 when include_input=False (the output would be empty)")
        self.bands = check_choice("bands", bands, ("log", "linear"))
        self.include_input = check_bool("include_input", include_input)
        self.use_pi = check_bool("use_pi", use_pi)
        self.register_buffer("frequencies", torch.empty(num_frequencies, device=device), persistent=False)
        self.init_non_persistent_buffers(device)

    @classmethod
    def for_positions(cls, **kwargs) -> NeRFEncoding:
        """The paper's encoding of 3-D positions: ``L = 10``, 63 features."""
        return cls(kwargs.pop("in_dim", 3), kwargs.pop("num_frequencies", 10), **kwargs)

    @classmethod
    def for_directions(cls, **kwargs) -> NeRFEncoding:
        """The paper's encoding of viewing directions: ``L = 4``, 27 features."""
        return cls(kwargs.pop("in_dim", 3), kwargs.pop("num_frequencies", 4), **kwargs)

    def init_non_persistent_buffers(self, device: torch.device | None = None) -> None:
        self.frequencies = nerf_frequencies(self.num_frequencies, bands=self.bands, use_pi=self.use_pi, device=device)

    @property
    def out_dim(self) -> int:
        return self.in_dim * (2 * self.num_frequencies + self.include_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(*, in_dim)`` -> ``(*, out_dim)`` in ``x``'s dtype."""
        return _encode(self.check_input(x), self.frequencies, self.include_input)

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, num_frequencies={self.num_frequencies}, include_input={self.include_input}, "
            f"use_pi={self.use_pi}, bands={self.bands!r}"
        )
