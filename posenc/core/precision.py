"""The arithmetic dtype: float32 or better, whatever the model's dtype.

Every encoding computes in float32 for float32 and half-precision (bf16, fp16) inputs and parameters,
and in float64 where any of them is float64, so that a bf16 model keeps exact angles and biases and a
float64 model (gradcheck, references) loses nothing to a float32 round trip.
"""

from __future__ import annotations

import contextlib

import torch


def arithmetic_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The widest of ``dtypes``, at least float32: float32 for half and float32, float64 for float64."""
    work = torch.float32
    for dtype in dtypes:
        work = torch.promote_types(work, dtype)
    return work


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """A context in which ``torch.autocast`` leaves ``device``'s operations in their own dtypes (a no-op
    where autocast is not on): positions, angles and gates computed inside a user's autocast region keep
    the float32 (or better) arithmetic above instead of the region's bf16 or fp16 matmuls."""
    kind = device.type
    if torch.amp.is_autocast_available(kind) and torch.is_autocast_enabled(kind):
        return torch.autocast(kind, enabled=False)
    return contextlib.nullcontext()
