"""rotate_qkv (posenc/rotary/qkv.py): q and k of a stacked projection rotated as one autograd node,
against a float64 rotation-matrix reference and against unbinding then rotating."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posenc.core.base import PositionEncoding
from posenc.core.positions import Positions
from posenc.core.registry import available
from posenc.models import Transformer
from posenc.rotary import RotaryPositionEncoding
from posenc.rotary.fused import rotate_qk
from posenc.rotary.qkv import _CppQKVRotation, rotate_qkv
from posenc.testing.examples import build
from tests.rotary.test_fused import reference

pytestmark = pytest.mark.usefixtures("fusion_on_and_off")


def _projection(b: int, n: int, h: int, d: int, dtype, seed: int = 0) -> torch.Tensor:
    """(3, b, h, n, d) viewed from (b, n, 3, h, d) memory, as the Transformer's projection gives it."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, 3, h, d, generator=g, dtype=torch.float64).to(dtype).permute(2, 0, 3, 1, 4)


def _tables(n: int, half: int):
    angles = torch.rand(1, 1, n, half, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 20 - 10
    return angles, angles.cos().float(), angles.sin().float()


def _layouts(dtype):
    stacked = _projection(2, 5, 3, 8, dtype)
    yield "projection view", stacked
    yield "contiguous", stacked.contiguous()
    yield "feature stride 2", torch.cat([stacked, stacked], dim=-1)[..., ::2]


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("half", [4, 2])  # full and partial rotation of d = 8
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_equals_the_reference_and_unbind_then_rotate(interleaved, half, dtype):
    angles, cos, sin = _tables(5, half)
    for name, qkv in _layouts(dtype):
        q, k, v = rotate_qkv(qkv, cos, sin, interleaved=interleaved)
        expected = rotate_qk(qkv[0], qkv[1], cos, sin, interleaved=interleaved)
        assert torch.equal(q, expected[0]) and torch.equal(k, expected[1]), name
        assert v.data_ptr() == qkv[2].data_ptr() and torch.equal(v, qkv[2]), name
        if dtype == torch.float64:
            for got, x in ((q, qkv[0]), (k, qkv[1])):
                want = reference(x.numpy(), angles.numpy(), interleaved)
                np.testing.assert_allclose(got.numpy(), want, atol=1e-6, err_msg=name)  # float32 angles


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradients_equal_unbind_then_rotate(interleaved, dtype):
    _, cos, sin = _tables(5, 4)
    grads = [torch.randn(2, 3, 5, 8, generator=torch.Generator().manual_seed(i)).to(dtype) for i in range(3)]
    results = []
    for fused_node in (True, False):
        qkv = _projection(2, 5, 3, 8, dtype).detach().requires_grad_()
        if fused_node:
            out = rotate_qkv(qkv, cos, sin, interleaved=interleaved)
        else:
            q, k, v = qkv.unbind(0)
            out = (*rotate_qk(q, k, cos, sin, interleaved=interleaved), v)
        torch.autograd.backward(out, grads)
        results.append(qkv.grad)
    assert torch.equal(results[0], results[1])


def test_training_uses_one_node_on_the_cpu_and_its_gradient_keeps_the_projection_layout(fusion_on_and_off):
    _, cos, sin = _tables(5, 4)
    qkv = _projection(2, 5, 3, 8, torch.float32).detach().requires_grad_()
    q, k, v = rotate_qkv(qkv, cos, sin)
    assert (q.grad_fn.name() == "_CppQKVRotationBackward") == fusion_on_and_off
    (q.sum() + 2 * k.sum() + 3 * v.sum()).backward()
    assert qkv.grad.shape == qkv.shape
    with torch.no_grad():  # no node to save: the tensors are rotated as they are
        assert rotate_qkv(qkv, cos, sin)[0].grad_fn is None


@pytest.mark.parametrize("interleaved", [False, True])
def test_gradcheck_float64(interleaved):
    _, cos, sin = _tables(4, 3)
    qkv = _projection(1, 4, 2, 8, torch.float64).detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: _CppQKVRotation.apply(cos.double(), sin.double(), interleaved, t), (qkv,))
    # second derivatives (create_graph) through the differentiable form of the backward
    assert torch.autograd.gradgradcheck(lambda t: rotate_qkv(t, cos.double(), sin.double(), interleaved=interleaved), (qkv,))


def test_empty_sequences_simply_work():
    _, cos, sin = _tables(0, 4)
    qkv = _projection(2, 0, 3, 8, torch.float32).detach().requires_grad_()
    q, k, v = rotate_qkv(qkv, cos, sin)
    assert q.shape == k.shape == v.shape == (2, 3, 0, 8)
    (q.sum() + k.sum() + v.sum()).backward()
    assert qkv.grad.shape == qkv.shape


ROTARY = [info.name for info in available() if info.fits_transformer and "rotary" in info.cls.hooks]


@pytest.mark.parametrize("name", ROTARY)
def test_every_rotary_encoding_rotates_the_stack_as_unbind_then_rotate(name):
    """The protocol's rotate_qkv agrees with rotate for every registered rotary encoding (an encoding
    that changes rotate but not rotate_qkv would silently lose its own rotation in the Transformer)."""
    encoding = build(name).double()
    d = getattr(encoding, "head_dim", 8)
    qkv = torch.randn(2, 6, 3, 2, d, dtype=torch.float64).permute(2, 0, 3, 1, 4)
    pos = Positions(6, 3)
    q, k, v = encoding.rotate_qkv(qkv, q_positions=pos, k_positions=pos)
    want_q, want_k = encoding.rotate(qkv[0], qkv[1], q_positions=pos, k_positions=pos)
    torch.testing.assert_close((q, k, v), (want_q, want_k, qkv[2]), rtol=0, atol=1e-12)


def test_rope_takes_the_stacked_path_only_for_shared_positions():
    rope = RotaryPositionEncoding(8).double()
    qkv = torch.randn(2, 5, 3, 2, 8, dtype=torch.float64).permute(2, 0, 3, 1, 4)
    q_pos, k_pos = Positions(5, 4), Positions(5, 1)  # a cache's keys start elsewhere
    got = rope.rotate_qkv(qkv, q_positions=q_pos, k_positions=k_pos)
    want = PositionEncoding.rotate_qkv(rope, qkv, q_positions=q_pos, k_positions=k_pos)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_transformer_training_step_equals_unbind_then_rotate(dtype):
    """One training step of the reference Transformer with RoPE gives bit-identical parameters whether
    the stack is rotated as one node or unbound first."""
    params = []
    for stacked in (True, False):
        torch.manual_seed(0)
        model = Transformer(64, 32, 2, 2, position="rope", causal=True).to(dtype)
        if not stacked:
            for m in model.modules():
                if isinstance(m, RotaryPositionEncoding):
                    m.rotate_qkv = PositionEncoding.rotate_qkv.__get__(m)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        tokens = torch.randint(0, 64, (2, 17), generator=torch.Generator().manual_seed(0))
        model(tokens).float().logsumexp(-1).mean().backward()
        opt.step()
        params.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*params):
        assert torch.equal(a, b)
