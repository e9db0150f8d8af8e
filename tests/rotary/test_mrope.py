"""M-RoPE: float64 transcription, the chunked and interleaved layouts, parity with transformers'
Qwen2-VL and Qwen3-VL rotary embeddings, text ids reducing to 1-D RoPE, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from posenc.functional import apply_mrope, apply_rope
from posenc.rotary.mrope import mrope_axis_of_frequency, mrope_cos_sin


def reference_mrope(x: torch.Tensor, ids, sections, layout: str, base: float) -> torch.Tensor:
    """x (1, h, n, d); ids: per token (t, h, w). Split-halves pairs; axis per frequency from the layout."""
    d = x.shape[-1]
    half = d // 2
    if layout == "chunked":
        axis = [a for a, s in enumerate(sections) for _ in range(s)]
    else:  # time, height, width in turn while each axis has frequencies left in its 3-cycle range
        axis = [1 if j % 3 == 1 and j < 3 * sections[1] else 2 if j % 3 == 2 and j < 3 * sections[2] else 0 for j in range(half)]
    out = x.clone()
    for t, p in enumerate(ids):
        for j in range(half):
            angle = p[axis[j]] * base ** (-2 * j / d)
            c, s = math.cos(angle), math.sin(angle)
            a0, a1 = x[..., t, j], x[..., t, j + half]
            out[..., t, j] = c * a0 - s * a1
            out[..., t, j + half] = s * a0 + c * a1
    return out


def test_axis_layouts():
    assert mrope_axis_of_frequency((2, 1, 1), "chunked") == [0, 0, 1, 2]
    assert mrope_axis_of_frequency((3, 2, 2), "interleaved") == [0, 1, 2, 0, 1, 2, 0]
    assert mrope_axis_of_frequency((4, 1, 1), "interleaved") == [0, 1, 2, 0, 0, 0]


@pytest.mark.parametrize("layout, sections", [("chunked", (2, 3, 3)), ("interleaved", (4, 2, 2)), ("interleaved", (2, 3, 3))])
def test_matches_float64_reference(layout, sections):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 6, 16, dtype=torch.float64, generator=g)
    ids = torch.randint(0, 5000, (3, 1, 6), generator=g)
    ref = reference_mrope(x, ids[:, 0].T.tolist(), sections, layout, 10000.0)
    out = apply_mrope(x, ids, mrope_section=sections, layout=layout)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    out32 = apply_mrope(x.float(), ids, mrope_section=sections, layout=layout)
    torch.testing.assert_close(out32.double(), ref, rtol=0, atol=2e-6)


@pytest.mark.parametrize("layout", ["chunked", "interleaved"])
def test_equal_ids_are_1d_rope(layout):
    x = torch.randn(2, 2, 7, 16)
    pos = torch.arange(3, 10)
    out = apply_mrope(x, pos.expand(3, 1, -1), mrope_section=(4, 2, 2), layout=layout)
    torch.testing.assert_close(out, apply_rope(x, pos), rtol=0, atol=1e-6)


def test_partial_rotary_and_batch():
    x = torch.randn(2, 1, 4, 12)
    ids = torch.randint(0, 20, (3, 2, 4))
    out = apply_mrope(x, ids, mrope_section=(2, 1, 1), rotary_dim=8)
    torch.testing.assert_close(out[..., 8:], x[..., 8:], rtol=0, atol=0)
    for i in range(2):
        torch.testing.assert_close(out[i : i + 1], apply_mrope(x[i : i + 1], ids[:, i : i + 1], mrope_section=(2, 1, 1), rotary_dim=8))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 500), min_size=3, max_size=3), st.lists(st.integers(-50, 50), min_size=3, max_size=3))
def test_logit_depends_only_on_the_id_difference(p, delta):
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(2, 16, dtype=torch.float64, generator=g)

    def logit(pq, pk):
        both = torch.stack([q, k]).view(1, 1, 2, 16)
        ids = torch.tensor([pq, pk], dtype=torch.float64).T.unsqueeze(1)
        rq, rk = apply_mrope(both, ids, mrope_section=(4, 2, 2), layout="interleaved")[0, 0]
        return float(rq @ rk)

    shifted = [a + b for a, b in zip(p, delta)]
    assert logit(shifted, p) == pytest.approx(logit(delta, [0, 0, 0]), abs=1e-9)


def test_compiles_fullgraph():
    x, ids = torch.randn(1, 2, 4, 8), torch.randint(0, 9, (3, 1, 4))
    f = lambda a, p: apply_mrope(a, p, mrope_section=(2, 1, 1), layout="interleaved")
    torch.testing.assert_close(torch.compile(f, fullgraph=True, backend="eager")(x, ids), f(x, ids))


def test_empty_sequence():
    assert apply_mrope(torch.zeros(1, 1, 0, 8), torch.zeros(3, 1, 0, dtype=torch.long), mrope_section=(2, 1, 1)).shape == (1, 1, 0, 8)


@pytest.mark.parametrize(
    "kwargs, ids, name",
    [
        ({"mrope_section": (2, 1, 2)}, None, "mrope_section"),
        ({"mrope_section": (2, 2)}, None, "mrope_section"),
        ({"mrope_section": (2, 1, 1), "layout": "zigzag"}, None, "layout"),
        ({"mrope_section": (2, 1, 1), "rotary_dim": 12}, None, "rotary_dim"),
        ({"mrope_section": (2, 1, 1)}, torch.zeros(1, 4, dtype=torch.long), "position_ids"),
        ({"mrope_section": (2, 1, 1)}, torch.zeros(2, 1, 4, dtype=torch.long), "position_ids"),
        ({"mrope_section": (2, 1, 1)}, torch.zeros(3, 1, 5, dtype=torch.long), "position_ids"),
        ({"mrope_section": (2, 1, 1)}, torch.zeros(3, 3, 4, dtype=torch.long), "position_ids"),
        ({"mrope_section": (2, 1, 1)}, torch.zeros(3, 1, 4, dtype=torch.float16), "position_ids"),
        ({"mrope_section": (2, 1, 1), "attention_scaling": -1.0}, None, "attention_scaling"),
        ({"mrope_section": (2, 1, 1), "attention_scaling": 0.0}, None, "attention_scaling"),
    ],
)
def test_bad_input_names_the_argument(kwargs, ids, name):
    x = torch.randn(2, 1, 4, 8)
    ids = torch.zeros(3, 1, 4, dtype=torch.long) if ids is None else ids
    with pytest.raises((ValueError, TypeError), match=name):
        apply_mrope(x, ids, **kwargs)


@pytest.mark.parametrize("layout", ["chunked", "interleaved"])
def test_a_section_sum_far_past_the_width_is_refused_before_building_its_axes(layout):
    """mrope_section=(10**12, 1, 1) once raised a bare MemoryError: a list of one axis per frequency was
    built before the sum was compared with the rotated width."""
    with pytest.raises(ValueError, match="`mrope_section`.*sums to 1000000000002 frequencies"):
        apply_mrope(torch.randn(1, 1, 4, 8), torch.zeros(3, 1, 4, dtype=torch.long),
                    mrope_section=(10**12, 1, 1), layout=layout)


# -- parity with transformers -----------------------------------------------------------------------------
@pytest.mark.parametrize("model, sections", [("qwen2_vl", [4, 6, 6]), ("qwen3_vl", [6, 5, 5])])
def test_matches_transformers(model, sections):
    modeling = pytest.importorskip(f"transformers.models.{model}.modeling_{model}")
    configuration = pytest.importorskip(f"transformers.models.{model}.configuration_{model}")
    if model == "qwen2_vl":
        Config, Rotary, layout = configuration.Qwen2VLTextConfig, modeling.Qwen2VLRotaryEmbedding, "chunked"
    else:
        Config, Rotary, layout = configuration.Qwen3VLTextConfig, modeling.Qwen3VLTextRotaryEmbedding, "interleaved"
    rope = {"rope_type": "default", "rope_theta": 1000.0, "mrope_section": sections}
    config = Config(hidden_size=64, num_attention_heads=2, head_dim=32, rope_parameters=rope)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 9, 32, generator=g)
    ids = torch.randint(0, 40, (3, 2, 9), generator=g)
    ours = apply_mrope(x, ids, mrope_section=sections, layout=layout, base=1000.0)
    cos, sin = Rotary(config)(x, ids)
    torch.testing.assert_close(ours, modeling.apply_rotary_pos_emb(x, x, cos, sin)[0], rtol=0, atol=1e-5)


def test_bf16_exact_at_large_ids():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 1, 3, 16, dtype=torch.float64, generator=g)
    ids = torch.tensor([[10**6, 999_983, 7], [10**6 - 1, 12, 500_000], [3, 10**6, 250_001]]).unsqueeze(1)
    ref = reference_mrope(x, ids[:, 0].T.tolist(), (4, 2, 2), "chunked", 10000.0)
    out = apply_mrope(x.bfloat16(), ids, mrope_section=(4, 2, 2))
    # the error of bf16 rounding of the input and output alone, not of the angles
    bound = (x.bfloat16().double() - x).abs().max() * 2 + ref.abs().max() * 2**-8
    assert (out.double() - ref).abs().max() <= bound


def test_matches_transformers_qwen3_5_partial_interleaved():
    """Qwen3.5's text rotary: interleaved sections over half the head (``partial_rotary_factor`` 0.5),
    the rest passing through, as ``rotary_dim``; transformers holds cos/sin in float32."""
    transformers = pytest.importorskip("transformers")
    modeling = pytest.importorskip("transformers.models.qwen3_5.modeling_qwen3_5")
    rope = {"rope_type": "default", "rope_theta": 1000.0, "mrope_section": [3, 3, 2], "partial_rotary_factor": 0.5,
            "mrope_interleaved": True}
    config = transformers.Qwen3_5TextConfig(hidden_size=64, num_attention_heads=2, head_dim=32, num_key_value_heads=2,
                                            rope_parameters=rope)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 9, 32, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 40, (3, 2, 9), generator=g)
    cos, sin = modeling.Qwen3_5TextRotaryEmbedding(config)(x.float(), ids)
    want = modeling.apply_rotary_pos_emb(x, x, cos.double(), sin.double())[0]
    got = apply_mrope(x, ids, mrope_section=(3, 3, 2), layout="interleaved", base=1000.0, rotary_dim=16)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype, error", [(torch.int64, ValueError), ("float32", TypeError)])
def test_cos_sin_refuses_a_dtype_that_is_not_a_float_dtype(dtype, error):
    """int64 used to come back as float32 without a word, a string as torch's 'Invalid device string'."""
    ids = torch.arange(4).expand(3, 1, 4)
    with pytest.raises(error, match="dtype"):
        mrope_cos_sin(ids, rotary_dim=8, mrope_section=(2, 1, 1), dtype=dtype)


def test_odd_head_width_is_named_as_the_width_of_x():
    """Without rotary_dim an odd head width used to be reported as '`rotary_dim` must be ... even, got 7'."""
    with pytest.raises(ValueError, match=r"`x.shape\[-1\]` must be a positive even int"):
        apply_mrope(torch.randn(1, 1, 3, 7), torch.zeros(3, 1, 3, dtype=torch.long), mrope_section=(1, 1, 1))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_cos_sin_are_the_float32_values_rounded_once(dtype):
    """mrope_cos_sin(dtype=bf16) took sin/cos of bf16 angles (0.0073 off at position 10^6 where rounding
    once allows 0.002); now the float32 values (with the attention scaling) rounded to the half dtype."""
    ids = torch.stack([torch.arange(10**6, 10**6 + 32) + a for a in range(3)])[:, None]
    kw = {"rotary_dim": 16, "mrope_section": (4, 2, 2), "attention_scaling": 1.25}
    want = mrope_cos_sin(ids, **kw)
    got = mrope_cos_sin(ids, dtype=dtype, **kw)
    assert all(g.dtype == dtype and torch.equal(g, w.to(dtype)) for g, w in zip(got, want))
