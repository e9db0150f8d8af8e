"""The analyses on CUDA-resident models and encodings (skipped without CUDA): same answers as on the CPU."""

from __future__ import annotations

import pytest
import torch

import posenc
from posenc.analysis import (
    absolute_table,
    patch_permutation_deviation,
    permutation_deviation,
    position_probe,
    probe_cnn,
    score_matrix,
    shift_invariance_error,
)
from posenc.models import Transformer

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_equivariance_on_cuda():
    torch.manual_seed(0)
    tokens = torch.randint(0, 16, (2, 10), device="cuda")
    nope = Transformer(16, 32, 2, 4, position="none").cuda().eval()
    sinusoidal = Transformer(16, 32, 2, 4, position="sinusoidal").cuda().eval()
    assert permutation_deviation(nope, tokens) < 1e-5
    assert permutation_deviation(sinusoidal, tokens) > 1e-2
    conv = torch.nn.Conv2d(3, 4, 1).cuda()
    assert patch_permutation_deviation(conv, torch.randn(1, 3, 8, 8, device="cuda"), patch_size=2) < 1e-5


@cuda
@pytest.mark.parametrize(("name", "kwargs"), [("rope", {"head_dim": 8}), ("alibi", {"heads": 4}), ("t5", {"heads": 4})])
def test_scores_on_cuda_match_cpu(name, kwargs):
    torch.manual_seed(0)
    cpu = posenc.create(name, **kwargs)
    gpu = posenc.create(name, **kwargs)
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda()
    torch.testing.assert_close(score_matrix(gpu, 6), score_matrix(cpu, 6), atol=1e-4, rtol=1e-4)
    assert shift_invariance_error(gpu, 6, 3) < 1e-4


@cuda
def test_table_and_probe_on_cuda():
    enc = posenc.create("sinusoidal", dim=8).cuda()
    torch.testing.assert_close(absolute_table(enc, 5), absolute_table(posenc.create("sinusoidal", dim=8), 5))
    images = torch.rand(8, 3, 16, 16, device="cuda")
    result = position_probe(probe_cnn("zero", depth=2).cuda(), images, steps=5)
    assert set(result.spearman) and all(-1 <= v <= 1 for v in result.spearman.values())
