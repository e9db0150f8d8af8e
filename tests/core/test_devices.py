"""Device names are checked against what this torch build can use."""

from __future__ import annotations

import pytest
import torch

from posenc.core.devices import resolve_device, usable_devices


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert usable_devices()[0] == "cpu"


@pytest.mark.parametrize("name", ["tpu", "gpu", "", "cuda:x"])
def test_unknown_names_are_refused_naming_the_argument(name):
    with pytest.raises(ValueError, match=r"--where .* torch knows; this build can use: cpu"):
        resolve_device(name, argument="--where")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_names_the_build():
    with pytest.raises(ValueError, match=r"--device 'cuda'.*no CUDA device.*torch .*can use: cpu"):
        resolve_device("cuda")


def test_a_gpu_index_past_the_visible_ones():
    with pytest.raises(ValueError, match="--device 'cuda:64'"):
        resolve_device("cuda:64")
