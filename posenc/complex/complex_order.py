"""Complex word-order embeddings as an input encoding of the real reference Transformer
(Wang et al. 2019, arXiv:1912.12333).

:class:`posenc.models.Transformer` is real-valued and hands its input hook the token embeddings
``e_w``, not the token ids. This encoding reads each word's amplitude, frequency and phase off its
embedding through three learned linear maps, ``r_w = A e_w``, ``omega_w = W e_w``,
``theta_w = T e_w`` (so they are per-word quantities, as in the paper, parameterised through the
embedding table), forms ``r_w exp(i (omega_w p + theta_w))`` of complex width ``dim / 2`` and feeds
the real network its real and imaginary parts, concatenated: ``(b, n, dim)``. ``frequency="shared"``
or ``phase="shared"`` replace the maps by one learned value per dimension (the paper's variants).
The multiplicative shift property holds exactly per word. For the fully complex network the paper
describes, use :class:`posenc.complex.model.ComplexOrderTransformer`.

Verified in tests/complex/test_complex_order.py against a float64 transcription of the formula and
of the shift property.
"""

from __future__ import annotations

import torch
from torch import nn

from posenc.complex.embedding import Sharing, complex_order
from posenc.core.base import PositionEncoding
from posenc.core.positions import Positions, resolve_positions
from posenc.core.precision import autocast_off
from posenc.core.registry import register
from posenc.core.validation import check_choice, check_dtype_matches, check_even, check_float_tensor, check_layers_fit


@register(
    "complex_order",
    paper="Wang et al. 2019, arXiv:1912.12333",
    summary="Each word is r exp(i(omega p + theta)), learned amplitude, frequency, phase; fed on as real/imag parts.",
)
class ComplexOrderEncoding(PositionEncoding):
    """Complex order embedding of width ``dim / 2`` read off the token embedding, as real features.

    Args:
        dim: model width (even): ``dim / 2`` complex features, real parts then imaginary parts.
        frequency, phase: ``"word"`` (read off each word's embedding) or ``"shared"`` by all words.
    """

    model_arguments = ("dim",)
    hooks = frozenset({"input"})

    def __init__(
        self,
        dim: int,
        *,
        frequency: Sharing = "word",
        phase: Sharing = "word",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_even("dim", dim, why="it holds the real and the imaginary parts of dim/2 complex features")
        self.frequency_sharing = check_choice("frequency", frequency, ("word", "shared"))
        self.phase_sharing = check_choice("phase", phase, ("word", "shared"))
        kw = {"device": device, "dtype": dtype}
        c = dim // 2
        check_layers_fit({"dim": dim}, 3 * dim * c, dtype, device)
        self.amplitude = nn.Linear(dim, c, bias=False, **kw)
        def per_word_or_shared(sharing: str) -> nn.Module | nn.Parameter:
            return nn.Linear(dim, c, bias=False, **kw) if sharing == "word" else nn.Parameter(torch.empty(c, **kw))

        self.frequency = per_word_or_shared(frequency)
        self.phase = per_word_or_shared(phase)
        if self.amplitude.weight.device.type != "meta":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Shared frequencies and phases (the per-word layers initialise themselves; see :mod:`posenc.core.meta`)."""
        if isinstance(self.frequency, nn.Parameter):
            nn.init.uniform_(self.frequency, 0.0, 1.0)
        if isinstance(self.phase, nn.Parameter):
            nn.init.uniform_(self.phase, 0.0, 2 * torch.pi)

    def word_parameters(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x ``(b, n, dim)`` -> amplitude ``(b, n, dim/2)``, frequency and phase (``(b, n, dim/2)`` or ``(dim/2,)``)."""
        def read(part):
            return part(x) if isinstance(part, nn.Linear) else part

        # a frequency rounded to bf16 by a user's autocast region is off by 2^-9 of itself, and so is its
        # angle omega * p: radians at positions in the thousands
        with autocast_off(x.device):
            return self.amplitude(x), read(self.frequency), read(self.phase)

    def complex_embedding(self, x: torch.Tensor, positions: Positions) -> torch.Tensor:
        """x ``(b, n, dim)`` real -> complex ``(b, n, dim/2)``."""
        check_float_tensor("x", x, ndim=3)
        if x.shape[-1] != self.dim:
            raise ValueError(f"`x` must have last dimension dim={self.dim}, got {x.shape[-1]}")
        return complex_order(*self.word_parameters(x), positions.tensor(x.device))

    def encode_input(self, x: torch.Tensor, *, positions: Positions) -> torch.Tensor:
        z = self.complex_embedding(x, positions)
        return torch.cat([z.real, z.imag], dim=-1).to(x.dtype)

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor | None = None, offset: int = 0) -> torch.Tensor:
        """x: ``(b, n, dim)`` real token embeddings -> ``(b, n, dim)`` (real parts, then imaginary parts)."""
        check_dtype_matches("x", check_float_tensor("x", x, ndim=3), self)
        pos = resolve_positions(positions, n=x.shape[-2], offset=offset, batch=x.shape[0], device=x.device)
        return self.encode_input(x, positions=Positions(x.shape[-2], offset, None if positions is None else pos))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, frequency={self.frequency_sharing!r}, phase={self.phase_sharing!r}"
