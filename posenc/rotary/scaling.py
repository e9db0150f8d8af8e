"""Context-extension scalings of RoPE's frequencies.

Each scaling maps the rotated width, the base and (for the dynamic one) the current sequence length
to the inverse frequencies actually used, plus an attention factor that multiplies cos and sin:

``none``         base ** (-2i/d)
``linear``       position interpolation (Chen et al. 2023, arXiv:2306.15595): frequencies / factor
``ntk``          NTK-aware base scaling (bloc97, 2023): base * factor ** (d / (d - 2))
``dynamic_ntk``  the NTK base recomputed from the length L seen so far (Hugging Face transformers'
                 ``_compute_dynamic_ntk_parameters``): base * max(1, factor * L / L0 - (factor - 1)) ** (d / (d - 2))
``yarn``         YaRN (Peng et al. 2023, arXiv:2309.00071): per-band blend of interpolated and
                 original frequencies with a linear ramp between the ``beta_fast`` and ``beta_slow``
                 rotation counts over the original length L0, and attention factor 0.1 ln(factor) + 1.

Verified against a float64 transcription of the formulas in the papers and in Hugging Face
transformers' ``modeling_rope_utils`` (tests/rotary/test_scaling.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from posenc.core.frequencies import angle_dtype, inverse_frequencies
from posenc.core.validation import check_choice, check_float, check_int

ScalingKind = Literal["none", "linear", "ntk", "dynamic_ntk", "yarn"]
SCALING_KINDS = ("none", "linear", "ntk", "dynamic_ntk", "yarn")


@dataclass(frozen=True)
class RopeScaling:
    """A RoPE frequency scaling; see the module docstring for each ``kind``."""

    kind: ScalingKind = "none"
    factor: float = 1.0
    original_max_len: int | None = None
    beta_fast: float = 32.0
    beta_slow: float = 1.0

    def __post_init__(self) -> None:
        check_choice("scaling", self.kind, SCALING_KINDS)
        check_float("factor", self.factor, minimum=1.0)
        check_float("beta_fast", self.beta_fast, positive=True)
        check_float("beta_slow", self.beta_slow, positive=True)
        if self.kind in ("dynamic_ntk", "yarn"):
            if self.original_max_len is None:
                raise ValueError(f"`original_max_len` (the trained context length) is required for scaling={self.kind!r}")
            check_int("original_max_len", self.original_max_len, minimum=1)
        if self.kind == "yarn" and self.beta_fast <= self.beta_slow:
            raise ValueError(f"`beta_fast` must be > `beta_slow` for YaRN, got {self.beta_fast} <= {self.beta_slow}")

    @property
    def depends_on_length(self) -> bool:
        return self.kind == "dynamic_ntk" and self.factor > 1.0

    @property
    def attention_factor(self) -> float:
        """Multiplier of cos and sin (YaRN's temperature ``0.1 ln(s) + 1``; 1 otherwise)."""
        if self.kind == "yarn" and self.factor > 1.0:
            return 0.1 * math.log(self.factor) + 1.0
        return 1.0

    def dynamic_base(self, rot_dim: int, base: float, seq_len: int | torch.Tensor) -> float | torch.Tensor:
        """The dynamic-NTK base for a length ``seq_len`` (an int, or a 0-d tensor: no host sync)."""
        if isinstance(seq_len, torch.Tensor):
            seq_len = seq_len.to(angle_dtype(seq_len.device))
        ratio = self.factor * seq_len / self.original_max_len - (self.factor - 1.0)
        exponent = rot_dim / (rot_dim - 2) if rot_dim > 2 else 1.0
        if isinstance(ratio, torch.Tensor):
            return base * ratio.clamp(min=1.0) ** exponent
        return base * max(1.0, ratio) ** exponent

    def inverse_frequencies(
        self,
        rot_dim: int,
        base: float,
        *,
        seq_len: int | torch.Tensor | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """``(rot_dim // 2,)`` inverse frequencies in float64 (float32 on devices without float64)."""
        dtype = angle_dtype(device)
        if self.kind == "linear":
            return inverse_frequencies(rot_dim, base, device=device, dtype=dtype) / self.factor
        if self.kind == "ntk":
            exponent = rot_dim / (rot_dim - 2) if rot_dim > 2 else 1.0
            return inverse_frequencies(rot_dim, base * self.factor**exponent, device=device, dtype=dtype)
        if self.kind == "dynamic_ntk" and seq_len is not None:
            new_base = self.dynamic_base(rot_dim, base, seq_len)
            exponent = torch.arange(0, rot_dim, 2, device=device, dtype=dtype) / rot_dim
            return torch.as_tensor(new_base, device=device, dtype=dtype).pow(-exponent)
        if self.kind == "yarn":
            return self._yarn_inverse_frequencies(rot_dim, base, device=device, dtype=dtype)
        return inverse_frequencies(rot_dim, base, device=device, dtype=dtype)

    def _yarn_inverse_frequencies(self, rot_dim: int, base: float, *, device, dtype) -> torch.Tensor:
        extrapolated = inverse_frequencies(rot_dim, base, device=device, dtype=dtype)
        interpolated = extrapolated / self.factor

        def correction_dim(num_rotations: float) -> float:
            # the band index whose wavelength fits `num_rotations` times into the original length
            return (rot_dim * math.log(self.original_max_len / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

        low = max(math.floor(correction_dim(self.beta_fast)), 0)
        high = min(math.ceil(correction_dim(self.beta_slow)), rot_dim - 1)
        if low == high:
            high += 0.001  # avoid a zero-width ramp
        ramp = ((torch.arange(rot_dim // 2, device=device, dtype=dtype) - low) / (high - low)).clamp(0, 1)
        keep_original = 1.0 - ramp  # 1 for fast (high-frequency) bands, 0 for slow ones
        return interpolated * (1.0 - keep_original) + extrapolated * keep_original
