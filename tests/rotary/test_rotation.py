"""The plain rotation's bfloat16 word form (posenc/rotary/rotation.py) against the cast it replaces."""

from __future__ import annotations

import torch

from posenc.rotary.rotation import rotate_eager, rotate_expr, words_ok


def _every_finite_bf16_pattern(rows: int) -> torch.Tensor:
    """(rows, 64) bfloat16 of random finite bit patterns: subnormals, zeros of both signs, the largest
    magnitudes (whose rotation overflows to infinity) included."""
    gen = torch.Generator().manual_seed(5)
    bits = torch.randint(-(2**15), 2**15, (rows, 64), generator=gen, dtype=torch.int16)
    x = bits.view(torch.bfloat16)
    x = torch.where(x.isfinite(), x, torch.zeros((), dtype=torch.bfloat16))
    x[0, :4] = torch.tensor([3.3e38, 3.3e38, -0.0, 1e-40]).to(torch.bfloat16)
    return x


def test_bf16_pair_words_bit_identical_to_the_float32_cast():
    x = _every_finite_bf16_pattern(512)
    theta = torch.rand(512, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(6)) * 40 - 20
    cos, sin = theta.cos().float(), theta.sin().float()
    for rot in (32, 12):  # full and partial rotation
        got = rotate_expr(x, cos[:, : rot // 2], sin[:, : rot // 2], True, words=True)
        want = rotate_expr(x, cos[:, : rot // 2], sin[:, : rot // 2], True, words=False)
        assert got.dtype == torch.bfloat16
        assert torch.equal(got.view(torch.int16), want.view(torch.int16))  # the same bits, infinities too
    assert bool(got.isinf().any())  # the overflow case was exercised


def test_words_need_aligned_bf16_pairs_on_cpu():
    x = torch.randn(3, 8).bfloat16()
    assert words_ok(x)
    assert not words_ok(x.half())
    assert not words_ok(x.flatten()[1:7])  # odd storage offset: a pair straddles two words
    assert not words_ok(x.t())


def test_eager_rotation_backward_gradcheck_float64():
    from posenc.rotary.rotation import rotate_eager

    theta = torch.rand(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7)) * 20 - 10
    for interleaved in (True, False):
        x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
        # 6 of 8 features rotated; a strided x (transposed twice) for the complex view
        assert torch.autograd.gradcheck(lambda t, il=interleaved: rotate_eager(t, theta.cos(), theta.sin(), il), (x,))
        xt = x.detach().transpose(-1, -2).contiguous().transpose(-1, -2).requires_grad_()
        assert torch.autograd.gradcheck(lambda t, il=interleaved: rotate_eager(t, theta.cos(), theta.sin(), il), (xt,))


def test_float32_pair_words_equal_the_plain_rotation():
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(64, 32, generator=gen) * torch.logspace(-30, 30, 32)  # magnitudes far apart
    x[0, :2] = torch.tensor([3.0e38, 3.0e38])  # the rotation overflows to infinity
    theta = torch.rand(64, 16, dtype=torch.float64, generator=gen) * 40 - 20
    theta[0, 0] = torch.pi / 4  # the first pair becomes (0, 4.2e38): past float32's largest
    cos, sin = theta.cos().float(), theta.sin().float()
    for rot in (32, 10):
        got = rotate_expr(x, cos[:, : rot // 2], sin[:, : rot // 2], True, words=True)
        want = rotate_expr(x, cos[:, : rot // 2], sin[:, : rot // 2], True, words=False)
        assert torch.equal(got.view(torch.int32), want.view(torch.int32))
    assert bool(got.isinf().any())
    assert words_ok(x) and not words_ok(x.double()) and not words_ok(x.half())


def test_eager_pairs_at_an_odd_storage_offset():
    """A complex view needs an even storage offset: an odd one is copied first, not refused."""
    x = torch.randn(81, dtype=torch.float64)[1:].view(1, 2, 5, 8)
    cos, sin = torch.rand(5, 4, dtype=torch.float64), torch.rand(5, 4, dtype=torch.float64)
    torch.testing.assert_close(rotate_eager(x, cos, sin, True), rotate_expr(x, cos, sin, True), rtol=0, atol=1e-15)
