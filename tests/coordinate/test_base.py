"""The bounds check shared by the grid encodings: its message shows the values that broke it."""

from __future__ import annotations

import pytest
import torch

from posenc.coordinate.base import check_unit_box


@pytest.mark.parametrize("value, shown", [(1.000001, "1.000001"), (-1e-09, "-1e-09")])
def test_out_of_bounds_message_shows_the_offending_value(value, shown):
    # rounded to 4 digits the message read "got values in [0, 1]" for a point just past 1
    x = torch.tensor([[0.5, value]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"`x` must lie in \[0.0, 1.0\]") as excinfo:
        check_unit_box("x", x)
    assert shown in str(excinfo.value)


@pytest.mark.parametrize("name", ["nerf", "fourier_features", "integrated_pe", "kplanes", "spherical_harmonics"])
def test_vmap_over_points_equals_the_batched_call(name):
    # the finiteness and unit-box checks read the points on the host and raised under torch.vmap
    # ('data-dependent control flow'), so a field could not be vmapped over its points
    from posenc.testing import example

    module, inputs, forward = example(name)
    want = forward(module, *inputs)
    got = torch.vmap(lambda *point: forward(module, *(p[None] for p in point))[0])(*inputs)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
