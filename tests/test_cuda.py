"""GPU paths (skipped without CUDA): tables follow the device in float32, outputs equal the CPU ones."""

from __future__ import annotations

import pytest
import torch

import posenc
from posenc.models import Transformer

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
SEQUENCE = ["none", "sinusoidal", "learned", "rope", "alibi", "t5"]


@cuda
@pytest.mark.parametrize("position", SEQUENCE)
def test_model_on_cuda_matches_cpu(position):
    torch.manual_seed(0)
    cpu = Transformer(16, 32, 2, 4, position=position, causal=True).eval()
    gpu = Transformer(16, 32, 2, 4, position=position, causal=True)
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda().eval()
    tokens = torch.randint(0, 16, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(gpu(tokens.cuda()).cpu(), cpu(tokens), atol=1e-4, rtol=1e-4)
        cache = gpu.new_cache()
        steps = torch.cat([gpu(tokens[:, t : t + 1].cuda(), cache=cache) for t in range(9)], dim=1)
        torch.testing.assert_close(steps.cpu(), cpu(tokens), atol=1e-4, rtol=1e-4)


@cuda
def test_tables_follow_device_and_stay_float32():
    rope = posenc.create("rope", head_dim=64).cuda().to(torch.bfloat16)
    assert rope.cos_cached.device.type == "cuda" and rope.cos_cached.dtype == torch.float32
    x = torch.randn(1, 2, 4, 64, device="cuda", dtype=torch.bfloat16)
    got = rope(x, positions=torch.tensor([0, 1000, 99999, 1000000], device="cuda"))
    ref = posenc.functional.apply_rope(x.double().cpu(), torch.tensor([0, 1000, 99999, 1000000]))
    torch.testing.assert_close(got.double().cpu(), ref, atol=2e-2, rtol=1.6e-2)
    alibi = posenc.create("alibi", heads=4).cuda()
    assert alibi.slopes.device.type == "cuda"


@cuda
def test_mismatched_devices_raise():
    with pytest.raises(ValueError, match="positions"):
        posenc.functional.apply_rope(torch.randn(1, 1, 4, 8, device="cuda"), torch.arange(4))
