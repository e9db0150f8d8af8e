"""Argument checks shared by every encoding (posenc/core/validation.py)."""

from __future__ import annotations

import pytest
import torch

from posenc.core.validation import check_fits


def test_check_fits_names_the_argument_past_the_device_memory():
    with pytest.raises(ValueError, match=r"`rows`=10000000000000 needs a \(10000000000000, 8\) torch.float32 tensor"):
        check_fits("rows", 10**13, (10**13, 8), torch.float32, "cpu")
    check_fits("rows", 4, (4, 8), torch.float32, "cpu")


def test_check_fits_refuses_sizes_no_tensor_can_describe_even_on_meta():
    # meta holds no memory, but torch still refuses a storage of 2**63 bytes or more
    check_fits("rows", 10**13, (10**13, 8), torch.float32, "meta")
    with pytest.raises(ValueError, match="`rows`=.* more than a tensor can hold"):
        check_fits("rows", 10**12, (10**12, 10**12), torch.float32, "meta")
