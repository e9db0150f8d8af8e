"""The base of the offset-only biases (posenc/bias/offset_bias.py)."""

from __future__ import annotations

import pytest
import torch

import posenc
from posenc.testing import build


@pytest.mark.parametrize("name", ["kerple", "sandwich", "dynamic_bias", "cpb"])
def test_a_bias_grid_larger_than_the_table_limit_is_refused(name):
    # the (heads, n, m) grid spread from the per-offset table used to fail in the allocator
    with pytest.raises(ValueError, match=r"bias \(heads=2, n=1000000, m=1000000\) would need 7.3 TiB"):
        build(name)(10**6, 10**6)
    assert build(name)(3, 4).shape == (1, 2, 3, 4)


@pytest.mark.parametrize("name", ["kerple", "sandwich", "dynamic_bias", "cpb"])
def test_explicit_positions_check_the_bias_size_first(name, monkeypatch):
    # implicit positions were checked against MAX_TABLE_BYTES, explicit ones were not: 8 heads over
    # 30,000 explicit positions formed the 7.2 GB offsets, then asked the allocator for 28.8 GB. The
    # limit is lowered here so that the test allocates nothing large.
    monkeypatch.setattr("posenc.core.memory.MAX_TABLE_BYTES", 2**19)
    module = posenc.create(name, heads=8)
    positions = torch.arange(150)
    assert module(100, q_positions=positions[:100], k_positions=positions[:100]).shape == (1, 8, 100, 100)
    with pytest.raises(ValueError, match=r"bias \(batch=1, heads=8, n=150, m=150\) would need 703\.1 KiB.*MAX_TABLE_BYTES"):
        module(150, q_positions=positions, k_positions=positions)


@pytest.mark.parametrize("name", ["kerple", "sandwich", "dynamic_bias", "cpb"])
def test_an_oversized_grid_is_refused_before_its_per_offset_table_is_computed(name, monkeypatch):
    """bias(10**6, 10**6) once evaluated the bias at all 2 * 10**6 offsets (sandwich: 5.5 s and a 1 GiB
    float64 intermediate) before refusing the (heads, n, m) grid it would spread them over."""
    module = build(name)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the per-offset table was computed before the size check")

    monkeypatch.setattr(module, "offset_bias", must_not_run)
    monkeypatch.setattr(module, "offset_bias_for", must_not_run)
    with pytest.raises(ValueError, match=r"bias \(heads=2, n=1000000, m=1000000\) would need 7.3 TiB"):
        module(10**6, 10**6)
