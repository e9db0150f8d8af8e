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
