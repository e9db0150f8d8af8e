"""Complex word-order embeddings (Wang et al. 2019, arXiv:1912.12333, section 3).

Word ``w`` at position ``p`` is embedded, dimension by dimension, as

    f(w, p)_j = r_{w,j} * exp(i (omega_{w,j} * p + theta_{w,j}))

with learned amplitude ``r``, frequency ``omega`` and initial phase ``theta``. Moving the word by
``k`` positions multiplies it by ``exp(i omega k)``, a factor that depends on ``k`` (and the word)
only, which is the paper's defining property. Variants of the paper's ablation share the frequency
or the phase across words (``frequency="shared"``, ``phase="shared"``: one value per dimension).

The angle ``omega * p + theta`` is formed in float64 (``posenc.core.frequencies.angle_dtype``) and
the result is complex64 (complex128 for float64 parameters). Verified against a float64
transcription of the formula and of the shift property in tests/complex/test_embedding.py.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from posenc.core.frequencies import angle_dtype
from posenc.core.positions import positions_or_randomized, resolve_positions
from posenc.core.precision import arithmetic_dtype
from posenc.core.validation import (
    can_read_values,
    check_broadcasts,
    check_choice,
    check_float_tensor,
    check_layers_fit,
    check_positions,
    check_positive_int,
    check_same_device,
    check_tensor,
)

Sharing = Literal["word", "shared"]


def complex_order(
    amplitude: torch.Tensor,
    frequency: torch.Tensor,
    phase: torch.Tensor,
    positions: torch.Tensor | None = None,
    *,
    randomize_positions: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``r * exp(i (omega * p + theta))``.

    amplitude: ``(b, n, d)`` real; frequency, phase: broadcastable to ``(b, n, d)`` (per word, or
    ``(d,)`` when shared); positions: ``(b | 1, n)`` integer or float. Returns complex ``(b, n, d)``.
    ``positions=None, randomize_positions=L`` places each row's words at ``n`` ordered random positions
    from ``[0, L)`` (:func:`~posenc.core.positions.randomized_positions`, drawn from ``generator``).
    """
    check_float_tensor("amplitude", amplitude, ndim=3)
    for name, t in (("frequency", frequency), ("phase", phase)):
        check_broadcasts(name, check_float_tensor(name, t), amplitude.shape, to="amplitude")
    b, n, _ = amplitude.shape
    positions = positions_or_randomized(
        positions, randomize_positions, n=n, batch=b, generator=generator, device=amplitude.device
    )
    if positions is None:
        raise ValueError("`positions` is required unless `randomize_positions` draws them")
    check_tensor("positions", check_positions("positions", positions), ndim=2)
    if positions.shape[1] != n or (positions.shape[0] != 1 and positions.shape[0] != b):
        raise ValueError(f"`positions` must have shape (b | 1, n) = ({b} | 1, {n}) to match `amplitude`, got {tuple(positions.shape)}")
    check_same_device(amplitude=amplitude, frequency=frequency, phase=phase, positions=positions)
    work = angle_dtype(amplitude.device)
    angle = frequency.to(work) * positions.to(work).unsqueeze(-1) + phase.to(work)
    real_dtype = arithmetic_dtype(amplitude.dtype)
    cos, sin = angle.cos().to(real_dtype), angle.sin().to(real_dtype)
    r = amplitude.to(real_dtype)
    return torch.complex(r * cos, r * sin)


class ComplexOrderEmbedding(nn.Module):
    """Token ids -> complex word-order embeddings, with per-word (or shared) tables.

    Args:
        vocab_size: number of token ids.
        dim: complex width of the embedding.
        frequency, phase: ``"word"`` (one per word and dimension, the paper's full model) or
            ``"shared"`` by all words (one per dimension).
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        *,
        frequency: Sharing = "word",
        phase: Sharing = "word",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.vocab_size = check_positive_int("vocab_size", vocab_size)
        self.dim = check_positive_int("dim", dim)
        self.frequency_sharing = check_choice("frequency", frequency, ("word", "shared"))
        self.phase_sharing = check_choice("phase", phase, ("word", "shared"))
        kw = {"device": device, "dtype": dtype}
        check_layers_fit({"vocab_size": vocab_size, "dim": dim}, 3 * vocab_size * dim, dtype, device)
        self.amplitude = nn.Parameter(torch.empty(vocab_size, dim, **kw))
        self.frequency = nn.Parameter(torch.empty((vocab_size, dim) if frequency == "word" else (dim,), **kw))
        self.phase = nn.Parameter(torch.empty((vocab_size, dim) if phase == "word" else (dim,), **kw))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.amplitude.device.type == "meta":
            return
        nn.init.normal_(self.amplitude, std=1.0)
        # frequencies up to one radian per position, phases anywhere on the circle
        nn.init.uniform_(self.frequency, 0.0, 1.0)
        nn.init.uniform_(self.phase, 0.0, 2 * math.pi)

    def _lookup(self, table: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return table[tokens] if table.ndim == 2 else table

    def forward(self, tokens: torch.Tensor, *, positions: torch.Tensor | None = None, offset: int = 0) -> torch.Tensor:
        """tokens ``(b, n)`` int -> complex ``(b, n, dim)``.

        positions: ``(n,)`` or ``(b, n)``; by default ``offset + arange(n)``.
        """
        check_tensor("tokens", tokens, ndim=2)
        # bool and uint8 tensors would index as masks, not ids
        if tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"`tokens` must be an integer tensor of ids, int64 or int32, got {tokens.dtype}")
        if tokens.numel() and can_read_values(tokens):  # a negative id would wrap to the end of the vocabulary
            low, high = (int(t) for t in torch.aminmax(tokens))
            if low < 0 or high >= self.vocab_size:
                raise ValueError(
                    f"`tokens` must be ids in [0, {self.vocab_size}) (vocab_size), got values in [{low}, {high}]"
                )
        b, n = tokens.shape
        pos = resolve_positions(positions, n=n, offset=offset, batch=b, device=tokens.device)
        return complex_order(
            self.amplitude[tokens], self._lookup(self.frequency, tokens), self._lookup(self.phase, tokens), pos
        )

    def extra_repr(self) -> str:
        return (
            f"vocab_size={self.vocab_size}, dim={self.dim}, "
            f"frequency={self.frequency_sharing!r}, phase={self.phase_sharing!r}"
        )
