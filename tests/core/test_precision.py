"""The arithmetic dtype every encoding computes in (posenc/core/precision.py)."""

from __future__ import annotations

import torch

from posenc.core.precision import arithmetic_dtype


def test_float32_or_better_whatever_the_inputs():
    assert arithmetic_dtype() == torch.float32
    for half in (torch.bfloat16, torch.float16):
        assert arithmetic_dtype(half) == torch.float32
        assert arithmetic_dtype(half, torch.float32) == torch.float32
    assert arithmetic_dtype(torch.float32) == torch.float32
    assert arithmetic_dtype(torch.float64) == torch.float64
    assert arithmetic_dtype(torch.bfloat16, torch.float64) == torch.float64
    assert arithmetic_dtype(torch.float32, torch.float16, torch.float64) == torch.float64


def test_autocast_off_keeps_float32_inside_an_autocast_region():
    from posenc.core.precision import autocast_off

    a = torch.randn(3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
        with autocast_off(a.device):
            assert (a @ a).dtype == torch.float32
    with autocast_off(torch.device("meta")):  # no autocast on the meta device: nothing to turn off
        assert (a @ a).dtype == torch.float32
