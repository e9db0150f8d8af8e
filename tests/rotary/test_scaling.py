"""RoPE context-extension scalings against float64 transcriptions of their published formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from posenc.core.positions import Positions
from posenc.rotary import RopeScaling, RotaryPositionEncoding
from rotary.test_rope import reference


def base_inv_freq(d, base):
    return np.array([base ** (-2 * i / d) for i in range(d // 2)])


def yarn_reference(d, base, factor, original, beta_fast=32.0, beta_slow=1.0):
    """YaRN (Peng et al. 2023, section 3.2 and appendix): blend by a ramp over bands, written per band."""

    def band_for(rotations):
        return d * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = max(math.floor(band_for(beta_fast)), 0), min(math.ceil(band_for(beta_slow)), d - 1)
    out = []
    for i in range(d // 2):
        theta = base ** (-2 * i / d)
        ramp = min(max((i - low) / (high - low), 0.0), 1.0)  # 0 keeps the original frequency
        out.append(theta * (1 - ramp) + (theta / factor) * ramp)
    return np.array(out), 0.1 * math.log(factor) + 1.0


def test_linear_is_position_interpolation():
    got = RopeScaling("linear", 4.0).inverse_frequencies(16, 10000.0)
    np.testing.assert_allclose(got.numpy(), base_inv_freq(16, 10000.0) / 4.0, rtol=1e-12)


def test_ntk_scales_the_base():
    got = RopeScaling("ntk", 8.0).inverse_frequencies(16, 10000.0)
    np.testing.assert_allclose(got.numpy(), base_inv_freq(16, 10000.0 * 8.0 ** (16 / 14)), rtol=1e-12)


@pytest.mark.parametrize("seq_len, expect_base", [(100, 10000.0), (512, 10000.0), (1024, 10000.0 * 3.0 ** (16 / 14))])
def test_dynamic_ntk_base_follows_length(seq_len, expect_base):
    scaling = RopeScaling("dynamic_ntk", 2.0, original_max_len=512)
    # factor * L / L0 - (factor - 1) = 2 * 1024 / 512 - 1 = 3
    got = scaling.inverse_frequencies(16, 10000.0, seq_len=seq_len)
    np.testing.assert_allclose(got.numpy(), base_inv_freq(16, expect_base), rtol=1e-12)
    as_tensor = scaling.inverse_frequencies(16, 10000.0, seq_len=torch.tensor(seq_len))
    np.testing.assert_allclose(as_tensor.numpy(), got.numpy(), rtol=1e-12)


def test_yarn_matches_reference():
    got = RopeScaling("yarn", 4.0, original_max_len=2048).inverse_frequencies(64, 10000.0)
    ref, mscale = yarn_reference(64, 10000.0, 4.0, 2048)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)
    assert RopeScaling("yarn", 4.0, original_max_len=2048).attention_factor == pytest.approx(mscale)
    # the fastest band is kept, the slowest fully interpolated
    assert got[0].item() == pytest.approx(1.0) and got[-1].item() == pytest.approx(ref[-1])


def test_module_applies_yarn_attention_factor():
    rope = RotaryPositionEncoding(8, scaling="yarn", factor=4.0, original_max_len=64)
    x = torch.randn(1, 1, 3, 8, dtype=torch.float64)
    ref_freq, mscale = yarn_reference(8, 10000.0, 4.0, 64)
    got = rope(x, offset=10)
    np.testing.assert_allclose(got.numpy(), reference(x.numpy(), range(10, 13), inv_freq=ref_freq, scale=mscale), atol=1e-6)


def test_dynamic_ntk_module_implicit_explicit_agree_and_no_change_within_original_length():
    rope = RotaryPositionEncoding(8, scaling="dynamic_ntk", factor=2.0, original_max_len=16)
    plain = RotaryPositionEncoding(8)
    x = torch.randn(1, 1, 12, 8)
    torch.testing.assert_close(rope(x), plain(x))  # within the trained length nothing changes
    long = torch.randn(1, 1, 40, 8)
    torch.testing.assert_close(rope(long), rope(long, positions=torch.arange(40)))
    assert not torch.allclose(rope(long), plain(long))
    cos, _ = rope.cos_sin(Positions(40))
    assert cos.shape == (1, 40, 4)


# --- Llama 3.1, LongRoPE, YaRN's options, derived factor, grow-only dynamic NTK --------------------


def llama3_reference(d, base, factor, low, high, original):
    """Llama 3.1's frequency scaling, written band by band from Meta's published rule."""
    out, regions = [], set()
    for freq in base_inv_freq(d, base):
        wavelength = 2 * math.pi / freq
        if wavelength < original / high:  # fast bands: unchanged
            out.append(freq), regions.add("kept")
        elif wavelength > original / low:  # slow bands: interpolated
            out.append(freq / factor), regions.add("interpolated")
        else:  # between: blend by where the wavelength sits in the band
            smooth = (original / wavelength - low) / (high - low)
            out.append((1 - smooth) * freq / factor + smooth * freq), regions.add("blended")
    return np.array(out), regions


def test_llama3_matches_reference_in_all_three_bands():
    got = RopeScaling("llama3", 8.0, original_max_len=8192, low_freq_factor=1.0, high_freq_factor=4.0)
    ref, regions = llama3_reference(32, 500000.0, 8.0, 1.0, 4.0, 8192)
    assert regions == {"kept", "interpolated", "blended"}
    np.testing.assert_allclose(got.inverse_frequencies(32, 500000.0).numpy(), ref, rtol=1e-12)
    assert got.attention_factor == 1.0


def longrope_reference(d, base, short, long, original, seq_len, max_len):
    """LongRoPE (Ding et al. 2024, eq. 3 with per-dimension rescale lambda_i) and Phi-3's temperature."""
    lam = long if seq_len > original else short
    inv = [1.0 / (lam[i] * base ** (2 * i / d)) for i in range(d // 2)]
    s = max_len / original
    return np.array(inv), math.sqrt(1 + math.log(s) / math.log(original))


@pytest.mark.parametrize("seq_len", [100, 4096, 4097, 9000])
def test_longrope_switches_at_original_length(seq_len):
    short, long = [1.0, 1.1, 1.3, 2.0], [1.0, 1.5, 3.0, 6.5]
    scaling = RopeScaling("longrope", original_max_len=4096, short_factor=short, long_factor=long, max_len=131072)
    ref, attention = longrope_reference(8, 10000.0, short, long, 4096, seq_len, 131072)
    np.testing.assert_allclose(scaling.inverse_frequencies(8, 10000.0, seq_len=seq_len).numpy(), ref, rtol=1e-12)
    as_tensor = scaling.inverse_frequencies(8, 10000.0, seq_len=torch.tensor(seq_len))
    np.testing.assert_allclose(as_tensor.numpy(), ref, rtol=1e-12)
    assert scaling.factor == 32.0 and scaling.attention_factor == pytest.approx(attention, rel=1e-14)
    assert RopeScaling("longrope", original_max_len=4096, short_factor=short, long_factor=long,
                       max_len=131072, attention_factor=1.25).attention_factor == 1.25


def test_longrope_module_uses_long_factors_past_original_length_implicit_and_explicit():
    short, long = [1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 4.0, 8.0]
    rope = RotaryPositionEncoding(8, scaling="longrope", original_max_len=16, short_factor=short, long_factor=long, max_len=64)
    x = torch.randn(1, 1, 20, 8, dtype=torch.float64)
    for n in (10, 20):
        inv, attention = longrope_reference(8, 10000.0, short, long, 16, n, 64)
        want = reference(x[..., :n, :].numpy(), range(n), inv_freq=inv, scale=attention)
        np.testing.assert_allclose(rope(x[..., :n, :]).numpy(), want, atol=1e-6)
        np.testing.assert_allclose(rope(x[..., :n, :], positions=torch.arange(n)).numpy(), want, atol=1e-12)


@pytest.mark.parametrize("truncate", [True, False])
@pytest.mark.parametrize("mscale, mscale_all_dim", [(1.0, 0.0), (0.707, 0.707), (1.0, 0.8)])
def test_yarn_options_match_reference(truncate, mscale, mscale_all_dim):
    d, base, factor, original = 64, 150000.0, 40.0, 4096

    def band_for(rotations):
        return d * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = band_for(32.0), band_for(1.0)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, d - 1)
    ref = []
    for i, theta in enumerate(base_inv_freq(d, base)):
        ramp = min(max((i - low) / (high - low), 0.0), 1.0)
        ref.append(theta * (1 - ramp) + (theta / factor) * ramp)

    def m(a):  # DeepSeek-V3's yarn_get_mscale
        return 0.1 * a * math.log(factor) + 1.0

    scaling = RopeScaling("yarn", factor, original, truncate=truncate, mscale=mscale, mscale_all_dim=mscale_all_dim)
    np.testing.assert_allclose(scaling.inverse_frequencies(d, base).numpy(), np.array(ref), rtol=1e-12)
    assert scaling.attention_factor == pytest.approx(m(mscale) / m(mscale_all_dim), rel=1e-14)
    if not truncate:  # the un-truncated ramp differs from the truncated one
        assert not np.allclose(RopeScaling("yarn", factor, original).inverse_frequencies(d, base).numpy(), ref)


def test_yarn_attention_factor_override_and_derived_factor():
    assert RopeScaling("yarn", 4.0, 2048, attention_factor=1.5).attention_factor == 1.5
    derived = RopeScaling("yarn", original_max_len=4096, max_len=163840)
    assert derived.factor == 40.0
    np.testing.assert_allclose(
        derived.inverse_frequencies(16, 10000.0).numpy(), RopeScaling("yarn", 40.0, 4096).inverse_frequencies(16, 10000.0).numpy()
    )
    rope = RotaryPositionEncoding(16, scaling="yarn", original_max_len=4096, max_len=163840)
    assert rope.scaling.factor == 40.0


def test_dynamic_ntk_grow_only_keeps_the_longest_base_until_a_short_sequence():
    kw = {"scaling": "dynamic_ntk", "factor": 2.0, "original_max_len": 16}
    grow = RotaryPositionEncoding(8, dynamic_update="grow_only", **kw)
    fresh = RotaryPositionEncoding(8, **kw)
    long, mid, short = torch.randn(1, 1, 40, 8), torch.randn(1, 1, 24, 8), torch.randn(1, 1, 8, 8)
    torch.testing.assert_close(grow(long), fresh(long))
    # a shorter sequence still past L0: the base of length 40 stays
    inv40 = RopeScaling(kind="dynamic_ntk", factor=2.0, original_max_len=16).inverse_frequencies(8, 10000.0, seq_len=40)
    want = reference(mid.double().numpy(), range(24), inv_freq=inv40.numpy())
    np.testing.assert_allclose(grow(mid).numpy(), want, atol=1e-5)
    np.testing.assert_allclose(grow(mid, positions=torch.arange(24)).numpy(), want, atol=1e-5)
    assert not torch.allclose(fresh(mid), grow(mid))
    # a sequence shorter than L0 resets to the trained base
    torch.testing.assert_close(grow(short), RotaryPositionEncoding(8)(short))
    torch.testing.assert_close(grow(mid), fresh(mid))


def test_compiled_grow_only_advances_the_longest_length_for_implicit_positions_only():
    """What the RotaryPositionEncoding docstring and README state: under torch.compile, explicit positions
    read the longest length without advancing it; implicit positions advance it as in eager mode."""
    kw = {"scaling": "dynamic_ntk", "factor": 2.0, "original_max_len": 8, "dynamic_update": "grow_only"}
    for explicit in (False, True):
        torch._dynamo.reset()
        eager, compiled = RotaryPositionEncoding(8, **kw), RotaryPositionEncoding(8, **kw)

        def rotate(x, pos, module=compiled, explicit=explicit):
            return module(x, positions=pos) if explicit else module(x)

        step = torch.compile(rotate, fullgraph=True, backend="eager")
        long, mid = torch.randn(1, 1, 20, 8), torch.randn(1, 1, 12, 8)
        torch.testing.assert_close(step(long, torch.arange(20)), rotate(long, torch.arange(20), eager))
        assert compiled._longest_len == (8 if explicit else 20)
        own_length = RotaryPositionEncoding(8, **{**kw, "dynamic_update": "recompute"})(mid)
        want = own_length if explicit else rotate(mid, torch.arange(12), eager)
        torch.testing.assert_close(step(mid, torch.arange(12)), want)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"scaling": "longrope", "original_max_len": 8, "short_factor": [1.0] * 3, "long_factor": [1.0] * 3}, "short_factor"),
        ({"scaling": "longrope", "original_max_len": 8, "short_factor": [1.0] * 4, "long_factor": [1.0] * 3}, "long_factor"),
        ({"scaling": "longrope", "original_max_len": 8, "long_factor": [1.0] * 4}, "short_factor"),
        ({"scaling": "longrope", "original_max_len": 8, "short_factor": [1.0, -1.0, 1, 1], "long_factor": [1.0] * 4}, "short_factor"),
        ({"scaling": "llama3", "factor": 8.0}, "original_max_len"),
        ({"scaling": "llama3", "factor": 8.0, "original_max_len": 8, "low_freq_factor": 4.0, "high_freq_factor": 1.0}, "high_freq_factor"),
        ({"scaling": "linear", "factor": 2.0, "attention_factor": 2.0}, "attention_factor"),
        ({"scaling": "linear", "short_factor": [1.0] * 4}, "short_factor"),
        ({"scaling": "yarn", "original_max_len": 64, "max_len": 32}, "max_len"),
        ({"scaling": "dynamic_ntk", "factor": 2.0, "original_max_len": 8, "dynamic_update": "sometimes"}, "dynamic_update"),
        ({"scaling": "llama4"}, "scaling"),
        ({"p": 1.5}, "p"),
        ({"scaling": "yarn", "factor": 4.0, "original_max_len": 64, "base": 1.0}, "base"),
        ({"scaling": "yarn", "factor": 4.0, "original_max_len": 64, "base": 0.5}, "base"),
        # a factor without a scaling used to be ignored (and exported to transformers as 'proportional' with it)
        ({"factor": 4.0}, "factor"),
        ({"max_len": 64, "original_max_len": 16}, "factor"),
        # LongRoPE's attention factor divides by ln(original_max_len)
        ({"scaling": "longrope", "original_max_len": 1, "max_len": 4, "short_factor": [1.0] * 4,
          "long_factor": [1.0] * 4}, "original_max_len"),
        # another kind's parameter, and a max_len with no original_max_len to divide it by, used to be ignored
        ({"scaling": "longrope", "original_max_len": 8, "max_len": 32, "short_factor": [1.0] * 4,
          "long_factor": [1.0] * 4, "mscale": 0.707, "mscale_all_dim": 0.707}, "`mscale`=0.707 is scaling='yarn'"),
        ({"scaling": "llama3", "factor": 8.0, "original_max_len": 8, "beta_fast": 16.0}, "`beta_fast`"),
        ({"scaling": "yarn", "factor": 4.0, "original_max_len": 8, "low_freq_factor": 2.0}, "`low_freq_factor`"),
        ({"scaling": "linear", "factor": 2.0, "truncate": False}, "`truncate`"),
        ({"scaling": "yarn", "factor": 4.0, "original_max_len": 8, "dynamic_update": "grow_only"}, "`dynamic_update`"),
        ({"scaling": "linear", "max_len": 4096}, "`max_len`=4096 gives the factor"),
        ({"scaling": "ntk", "max_len": 4096}, "`max_len`=4096 gives the factor"),
    ],
)
def test_bad_scaling_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RotaryPositionEncoding(8, **kwargs)


def test_unknown_scaling_lists_the_known_ones():
    with pytest.raises(ValueError, match="llama3.*longrope"):
        RopeScaling("su")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scaling": "llama3", "factor": 8.0, "original_max_len": 64},
        {"scaling": "yarn", "factor": 4.0, "original_max_len": 64, "truncate": False, "mscale": 0.7, "mscale_all_dim": 0.7},
        {"scaling": "linear", "factor": 2.0, "p": 0.5},
    ],
)
def test_transformer_by_name_cached_decoding_and_explicit_positions(kwargs):
    from posenc.models import Transformer

    torch.manual_seed(0)
    model = Transformer(16, 32, 1, 2, position="rope", causal=True, **kwargs).eval()
    tokens = torch.randint(0, 16, (2, 9))
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_cache()
        steps = [model(tokens[:, :3], cache=cache)] + [model(tokens[:, t : t + 1], cache=cache) for t in range(3, 9)]
        torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
        torch.testing.assert_close(model(tokens, positions=torch.arange(9)), full)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scaling": "llama3", "factor": 8.0, "original_max_len": 8192},
        {"scaling": "longrope", "original_max_len": 4096, "max_len": 131072, "short_factor": [1.0, 1.2, 1.5, 2.0], "long_factor": [1.0, 2.0, 4.0, 9.0]},
        {"scaling": "yarn", "factor": 32.0, "original_max_len": 4096, "truncate": False},
    ],
)
def test_scaled_rope_exact_at_a_million_in_bf16(kwargs):
    rope = RotaryPositionEncoding(8, **kwargs).to(torch.bfloat16)
    assert rope.cos_cached.dtype == torch.float32
    x = torch.randn(1, 1, 3, 8)
    pos = [999_998, 999_999, 1_000_000]
    inv = rope.scaling.inverse_frequencies(8, 10000.0, seq_len=1_000_001).numpy()
    want = reference(x.double().numpy(), pos, inv_freq=inv, scale=rope.scaling.attention_factor)
    for got in (rope(x.bfloat16(), offset=999_998), rope(x.bfloat16(), positions=torch.tensor(pos))):
        np.testing.assert_allclose(got.double().numpy(), want, atol=2e-2 * float(np.abs(want).max()), rtol=0)
        assert got.dtype == torch.bfloat16


def test_compiled_llama3_and_longrope_match_eager():
    torch._dynamo.reset()
    for kwargs in (
        {"scaling": "llama3", "factor": 8.0, "original_max_len": 8},
        {"scaling": "longrope", "original_max_len": 8, "short_factor": [1.0] * 4, "long_factor": [1.0, 2.0, 3.0, 4.0]},
        {"scaling": "dynamic_ntk", "factor": 2.0, "original_max_len": 8, "dynamic_update": "grow_only"},
    ):
        rope = RotaryPositionEncoding(8, **kwargs)
        x, p = torch.randn(1, 2, 12, 8), torch.arange(12)
        eager = rope(x, positions=p)
        explicit = torch.compile(lambda x, p, rope=rope: rope(x, positions=p), fullgraph=True)
        torch.testing.assert_close(explicit(x, p), eager)
        if kwargs["scaling"] == "llama3":  # the cached-table path (the others' is dynamic NTK's, tested elsewhere)
            implicit = torch.compile(lambda x, rope=rope: rope(x), fullgraph=True)
            torch.testing.assert_close(implicit(x), eager)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scaling": "llama3", "factor": 8.0, "original_max_len": 64},
        {"scaling": "longrope", "original_max_len": 8, "max_len": 32, "short_factor": [1.0, 1.1, 1.2, 1.5], "long_factor": [1.0, 2.0, 4.0, 8.0]},
        {"scaling": "yarn", "original_max_len": 16, "max_len": 64, "truncate": False, "attention_factor": 1.3},
        {"scaling": "dynamic_ntk", "factor": 3.0, "original_max_len": 8},
    ],
)
def test_functional_apply_scaled_rope_equals_the_module(kwargs):
    from posenc.functional import apply_scaled_rope

    x = torch.randn(2, 2, 12, 8, dtype=torch.float64)
    pos = torch.arange(12)
    want = RotaryPositionEncoding(8, **kwargs)(x, positions=pos)
    torch.testing.assert_close(apply_scaled_rope(x, pos, **kwargs), want)
    scaling = RotaryPositionEncoding(8, **kwargs).scaling
    torch.testing.assert_close(apply_scaled_rope(x, pos, scaling=scaling), want)
    with pytest.raises(ValueError, match="short_factor"):
        apply_scaled_rope(x, pos, scaling="longrope", original_max_len=8, short_factor=[1.0], long_factor=[1.0])


def test_empty_sequences_with_length_dependent_scalings():
    for kwargs in (
        {"scaling": "longrope", "original_max_len": 8, "short_factor": [1.0] * 4, "long_factor": [2.0] * 4},
        {"scaling": "dynamic_ntk", "factor": 2.0, "original_max_len": 8, "dynamic_update": "grow_only"},
    ):
        rope = RotaryPositionEncoding(8, **kwargs)
        empty = torch.randn(2, 1, 0, 8)
        assert rope(empty, positions=torch.zeros(0, dtype=torch.long)).shape == empty.shape
        assert rope(empty, offset=5).shape == empty.shape


def test_dynamic_ntk_with_factor_one_still_stretches_past_the_original_length():
    """factor=1 makes the NTK ratio L / L0: no change up to L0, a larger base beyond (transformers'
    formula). The cached table was once built for its own length (256) and reused for short inputs."""
    for update in ("recompute", "grow_only"):
        rope = RotaryPositionEncoding(8, scaling="dynamic_ntk", factor=1.0, original_max_len=16, dynamic_update=update)
        plain = RotaryPositionEncoding(8)
        x = torch.randn(1, 1, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(rope(x), plain(x))
        torch.testing.assert_close(rope(x.float(), positions=torch.arange(5)), plain(x.float()))
        long = torch.randn(1, 1, 40, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        base = 10000.0 * (40 / 16) ** (8 / 6)
        want = reference(long.numpy(), range(40), inv_freq=base_inv_freq(8, base))
        np.testing.assert_allclose(rope(long).numpy(), want, atol=1e-10)
        if update == "recompute":
            np.testing.assert_allclose(rope(long.float()).numpy(), want, atol=1e-5)
        from posenc.functional import apply_scaled_rope

        got = apply_scaled_rope(long, torch.arange(40), scaling="dynamic_ntk", factor=1.0, original_max_len=16)
        np.testing.assert_allclose(got.numpy(), want, atol=1e-10)


def test_stateless_apply_scaled_rope_refuses_grow_only():
    # grow-only keeps the longest length seen between calls: the function once took it as 'recompute'
    from posenc.rotary.scaled import apply_scaled_rope

    x = torch.randn(1, 1, 4, 8)
    kwargs = {"scaling": "dynamic_ntk", "factor": 2.0, "original_max_len": 2}
    with pytest.raises(ValueError, match="`dynamic_update`='grow_only'.*RotaryPositionEncoding"):
        apply_scaled_rope(x, torch.arange(4), dynamic_update="grow_only", **kwargs)
    assert apply_scaled_rope(x, torch.arange(4), dynamic_update="recompute", **kwargs).shape == x.shape


@pytest.mark.parametrize("scaling", ["dynamic_ntk", "longrope"])
@pytest.mark.parametrize(
    ("seq_len", "error"),
    [("4096", TypeError), (1.5, TypeError), (float("nan"), TypeError), (True, TypeError), (-1, ValueError),
     (torch.tensor([3, 4]), ValueError), (torch.tensor(True), ValueError)],
)
def test_rope_frequencies_refuses_a_bad_seq_len_by_name(scaling, seq_len, error):
    # seq_len went unchecked: a string failed inside the arithmetic ("can't multiply sequence by non-int"),
    # a (2,) tensor inside a broadcast, and -1, 1.5, NaN or True gave frequencies without a word
    from posenc.functional import rope_frequencies

    kwargs = {"factor": 4.0, "original_max_len": 16}
    if scaling == "longrope":
        kwargs.update(short_factor=[1.0] * 4, long_factor=[2.0] * 4)
    with pytest.raises(error, match="`seq_len`"):
        rope_frequencies(8, scaling=scaling, seq_len=seq_len, **kwargs)
    for good in (None, 0, 40, torch.tensor(40), torch.tensor(40.0)):
        inv_freq, _ = rope_frequencies(8, scaling=scaling, seq_len=good, **kwargs)
        assert inv_freq.shape == (4,)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scaling": "dynamic_ntk", "factor": 2.0, "original_max_len": 16},
        {"scaling": "longrope", "factor": 4.0, "original_max_len": 16, "short_factor": [1.0] * 4, "long_factor": [3.0] * 4},
    ],
)
@pytest.mark.parametrize(("dtype", "last"), [(torch.uint8, 255), (torch.int8, 127), (torch.int16, 32767), (torch.int32, 2**31 - 1)])
def test_length_past_the_largest_position_does_not_wrap_in_narrow_integer_dtypes(kwargs, dtype, last):
    """The length a length-dependent scaling sees was amax() + 1 in the positions' own dtype, which wraps
    at its largest value (uint8 255 + 1 = 0, int32 2**31 - 1 + 1 = -2**31): such positions got the
    unscaled base or the short factors (off by up to 4.6 after rotation) where int64 ones get the long ones."""
    from posenc.functional import apply_scaled_rope

    x = torch.randn(1, 1, 2, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    wide = torch.tensor([last - 1, last])
    rope = RotaryPositionEncoding(8, **kwargs)
    want = rope(x, positions=wide)
    torch.testing.assert_close(apply_scaled_rope(x, wide.to(dtype), **kwargs), want)
    torch.testing.assert_close(rope(x, positions=wide.to(dtype)), want)
    q, k = rope.rotate(x[:, :, 1:], x, q_positions=Positions(1, explicit=wide[None, 1:].to(dtype)),
                       k_positions=Positions(2, explicit=wide[None].to(dtype)))
    torch.testing.assert_close(k, want)
    torch.testing.assert_close(q, want[:, :, 1:])
