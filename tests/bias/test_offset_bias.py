"""The base of the offset-only biases (posenc/bias/offset_bias.py)."""

from __future__ import annotations

import pytest

from posenc.testing import build


@pytest.mark.parametrize("name", ["kerple", "sandwich", "dynamic_bias", "cpb"])
def test_a_bias_grid_larger_than_the_table_limit_is_refused(name):
    # the (heads, n, m) grid spread from the per-offset table used to fail in the allocator
    with pytest.raises(ValueError, match=r"bias \(heads=2, n=1000000, m=1000000\) would need 7.3 TiB"):
        build(name)(10**6, 10**6)
    assert build(name)(3, 4).shape == (1, 2, 3, 4)
