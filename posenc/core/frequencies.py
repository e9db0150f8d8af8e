"""Frequency bands and angles shared by every sinusoidal encoding (absolute, rotary, 2-D, step).

Precision policy: angles ``position * frequency`` are formed in float64 (float32 only on devices
that lack float64, such as Apple's MPS). In float32 the frequency itself is rounded by up to 6e-8
relative, which at position 1,000,000 is an angle error of 0.06 rad, far above bf16's resolution.
The sines and cosines are then stored in float32 and only the final product is cast to the model's
dtype.
"""

from __future__ import annotations

import math

import torch

from posenc.core.validation import check_even, check_fits, check_float, check_float_dtype


def angle_dtype(device: torch.device | str | None) -> torch.dtype:
    """The widest float dtype the device supports for angle arithmetic."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    return torch.float32 if device.type == "mps" else torch.float64


def inverse_frequencies(
    dim: int,
    base: float = 10000.0,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``base ** (-2i / dim)`` for ``i = 0 .. dim/2 - 1``: the transformer's geometric bands.

    Returns: ``(dim // 2,)`` in ``dtype`` (float64 by default).
    """
    check_even("dim", dim)
    check_float("base", base, positive=True)
    dtype = angle_dtype(device) if dtype is None else check_float_dtype("dtype", dtype)
    check_fits("dim", dim, (dim // 2,), dtype, device)
    exponent = torch.arange(0, dim, 2, device=device, dtype=dtype) / dim
    return torch.as_tensor(base, dtype=dtype, device=device).pow(-exponent)


def angles(positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Outer product ``positions[..., None] * inv_freq`` in the widest float the device supports.

    positions: ``(*p,)`` integer or float; inv_freq: ``(f,)``. Returns ``(*p, f)``.
    """
    dtype = angle_dtype(positions.device)
    return positions.to(dtype).unsqueeze(-1) * inv_freq.to(device=positions.device, dtype=dtype)


def reduced_angles(positions: torch.Tensor, inv_freq: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Angles ready for ``sin``/``cos`` in ``dtype``: formed in float64 and, for narrower dtypes,
    reduced modulo 2π before the cast, so a float32 result is within 4e-7 rad of the exact angle at
    any position (a plain float32 product is off by 0.06 rad at position 10^6) while the
    transcendental functions run at float32 speed."""
    theta = angles(positions, inv_freq)
    if dtype == torch.float64 or theta.dtype == dtype:
        return theta.to(dtype)
    # subtracting the nearest multiple of 2π (into [-π, π]) is cheaper than torch.remainder's floor-mod
    if theta.requires_grad:
        return (theta - torch.round(theta * (1.0 / (2 * math.pi))) * (2 * math.pi)).to(dtype)
    turns = (theta * (1.0 / (2 * math.pi))).round_()
    return theta.sub_(turns, alpha=2 * math.pi).to(dtype)  # theta is ours: reduced in place


def cos_sin(
    positions: torch.Tensor, inv_freq: torch.Tensor, *, scale: float = 1.0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """``scale * cos`` and ``scale * sin`` of the angles, of shape ``(*p, f)`` in ``dtype``
    (float32 by default; float64 when the caller computes in float64)."""
    theta = reduced_angles(positions, inv_freq, dtype=dtype)
    cos, sin = theta.cos(), theta.sin()
    if scale != 1.0:
        cos, sin = cos * scale, sin * scale
    return cos.to(dtype), sin.to(dtype)
