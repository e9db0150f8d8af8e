"""The C++ RoPE function for CPU (posenc/rotary/cpu_kernel.py): exact against the eager rotation and a
float64 reference in every layout it reads in place, its backward, its build cache and its fallback."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch

from posenc.functional import rotate_pairs
from posenc.rotary import cpu_kernel, fused
from posenc.rotary.fused import rotate_qk, rotate_tensors
from posenc.rotary.rotation import rotate_expr

from .test_fused import reference

pytestmark = pytest.mark.skipif(cpu_kernel.library() is None, reason="no C++ compiler here")


@pytest.fixture(autouse=True)
def cpp_on_cpu(monkeypatch):
    """These tests are about the C++ function, whatever POSENC_CPU_KERNEL says outside them."""
    monkeypatch.setenv(fused.CPU_KERNEL_ENV, "cpp")


def _angles(*shape: int, seed: int = 3) -> torch.Tensor:
    return torch.rand(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 200 - 100


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit, any NaN equal to any NaN."""
    return bool(((a == b) | (a.isnan() & b.isnan())).all())


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("d, rot", [(32, 32), (64, 64), (128, 128), (24, 24), (40, 16), (8, 8), (20, 20), (14, 6), (2, 2)])
def test_equals_the_plain_expression_bit_for_bit(interleaved, dtype, d, rot):
    # head sizes with a compiled-in pair count (16, 32, 64 pairs), others, and partial rotation; the
    # arithmetic (float32, or float64 for float64) and its rounding are those of the plain expression.
    # Pair counts that are not a multiple of four: GCC once fused the last float64 adjacent pairs into
    # a multiply-add (vfmaddsub), one unit in the last place off
    gen = torch.Generator().manual_seed(d)
    x = (torch.randn(2, 3, 9, d, generator=gen, dtype=torch.float64) * 4).to(dtype)
    theta = _angles(9, rot // 2)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    cos, sin = theta.cos().to(work), theta.sin().to(work)
    (got,) = rotate_tensors((x,), cos, sin, interleaved=interleaved, fused=True)
    assert _bits_equal(got, rotate_expr(x, cos, sin, interleaved))
    ref = reference(x.double().numpy(), theta.numpy(), interleaved)
    atol = {torch.bfloat16: 8e-2, torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    np.testing.assert_allclose(got.double().numpy(), ref, atol=atol, rtol=1e-2 if dtype == torch.bfloat16 else 1e-6)


@pytest.mark.parametrize("interleaved", [False, True])
def test_bfloat16_specials_round_as_the_cast_does(interleaved):
    # NaN, ±inf, overflow past the bfloat16 range, subnormals and every magnitude in between
    x = torch.randn(3, 7, 64, dtype=torch.float64) * torch.logspace(-40, 38, 64, dtype=torch.float64)
    x[0, 0, :6] = torch.tensor([float("nan"), float("inf"), -float("inf"), 3.38e38, -3.38e38, 1e-39])
    x = x.to(torch.bfloat16)
    theta = _angles(7, 32)
    cos, sin = theta.cos().float(), theta.sin().float()
    (got,) = rotate_tensors((x,), cos, sin, interleaved=interleaved, fused=True)
    assert _bits_equal(got, rotate_expr(x, cos, sin, interleaved))


def _layouts(b: int, n: int, h: int, d: int, gen: torch.Generator):
    """(name, q, k): the layouts attention produces and some it should not be thrown by."""
    qkv = torch.randn(b, n, 3, h, d, generator=gen)
    q, k, _ = qkv.permute(2, 0, 3, 1, 4)  # views of a packed projection
    yield "packed projection", q, k
    yield "contiguous", q.contiguous(), k.contiguous()
    yield "heads transposed", q.transpose(1, 2).contiguous().transpose(1, 2), k.transpose(1, 2).contiguous().transpose(1, 2)
    stacked = torch.randn(2, b, h, n, d, generator=gen)
    yield "storage offset", stacked[1], stacked[0]
    wide = torch.randn(b, h, n, 2 * d, generator=gen)
    yield "features strided", wide[..., ::2], wide[..., 1::2]  # last stride 2: copied first
    yield "rows strided", wide[..., :d], wide[..., d:]
    yield "broadcast over heads", torch.randn(b, 1, n, d, generator=gen).expand(b, h, n, d), k.contiguous()


@pytest.mark.parametrize("interleaved", [False, True])
def test_every_layout_read_as_it_is_and_laid_out_like_its_input(interleaved):
    gen = torch.Generator().manual_seed(5)
    theta = _angles(2, 1, 6, 8)  # per-batch angles shared by the heads
    cos, sin = theta.cos().float(), theta.sin().float()
    for name, q, k in _layouts(2, 6, 3, 16, gen):
        rq, rk = rotate_qk(q, k, cos, sin, interleaved=interleaved, fused=True)
        for x, r in ((q, rq), (k, rk)):
            assert _bits_equal(r, rotate_expr(x, cos, sin, interleaved)), name
            if x.is_contiguous() or 0 not in x.stride():
                # the result's rows are in the input's memory order (what attention reads next)
                order = sorted(range(3), key=lambda i: -x.stride(i))
                assert sorted(range(3), key=lambda i: -r.stride(i)) == order, name


@pytest.mark.parametrize(
    "x_shape, angle_shape",
    [((7, 8), (7, 4)), ((3, 4, 1, 8), (1, 1, 1, 4)), ((4, 2, 6, 3, 8), (4, 1, 6, 1, 4)),
     ((2, 3, 2, 2, 5, 8), (2, 1, 2, 1, 5, 4)), ((2, 3, 5, 8), (2, 3, 5, 4)), ((0, 3, 5, 8), (5, 4)), ((1, 1, 0, 8), (0, 4))],
)
def test_ranks_two_to_six_broadcasts_and_empty(x_shape, angle_shape):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(x_shape, generator=gen)
    # a rank-6 view whose leading dimensions cannot all be merged into four
    x = x.transpose(0, 2).contiguous().transpose(0, 2) if len(x_shape) == 6 else x
    theta = _angles(*angle_shape)
    for interleaved in (False, True):
        (got,) = rotate_tensors((x,), theta.cos().float(), theta.sin().float(), interleaved=interleaved, fused=True)
        assert _bits_equal(got, rotate_expr(x, theta.cos().float(), theta.sin().float(), interleaved))


@pytest.mark.parametrize("interleaved", [False, True])
def test_in_place_writes_into_strided_views(interleaved):
    gen = torch.Generator().manual_seed(7)
    for (d, dtype) in itertools.product((16, 32, 64), (torch.bfloat16, torch.float32)):  # vector and scalar rows
        theta = _angles(6, d // 2)
        cos, sin = theta.cos().float(), theta.sin().float()
        qkv = torch.randn(2, 6, 3, 3, d, generator=gen).to(dtype)
        before = qkv.clone()
        q, k, _v = qkv.permute(2, 0, 3, 1, 4)
        want = [rotate_expr(t, cos, sin, interleaved) for t in (q, k)]
        out = rotate_qk(q, k, cos, sin, interleaved=interleaved, inplace=True, fused=True)
        assert out[0].data_ptr() == q.data_ptr() and out[1].data_ptr() == k.data_ptr()
        assert _bits_equal(q, want[0]) and _bits_equal(k, want[1])
        assert torch.equal(qkv[:, :, 2], before[:, :, 2])  # v untouched


@pytest.mark.parametrize("interleaved", [False, True])
def test_backward_gradcheck_float64_and_bfloat16_gradients(interleaved):
    theta = _angles(5, 4)
    q = torch.randn(2, 5, 3, 8, dtype=torch.float64).transpose(1, 2).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a: rotate_pairs(a, theta.cos(), theta.sin(), interleaved=interleaved, fused=True), (q,)
    )
    # bfloat16: the gradient is the rotation by the opposite angle of the incoming gradient, rounded once
    x = torch.randn(2, 3, 5, 8).bfloat16().requires_grad_()
    cos, sin = theta.cos().float(), theta.sin().float()
    grad = torch.randn(2, 3, 5, 8).bfloat16()
    (got,) = torch.autograd.grad(rotate_pairs(x, cos, sin, interleaved=interleaved, fused=True), x, grad)
    assert _bits_equal(got, rotate_expr(grad, cos, -sin, interleaved))


def test_same_result_on_one_and_two_threads():
    threads = torch.get_num_threads()
    x = torch.randn(4, 8, 512, 64).bfloat16()  # large enough to run in parallel
    theta = _angles(512, 32)
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(rotate_tensors((x,), theta.cos().float(), theta.sin().float(), fused=True)[0])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(*results)


@pytest.mark.parametrize("interleaved", [False, True])
def test_streamed_results_equal_the_stored_ones(interleaved, monkeypatch):
    # every result streamed (threshold 0): rows of whole 32-byte stores (bf16/fp32/fp64, partial
    # rotation, strided views of a packed projection, memory-ordered outputs) and rows that are not
    # (12 float32 features, 48 bytes: stored normally), against the plain expression bit for bit
    gen = torch.Generator().manual_seed(11)
    monkeypatch.setattr(cpu_kernel, "STREAM_MIN_BYTES", 0)
    for d, rot, dtype in [(64, 64, torch.float32), (64, 64, torch.bfloat16), (32, 32, torch.float64),
                          (40, 16, torch.float32), (12, 12, torch.float32), (24, 24, torch.bfloat16)]:
        theta = _angles(2, 1, 6, rot // 2)
        work = torch.float64 if dtype == torch.float64 else torch.float32
        cos, sin = theta.cos().to(work), theta.sin().to(work)
        for name, q, k in _layouts(2, 6, 3, d, gen):
            q, k = q.to(dtype), k.to(dtype)
            rq, rk = rotate_qk(q, k, cos, sin, interleaved=interleaved, fused=True)
            for x, r in ((q, rq), (k, rk)):
                assert _bits_equal(r, rotate_expr(x, cos, sin, interleaved)), (name, d, dtype)


def test_large_results_are_streamed_and_exact():
    # 9 MiB of float32 rows: past STREAM_MIN_BYTES, in parallel, against the float64 reference
    assert 9 << 20 >= cpu_kernel.STREAM_MIN_BYTES >= 0
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(1, 2, 18432, 64, generator=gen)
    theta = _angles(18432, 32)
    cos, sin = theta.cos().float(), theta.sin().float()
    for interleaved in (False, True):
        (got,) = rotate_tensors((x,), cos, sin, interleaved=interleaved, fused=True)
        assert _bits_equal(got, rotate_expr(x, cos, sin, interleaved))
        ref = reference(x[0, 0, ::97].double().numpy(), theta[::97].numpy(), interleaved)
        np.testing.assert_allclose(got[0, 0, ::97].double().numpy(), ref, atol=1e-5, rtol=1e-6)


def test_built_once_then_loaded_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cpu_kernel.CACHE_ENV, str(tmp_path))
    compiler = cpu_kernel._compiler()
    path, seconds = cpu_kernel._build(compiler)
    assert path.parent == tmp_path and path.exists() and seconds > 0
    again, cached = cpu_kernel._build(compiler)
    assert again == path and cached == 0.0
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no partial files left behind


def test_unwritable_cache_directory_falls_back_to_a_temporary_one(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cpu_kernel._writable(blocker / "cache").exists()


def test_temporary_fallback_is_private_and_refuses_a_directory_others_can_write(tmp_path, monkeypatch):
    import os
    import stat

    monkeypatch.setattr(cpu_kernel.tempfile, "gettempdir", lambda: str(tmp_path))
    own = cpu_kernel._private_temp_dir()
    assert own == tmp_path / f"posenc-{os.getuid()}"
    assert stat.S_IMODE(own.stat().st_mode) & 0o077 == 0
    # a directory of that name anyone could have filled (a library in it would be loaded and run)
    own.chmod(0o777)
    other = cpu_kernel._private_temp_dir()
    assert other != own and other.parent == tmp_path and stat.S_IMODE(other.stat().st_mode) == 0o700
    # a link planted in its place is not followed
    own.chmod(0o700)
    os.rename(own, tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", own)
    assert cpu_kernel._private_temp_dir() not in (own, tmp_path / "elsewhere")


def test_a_library_in_a_read_only_cache_is_loaded_and_a_damaged_one_rebuilt(tmp_path, monkeypatch):
    compiler = cpu_kernel._compiler()
    shipped = tmp_path / "shipped"
    monkeypatch.setenv(cpu_kernel.CACHE_ENV, str(shipped))
    built, _ = cpu_kernel._build(compiler)
    monkeypatch.setattr(cpu_kernel, "_writable", lambda directory: pytest.fail("nothing should be written"))
    assert cpu_kernel._build(compiler) == (built, 0.0)  # found where it lies, read-only or not
    # a truncated file in the cache: built afresh (here into a writable directory) and loaded
    monkeypatch.undo()
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    monkeypatch.setenv(cpu_kernel.CACHE_ENV, str(damaged))
    (damaged / built.name).write_bytes(b"not a library")
    monkeypatch.setattr(cpu_kernel, "_state", None)
    monkeypatch.setattr(cpu_kernel, "_functions", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "could not be built" warning
        assert cpu_kernel.library() is not None
    assert cpu_kernel.build_seconds() > 0 and (damaged / built.name).stat().st_size > 1000


def test_a_truncated_library_in_the_cache_is_rebuilt_or_refused_not_loaded(tmp_path, monkeypatch):
    # loading a file cut short maps pages past its end: the process would die of SIGBUS, so each
    # attempt runs in a process of its own
    import os
    import subprocess
    import sys
    from pathlib import Path

    monkeypatch.setenv(cpu_kernel.CACHE_ENV, str(tmp_path / "built"))
    built, _ = cpu_kernel._build(cpu_kernel._compiler())
    cache = tmp_path / "cache"
    cache.mkdir()
    script = (
        "import warnings; warnings.simplefilter('always'); from posenc.rotary import cpu_kernel; "
        "print(cpu_kernel.library() is not None, cpu_kernel.build_seconds())"
    )
    env = {**os.environ, cpu_kernel.CACHE_ENV: str(cache), "PYTHONPATH": str(Path(cpu_kernel.__file__).parents[2])}
    for size in (5000, built.stat().st_size // 2, built.stat().st_size - 100):
        (cache / built.name).write_bytes(built.read_bytes()[:size])
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        loaded, seconds = done.stdout.split()
        assert loaded == "True" and float(seconds) > 0  # built afresh
        assert (cache / built.name).stat().st_size > size
    # without a compiler: refused with the one warning, RoPE falls back
    (cache / built.name).write_bytes(built.read_bytes()[:5000])
    no_compiler = {**env, "PATH": str(tmp_path / "empty")}
    no_compiler.pop("CXX", None)
    done = subprocess.run([sys.executable, "-c", script], env=no_compiler, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.split() == ["False", "None"], done.stderr
    assert "could not be built" in done.stderr and "truncated" in done.stderr


def test_without_a_compiler_a_library_built_for_this_processor_is_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv(cpu_kernel.CACHE_ENV, str(tmp_path))
    built, _ = cpu_kernel._build(cpu_kernel._compiler())
    assert cpu_kernel._build(None) == (built, 0.0)
    built.unlink()
    with pytest.raises(RuntimeError, match=r"no C\+\+ compiler found .* no library built for this processor"):
        cpu_kernel._build(None)


def test_without_a_compiler_the_inductor_kernel_is_used_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setenv(cpu_kernel.CACHE_ENV, str(tmp_path))  # nothing cached there either
    monkeypatch.setattr(cpu_kernel, "_state", None)
    monkeypatch.setattr(cpu_kernel, "_compiler", lambda: None)
    monkeypatch.setattr(fused, "_kernels", {})
    x = torch.randn(1, 2, 64, 64)
    theta = _angles(64, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = rotate_pairs(x, theta.cos().float(), theta.sin().float(), fused=True)
        rotate_pairs(x, theta.cos().float(), theta.sin().float(), fused=True)
    messages = [str(w.message) for w in caught if "C++ RoPE kernel" in str(w.message)]
    assert len(messages) == 1 and "no C++ compiler" in messages[0]
    assert any(key[0] == "cpu" for key in fused._kernels)  # inductor's kernel took over
    torch.testing.assert_close(got, rotate_pairs(x, theta.cos().float(), theta.sin().float(), fused=False))


def test_a_compiler_that_fails_silently_is_named_in_the_warning(monkeypatch, tmp_path):
    monkeypatch.setenv(cpu_kernel.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv("CXX", "false")
    monkeypatch.setattr(cpu_kernel, "_state", None)
    with pytest.warns(RuntimeWarning, match="could not be built") as caught:
        assert cpu_kernel.library() is None
    message = str(caught[0].message)
    assert "false failed: " in message and "-O3 -march=native -ffp-contract=off -fopenmp: exit status 1" in message
    assert list(tmp_path.iterdir()) == []  # no partial files left behind


def test_bad_mechanism_is_named(monkeypatch):
    monkeypatch.setenv(fused.CPU_KERNEL_ENV, "triton")
    with pytest.raises(ValueError, match="POSENC_CPU_KERNEL"):
        rotate_pairs(torch.randn(1, 1, 2, 4), torch.ones(2, 2), torch.zeros(2, 2))


def test_float16_and_learned_frequencies_do_not_use_it():
    x = torch.randn(1, 1, 4, 8)
    assert fused._uses_cpp((x,)) and not fused._uses_cpp((x.half(),))
    theta = _angles(4, 4).float().requires_grad_()
    # angles that need a gradient take the plain expression, whatever the mechanism
    out = rotate_pairs(x, theta.cos(), theta.sin(), fused=True)
    out.sum().backward()
    assert theta.grad is not None


@pytest.mark.parametrize("dtype, interleaved", list(itertools.product([torch.bfloat16, torch.float32], [False, True])))
def test_bf16_within_one_rounding_at_position_a_million(dtype, interleaved):
    from posenc.core.frequencies import inverse_frequencies

    positions = torch.arange(10**6 - 8, 10**6, dtype=torch.float64)
    theta = torch.outer(positions, inverse_frequencies(64, 10000.0).double()) % (2 * torch.pi)
    x = torch.randn(2, 8, 64, dtype=torch.float64).to(dtype)
    (got,) = rotate_tensors((x,), theta.cos().float(), theta.sin().float(), interleaved=interleaved, fused=True)
    ref = torch.from_numpy(reference(x.double().numpy(), theta.numpy(), interleaved))
    # one rounding of the float64 result to the dtype, plus float32 arithmetic
    spacing = ref.abs().clamp_min(1e-30) * (2.0**-8 if dtype == torch.bfloat16 else 2.0**-23)
    assert bool(((got.double() - ref).abs() <= spacing + 2e-6).all())


def test_tables_that_do_not_broadcast_are_refused_not_read_out_of_bounds():
    x = torch.randn(2, 3, 5, 8)
    for cos in (torch.ones(4, 4), torch.ones(5, 5), torch.ones(2, 2, 3, 5, 4)):
        with pytest.raises(ValueError, match="do not broadcast"):
            cpu_kernel.rotate_into(x, torch.empty_like(x), cos, cos.clone(), False)


def test_angles_changed_in_place_before_the_backward_are_an_error_not_a_wrong_gradient():
    x = torch.randn(1, 2, 4, 8, requires_grad=True)
    theta = _angles(4, 4)
    cos, sin = theta.cos().float(), theta.sin().float()
    out = rotate_pairs(x, cos, sin, fused=True)
    cos.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
