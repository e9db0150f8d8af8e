"""Every registered encoding on a CUDA device (skipped without one): its example gives the CPU
output, a CPU tensor handed to it is refused by name, and half-precision angles never appear."""

from __future__ import annotations

import pytest
import torch

import posenc
from posenc.testing import build, example, spec

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
NAMES = [info.name for info in posenc.available()]


def _to(inputs, device):
    return tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in inputs)


def _outputs(out):
    return out if isinstance(out, tuple) else (out,)


@cuda
@pytest.mark.parametrize("name", NAMES)
def test_example_on_cuda_matches_cpu(name):
    torch.manual_seed(0)
    cpu, inputs, forward = example(name)
    gpu = build(name) if name == "none" else build(name, device="cuda")  # "none" holds no tensors
    gpu.load_state_dict(cpu.state_dict())
    cpu.eval(), gpu.eval()
    with torch.no_grad():
        want = _outputs(forward(cpu, *inputs))
        got = _outputs(forward(gpu, *_to(inputs, "cuda")))
    for g, w in zip(got, want, strict=True):
        assert g.device.type == "cuda" or name == "none"
        torch.testing.assert_close(g.cpu(), w, atol=1e-4, rtol=1e-4)


@cuda
@pytest.mark.parametrize("name", [n for n in NAMES if n != "none"])
def test_cpu_tensor_into_cuda_encoding_is_refused_by_name(name):
    gpu, inputs, forward = example(name)
    gpu = gpu.cuda()
    s = spec(name)
    tensor_args = [i for i, a in enumerate(s.args) if isinstance(inputs[i], torch.Tensor)]
    if not tensor_args or not [*gpu.parameters(), *gpu.buffers()]:
        pytest.skip("no tensor input or no tensor state")
    moved = list(_to(inputs, "cuda"))
    i = tensor_args[0]
    moved[i] = inputs[i]  # left on the CPU
    with pytest.raises((ValueError, TypeError), match=f"`{s.args[i].name}`"):
        forward(gpu, *moved)


@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rope_and_sinusoidal_on_cuda_in_half_precision_at_large_positions(dtype):
    from tests.reliability.test_numerics import POSITIONS, assert_within_dtype, ref_rotate_halves, ref_sinusoid

    enc = posenc.create("sinusoidal", dim=8).to("cuda", dtype)
    want = torch.tensor([ref_sinusoid(p, 8, 10000.0, True) for p in POSITIONS], dtype=torch.float64)
    got = enc(torch.zeros(1, len(POSITIONS), 8, dtype=dtype, device="cuda"), positions=torch.tensor(POSITIONS).cuda())
    assert_within_dtype(got[0].cpu(), want, dtype)
    rope = posenc.create("rope", head_dim=8).to("cuda", dtype)
    x = torch.randn(1, 1, len(POSITIONS), 8).to(dtype)
    inv = [10000.0 ** (-2 * i / 8) for i in range(4)]
    want = ref_rotate_halves(x[0, 0].double(), [[p * f for f in inv] for p in POSITIONS])
    got = rope(x.cuda(), positions=torch.tensor(POSITIONS).cuda())
    assert_within_dtype(got[0, 0].cpu(), want, dtype)
