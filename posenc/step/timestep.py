"""DDPM's timestep embedding (Ho et al. 2020, arXiv:2006.11239, appendix B).

Exactly as the official code computes it (``get_timestep_embedding`` in ``diffusion_tf/nn.py``; diffusers'
function of the same name adds ``flip_sin_to_cos``, ``downscale_freq_shift``, ``scale`` and ``max_period``,
which :func:`timestep_embedding` and the module take too, with DDPM's values by default),
which follows fairseq / tensor2tensor rather than the interleaved layout of Vaswani et al.::

    half = dim // 2
    freq_i = exp(-i * log(10000) / (half - 1)),   i = 0 .. half - 1
    emb = [sin(t freq_0 .. t freq_{half-1}), cos(t freq_0 .. t freq_{half-1})]   (+ one zero if dim is odd)

Note the ``half - 1`` in the exponent: the lowest frequency is exactly ``1 / 10000`` (the
Transformer's is ``10000^(-(half-1)/half)``). The model then passes the embedding through two dense
layers with a swish between them, both of width ``4 * dim`` (``diffusion_tf/models/unet.py``,
scope ``temb``), which :class:`TimestepEmbedding` reproduces.

Angles are formed in float64 (``posenc.core.frequencies``), so large or fractional steps keep full
precision even when the network runs in half precision. Verified against a float64 transcription
of the official function, channel by channel, in ``tests/step/test_timestep.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from posenc.core.base import EncodingModule
from posenc.core.frequencies import angles
from posenc.core.registry import register
from posenc.core.validation import (
    can_read_values,
    check_bool,
    check_fits,
    check_float,
    check_int,
    check_layers_fit,
    check_positions,
    check_positive_int,
)


def _steps(name: str, t: torch.Tensor | float) -> torch.Tensor:
    """Steps as a tensor of any shape; Python numbers become 0-d tensors."""
    if isinstance(t, int) and not isinstance(t, bool):
        check_int(name, t, minimum=-(2**63), maximum=2**63 - 1)  # an int64 step
        t = torch.tensor(t, dtype=torch.int64)
    elif isinstance(t, float):
        t = torch.tensor(t, dtype=torch.float64)
    return check_positions(name, t)


def sin_then_cos(theta: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """``[sin θ, cos θ]`` of ``(*, dim // 2)`` float64 angles, zero-padded to ``dim`` when it is odd
    (the layout DDPM and WaveGrad share), in ``dtype``."""
    emb = torch.cat((theta.sin(), theta.cos()), dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb.to(dtype)


def timestep_frequencies(
    dim: int,
    *,
    max_period: float = 10000.0,
    downscale_freq_shift: float = 1.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``exp(-i log(max_period) / (dim // 2 - downscale_freq_shift))`` for ``i < dim // 2``: ``(dim // 2,)``
    float64. The defaults are DDPM's (``1 / max_period`` is the lowest frequency); diffusers'
    ``get_timestep_embedding`` takes the same two numbers (Stable Diffusion's U-Net: shift 0)."""
    check_int("dim", dim, minimum=2)
    check_float("max_period", max_period, positive=True)
    half = dim // 2
    if check_float("downscale_freq_shift", downscale_freq_shift) >= half:
        raise ValueError(
            f"`downscale_freq_shift` must be below dim // 2 = {half} (the exponent divides by dim // 2 - "
            f"downscale_freq_shift), got {downscale_freq_shift} with dim={dim}: widen dim or lower the shift "
            f"(DDPM's 1 needs dim >= 4; diffusers' get_timestep_embedding takes dim 2 or 3 with shift 0)"
        )
    check_fits("dim", dim, (half,), torch.float64, device)
    # base' ** (-2i / 2half) == P ** (-i / (half - shift)) with base' = P ** (half / (half - shift))
    return torch.exp(
        -math.log(max_period) / (half - downscale_freq_shift) * torch.arange(half, dtype=torch.float64, device=device)
    )


def timestep_embedding(
    t: torch.Tensor | float,
    dim: int,
    *,
    flip_sin_to_cos: bool = False,
    downscale_freq_shift: float = 1.0,
    scale: float = 1.0,
    max_period: float = 10000.0,
) -> torch.Tensor:
    """DDPM's sinusoidal embedding of diffusion steps, with diffusers' ``get_timestep_embedding``
    options (their defaults are DDPM's): ``flip_sin_to_cos`` puts the cosines first (Stable
    Diffusion's U-Net, with ``downscale_freq_shift=0``), ``scale`` multiplies the angles,
    ``max_period`` is the inverse of the lowest frequency (at shift 1).

    t: ``(*,)`` integer or float steps (or a Python number). dim: >= 2, with ``dim // 2`` above
    ``downscale_freq_shift`` (>= 4 at DDPM's shift 1).
    Returns ``(*, dim)``: float64 when ``t`` is float64, else float32.
    """
    check_int("dim", dim, minimum=2)
    check_bool("flip_sin_to_cos", flip_sin_to_cos)
    check_float("scale", scale)
    # float64 only for float64 tensors; Python numbers are taken exactly but give float32
    wide = isinstance(t, torch.Tensor) and t.dtype == torch.float64
    t = _steps("t", t)
    check_fits("dim", dim, (*t.shape, dim), torch.float64, t.device)
    freqs = timestep_frequencies(dim, max_period=max_period, downscale_freq_shift=downscale_freq_shift, device=t.device)
    out_dtype = torch.float64 if wide else torch.float32
    theta = angles(t, freqs * scale)  # (*, dim // 2)
    emb = sin_then_cos(theta, 2 * (dim // 2), out_dtype)
    if flip_sin_to_cos:
        emb = torch.cat((emb[..., dim // 2 :], emb[..., : dim // 2]), dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


@register(
    "timestep",
    paper="Ho et al. 2020, arXiv:2006.11239",
    summary="DDPM's diffusion-step embedding: [sin, cos] of t at 10000^(-i/(d/2-1)), then dense-swish-dense.",
)
class TimestepEmbedding(EncodingModule):
    """DDPM's timestep embedding followed by its two dense layers.

    Args:
        dim: width of the sinusoidal embedding (the U-Net's base channel count ``ch``); >= 2, with
            ``dim // 2`` above ``downscale_freq_shift`` (>= 4 at DDPM's shift 1).
        hidden: width of both dense layers and of the output (``4 * dim`` in DDPM).
        num_steps: when given, steps must lie in ``[0, num_steps]`` (checked on the host; leave
            None under ``torch.compile``).
        flip_sin_to_cos, downscale_freq_shift, scale, max_period: the sinusoidal embedding's
            options (:func:`timestep_embedding`; the defaults are DDPM's, and diffusers'
            ``Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)`` is Stable Diffusion's).
    """

    model_arguments = ("dim",)

    def __init__(
        self,
        dim: int = 128,
        hidden: int | None = None,
        *,
        num_steps: int | None = None,
        flip_sin_to_cos: bool = False,
        downscale_freq_shift: float = 1.0,
        scale: float = 1.0,
        max_period: float = 10000.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, minimum=2)
        self.flip_sin_to_cos = check_bool("flip_sin_to_cos", flip_sin_to_cos)
        self.scale = check_float("scale", scale)
        self.max_period = check_float("max_period", max_period, positive=True)
        timestep_frequencies(dim, max_period=max_period, downscale_freq_shift=downscale_freq_shift, device="meta")
        self.downscale_freq_shift = float(downscale_freq_shift)
        self.hidden = check_positive_int("hidden", hidden if hidden is not None else 4 * dim)
        self.num_steps = None if num_steps is None else check_positive_int("num_steps", num_steps)
        check_layers_fit({"dim": dim, "hidden": self.hidden}, self.hidden * (dim + self.hidden + 2), dtype, device)
        self.dense0 = nn.Linear(dim, self.hidden, device=device, dtype=dtype)
        self.dense1 = nn.Linear(self.hidden, self.hidden, device=device, dtype=dtype)

    @property
    def out_dim(self) -> int:
        return self.hidden

    def encode(self, t: torch.Tensor | float) -> torch.Tensor:
        """The sinusoidal embedding alone, ``(*, dim)`` in the module's dtype."""
        t = _steps("t", t)
        checkable = self.num_steps is not None and can_read_values(t) and t.numel()
        if checkable and (t.min() < 0 or t.max() > self.num_steps):
            raise ValueError(f"`t` must lie in [0, num_steps={self.num_steps}], got range [{t.min()}, {t.max()}]")
        weight = self.dense0.weight
        # a float64 module embeds in float64 (timestep_embedding widens float64 steps only)
        t = t.to(weight.device, torch.float64) if weight.dtype == torch.float64 else t.to(weight.device)
        options = {"flip_sin_to_cos": self.flip_sin_to_cos, "downscale_freq_shift": self.downscale_freq_shift,
                   "scale": self.scale, "max_period": self.max_period}
        return timestep_embedding(t, self.dim, **options).to(weight.dtype)

    def forward(self, t: torch.Tensor | float) -> torch.Tensor:
        """t: ``(*,)`` steps -> ``(*, hidden)``."""
        return self.dense1(F.silu(self.dense0(self.encode(t))))

    def extra_repr(self) -> str:
        options = ""
        if (self.flip_sin_to_cos, self.downscale_freq_shift, self.scale, self.max_period) != (False, 1.0, 1.0, 10000.0):
            options = (f", flip_sin_to_cos={self.flip_sin_to_cos}, downscale_freq_shift={self.downscale_freq_shift}, "
                       f"scale={self.scale}, max_period={self.max_period}")
        return f"dim={self.dim}, hidden={self.hidden}, num_steps={self.num_steps}{options}"
