"""DDPM's timestep embedding against a float64 transcription of the official get_timestep_embedding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import import_peer
from hypothesis import given
from hypothesis import strategies as st

import posenc
from posenc.functional import timestep_embedding
from posenc.step import TimestepEmbedding


def reference(steps, dim):
    """diffusion_tf/nn.py: emb = exp(-i log(10000) / (half - 1)); [sin(t emb), cos(t emb)], zero pad if odd."""
    half = dim // 2
    scale = math.log(10000) / (half - 1)
    out = np.zeros((len(steps), dim))
    for row, t in enumerate(steps):
        for i in range(half):
            out[row, i] = math.sin(t * math.exp(-i * scale))
            out[row, half + i] = math.cos(t * math.exp(-i * scale))
    return out


@pytest.mark.parametrize("dim", [4, 7, 8, 33, 128])
def test_matches_float64_reference(dim):
    steps = [0, 1, 5, 17, 999]
    got = timestep_embedding(torch.tensor(steps), dim)
    assert got.shape == (5, dim) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), reference(steps, dim), atol=1e-6)
    fractional = [0.5, 3.25, 123.125, 4000.75]
    got64 = timestep_embedding(torch.tensor(fractional, dtype=torch.float64), dim)
    assert got64.dtype == torch.float64
    np.testing.assert_allclose(got64.numpy(), reference(fractional, dim), atol=1e-12)


def test_lowest_frequency_is_one_over_ten_thousand_and_odd_dim_pads_a_zero():
    emb = timestep_embedding(torch.tensor([10000.0 * math.pi / 2], dtype=torch.float64), 9)[0]
    torch.testing.assert_close(emb[3], torch.tensor(1.0, dtype=torch.float64))  # sin(t / 10000) = 1
    assert emb[8] == 0


@given(
    shape=st.lists(st.integers(1, 3), max_size=3),
    integer=st.booleans(),
    dim=st.integers(4, 12),
)
def test_int_and_float_steps_of_any_shape(shape, integer, dim):
    t = torch.randint(0, 1000, shape) if integer else torch.rand(shape) * 1000
    module = TimestepEmbedding(dim, hidden=8)
    emb = timestep_embedding(t, dim)
    assert emb.shape == (*shape, dim)
    out = module(t)
    assert out.shape == (*shape, module.out_dim)
    flat = timestep_embedding(t.reshape(-1), dim)
    torch.testing.assert_close(emb.reshape(-1, dim), flat)


def test_python_numbers():
    torch.testing.assert_close(timestep_embedding(7, 8), timestep_embedding(torch.tensor(7), 8))
    torch.testing.assert_close(timestep_embedding(7.5, 8), timestep_embedding(torch.tensor(7.5), 8))
    assert TimestepEmbedding(8)(3).shape == (32,)


def test_a_python_int_past_int64_is_refused_naming_t():
    # timestep_embedding(10**30, 8) failed inside torch.tensor ('Overflow when unpacking long long')
    with pytest.raises(ValueError, match=r"^`t` must be <= 9223372036854775807, got 10{30}$"):
        timestep_embedding(10**30, 8)
    with pytest.raises(ValueError, match=r"^`t` must be >= -9223372036854775808"):
        TimestepEmbedding(8).encode(-(10**30))
    assert timestep_embedding(2**63 - 1, 8).shape == (8,)


@given(t=st.integers(0, 2000), s=st.integers(-50, 50))
def test_shift_is_a_rotation_of_each_sin_cos_pair(t, s):
    half = 8
    a = timestep_embedding(torch.tensor(t, dtype=torch.float64), 2 * half)
    b = timestep_embedding(torch.tensor(t + s, dtype=torch.float64), 2 * half)
    freq = torch.tensor([math.exp(-i * math.log(10000) / (half - 1)) for i in range(half)], dtype=torch.float64)
    c, sn = torch.cos(s * freq), torch.sin(s * freq)
    # sin(x + y) = sin x cos y + cos x sin y;  cos(x + y) = cos x cos y - sin x sin y
    torch.testing.assert_close(b[:half], a[:half] * c + a[half:] * sn)
    torch.testing.assert_close(b[half:], a[half:] * c - a[:half] * sn)


def test_module_is_the_two_dense_layers_with_swish():
    module = TimestepEmbedding(8, dtype=torch.float64)
    assert module.out_dim == 32 and module.dense0.out_features == 32 and module.dense1.in_features == 32
    t = [3, 250]
    emb = torch.from_numpy(reference(t, 8))
    h = emb @ module.dense0.weight.T + module.dense0.bias
    h = h * torch.sigmoid(h)
    want = h @ module.dense1.weight.T + module.dense1.bias
    torch.testing.assert_close(module(torch.tensor(t)), want)


def test_float64_module_embeds_integer_and_float32_steps_in_float64():
    module = TimestepEmbedding(8, 16).to(torch.float64)
    for steps in ([0, 1, 17, 999, 10**6], [0.0, 0.5, 17.25, 999.75]):
        t = torch.tensor(steps, dtype=torch.int64 if isinstance(steps[0], int) else torch.float32)
        got = module.encode(t)
        assert got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), reference(t.double().tolist(), 8), rtol=0, atol=1e-12)
    np.testing.assert_allclose(module.encode(999).numpy(), reference([999], 8)[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model_at_large_steps(dtype):
    module = TimestepEmbedding(16).to(dtype)
    t = torch.tensor([999, 65536, 1_000_003])
    got = module.encode(t)
    assert got.dtype == dtype
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(got.double(), torch.from_numpy(reference(t.tolist(), 16)), atol=eps, rtol=eps)
    assert module(t).dtype == dtype


def test_meta_device_and_state_dict():
    module = TimestepEmbedding(8, device="meta")
    assert module.out_dim == 32
    module.to_empty(device="cpu")
    for layer in (module.dense0, module.dense1):
        layer.reset_parameters()
    assert torch.isfinite(module(torch.tensor([1, 2]))).all()
    other = TimestepEmbedding(8)
    other.load_state_dict(module.state_dict())
    torch.testing.assert_close(other(torch.tensor([5])), module(torch.tensor([5])))


def test_registry():
    info = posenc.get("timestep")
    assert info.family == "step" and "2006.11239" in info.paper
    assert posenc.create("timestep", dim=8).out_dim == 32


def test_bad_input():
    with pytest.raises(ValueError, match="dim=3: widen dim or lower the shift"):
        timestep_embedding(torch.tensor([1]), 3)  # DDPM's shift 1 needs dim // 2 above 1
    with pytest.raises(ValueError, match="dim=2"):
        TimestepEmbedding(2)
    with pytest.raises(ValueError, match="`dim` must be >= 2"):
        timestep_embedding(torch.tensor([1]), 1, downscale_freq_shift=0)
    with pytest.raises(ValueError, match="`t`"):
        timestep_embedding(torch.tensor([1.0], dtype=torch.bfloat16), 8)
    with pytest.raises(ValueError, match="`t`"):
        TimestepEmbedding(8, num_steps=1000)(torch.tensor([0, 1001]))
    with pytest.raises(ValueError, match="`t`"):
        TimestepEmbedding(8, num_steps=1000)(torch.tensor([-1]))
    with pytest.raises(TypeError, match="`t`"):
        timestep_embedding([1, 2], 8)


# -- parity with diffusers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [4, 5, 8, 33, 128])
def test_matches_diffusers_get_timestep_embedding(dim):
    """diffusers' defaults (flip_sin_to_cos=False, downscale_freq_shift=1, scale=1, max_period=10000) are
    DDPM's embedding; diffusers forms the angles in float32, hence a tolerance growing with the step."""
    embeddings = import_peer("diffusers.models.embeddings")
    t = torch.tensor([0.0, 1.0, 7.0, 123.5, 999.0], dtype=torch.float64)
    theirs = embeddings.get_timestep_embedding(t, dim).double()
    ours = timestep_embedding(t, dim)
    atol = 4 * torch.finfo(torch.float32).eps * t.abs().max().item() + 1e-7
    torch.testing.assert_close(ours, theirs, rtol=0, atol=atol)


def _diffusers_formula(t: torch.Tensor, dim: int, flip: bool, shift: float, scale: float, period: float) -> torch.Tensor:
    """diffusers' get_timestep_embedding transcribed in float64: exp(-ln(P) i / (half - shift)) * t * scale,
    [sin, cos] (flipped: [cos, sin]), one zero appended for an odd width."""
    half = dim // 2
    freqs = torch.exp(-math.log(period) * torch.arange(half, dtype=torch.float64) / (half - shift))
    theta = scale * t.double()[:, None] * freqs[None]
    emb = torch.cat([theta.cos(), theta.sin()] if flip else [theta.sin(), theta.cos()], dim=-1)
    return torch.nn.functional.pad(emb, (0, 1)) if dim % 2 else emb


@pytest.mark.parametrize("dim", [8, 9, 32])
@pytest.mark.parametrize("flip, shift, scale, period", [(True, 0.0, 1.0, 10000.0), (False, 0.0, 1000.0, 10000.0),
                                                        (True, 1.0, 2.0, 100.0), (False, 0.5, 1.0, 10000.0)])
def test_diffusers_options_match_the_formula_and_diffusers(dim, flip, shift, scale, period):
    # Stable Diffusion's U-Net embeds with flip_sin_to_cos=True, downscale_freq_shift=0 (DDPM's: False, 1)
    t = torch.tensor([0.0, 1.0, 17.0, 999.0, 0.25], dtype=torch.float64)
    options = {"flip_sin_to_cos": flip, "downscale_freq_shift": shift, "scale": scale, "max_period": period}
    got = timestep_embedding(t, dim, **options)
    # float64 angles of up to scale * 999 rad: exact to about 1e-16 of that
    torch.testing.assert_close(got, _diffusers_formula(t, dim, flip, shift, scale, period), rtol=0, atol=1e-12 * scale * 1e3)
    embeddings = import_peer("diffusers.models.embeddings")
    theirs = embeddings.get_timestep_embedding(t.float(), dim, flip_sin_to_cos=flip, downscale_freq_shift=shift,
                                               scale=scale, max_period=period)
    torch.testing.assert_close(got.float(), theirs, rtol=0, atol=2e-3 * max(1.0, scale))  # theirs: float32 angles
    module = TimestepEmbedding(dim, 8, **options).double()
    torch.testing.assert_close(module.encode(t), got, rtol=0, atol=0)


@pytest.mark.parametrize("dim", [2, 3])
def test_two_or_three_wide_with_shift_zero_as_diffusers(dim):
    # diffusers' get_timestep_embedding takes dim 2 or 3 when downscale_freq_shift leaves dim // 2 - shift > 0
    t = torch.tensor([0.0, 1.0, 17.0, 999.0], dtype=torch.float64)
    got = timestep_embedding(t, dim, downscale_freq_shift=0.0, flip_sin_to_cos=True)
    torch.testing.assert_close(got, _diffusers_formula(t, dim, True, 0.0, 1.0, 10000.0), rtol=0, atol=1e-12)
    embeddings = import_peer("diffusers.models.embeddings")
    theirs = embeddings.get_timestep_embedding(t.float(), dim, flip_sin_to_cos=True, downscale_freq_shift=0)
    torch.testing.assert_close(got.float(), theirs, rtol=0, atol=2e-3)
    assert TimestepEmbedding(dim, 4, downscale_freq_shift=0.0)(t).shape == (4, 4)


def test_defaults_are_ddpm_and_bad_options_are_refused_by_name():
    t = torch.arange(5)
    torch.testing.assert_close(timestep_embedding(t, 8, downscale_freq_shift=1.0, max_period=10000.0), timestep_embedding(t, 8))
    with pytest.raises(ValueError, match="`downscale_freq_shift` must be below dim // 2 = 4"):
        timestep_embedding(t, 8, downscale_freq_shift=4)
    with pytest.raises(TypeError, match="`flip_sin_to_cos` must be True or False"):
        TimestepEmbedding(8, flip_sin_to_cos="yes")
    with pytest.raises(ValueError, match="`max_period` must be > 0"):
        timestep_embedding(t, 8, max_period=0.0)
    assert "flip_sin_to_cos=True" in repr(TimestepEmbedding(8, flip_sin_to_cos=True, downscale_freq_shift=0))


def test_frequencies_refuse_a_width_past_memory():
    # timestep_frequencies(10**13) reached the CPU allocator ('you tried to allocate 40000000000000 bytes')
    from posenc.step import timestep_frequencies

    with pytest.raises(ValueError, match=r"`dim`=10000000000000 needs a \(5000000000000,\) torch.float64 tensor"):
        timestep_frequencies(10**13)
