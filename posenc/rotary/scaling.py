"""Context-extension scalings of RoPE's frequencies.

Each scaling maps the rotated width, the base and (for the length-dependent ones) the current
sequence length to the inverse frequencies actually used, plus an attention factor that multiplies
cos and sin:

``none``         base ** (-2i/d)
``linear``       position interpolation (Chen et al. 2023, arXiv:2306.15595): frequencies / factor
``ntk``          NTK-aware base scaling (bloc97, 2023): base * factor ** (d / (d - 2))
``dynamic_ntk``  the NTK base recomputed from the length L (Hugging Face transformers'
                 ``_compute_dynamic_ntk_parameters``): base * max(1, factor * L / L0 - (factor - 1)) ** (d / (d - 2)).
                 ``dynamic_update="recompute"`` uses the length of each call; ``"grow_only"`` uses the
                 longest length seen since the last sequence shorter than L0 (transformers' rule: the
                 base never shrinks while a cache grows)
``yarn``         YaRN (Peng et al. 2023, arXiv:2309.00071): per-band blend of interpolated and
                 original frequencies with a linear ramp between the ``beta_fast`` and ``beta_slow``
                 rotation counts over L0 (band bounds floored/ceiled unless ``truncate=False``, as
                 gpt-oss), attention factor ``m(s, mscale) / m(s, mscale_all_dim)`` with
                 ``m(s, a) = 0.1 a ln(s) + 1`` (DeepSeek-V3; 0.1 ln(s) + 1 by default) unless
                 ``attention_factor`` is given
``llama3``       Llama 3.1's banded wavelength scaling: wavelengths above L0 / low_freq_factor are
                 divided by ``factor``, those below L0 / high_freq_factor kept, the band between
                 blended by ``(L0 / wavelength - low) / (high - low)``
``longrope``     LongRoPE (Ding et al. 2024, arXiv:2402.13753, as in Phi-3): frequency i divided by
                 ``short_factor[i]`` for lengths up to L0 and by ``long_factor[i]`` beyond, attention
                 factor sqrt(1 + ln(s) / ln(L0)) unless ``attention_factor`` is given

``factor`` defaults to ``max_len / original_max_len`` when both lengths are given (DeepSeek-V3 and
Phi-3 configs leave it out), else to 1 (``max_len`` alone is refused: it gives no factor). A kind's own
parameters (YaRN's ``beta_*``, ``mscale*`` and ``truncate``, Llama 3's bands, dynamic NTK's
``dynamic_update``) are refused for another kind unless left at their defaults, which that kind would ignore.

Verified against float64 transcriptions of the papers' and reference code's formulas
(tests/rotary/test_scaling.py) and against transformers' ``ROPE_INIT_FUNCTIONS`` (tests/rotary/test_hf.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from posenc.core.frequencies import angle_dtype, inverse_frequencies
from posenc.core.validation import check_choice, check_even, check_fits, check_float, check_int
from posenc.rotary.p_rope import keep_highest_frequencies

ScalingKind = Literal["none", "linear", "ntk", "dynamic_ntk", "yarn", "llama3", "longrope"]
SCALING_KINDS = ("none", "linear", "ntk", "dynamic_ntk", "yarn", "llama3", "longrope")
DynamicUpdate = Literal["recompute", "grow_only"]
_NEEDS_ORIGINAL = ("dynamic_ntk", "yarn", "llama3", "longrope")
_TAKES_ATTENTION_FACTOR = ("yarn", "longrope")
#: (parameter, the kind that reads it, its default): another kind would ignore it
_KIND_PARAMETERS = (
    ("beta_fast", "yarn", 32.0), ("beta_slow", "yarn", 1.0), ("mscale", "yarn", 1.0), ("mscale_all_dim", "yarn", 0.0),
    ("truncate", "yarn", True), ("low_freq_factor", "llama3", 1.0), ("high_freq_factor", "llama3", 4.0),
    ("dynamic_update", "dynamic_ntk", "recompute"),
)


def _check_factor_list(name: str, values: Sequence[float] | None) -> tuple[float, ...]:
    if values is None:
        raise ValueError(f"`{name}` (one rescale factor per rotated feature pair) is required for scaling='longrope'")
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"`{name}` must be a list of numbers, got {type(values).__name__}")
    return tuple(check_float(f"{name}[{i}]", v, positive=True) for i, v in enumerate(values))


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature ``0.1 * mscale * ln(factor) + 1`` (1 for factor <= 1)."""
    return 1.0 if factor <= 1.0 else 0.1 * mscale * math.log(factor) + 1.0


@dataclass(frozen=True)
class RopeScaling:
    """A RoPE frequency scaling; see the module docstring for each ``kind``.

    After construction ``factor`` and ``attention_factor`` hold the resolved values (derived from
    ``max_len / original_max_len`` and from the kind's formula when they were not given).
    """

    kind: ScalingKind = "none"
    factor: float | None = None
    original_max_len: int | None = None
    beta_fast: float = 32.0  # yarn: rotations over L0 above which a band keeps its frequency
    beta_slow: float = 1.0  # yarn: rotations over L0 below which a band is fully interpolated
    low_freq_factor: float = 1.0  # llama3: wavelengths above L0 / low_freq_factor are interpolated
    high_freq_factor: float = 4.0  # llama3: wavelengths below L0 / high_freq_factor are kept
    short_factor: tuple[float, ...] | None = None  # longrope: per-pair rescale up to L0
    long_factor: tuple[float, ...] | None = None  # longrope: per-pair rescale beyond L0
    attention_factor: float | None = None  # yarn, longrope: override of the derived cos/sin factor
    mscale: float = 1.0  # yarn (DeepSeek-V3): numerator coefficient of the temperature
    mscale_all_dim: float = 0.0  # yarn (DeepSeek-V3): denominator coefficient (0: no denominator)
    truncate: bool = True  # yarn: floor/ceil the ramp's band bounds (gpt-oss: False)
    max_len: int | None = None  # the extended length; gives factor = max_len / original_max_len
    dynamic_update: DynamicUpdate = "recompute"  # dynamic_ntk: per call, or transformers' grow-only

    def __post_init__(self) -> None:
        check_choice("scaling", self.kind, SCALING_KINDS)
        check_choice("dynamic_update", self.dynamic_update, ("recompute", "grow_only"))
        if self.original_max_len is not None:
            check_int("original_max_len", self.original_max_len, minimum=1)
        if self.kind in _NEEDS_ORIGINAL and self.original_max_len is None:
            raise ValueError(f"`original_max_len` (the trained context length) is required for scaling={self.kind!r}")
        if self.max_len is not None:
            check_int("max_len", self.max_len, minimum=1)
        factor = self.factor
        if factor is None and self.max_len is not None and self.original_max_len is None:
            raise ValueError(
                f"`max_len`={self.max_len} gives the factor as max_len / original_max_len, and `original_max_len` "
                f"is not given; give it, or `factor`"
            )
        if factor is None:
            factor = 1.0
            if self.max_len is not None and self.original_max_len is not None:
                factor = self.max_len / self.original_max_len
                if factor < 1.0:
                    raise ValueError(
                        f"`max_len` must be >= `original_max_len` to derive the scaling factor, "
                        f"got max_len={self.max_len}, original_max_len={self.original_max_len}"
                    )
        object.__setattr__(self, "factor", check_float("factor", factor, minimum=1.0))
        if self.kind == "none" and self.factor != 1.0:
            raise ValueError(
                f"`factor`={self.factor} (given, or max_len / original_max_len) scales nothing with scaling='none'; "
                f"choose one of {SCALING_KINDS[1:]}"
            )
        check_float("beta_fast", self.beta_fast, positive=True)
        check_float("beta_slow", self.beta_slow, positive=True)
        if self.kind == "yarn" and self.beta_fast <= self.beta_slow:
            raise ValueError(f"`beta_fast` must be > `beta_slow` for YaRN, got {self.beta_fast} <= {self.beta_slow}")
        check_float("low_freq_factor", self.low_freq_factor, positive=True)
        check_float("high_freq_factor", self.high_freq_factor, positive=True)
        if self.kind == "llama3" and self.high_freq_factor <= self.low_freq_factor:
            raise ValueError(
                f"`high_freq_factor` must be > `low_freq_factor` for llama3, "
                f"got {self.high_freq_factor} <= {self.low_freq_factor}"
            )
        if not isinstance(self.truncate, bool):
            raise TypeError(f"`truncate` must be a bool, got {type(self.truncate).__name__}")
        check_float("mscale", self.mscale, minimum=0.0)
        check_float("mscale_all_dim", self.mscale_all_dim, minimum=0.0)
        if self.kind == "longrope":
            object.__setattr__(self, "short_factor", _check_factor_list("short_factor", self.short_factor))
            object.__setattr__(self, "long_factor", _check_factor_list("long_factor", self.long_factor))
            if len(self.short_factor) != len(self.long_factor):
                raise ValueError(
                    f"`short_factor` and `long_factor` must have the same length, "
                    f"got {len(self.short_factor)} and {len(self.long_factor)}"
                )
        elif self.short_factor is not None or self.long_factor is not None:
            raise ValueError(f"`short_factor` / `long_factor` are longrope's, not scaling={self.kind!r}'s")
        for name, owner, default in _KIND_PARAMETERS:
            if self.kind != owner and getattr(self, name) != default:
                raise ValueError(
                    f"`{name}`={getattr(self, name)!r} is scaling={owner!r}'s parameter, which scaling={self.kind!r} "
                    f"would ignore; leave it at its default {default!r} or choose scaling={owner!r}"
                )
        attention = self.attention_factor
        if attention is not None and self.kind not in _TAKES_ATTENTION_FACTOR and attention != 1.0:
            raise ValueError(
                f"`attention_factor` can be given for scaling in {_TAKES_ATTENTION_FACTOR}, not {self.kind!r}"
            )
        if attention is None:
            attention = self._derived_attention()
        object.__setattr__(self, "attention_factor", check_float("attention_factor", attention, positive=True))

    def _derived_attention(self) -> float:
        """The multiplier of cos and sin the kind's paper prescribes."""
        if self.kind == "yarn":
            return yarn_mscale(self.factor, self.mscale) / yarn_mscale(self.factor, self.mscale_all_dim)
        if self.kind == "longrope" and self.factor > 1.0:
            if self.original_max_len < 2:
                raise ValueError(
                    f"`original_max_len` must be >= 2 for LongRoPE's attention factor sqrt(1 + ln(factor) / "
                    f"ln(original_max_len)), or give `attention_factor`; got {self.original_max_len}"
                )
            return math.sqrt(1.0 + math.log(self.factor) / math.log(self.original_max_len))
        return 1.0

    def check_width(self, rot_dim: int) -> None:
        """Raise if the per-pair factor lists do not cover ``rot_dim / 2`` feature pairs."""
        if self.kind == "longrope":
            for name, values in (("short_factor", self.short_factor), ("long_factor", self.long_factor)):
                if len(values) != rot_dim // 2:
                    raise ValueError(
                        f"`{name}` must have one entry per rotated feature pair "
                        f"(rot_dim / 2 = {rot_dim // 2}), got {len(values)}"
                    )

    @property
    def depends_on_length(self) -> bool:
        # dynamic NTK stretches the base past L0 even at factor 1 (the ratio is then L / L0)
        return self.kind in ("dynamic_ntk", "longrope")

    @property
    def grow_only(self) -> bool:
        return self.kind == "dynamic_ntk" and self.dynamic_update == "grow_only"

    def grown_length(self, longest: int, seq_len: int | torch.Tensor) -> int | torch.Tensor:
        """Transformers' grow-only rule: the NTK length after seeing ``seq_len`` when the longest
        length since the last reset was ``longest`` (it grows, and resets to L0 on a short sequence)."""
        L0 = self.original_max_len
        if isinstance(seq_len, torch.Tensor):
            return torch.where(seq_len > longest, seq_len, torch.where(seq_len < L0, L0, longest))
        return seq_len if seq_len > longest else (L0 if seq_len < L0 else longest)

    def length_key(self, rot_dim: int, base: float, seq_len: int) -> float:
        """What a cached table built for ``seq_len`` depends on (0 when nothing does)."""
        if self.kind == "longrope":
            return float(seq_len > self.original_max_len)
        if self.depends_on_length:
            return float(self.dynamic_base(rot_dim, base, seq_len))
        return 0.0

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
        """``(rot_dim // 2,)`` inverse frequencies in float64 (float32 on devices without float64).

        ``seq_len`` (an int or a 0-d tensor) matters for ``dynamic_ntk`` and ``longrope`` only;
        None means a length within the trained one.
        """
        dtype = angle_dtype(device)
        plain = inverse_frequencies(rot_dim, base, device=device, dtype=dtype)
        if self.kind == "linear":
            return plain / self.factor
        if self.kind == "ntk":
            exponent = rot_dim / (rot_dim - 2) if rot_dim > 2 else 1.0
            return inverse_frequencies(rot_dim, base * self.factor**exponent, device=device, dtype=dtype)
        if self.kind == "dynamic_ntk" and seq_len is not None:
            new_base = self.dynamic_base(rot_dim, base, seq_len)
            exponent = torch.arange(0, rot_dim, 2, device=device, dtype=dtype) / rot_dim
            return torch.as_tensor(new_base, device=device, dtype=dtype).pow(-exponent)
        if self.kind == "yarn":
            return self._yarn(plain, rot_dim, base)
        if self.kind == "llama3":
            return self._llama3(plain)
        if self.kind == "longrope":
            return self._longrope(plain, rot_dim, seq_len)
        return plain

    def _yarn(self, extrapolated: torch.Tensor, rot_dim: int, base: float) -> torch.Tensor:
        if base <= 1.0:
            # the band bounds divide by ln(base), and assume wavelengths growing with the pair index
            raise ValueError(f"`base` must be > 1 for scaling='yarn', got {base}")
        interpolated = extrapolated / self.factor

        def correction_dim(num_rotations: float) -> float:
            # the band index whose wavelength fits `num_rotations` times into the original length
            return (rot_dim * math.log(self.original_max_len / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

        low, high = correction_dim(self.beta_fast), correction_dim(self.beta_slow)
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, rot_dim - 1)
        if low == high:
            high += 0.001  # avoid a zero-width ramp
        bands = torch.arange(rot_dim // 2, device=extrapolated.device, dtype=extrapolated.dtype)
        ramp = ((bands - low) / (high - low)).clamp(0, 1)  # 0 for fast (high-frequency) bands, 1 for slow ones
        return interpolated * ramp + extrapolated * (1.0 - ramp)

    def _llama3(self, inv_freq: torch.Tensor) -> torch.Tensor:
        L0, low, high = self.original_max_len, self.low_freq_factor, self.high_freq_factor
        wavelength = 2 * math.pi / inv_freq
        smooth = (L0 / wavelength - low) / (high - low)
        blended = (1.0 - smooth) * inv_freq / self.factor + smooth * inv_freq
        scaled = torch.where(wavelength > L0 / low, inv_freq / self.factor, blended)
        return torch.where(wavelength < L0 / high, inv_freq, scaled)

    def _longrope(self, inv_freq: torch.Tensor, rot_dim: int, seq_len: int | torch.Tensor | None) -> torch.Tensor:
        self.check_width(rot_dim)
        short = inv_freq / torch.tensor(self.short_factor, device=inv_freq.device, dtype=inv_freq.dtype)
        if seq_len is None:
            return short
        long = inv_freq / torch.tensor(self.long_factor, device=inv_freq.device, dtype=inv_freq.dtype)
        if isinstance(seq_len, torch.Tensor):
            # a 0-d tensor picks one set for every position, without a host sync
            return torch.where(seq_len.to(inv_freq.device) > self.original_max_len, long, short)
        return long if seq_len > self.original_max_len else short


def length_of(positions: torch.Tensor) -> torch.Tensor:
    """One past the largest of non-empty ``positions``, the length a length-dependent scaling sees, as a
    0-d tensor (no host sync). Integer positions are widened to int64 first: ``amax() + 1`` in their own
    dtype wraps around at its largest value (uint8 255 + 1 is 0, int32 2**31 - 1 + 1 is -2**31)."""
    last = positions.amax()
    return (last if last.is_floating_point() else last.long()) + 1


def _check_seq_len(seq_len: int | torch.Tensor | None) -> None:
    """``seq_len`` is None, an int >= 0, or a 0-d integer or float tensor (its value is not read: no host sync)."""
    if not isinstance(seq_len, torch.Tensor):
        if seq_len is not None:
            check_int("seq_len", seq_len, minimum=0)
        return
    if seq_len.ndim != 0 or seq_len.dtype == torch.bool or seq_len.is_complex():
        raise ValueError(
            f"`seq_len` must be an int >= 0 or a 0-d integer or float tensor, "
            f"got a tensor of shape {tuple(seq_len.shape)} and dtype {seq_len.dtype}"
        )


def rope_frequencies(
    rot_dim: int,
    *,
    base: float = 10000.0,
    scaling: ScalingKind | RopeScaling = "none",
    seq_len: int | torch.Tensor | None = None,
    p: float = 1.0,
    device: torch.device | str | None = None,
    **scaling_kwargs,
) -> tuple[torch.Tensor, float]:
    """The inverse frequencies ``(rot_dim // 2,)`` (float64) and cos/sin factor of a scaled RoPE.

    scaling: a kind (its parameters in ``scaling_kwargs``: ``factor``, ``original_max_len``, ...) or
    a :class:`RopeScaling`. p: p-RoPE's fraction of frequencies kept (see ``posenc.rotary.p_rope``).
    seq_len: the sequence length for ``dynamic_ntk`` and ``longrope``, an int >= 0 or a 0-d real tensor.
    """
    check_even("rot_dim", rot_dim, why="RoPE rotates feature pairs")
    _check_seq_len(seq_len)
    check_float("base", base, positive=True)
    check_fits("rot_dim", rot_dim, (rot_dim // 2,), angle_dtype(device), device)
    if isinstance(scaling, RopeScaling):
        if scaling_kwargs:
            raise ValueError(
                f"scaling parameters {sorted(scaling_kwargs)} need `scaling` to be a kind, not a RopeScaling"
            )
    else:
        scaling = RopeScaling(scaling, **scaling_kwargs)
    scaling.check_width(rot_dim)
    inv_freq = scaling.inverse_frequencies(rot_dim, base, seq_len=seq_len, device=device)
    return keep_highest_frequencies(inv_freq, p), scaling.attention_factor
