"""GPU paths of the image encodings (skipped without CUDA): outputs equal the CPU ones, tables stay float32."""

from __future__ import annotations

import pytest
import torch

from posenc.models import CNN, ViT
from posenc.spatial import BroadcastVAE, HANet, SinCos2d, StyleGenerator
from posenc.vision import Rope2d

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("position", ["none", "vit_learned", "sincos_2d", "rel_bias_2d", "rope_2d", "rope_mixed", "peg"])
def test_vit_on_cuda_matches_cpu(position):
    torch.manual_seed(0)
    cpu = ViT(8, 2, 3, dim=32, depth=2, heads=2, position=position).eval()
    gpu = ViT(8, 2, 3, dim=32, depth=2, heads=2, position=position)
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(gpu(x.cuda()).cpu(), cpu(x), atol=1e-4, rtol=1e-4)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            assert torch.isfinite(gpu(x.cuda())).all()


@cuda
@pytest.mark.parametrize("position", ["none", "coordconv", "sincos_2d", "hanet"])
def test_cnn_on_cuda_matches_cpu(position):
    torch.manual_seed(0)
    cpu = CNN(3, 2, width=8, position=position).eval()
    gpu = CNN(3, 2, width=8, position=position)
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda().eval()
    x = torch.randn(2, 3, 11, 7)
    with torch.no_grad():
        torch.testing.assert_close(gpu(x.cuda()).cpu(), cpu(x), atol=1e-4, rtol=1e-4)


@cuda
def test_generators_and_tables_on_cuda():
    torch.manual_seed(0)
    for gen in (StyleGenerator(8, 8, 8, 1, noise=False), StyleGenerator(8, 8, 8, 1, input="gan_multiscale", noise=False)):
        gen = gen.cuda()
        assert gen(torch.randn(2, 8, device="cuda"), size=None).shape == (2, 1, 8, 8)
    vae = BroadcastVAE(1, 4, hidden=8).cuda()
    assert vae(torch.randn(2, 1, 8, 8, device="cuda"))[0].shape == (2, 1, 8, 8)
    for module in (SinCos2d(8, grid=(3, 3)), HANet(8), Rope2d(8, (3, 3))):
        module = module.cuda().to(torch.bfloat16)
        for name, buf in module.named_buffers(recurse=False):  # the derived tables (not batch-norm statistics)
            assert buf.device.type == "cuda" and buf.dtype == torch.float32, name
