"""The fused RoPE kernel (posenc/rotary/fused.py) against a float64 rotation-matrix reference.

Every test runs with the kernel forced on and with fusion switched off (``fusion_on_and_off``);
tests that are about the kernel itself force it with ``fused=True``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from posenc.core.positions import Positions
from posenc.functional import apply_rope, rotate_pairs
from posenc.rotary import RotaryPositionEncoding, angle_cache, fused
from posenc.rotary.fused import rotate_qk, rotate_tensors

pytestmark = pytest.mark.usefixtures("fusion_on_and_off")


def reference(x: np.ndarray, angles: np.ndarray, interleaved: bool) -> np.ndarray:
    """x (..., n, d) float64; angles (..., n, r/2) broadcastable: each pair times its 2x2 rotation matrix."""
    out = np.array(x, dtype=np.float64)
    r = 2 * angles.shape[-1]
    for i in range(r // 2):
        a, b = (2 * i, 2 * i + 1) if interleaved else (i, i + r // 2)
        c, s = np.cos(angles[..., i]), np.sin(angles[..., i])
        out[..., a] = c * x[..., a] - s * x[..., b]
        out[..., b] = s * x[..., a] + c * x[..., b]
    return out


def _angles(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 20 - 10


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("rot", [8, 4])  # full and partial rotation of d = 8
def test_q_and_k_in_one_call_match_reference(interleaved, rot):
    q = torch.randn(2, 4, 5, 8, dtype=torch.float64)
    k = torch.randn(2, 2, 5, 8, dtype=torch.float64)  # grouped-query keys: fewer heads
    theta = _angles(2, 1, 5, rot // 2)  # per-token positions: one row of angles per batch element
    rq, rk = rotate_qk(q, k, theta.cos(), theta.sin(), interleaved=interleaved)
    np.testing.assert_allclose(rq.numpy(), reference(q.numpy(), theta.numpy(), interleaved), atol=1e-12)
    np.testing.assert_allclose(rk.numpy(), reference(k.numpy(), theta.numpy(), interleaved), atol=1e-12)


@pytest.mark.parametrize("interleaved", [False, True])
def test_fused_equals_eager_in_every_dtype(interleaved):
    theta = _angles(7, 16)
    cos, sin = theta.cos().float(), theta.sin().float()
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        q, k = torch.randn(2, 3, 7, 32).to(dtype), torch.randn(2, 3, 7, 32).to(dtype)
        got = rotate_qk(q, k, cos, sin, interleaved=interleaved, fused=True)
        want = rotate_qk(q, k, cos, sin, interleaved=interleaved, fused=False)
        for g, w in zip(got, want):
            assert g.dtype == dtype
            # both compute in float32 and round once; the float32 operations may be fused differently
            tol = 1e-6 if dtype == torch.float32 else 2**-7
            torch.testing.assert_close(g, w, atol=tol, rtol=tol)


@pytest.mark.parametrize("interleaved", [False, True])
def test_fused_backward_gradcheck_float64(interleaved):
    q = torch.randn(1, 2, 4, 8, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 1, 4, 8, dtype=torch.float64, requires_grad=True)
    theta = _angles(4, 3)  # partial: 6 of 8 features rotated
    cos, sin = theta.cos(), theta.sin()
    assert torch.autograd.gradcheck(lambda a, b: rotate_qk(a, b, cos, sin, interleaved=interleaved, fused=True), (q, k))


def test_gradient_reaches_learned_frequencies():
    x = torch.randn(1, 1, 3, 4, dtype=torch.float64)
    theta = _angles(3, 2).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: rotate_pairs(x, t.cos(), t.sin(), fused=True), (theta,))


@pytest.mark.parametrize("interleaved", [False, True])
def test_bf16_within_one_rounding_of_float64_at_large_positions(interleaved):
    x = torch.randn(1, 2, 6, 64, dtype=torch.float64)
    positions = torch.tensor([0, 255, 65537, 500_001, 999_999, 1_000_000])
    got = apply_rope(x.to(torch.bfloat16), positions, interleaved=interleaved).double()
    inv_freq = 10000.0 ** (-np.arange(0, 64, 2) / 64)
    ref = reference(x.to(torch.bfloat16).double().numpy(), np.outer(positions.numpy(), inv_freq), interleaved)
    ref = torch.from_numpy(ref)
    # one bf16 rounding: at most one unit in the last place (8 significant bits) of the exact value
    ulp = torch.exp2(torch.floor(torch.log2(ref.abs().clamp_min(1e-30))) - 7)
    assert bool(((got - ref).abs() <= ulp).all())
    assert (got == ref.to(torch.bfloat16).double()).double().mean() > 0.99  # almost all correctly rounded


def test_module_rotates_q_and_k_together_like_apply_rope():
    rope = RotaryPositionEncoding(16, rotary_fraction=0.5)
    q, k = torch.randn(2, 4, 9, 16), torch.randn(2, 4, 9, 16)
    pos = Positions(9, 3)
    rq, rk = rope.rotate(q, k, q_positions=pos, k_positions=Positions(9, 3))
    theta = torch.outer(torch.arange(3, 12, dtype=torch.float64), 10000.0 ** (-torch.arange(0, 8, 2) / 8))
    np.testing.assert_allclose(rq.numpy(), reference(q.double().numpy(), theta.numpy(), False), atol=2e-6)
    np.testing.assert_allclose(rk.numpy(), reference(k.double().numpy(), theta.numpy(), False), atol=2e-6)


def test_inplace_overwrites_and_keeps_gradients():
    theta = _angles(5, 4)
    cos, sin = theta.cos().float(), theta.sin().float()
    q, k = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    want = rotate_qk(q, k, cos, sin, fused=False)
    q_ptr = q.data_ptr()
    rq, _rk = rotate_qk(q, k, cos, sin, inplace=True)
    assert rq.data_ptr() == q_ptr
    torch.testing.assert_close((q, k), want)
    # a non-leaf rotated in place still back-propagates the exact inverse rotation
    leaf = torch.randn(1, 2, 5, 8, dtype=torch.float64, requires_grad=True)
    cos64, sin64 = theta.cos(), theta.sin()
    out = rotate_pairs(leaf * 1.0, cos64, sin64, inplace=True)
    (grad,) = torch.autograd.grad(out.sum(), leaf)
    (want_grad,) = torch.autograd.grad(rotate_pairs(leaf, cos64, sin64, fused=False).sum(), leaf)
    torch.testing.assert_close(grad, want_grad)
    with pytest.raises(ValueError, match="inplace"):
        rotate_pairs(leaf, cos64, sin64, inplace=True)


def test_apply_rope_table_lookup_equals_direct_angles():
    angle_cache.clear()
    x = torch.randn(2, 2, 6, 8, dtype=torch.float64)
    positions = torch.tensor([[0, 3, 9, 40000, 2, 1], [5, 5, 6, 7, 8, 9]])
    got = apply_rope(x, positions)
    assert len(angle_cache._tables) == 1
    direct = apply_rope(x, positions.double())  # float positions are never looked up
    torch.testing.assert_close(got, direct, atol=0, rtol=0)
    table = next(iter(angle_cache._tables.values()))[0]
    apply_rope(x[:, :, :3], positions[:, :3])
    assert next(iter(angle_cache._tables.values()))[0] is table  # reused, not rebuilt


def test_compiled_model_with_fused_path_fullgraph():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qk = torch.nn.Linear(16, 32)
            self.rope = RotaryPositionEncoding(8)

        def forward(self, x):
            # (b, n, 32) -> two (b, 2, n, 8)
            q, k = self.qk(x).unflatten(-1, (2, 2, 8)).permute(2, 0, 3, 1, 4)
            pos = Positions(x.shape[1])
            q, k = self.rope.rotate(q, k, q_positions=pos, k_positions=pos)
            return q @ k.transpose(-1, -2)

    torch.manual_seed(0)
    block = Block()
    x = torch.randn(2, 6, 16)
    compiled = torch.compile(block, fullgraph=True)
    torch.testing.assert_close(compiled(x), block(x))


def test_bad_switch_value_is_named(monkeypatch):
    monkeypatch.setenv(fused.FUSED_ENV, "maybe")
    with pytest.raises(ValueError, match="POSENC_FUSED"):
        rotate_pairs(torch.randn(1, 1, 2, 4), torch.ones(2, 2), torch.zeros(2, 2))


def test_compile_failure_falls_back_to_eager(monkeypatch, inductor_on_cpu):
    def broken(key):
        def kernel(*args):
            raise RuntimeError("no compiler")

        return kernel

    monkeypatch.setattr(fused, "_kernels", {})
    monkeypatch.setattr(fused, "_build", broken)
    x = torch.randn(1, 1, 3, 4)
    theta = _angles(3, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = rotate_pairs(x, theta.cos().float(), theta.sin().float(), fused=True)
    assert any("could not be compiled" in str(w.message) for w in caught)
    torch.testing.assert_close(got, rotate_pairs(x, theta.cos().float(), theta.sin().float(), fused=False))


def test_kernel_is_used_and_first_call_timed(fusion_on_and_off, monkeypatch):
    monkeypatch.setattr(fused, "_kernels", {})
    monkeypatch.setattr(fused, "_first_call_seconds", {})
    theta = _angles(3, 2)
    rotate_tensors((torch.randn(1, 1, 3, 4, dtype=torch.float16),), theta.cos().float(), theta.sin().float())
    built = any(key[1] == torch.float16 for key in fused.compile_seconds())
    assert built == fusion_on_and_off


def test_auto_mode_takes_the_mechanism_measured_fastest_per_layout_and_dtype(fusion_on_and_off, monkeypatch):
    # CPU with inductor, from MIN_FUSED_NUMEL elements: the kernel for split halves and bfloat16 pairs,
    # the eager complex multiply for float32 and float16 pairs (docs/performance.md); below it, eager.
    # With the C++ function (the default): it for bfloat16, float32 and float64 at every size and in
    # both layouts, inductor's rules for float16
    if not fusion_on_and_off:
        pytest.skip("sets the mode itself: one run is enough")
    monkeypatch.setenv(fused.FUSED_ENV, "auto")
    cos = torch.zeros(256, 128)

    def wants(dtype, interleaved, n=256):
        return fused._kernel_choice(None, (torch.zeros(1, 1, n, 256, dtype=dtype),), cos[:n], cos[:n], interleaved) is not None

    monkeypatch.setenv(fused.CPU_KERNEL_ENV, "inductor")
    assert wants(torch.bfloat16, True) and wants(torch.bfloat16, False)
    assert wants(torch.float32, False) and wants(torch.float16, False)
    assert not wants(torch.float32, True) and not wants(torch.float16, True)
    assert not wants(torch.bfloat16, False, n=16)  # too small to pay for a compiled call
    assert fused._kernel_choice(True, (torch.zeros(1, 1, 16, 256),), cos[:16], cos[:16], True) is not None  # forced on
    monkeypatch.setenv(fused.CPU_KERNEL_ENV, "cpp")
    if fused.cpu_kernel.library() is None:
        pytest.skip("no C++ compiler here")
    for dtype in (torch.bfloat16, torch.float32, torch.float64):
        assert all(wants(dtype, interleaved, n) for interleaved in (False, True) for n in (1, 16, 256))
    assert wants(torch.float16, False) and not wants(torch.float16, True) and not wants(torch.float16, False, n=16)


def test_cpu_kernel_runs_in_parallel_whatever_size_it_was_compiled_at(fusion_on_and_off):
    # inductor decides from the sizes of the compiling call (and the thread count then) whether a CPU
    # loop runs in parallel, and its on-disk cache hands that decision to later processes: a kernel
    # first compiled at a small size (a test, a short prompt) would stay single-threaded at every size
    if not fusion_on_and_off:
        pytest.skip("builds the kernel directly: one run is enough")
    if not torch.backends.openmp.is_available():
        pytest.skip("torch built without OpenMP: inductor's CPU loops are serial")
    from torch._inductor.utils import run_and_get_code

    kernel = fused._build(("cpu", torch.float32, False, False, 1, False))
    theta = _angles(3, 2)
    rows = torch.tensor([0, 1, 2, 0, 1, 2], dtype=torch.int32)
    with torch._inductor.config.patch(fx_graph_cache=False):  # generate the code, do not reuse it
        _, code = run_and_get_code(kernel, (torch.randn(6, 4),), theta.cos().float(), theta.sin().float(), (rows,), False, False)
    assert any("#pragma omp parallel" in c for c in code)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("interleaved", [False, True])
def test_cuda_kernel_matches_reference(interleaved):
    q = torch.randn(2, 4, 64, 32, dtype=torch.float64)
    theta = _angles(64, 16)
    cos, sin = theta.cos().float().cuda(), theta.sin().float().cuda()
    got = rotate_pairs(q.cuda().bfloat16(), cos, sin, interleaved=interleaved, fused=True)
    ref = reference(q.bfloat16().double().numpy(), theta.numpy(), interleaved)
    np.testing.assert_allclose(got.double().cpu().numpy(), ref, atol=2e-2, rtol=1e-2)


def test_a_kernel_that_refuses_a_later_layout_falls_back_to_eager(monkeypatch, inductor_on_cpu):
    # e.g. dynamo's recompile limit reached after many input layouts in one long-running process
    calls = []

    def kernel(xs, cos, sin, *layout):
        calls.append(len(calls))
        if len(calls) > 1:
            raise RuntimeError("recompile limit exceeded")
        return tuple(x.clone() for x in xs)

    monkeypatch.setattr(fused, "_kernels", {})
    monkeypatch.setattr(fused, "_warned", set())
    monkeypatch.setattr(fused, "_build", lambda key: kernel)
    x = torch.randn(1, 1, 3, 4)
    theta = _angles(3, 2)
    cos, sin = theta.cos().float(), theta.sin().float()
    rotate_pairs(x, cos, sin, fused=True)  # the first call builds the kernel
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = rotate_pairs(x, cos, sin, fused=True)
    assert any("eager rotation" in str(w.message) for w in caught)
    torch.testing.assert_close(got, rotate_pairs(x, cos, sin, fused=False))


def test_one_compiled_variant_serves_every_rank_broadcast_and_layout(fusion_on_and_off, monkeypatch, inductor_on_cpu):
    if not fusion_on_and_off:
        pytest.skip("the kernel is forced on by fused=True: one run is enough")
    # any recompilation of a kernel raises (error_on_recompile below), which the caller would turn into a warning
    monkeypatch.setattr(fused, "_kernels", {})
    monkeypatch.setattr(fused, "_warned", set())
    gen = torch.Generator().manual_seed(4)
    calls = [  # (x shape, angle shape): ranks 2 to 5, shared, per-batch, per-head and per-token angles
        ((2, 3, 5, 8), (5, 4)), ((2, 3, 5, 8), (1, 1, 5, 4)), ((2, 3, 5, 8), (2, 1, 5, 4)),
        ((2, 3, 5, 8), (1, 3, 5, 4)), ((7, 8), (7, 4)), ((3, 4, 1, 8), (1, 1, 1, 4)),  # one decoding step
        ((4, 2, 6, 3, 8), (4, 1, 6, 1, 4)), ((2, 2, 9, 16), (9, 8)),
    ]
    with warnings.catch_warnings(), torch._dynamo.config.patch(error_on_recompile=True):
        warnings.simplefilter("error", RuntimeWarning)
        for interleaved in (False, True):
            for x_shape, angle_shape in calls:
                theta = torch.rand(angle_shape, dtype=torch.float64, generator=gen) * 10
                x = torch.randn(x_shape, generator=gen)
                stacked = torch.randn(2, *x_shape, generator=gen)
                inputs = [
                    (x, theta.cos().float()),  # contiguous, float32 angles
                    (x.transpose(-1, -2).contiguous().transpose(-1, -2), theta.cos()),  # strided, float64 angles
                    (stacked[1], theta.cos().float()),  # a storage offset
                ]
                for t, cos in inputs:
                    sin = theta.sin().to(cos.dtype)
                    want = rotate_pairs(t, cos, sin, interleaved=interleaved, fused=False)
                    got = rotate_pairs(t, cos, sin, interleaved=interleaved, fused=True)
                    torch.testing.assert_close(got, want)
                    rotate_pairs(t.clone(), cos, sin, interleaved=interleaved, fused=True, inplace=True)
                # with gradients (the forward and backward share the kernel) and under no_grad
                leaf = x.clone().requires_grad_()
                rotate_pairs(leaf, theta.cos().float(), theta.sin().float(), interleaved=interleaved, fused=True).sum().backward()
                with torch.no_grad():
                    rotate_pairs(leaf, theta.cos().float(), theta.sin().float(), interleaved=interleaved, fused=True)
    # one kernel per (layout, in place or not); nothing fell back
    assert sorted((key[2], key[3]) for key in fused._kernels) == [(False, False), (False, True), (True, False), (True, True)]
    assert all(kernel is not None for kernel in fused._kernels.values())


@pytest.mark.parametrize("interleaved", [False, True])
def test_heads_transposed_from_memory_are_read_in_place(interleaved, monkeypatch, inductor_on_cpu):
    # (b, h, n, d) viewed from (b, n, h, d) memory, as projections are usually viewed (and some attention
    # backwards return gradients): the kernel reads the rows in memory order and the result keeps that layout
    monkeypatch.setattr(fused, "_kernels", {})  # fresh kernels: any recompilation below raises
    monkeypatch.setattr(fused, "_warned", set())
    gen = torch.Generator().manual_seed(8)
    theta = _angles(2, 1, 6, 4)  # per-batch angles, shared by the heads
    cos, sin = theta.cos().float(), theta.sin().float()
    q = torch.randn(2, 6, 3, 8, generator=gen).transpose(1, 2)
    k = torch.randn(2, 6, 1, 8, generator=gen).transpose(1, 2)  # one key head
    copies = []
    real = fused._flat_rows
    monkeypatch.setattr(fused, "_flat_rows", lambda xs, d: copies.extend(not x.is_contiguous() for x in xs) or real(xs, d))
    with warnings.catch_warnings(), torch._dynamo.config.patch(error_on_recompile=True):
        warnings.simplefilter("error", RuntimeWarning)
        rq, rk = rotate_qk(q, k, cos, sin, interleaved=interleaved, fused=True)
    assert not any(copies)  # nothing had to be made contiguous
    assert rq.stride() == q.stride()
    np.testing.assert_allclose(rq.double().numpy(), reference(q.double().numpy(), theta.numpy(), interleaved), atol=1e-5)
    np.testing.assert_allclose(rk.double().numpy(), reference(k.double().numpy(), theta.numpy(), interleaved), atol=1e-5)
    # gradients in that layout go back through the kernel too; float64 gradcheck of both layouts
    q64 = q.double().detach().requires_grad_()
    grad = torch.randn(2, 6, 3, 8, dtype=torch.float64, generator=gen).transpose(1, 2)
    (got,) = torch.autograd.grad(rotate_pairs(q64, theta.cos(), theta.sin(), interleaved=interleaved, fused=True), q64, grad)
    (want,) = torch.autograd.grad(rotate_pairs(q64, theta.cos(), theta.sin(), interleaved=interleaved, fused=False), q64, grad)
    torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(
        lambda a: rotate_pairs(a, theta.cos(), theta.sin(), interleaved=interleaved, fused=True), (q64,)
    )
    # in place into the transposed tensor
    target = q.clone(memory_format=torch.preserve_format)
    rotate_pairs(target, cos, sin, interleaved=interleaved, fused=True, inplace=True)
    torch.testing.assert_close(target, rq)


# -- autograd beyond the first derivative, torch.func transforms, in-place writes -------------------


def _plain_rotation(x: torch.Tensor, positions: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """RoPE (base 10^4) in plain differentiable float64 operations, the pairs' 2x2 matrices written out."""
    d = x.shape[-1]
    angles = positions.double()[:, None] * 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    c, s = angles.cos(), angles.sin()
    a, b = (x[..., 0::2], x[..., 1::2]) if interleaved else (x[..., : d // 2], x[..., d // 2 :])
    ra, rb = a * c - b * s, a * s + b * c
    return torch.stack((ra, rb), -1).flatten(-2) if interleaved else torch.cat((ra, rb), -1)


@pytest.mark.parametrize(("interleaved", "mechanism"), [(False, "default"), (True, "default"), (True, "inductor")])
def test_second_derivative_flows_through_the_backward(interleaved, mechanism, monkeypatch, fusion_on_and_off):
    if mechanism == "inductor":
        if not fusion_on_and_off:
            pytest.skip("the inductor kernel is a fused mechanism")
        monkeypatch.setenv(fused.CPU_KERNEL_ENV, "inductor")
    pos = torch.arange(5)
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)

    def loss_and_penalty(rotate):
        y = rotate(x)
        (g,) = torch.autograd.grad((y**3).sum(), x, create_graph=True)
        assert g.requires_grad
        return torch.autograd.grad((y**3).sum() + (g**2).sum(), x)[0]

    got = loss_and_penalty(lambda t: apply_rope(t, pos, interleaved=interleaved))
    want = loss_and_penalty(lambda t: _plain_rotation(t, pos, interleaved))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("interleaved", [False, True])
def test_forward_mode_tangent_is_the_rotated_tangent(interleaved):
    import torch.autograd.forward_ad as fwAD

    pos = torch.arange(6)
    x, v = torch.randn(2, 1, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).unbind(0)
    x, v = x[None], v[None]
    with fwAD.dual_level():
        primal, tangent = fwAD.unpack_dual(apply_rope(fwAD.make_dual(x, v), pos, interleaved=interleaved))
        assert tangent is not None
    torch.testing.assert_close(primal, _plain_rotation(x, pos, interleaved), rtol=0, atol=1e-13)
    torch.testing.assert_close(tangent, _plain_rotation(v, pos, interleaved), rtol=0, atol=1e-13)


@pytest.mark.parametrize("interleaved", [False, True])
def test_vmap_grad_and_jacrev_over_apply_rope(interleaved):
    from posenc.functional import apply_rope_qk

    pos = torch.arange(4)
    xs = torch.randn(3, 2, 2, 4, 8, generator=torch.Generator().manual_seed(2))
    batched = torch.vmap(lambda t: apply_rope(t, pos, interleaved=interleaved))(xs)
    torch.testing.assert_close(batched, torch.stack([apply_rope(t, pos, interleaved=interleaved) for t in xs]))
    _q, k = torch.vmap(lambda a, b: apply_rope_qk(a, b, pos, interleaved=interleaved))(xs, xs.flip(0))
    torch.testing.assert_close(k, batched.flip(0))
    # a rotation is orthogonal: the gradient of |R x|^2 is 2x, and its Jacobian maps v to R v
    grad = torch.func.grad(lambda t: apply_rope(t, pos, interleaved=interleaved).pow(2).sum())(xs[0])
    torch.testing.assert_close(grad, 2 * xs[0])
    x64 = xs[0, :, :1].double()
    jac = torch.func.jacrev(lambda t: apply_rope(t, pos, interleaved=interleaved))(x64)
    v = torch.randn_like(x64)
    torch.testing.assert_close(torch.einsum("...ijkl,ijkl->...", jac, v), _plain_rotation(v, pos, interleaved))


@pytest.mark.parametrize("interleaved", [False, True])
def test_in_place_on_views_of_one_projection_keeps_gradients(interleaved):
    from posenc.functional import apply_rope_qk

    pos = torch.arange(4)
    w = torch.randn(1, 4, 3, 2, 8, generator=torch.Generator().manual_seed(3), requires_grad=True)

    def rotated(inplace):
        qkv = w * 2  # (b, n, 3, h, d): q, k and v views of one tensor, as attention projections give
        q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
        q, k = apply_rope_qk(q, k, pos, interleaved=interleaved, inplace=inplace)
        return q, k, qkv

    q, k, qkv = rotated(True)
    assert q.data_ptr() == qkv[:, :, 0].data_ptr()  # written into the projection
    gw = torch.autograd.grad((q * q.detach()).sum() + (k**3).sum() + qkv[:, :, 2].sum(), w)[0]
    q2, k2, qkv2 = rotated(False)
    torch.testing.assert_close((q, k), (q2, k2))
    gw2 = torch.autograd.grad((q2 * q2.detach()).sum() + (k2**3).sum() + qkv2[:, :, 2].sum(), w)[0]
    torch.testing.assert_close(gw, gw2)
    # one view, differentiated with autograd.grad (not only .backward())
    out = apply_rope((w * 2)[:, :, 0].transpose(1, 2), pos, interleaved=interleaved, inplace=True)
    torch.testing.assert_close(torch.autograd.grad(out.sum(), w)[0][:, :, 0].transpose(1, 2),
                               2 * apply_rope(torch.ones_like(out), -pos, interleaved=interleaved))


@pytest.mark.parametrize(
    ("flags", "name"),
    [({"interleaved": "yes"}, "interleaved"), ({"interleaved": None}, "interleaved"), ({"fused": 0}, "fused"),
     ({"fused": "no"}, "fused"), ({"inplace": 1}, "inplace")],
)
def test_flags_must_be_booleans(flags, name):
    with pytest.raises(TypeError, match=f"`{name}` must be True or False"):
        apply_rope(torch.randn(1, 1, 4, 8), torch.arange(4), **flags)


def test_in_place_refuses_memory_it_would_write_twice():
    from posenc.functional import apply_rope_qk

    pos = torch.arange(4)
    expanded = torch.randn(1, 1, 4, 8).expand(2, 1, 4, 8)
    with pytest.raises(ValueError, match="share memory"):
        apply_rope(expanded, pos, inplace=True)
    q = torch.randn(1, 1, 4, 8)
    before = q.clone()
    with pytest.raises(ValueError, match="same tensor twice"):
        apply_rope_qk(q, q, pos, inplace=True)
    assert torch.equal(q, before)
    # out of place, the same tensor as q and k is fine
    q2, k2 = apply_rope_qk(q, q, pos)
    torch.testing.assert_close(q2, k2)


def test_a_bad_fusion_switch_is_refused_listing_every_accepted_value(monkeypatch):
    from posenc.rotary.fused import FUSED_ENV, fusion_mode

    for raw, mode in (("TRUE", "on"), ("false", "off"), ("", "auto")):
        monkeypatch.setenv(FUSED_ENV, raw)
        assert fusion_mode() == mode
    monkeypatch.setenv(FUSED_ENV, "maybe")
    with pytest.raises(ValueError, match=r"0, off, false \(fusion off\), 1, on, true .* or auto .*'maybe'"):
        fusion_mode()


@pytest.mark.parametrize("name", ["rope", "xpos", "rope_learned"])
def test_hooks_refuse_tensors_on_another_device_by_name(name):
    # rotate / rotate_qkv are called without forward's device check: torch's own error came from inside
    from posenc.core.positions import Positions
    from posenc.testing.examples import build

    encoding = build(name)
    head_dim = encoding.head_dim
    q = torch.randn(1, 2, 4, head_dim, device="meta")
    positions = Positions(4)
    with pytest.raises(ValueError, match=r"meta.* cpu"):
        encoding.rotate(q, q, q_positions=positions, k_positions=positions)
    with pytest.raises(ValueError, match=r"meta.* cpu"):
        encoding.rotate_qkv(torch.randn(3, 1, 2, 4, head_dim, device="meta"), q_positions=positions, k_positions=positions)
