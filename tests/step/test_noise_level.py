"""WaveGrad's noise-level embedding against a float64 transcription (Chen et al. 2020, linear scale 5000)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import import_peer
from hypothesis import given
from hypothesis import strategies as st

import posenc
from posenc.functional import noise_level_embedding
from posenc.step import NoiseLevelEmbedding


def reference(levels, dim, scale=5000.0):
    """[sin(scale l / 10000^(i/half)) for i < half] + [cos(...) for i < half] (+ a zero if dim is odd)."""
    half = dim // 2
    out = np.zeros((len(levels), dim))
    for row, level in enumerate(levels):
        for i in range(half):
            angle = scale * level / 10000 ** (i / half)
            out[row, i], out[row, half + i] = math.sin(angle), math.cos(angle)
    return out


@pytest.mark.parametrize("dim", [2, 5, 16, 64])
@pytest.mark.parametrize("scale", [5000.0, 1.0])
def test_matches_float64_reference(dim, scale):
    levels = [0.0, 1e-4, 0.3, 0.999, 1.0]
    got = noise_level_embedding(torch.tensor(levels, dtype=torch.float64), dim, scale=scale)
    assert got.shape == (5, dim) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), reference(levels, dim, scale), atol=1e-12)
    module = NoiseLevelEmbedding(dim, scale=scale)
    out = module(torch.tensor(levels))
    assert module.out_dim == out.shape[-1] == dim and out.dtype == torch.float32
    want32 = reference(torch.tensor(levels).double().tolist(), dim, scale)
    np.testing.assert_allclose(out.numpy(), want32, atol=1e-6)


def test_default_scale_is_5000():
    l = torch.tensor([0.25], dtype=torch.float64)
    torch.testing.assert_close(noise_level_embedding(l, 8), noise_level_embedding(l * 5000, 8, scale=1.0))


@given(level=st.floats(0, 1), scale=st.floats(0.5, 8000))
def test_scale_multiplies_the_level(level, scale):
    a = noise_level_embedding(torch.tensor(level, dtype=torch.float64), 16, scale=scale)
    b = noise_level_embedding(torch.tensor(level * scale, dtype=torch.float64), 16, scale=1.0)
    torch.testing.assert_close(a, b, atol=1e-9, rtol=0)


@given(shape=st.lists(st.integers(1, 3), max_size=3), integer=st.booleans())
def test_int_and_float_levels_of_any_shape(shape, integer):
    level = torch.randint(0, 2, shape) if integer else torch.rand(shape)
    out = NoiseLevelEmbedding(6)(level)
    assert out.shape == (*shape, 6)
    torch.testing.assert_close(out.reshape(-1, 6), noise_level_embedding(level.reshape(-1), 6))
    assert NoiseLevelEmbedding(6)(0.5).shape == (6,)
    assert NoiseLevelEmbedding(6)(1).shape == (6,)


def test_float64_module_embeds_float32_and_integer_levels_in_float64():
    module = NoiseLevelEmbedding(9).to(torch.float64)
    for level in (torch.tensor([0.0, 0.1, 0.5, 0.99999, 1.0]), torch.tensor([0, 1])):
        got = module(level)
        assert got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), reference(level.double().tolist(), 9), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model(dtype):
    module = NoiseLevelEmbedding(32).to(dtype)
    levels = torch.tensor([0.123456789, 0.987654321, 1.0], dtype=torch.float64)
    got = module(levels)
    assert got.dtype == dtype
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(got.double(), torch.from_numpy(reference(levels.tolist(), 32)), atol=eps, rtol=eps)
    # half-precision levels are refused, like half-precision positions everywhere
    with pytest.raises(ValueError, match="`noise_level`"):
        module(levels.to(dtype))


def test_meta_device_and_state_dict():
    module = NoiseLevelEmbedding(8, device="meta")
    assert module.out_dim == 8 and module.state_dict() == {}
    module.to_empty(device="cpu")
    torch.testing.assert_close(module(torch.tensor([0.5])), noise_level_embedding(torch.tensor([0.5]), 8))


def test_registry():
    info = posenc.get("noise_level")
    assert info.family == "step" and "2009.00713" in info.paper
    assert posenc.create("noise_level", dim=12).out_dim == 12


def test_bad_input():
    with pytest.raises(ValueError, match="dim"):
        noise_level_embedding(torch.tensor([0.5]), 1)
    with pytest.raises(ValueError, match="scale"):
        noise_level_embedding(torch.tensor([0.5]), 8, scale=0.0)
    with pytest.raises(ValueError, match="scale"):
        NoiseLevelEmbedding(8, scale=-5000.0)
    with pytest.raises(ValueError, match="noise_level"):
        noise_level_embedding(torch.tensor([True]), 8)
    with pytest.raises(TypeError, match="noise_level"):
        noise_level_embedding([0.5], 8)


@pytest.mark.parametrize("dim", [4, 5, 8, 33, 128])
def test_matches_diffusers_with_scale_and_no_shift(dim):
    """WaveGrad's embedding is diffusers' ``get_timestep_embedding`` of ``5000 l`` with
    ``downscale_freq_shift=0`` (exponent ``i / half``); diffusers forms the angles in float32."""
    embeddings = import_peer("diffusers.models.embeddings")
    levels = torch.tensor([0.0, 0.1, 0.5, 0.999], dtype=torch.float64)
    theirs = embeddings.get_timestep_embedding(levels, dim, downscale_freq_shift=0, scale=5000.0).double()
    ours = noise_level_embedding(levels, dim).double()
    atol = 4 * torch.finfo(torch.float32).eps * 5000.0 + 1e-6
    torch.testing.assert_close(ours, theirs, rtol=0, atol=atol)
