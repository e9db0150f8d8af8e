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

from posenc.core.precision import arithmetic_dtype
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

    ``dim``: an even width. Returns: ``(dim / 2,)`` in ``dtype`` (float64 by default).
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
    reduced modulo 2π before the cast, so the transcendental functions run at float32 speed while the
    angle stays within :func:`angle_error_bound` of the exact one (1.3e-7 rad up to position 10^8,
    6.6e-7 rad at 2^32; a plain float32 product is off by 0.06 rad at position 10^6)."""
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
    (float32 by default; float64 when the caller computes in float64). A half dtype gets the float32
    values rounded once: its own angles and cos/sin would be several roundings off."""
    theta = reduced_angles(positions, inv_freq, dtype=arithmetic_dtype(dtype))
    cos, sin = theta.cos(), theta.sin()
    if scale != 1.0:
        cos, sin = cos * scale, sin * scale
    return cos.to(dtype), sin.to(dtype)


#: The largest implicit position the sinusoidal encodings (``sinusoidal``, ``rope``) accept. The error
#: of a float64 angle grows as about 1.2e-16 * position rad (the frequency and 2π are rounded to 53
#: bits), so past 2^32 it would exceed float32's own rounding several times over.
MAX_POSITION = 2**32


def angle_error_bound(position: float, dtype: torch.dtype = torch.float32) -> float:
    """Bound on ``|angle - exact angle|`` (rad, modulo 2π) of :func:`reduced_angles` at ``|position|``,
    measured against an arbitrary-precision reference for bases 10^4 and 5 * 10^5 (pinned by
    tests/core/test_frequencies.py): float64 forming costs ``1.25e-16 * position``, the float32 cast
    of the reduced angle 1.25e-7 more."""
    rounding = 1e-15 if dtype == torch.float64 else 1.25e-7
    return rounding + 1.25e-16 * abs(float(position))


def check_max_position(name: str, last: int) -> int:
    """Reject implicit positions past :data:`MAX_POSITION` (``last`` is the furthest one in use)."""
    if last > MAX_POSITION:
        raise ValueError(
            f"`{name}` reaches position {last}, past the largest supported position {MAX_POSITION} (2**32): "
            f"beyond it the angle error would exceed {angle_error_bound(MAX_POSITION):.1e} rad"
        )
    return last
