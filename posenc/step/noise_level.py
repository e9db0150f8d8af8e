"""WaveGrad's noise-level embedding (Chen et al. 2020, arXiv:2009.00713, section 3.1 / figure 4).

WaveGrad conditions on the continuous noise level ``sqrt(alpha_bar)`` in ``[0, 1]`` instead of a
discrete step, through the Transformer's sinusoidal encoding of ``scale * noise_level`` with the
paper's linear scale ``scale = 5000``::

    half = dim // 2
    freq_i = 10000^(-i / half),   i = 0 .. half - 1
    emb = [sin(scale l freq_0 ..), cos(scale l freq_0 ..)]   (+ one zero if dim is odd)

The layout (all sines, then all cosines, exponent ``i / half``) was checked against the public
WaveGrad implementations (``ivanvovk/WaveGrad`` with ``linear_scale=5000``, and ``lmnt-com/wavegrad``,
which omits the scale). Unlike DDPM's embedding the exponent divides by ``half``, not ``half - 1``.
In WaveGrad the embedding is added to the FiLM features directly, without an MLP.

Angles are formed in float64. Verified against a float64 transcription in
``tests/step/test_noise_level.py``.
"""

from __future__ import annotations

import torch

from posenc.core.base import EncodingModule
from posenc.core.frequencies import angles, inverse_frequencies
from posenc.core.registry import register
from posenc.core.validation import check_fits, check_float, check_int, check_positions
from posenc.step.timestep import sin_then_cos


def _levels(noise_level: torch.Tensor | float) -> torch.Tensor:
    """Noise levels as a tensor of any shape: integer, float32 or float64, finite (never half precision)."""
    if isinstance(noise_level, (int, float)) and not isinstance(noise_level, bool):
        noise_level = torch.tensor(float(noise_level), dtype=torch.float64)
    return check_positions("noise_level", noise_level)


def noise_level_embedding(noise_level: torch.Tensor | float, dim: int, *, scale: float = 5000.0) -> torch.Tensor:
    """WaveGrad's sinusoidal embedding of ``scale * noise_level``.

    noise_level: ``(*,)`` integer or float (or a Python number). dim: >= 2.
    Returns ``(*, dim)``: float64 when ``noise_level`` is float64, else float32.
    """
    check_int("dim", dim, minimum=2)
    scale = check_float("scale", scale, positive=True)
    level = _levels(noise_level)
    check_fits("dim", dim, (*level.shape, dim), torch.float64, level.device)
    # float64 only for float64 tensors; Python numbers are taken exactly but give float32
    wide = isinstance(noise_level, torch.Tensor) and noise_level.dtype == torch.float64
    out_dtype = torch.float64 if wide else torch.float32
    inv_freq = inverse_frequencies(2 * (dim // 2), device=level.device) * scale
    theta = angles(level, inv_freq)  # (*, dim // 2)
    return sin_then_cos(theta, dim, out_dtype)


@register(
    "noise_level",
    paper="Chen et al. 2020, arXiv:2009.00713",
    summary="WaveGrad's embedding of a continuous noise level: sinusoid of 5000 * level.",
)
class NoiseLevelEmbedding(EncodingModule):
    """WaveGrad's noise-level embedding; no parameters.

    Args:
        dim: width of the embedding (the FiLM module's channel count); >= 2.
        scale: the linear scale on the noise level (5000 in the paper).
        dtype: dtype of the output (float32 by default; the angles are float64 whatever it is);
            it follows ``.to(dtype)`` too.
    """

    model_arguments = ("dim",)

    def __init__(
        self,
        dim: int = 128,
        *,
        scale: float = 5000.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, minimum=2)
        self.scale = check_float("scale", scale, positive=True)
        # empty buffer: lets the output follow the module's device and dtype through .to()
        self.register_buffer("anchor", torch.empty(0, device=device, dtype=dtype), persistent=False)

    @property
    def out_dim(self) -> int:
        return self.dim

    def forward(self, noise_level: torch.Tensor | float) -> torch.Tensor:
        """noise_level: ``(*,)`` -> ``(*, dim)`` in the module's dtype (float32 unless cast)."""
        level = _levels(noise_level).to(self.anchor.device)
        if self.anchor.dtype == torch.float64:  # embedded in float64 (noise_level_embedding widens float64 only)
            level = level.to(torch.float64)
        return noise_level_embedding(level, self.dim, scale=self.scale).to(self.anchor.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scale={self.scale}"
