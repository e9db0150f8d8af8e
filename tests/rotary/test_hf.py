"""from_hf_config / to_hf_rope_parameters against transformers' ROPE_INIT_FUNCTIONS (where installed).

transformers forms its frequencies in float32, so they are compared with float32's tolerance; the
attention factors (Python floats on both sides) to 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posenc.core.positions import Positions
from posenc.rotary import RotaryPositionEncoding, from_hf_config, to_hf_rope_parameters

HEAD_DIM = 16
SHORT = [1.0, 1.05, 1.1, 1.3, 1.6, 2.0, 2.5, 3.0]
LONG = [1.0, 1.2, 1.9, 3.5, 6.0, 9.0, 14.0, 20.0]

CASES = {
    "default": ({"rope_type": "default", "rope_theta": 500.0}, 256, {}),
    "linear": ({"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}, 256, {}),
    "linear-partial": ({"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0, "partial_rotary_factor": 0.5}, 256, {}),
    "dynamic": ({"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}, 256, {}),
    "yarn": ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "rope_theta": 10000.0}, 256, {}),
    "yarn-deepseek": (
        {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096, "rope_theta": 10000.0,
         "mscale": 0.707, "mscale_all_dim": 0.707, "beta_fast": 32, "beta_slow": 1},
        163840, {},
    ),
    "yarn-mscale-only": (
        {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096, "rope_theta": 10000.0, "mscale": 0.707},
        163840, {},
    ),
    "yarn-gpt-oss": (
        {"rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096, "rope_theta": 150000.0,
         "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False},
        131072, {},
    ),
    "yarn-override": (
        {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 64, "rope_theta": 10000.0, "attention_factor": 1.7},
        512, {},
    ),
    "yarn-no-factor": ({"rope_type": "yarn", "factor": None, "original_max_position_embeddings": 64, "rope_theta": 10000.0}, 512, {}),
    "longrope": (
        {"rope_type": "longrope", "short_factor": SHORT, "long_factor": LONG, "original_max_position_embeddings": 64, "rope_theta": 10000.0},
        256, {},
    ),
    "longrope-phi3": (
        {"rope_type": "longrope", "short_factor": SHORT, "long_factor": LONG, "rope_theta": 10000.0},
        2048, {"original_max_position_embeddings": 128},
    ),
    # max_position_embeddings below the trained length: transformers' factor 0.5, attention factor 1
    "longrope-phi3-shorter": (
        {"rope_type": "longrope", "short_factor": SHORT, "long_factor": LONG, "rope_theta": 10000.0},
        64, {"original_max_position_embeddings": 128},
    ),
    "llama3": (
        {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 8192, "rope_theta": 500000.0},
        131072, {},
    ),
    # non-default parameters beside a partial rotation
    "yarn-partial-betas": (
        {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 64, "rope_theta": 10000.0,
         "beta_fast": 16, "beta_slow": 2, "partial_rotary_factor": 0.5},
        512, {},
    ),
    "llama3-partial-bands": (
        {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 2.0, "high_freq_factor": 8.0,
         "original_max_position_embeddings": 128, "rope_theta": 500000.0, "partial_rotary_factor": 0.5},
        1024, {},
    ),
    "longrope-partial-attention": (
        {"rope_type": "longrope", "short_factor": SHORT[:4], "long_factor": LONG[:4], "factor": 2.0,
         "attention_factor": 1.1, "original_max_position_embeddings": 64, "rope_theta": 10000.0,
         "partial_rotary_factor": 0.5},
        256, {},
    ),
    "dynamic-partial": ({"rope_type": "dynamic", "factor": 3.0, "rope_theta": 10000.0, "partial_rotary_factor": 0.25}, 256, {}),
    "proportional": ({"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 10000.0}, 256, {}),
    "proportional-scaled": ({"rope_type": "proportional", "partial_rotary_factor": 0.5, "factor": 2.0, "rope_theta": 1e6}, 256, {}),
}


def llama_config(rope_parameters, max_position_embeddings, extra):
    transformers = pytest.importorskip("transformers")
    return transformers.LlamaConfig(
        hidden_size=4 * HEAD_DIM, num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=1, intermediate_size=32,
        vocab_size=32, max_position_embeddings=max_position_embeddings, rope_parameters=dict(rope_parameters), **extra,
    )


def hf_frequencies(config, seq_len=None, layer_type=None):
    """transformers' inverse frequencies and attention factor for ``config``."""
    rope_utils = pytest.importorskip("transformers.modeling_rope_utils")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    params = config.rope_parameters if layer_type is None else config.rope_parameters[layer_type]
    if params["rope_type"] == "default":
        inv, attention = LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    else:
        kw = {} if layer_type is None else {"layer_type": layer_type}
        inv, attention = rope_utils.ROPE_INIT_FUNCTIONS[params["rope_type"]](config, "cpu", seq_len=seq_len, **kw)
    return inv.double().numpy(), attention


def assert_same(encoding, config, seq_len=None, layer_type=None):
    want, attention = hf_frequencies(config, seq_len, layer_type)
    got = encoding.inverse_frequencies(seq_len if seq_len is not None else None).numpy()
    if encoding.scaling.grow_only and seq_len is not None:
        got = encoding.inverse_frequencies(max(seq_len, encoding.scaling.original_max_len)).numpy()
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=0)
    assert encoding.scaling.attention_factor == pytest.approx(attention, rel=1e-12)


@pytest.mark.parametrize("case", sorted(CASES))
def test_from_hf_config_matches_rope_init_functions(case):
    params, max_pos, extra = CASES[case]
    config = llama_config(params, max_pos, extra)
    encoding = from_hf_config(config)
    assert isinstance(encoding, RotaryPositionEncoding) and not encoding.interleaved
    for seq_len in (None, 10, max_pos // 2 + 1, 3 * max_pos):
        if params["rope_type"] in ("dynamic", "longrope") or seq_len is None:
            assert_same(encoding, config, seq_len)
    # the same through a plain dict of the config
    assert_same(from_hf_config(config.to_dict()), config)


@pytest.mark.parametrize("case", sorted(CASES))
def test_to_hf_rope_parameters_round_trips(case):
    params, max_pos, extra = CASES[case]
    encoding = from_hf_config(llama_config(params, max_pos, extra))
    back = to_hf_rope_parameters(encoding)
    again = llama_config(back, max_pos, {})
    assert_same(encoding, again)
    assert_same(from_hf_config(again), again)


def test_dynamic_with_alpha_is_hunyuans_static_ntk():
    """HunYuan's 'dynamic' rope_parameters with alpha: base * alpha ** (d / (d - 2)) at every length, as
    its models' compute_ntk_alpha_rope_parameters forms it (posenc built length-dependent dynamic NTK)."""
    rope = {"rope_type": "dynamic", "alpha": 1000.0, "factor": 1.0, "rope_theta": 10000.0}
    encoding = from_hf_config({"head_dim": 16, "max_position_embeddings": 64, "rope_parameters": rope})
    want = (1e4 * 1000.0 ** (16 / 14)) ** -(np.arange(0, 16, 2) / 16)
    for seq_len in (None, 8, 1000):
        np.testing.assert_allclose(encoding.inverse_frequencies(seq_len).numpy(), want, rtol=1e-12)
    with pytest.raises(ValueError, match="`alpha` must be >= 1.0"):
        from_hf_config({"head_dim": 16, "max_position_embeddings": 64, "rope_parameters": {**rope, "alpha": 0.5}})


def test_dynamic_ntk_exports_with_transformers_grow_only_rule():
    """transformers' dynamic RoPE grows only; a posenc encoding with dynamic_update='recompute' (the
    default) exports to the same rope_parameters, as the docstring says, and the two differ once 24
    tokens follow 40 (16 trained): the model keeps the base of 40."""
    encoding = RotaryPositionEncoding(16, scaling="dynamic_ntk", factor=2.0, original_max_len=16)
    back = from_hf_config({"head_dim": 16, "max_position_embeddings": 16, "rope_parameters": to_hf_rope_parameters(encoding)})
    assert (encoding.scaling.dynamic_update, back.scaling.dynamic_update) == ("recompute", "grow_only")
    assert torch.equal(back.inverse_frequencies(24), encoding.inverse_frequencies(24))
    back(torch.zeros(1, 1, 40, 16))  # the exported model has now seen 40 tokens
    x = torch.randn(1, 1, 24, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    assert (back(x) - encoding(x)).abs().max() > 0.1


def test_old_rope_scaling_key_and_top_level_theta():
    config = {"hidden_size": 64, "num_attention_heads": 4, "rope_theta": 500.0, "max_position_embeddings": 64,
              "rope_scaling": {"type": "linear", "factor": 4.0}}
    encoding = from_hf_config(config)
    assert encoding.base == 500.0 and encoding.scaling.kind == "linear" and encoding.scaling.factor == 4.0
    assert encoding.head_dim == 16


def test_per_layer_type_parameters():
    transformers = pytest.importorskip("transformers")
    config = transformers.Gemma3TextConfig(
        hidden_size=64, num_attention_heads=4, head_dim=HEAD_DIM, num_hidden_layers=2, num_key_value_heads=4,
        intermediate_size=32, vocab_size=32,
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                         "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}},
    )
    encodings = from_hf_config(config)
    assert set(encodings) == {"sliding_attention", "full_attention"}
    assert_same(encodings["full_attention"], config, layer_type="full_attention")
    np.testing.assert_allclose(encodings["sliding_attention"].inverse_frequencies().numpy(),
                               [1e4 ** (-2 * i / HEAD_DIM) for i in range(HEAD_DIM // 2)], rtol=1e-15)
    back = to_hf_rope_parameters(encodings)
    assert back["sliding_attention"] == {"rope_theta": 10000.0, "rope_type": "default"}
    assert back["full_attention"] == {"rope_theta": 1e6, "rope_type": "linear", "factor": 8.0}


@pytest.mark.parametrize(
    "rope, name",
    [
        ({"rope_type": "mrope_cubed"}, "rope_type"),
        ({"rope_type": "longrope", "short_factor": SHORT[:3], "long_factor": LONG, "original_max_position_embeddings": 8}, "short_factor"),
        ({"rope_type": "longrope", "short_factor": SHORT, "long_factor": LONG[:5], "original_max_position_embeddings": 8}, "long_factor"),
        ({"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8}, "low_freq_factor"),
        # once replaced by max_position_embeddings (0) or a full rotation (0.0) through an `or` chain
        ({"rope_type": "longrope", "short_factor": SHORT, "long_factor": LONG, "original_max_position_embeddings": 0},
         "original_max_position_embeddings"),
        ({"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 0}, "original_max_position_embeddings"),
        ({"rope_type": "default", "partial_rotary_factor": 0.0}, "rotary_fraction"),
    ],
)
def test_bad_configs_name_the_argument(rope, name):
    config = {"hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": 64, "rope_parameters": rope}
    with pytest.raises(ValueError, match=name) as info:
        from_hf_config(config)
    if name == "rope_type":
        assert "llama3" in str(info.value) and "longrope" in str(info.value)


@pytest.mark.parametrize(
    "config, name",
    [
        ({"rope_parameters": {"rope_type": "default", "rope_theta": -1.0}}, "`rope_theta` must be > 0"),
        ({"rope_theta": "1e4", "rope_parameters": {"rope_type": "linear", "factor": 2.0}}, "`rope_theta` must be a number"),
        ({"rotary_emb_base": None}, "`rotary_emb_base` must be a number"),
        ({"max_position_embeddings": 0, "rope_parameters": {"rope_type": "dynamic", "factor": 2.0}},
         "`max_position_embeddings` must be >= 1"),
        ({"max_position_embeddings": 128.0, "rope_parameters": {"rope_type": "dynamic", "factor": 2.0}},
         "`max_position_embeddings` must be an int"),
        ({"max_position_embeddings": None, "rope_parameters": {"rope_type": "dynamic", "factor": 2.0}},
         "`max_position_embeddings`.*required for rope_type 'dynamic'"),
        ({"max_position_embeddings": "256", "rope_parameters": {"rope_type": "yarn", "factor": 4.0,
                                                                "original_max_position_embeddings": 64}},
         "`max_position_embeddings` must be an int"),
        ({"max_position_embeddings": 128, "rope_parameters": {"rope_type": "yarn", "original_max_position_embeddings": 256}},
         "`max_position_embeddings`=128 is below `original_max_position_embeddings`=256"),
    ],
)
def test_config_values_are_named_by_their_config_key(config, name):
    """These were refused naming posenc's own arguments, which the config does not have (`base`,
    `original_max_len`, `max_len`), or (dynamic without max_position_embeddings) as a missing
    `original_max_len`."""
    with pytest.raises((TypeError, ValueError), match=name):
        from_hf_config({"hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": 64, **config})


@pytest.mark.parametrize("rope_type, extra", [("yarn", {}), ("longrope", {"short_factor": SHORT, "long_factor": LONG})])
def test_a_factor_with_nothing_to_derive_it_from_is_refused(rope_type, extra):
    """YaRN and LongRoPE without `factor` derive it from max_position_embeddings, as transformers does;
    without that either, a YaRN of factor 1 (no interpolation) was built silently."""
    rope = {"rope_type": rope_type, "original_max_position_embeddings": 64, **extra}
    with pytest.raises(ValueError, match="no `factor`, and the config no `max_position_embeddings`"):
        from_hf_config({"hidden_size": 64, "num_attention_heads": 4, "rope_parameters": rope})


@pytest.mark.parametrize("name", ["Gemma3Config", "LlavaConfig", "Mistral3Config"])
def test_a_composite_config_gives_its_text_models_rope(name):
    """A vision-language model's config (object or config.json dict) was refused as lacking hidden_size
    and num_attention_heads, which it holds in its text config."""
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, name):
        pytest.skip(f"no {name} in this transformers")
    config = getattr(transformers, name)()
    want = to_hf_rope_parameters(from_hf_config(config.get_text_config()))
    assert to_hf_rope_parameters(from_hf_config(config)) == want
    assert to_hf_rope_parameters(from_hf_config(config.to_dict())) == want


def test_adjacent_pair_models_take_the_same_angles_interleaved():
    """The module docstring: Cohere rotates adjacent pairs; from_hf_config's split-halves encoding is not
    its rotation, the same angles with interleaved=True are."""
    transformers = pytest.importorskip("transformers")
    modeling = pytest.importorskip("transformers.models.cohere.modeling_cohere")
    config = transformers.CohereConfig(hidden_size=64, num_attention_heads=4, rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    x = torch.randn(1, 4, 9, 16, generator=torch.Generator().manual_seed(9))
    ids = torch.arange(9).unsqueeze(0)
    want = modeling.apply_rotary_pos_emb(x, x, *modeling.CohereRotaryEmbedding(config)(x, ids))[0]
    encoding = from_hf_config(config)
    assert not encoding.interleaved and (encoding(x, positions=ids) - want).abs().max() > 0.1
    adjacent = RotaryPositionEncoding(encoding.head_dim, base=encoding.base, interleaved=True)
    torch.testing.assert_close(adjacent(x, positions=ids), want, rtol=0, atol=1e-5)


def test_an_mrope_config_gives_the_rope_of_its_text_positions():
    """from_hf_config does not read mrope_section: at text positions (three equal ids) Qwen2-VL's
    M-RoPE is the 1-D RoPE returned, as the module docstring says."""
    pytest.importorskip("transformers")
    modeling = pytest.importorskip("transformers.models.qwen2_vl.modeling_qwen2_vl")
    configuration = pytest.importorskip("transformers.models.qwen2_vl.configuration_qwen2_vl")
    config = configuration.Qwen2VLTextConfig(
        hidden_size=64, num_attention_heads=2, head_dim=32,
        rope_parameters={"rope_type": "default", "rope_theta": 1000.0, "mrope_section": [4, 6, 6]},
    )
    x = torch.randn(2, 2, 9, 32, generator=torch.Generator().manual_seed(7))
    ids = torch.arange(3, 12).expand(2, -1)
    cos, sin = modeling.Qwen2VLRotaryEmbedding(config)(x, ids.expand(3, -1, -1))
    want = modeling.apply_rotary_pos_emb(x, x, cos, sin)[0]
    torch.testing.assert_close(from_hf_config(config)(x, positions=ids), want, rtol=0, atol=1e-5)


def test_qwen2_vl_config_json_with_rope_type_mrope():
    """Qwen2-VL's and Qwen2.5-VL's config.json give rope_scaling {'type': 'mrope', 'mrope_section': ...},
    which transformers reads as 'default'; from the dict it was refused as an unknown rope type."""
    config_json = {
        "model_type": "qwen2_vl", "hidden_size": 64, "num_attention_heads": 2, "max_position_embeddings": 128,
        "rope_theta": 1000.0, "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]},
    }
    encoding = from_hf_config(config_json)
    want = RotaryPositionEncoding(32, base=1000.0)
    assert encoding.scaling.kind == "none" and encoding.base == 1000.0
    torch.testing.assert_close(encoding.inverse_frequencies(), want.inverse_frequencies(), rtol=0, atol=0)


def test_hunyuan_vl_config_json_with_rope_type_xdrope():
    """HunYuan-VL's config.json names its RoPE 'xdrope' (with alpha and xdrope_section), which
    transformers' HunYuanVLConfig reads as 'dynamic', and its model, with alpha, as a static NTK base;
    from the dict it was refused as an unknown rope type."""
    rope = {"type": "xdrope", "alpha": 1000.0, "factor": 1.0, "rope_theta": 10000.0, "xdrope_section": [2, 2, 2, 2]}
    encoding = from_hf_config({"model_type": "hunyuan_vl", "head_dim": 16, "max_position_embeddings": 64,
                               "rope_scaling": rope})
    want = (1e4 * 1000.0 ** (16 / 14)) ** -(np.arange(0, 16, 2) / 16)
    np.testing.assert_allclose(encoding.inverse_frequencies().numpy(), want, rtol=1e-12)


@pytest.mark.parametrize("head_dim, partial", [(12, 0.75), (12, 0.25), (15, 1.0)])
def test_an_odd_rotary_width_is_refused(head_dim, partial):
    """int(head_dim * partial_rotary_factor) odd: transformers rotates 2 * ceil(w / 2) features at
    base ** (-2i / w); rounding the width down to even was a different RoPE, given silently."""
    for rope_type, extra in (("default", {}), ("linear", {"factor": 2.0})):
        rope = {"rope_type": rope_type, "rope_theta": 1e4, "partial_rotary_factor": partial, **extra}
        with pytest.raises(ValueError, match="partial_rotary_factor.*odd rotary width"):
            from_hf_config({"head_dim": head_dim, "max_position_embeddings": 64, "rope_parameters": rope})
    ok = from_hf_config({"head_dim": 12, "max_position_embeddings": 64,
                         "rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.5}})
    assert ok.rot_dim == 6


def test_a_config_without_head_width_is_named():
    with pytest.raises(ValueError, match="head_dim.*hidden_size.*num_attention_heads"):
        from_hf_config({"rope_parameters": {"rope_type": "default", "rope_theta": 1e4}})


def test_to_hf_rejects_what_transformers_cannot_express():
    for encoding, name in (
        (RotaryPositionEncoding(8, scaling="ntk", factor=2.0), "NTK"),
        (RotaryPositionEncoding(8, interleaved=True), "interleaved"),
        (RotaryPositionEncoding(8, p=0.5, rotary_fraction=0.5), "proportional"),
    ):
        with pytest.raises(ValueError, match=name):
            to_hf_rope_parameters(encoding)
    with pytest.raises(TypeError, match="encoding"):
        to_hf_rope_parameters("rope")
    with pytest.raises(TypeError, match="config"):
        from_hf_config(42)


@pytest.mark.parametrize(
    "widths, name",
    [
        ({"head_dim": "64"}, "head_dim"),
        ({"head_dim": 16.0}, "head_dim"),
        ({"hidden_size": "64", "num_attention_heads": 4}, "hidden_size"),
        ({"hidden_size": 64, "num_attention_heads": 2.5}, "num_attention_heads"),
    ],
)
def test_head_widths_of_the_wrong_type_are_named(widths, name):
    """A string or fractional width used to raise an unnamed TypeError from the arithmetic on it."""
    rope = {"rope_type": "default", "rope_theta": 1e4}
    with pytest.raises((TypeError, ValueError), match=f"`{name}`"):
        from_hf_config({**widths, "max_position_embeddings": 64, "rope_parameters": rope})


@pytest.mark.parametrize("name, rotary", [("Zamba2", "zamba2"), ("JetMoe", "jetmoe")])
def test_head_dim_is_read_under_the_name_the_config_maps_it_to(name, rotary):
    """Zamba2 keeps its head width in ``attention_head_dim``, JetMoe in ``kv_channels`` (``config.head_dim``
    through the class's attribute_map); from_hf_config once read hidden_size // num_attention_heads
    instead, a RoPE over half the width the model rotates (80 of 160 features for Zamba2's defaults)."""
    transformers = pytest.importorskip("transformers")
    modeling = pytest.importorskip(f"transformers.models.{rotary}.modeling_{rotary}")
    config = getattr(transformers, f"{name}Config")()
    want = getattr(modeling, f"{name}RotaryEmbedding")(config).inv_freq.double().numpy()
    encoding = from_hf_config(config)
    assert encoding.rot_dim == 2 * len(want)
    np.testing.assert_allclose(encoding.inverse_frequencies().numpy(), want, rtol=2e-6, atol=0)


def test_gpt_j_rotary_dim_is_refused_with_the_encoding_to_build():
    """GPT-J's config (n_embd, n_head, rotary_dim, no rope_parameters) raised 'it lacks ['hidden_size',
    'num_attention_heads']', which it has under other names; with those read, a full-width split-halves
    RoPE would be wrong for GPT-J's interleaved partial one, so it is refused naming what to build."""
    transformers = pytest.importorskip("transformers")
    config = transformers.GPTJConfig(n_embd=64, n_head=4, rotary_dim=8)
    with pytest.raises(ValueError, match="`rotary_dim`=8.*interleaved=True"):
        from_hf_config(config)
    with pytest.raises(ValueError, match="`rotary_dim`=8"):
        from_hf_config(config.to_dict())


def test_per_layer_head_width_of_gemma4_full_attention_layers():
    """Gemma 4's full-attention layers have 512-wide heads (``per_layer_config``, keyed "05", "11", ...
    in its JSON form), its sliding ones 256; from_hf_config once gave both layer types the global
    ``head_dim``, a full-attention RoPE over half its features."""
    transformers = pytest.importorskip("transformers")
    modeling = pytest.importorskip("transformers.models.gemma4.modeling_gemma4")
    config = transformers.Gemma4TextConfig()
    rotary = modeling.Gemma4TextRotaryEmbedding(config)
    for cfg in (config, config.to_dict()):
        encodings = from_hf_config(cfg)
        for layer_type in ("sliding_attention", "full_attention"):
            want = getattr(rotary, f"{layer_type}_inv_freq").double().numpy()
            np.testing.assert_allclose(encodings[layer_type].inverse_frequencies().numpy(), want, rtol=2e-6, atol=0)
        assert encodings["full_attention"].head_dim == 512


def test_layers_of_one_type_with_different_overrides_are_refused():
    rope = {"full_attention": {"rope_type": "default", "rope_theta": 1e4}}
    cfg = {"head_dim": 16, "max_position_embeddings": 64, "rope_parameters": rope,
           "layer_types": ["full_attention", "full_attention"], "per_layer_config": {"1": {"head_dim": 32}}}
    with pytest.raises(ValueError, match="`per_layer_config`.*'full_attention'"):
        from_hf_config(cfg)
    with pytest.raises(ValueError, match="`per_layer_config` must be keyed by layer indices"):
        from_hf_config({**cfg, "per_layer_config": {"first": {"head_dim": 32}}})


def test_gpt_neox_config_json_names_for_the_base_and_fraction():
    """A Pythia config.json gives ``rotary_pct`` 0.25 and ``rotary_emb_base``, no rope_parameters (transformers
    maps them on loading); read as a dict it once gave a RoPE over the whole 64-wide head at base 10000
    instead of the first 16 features at the given base."""
    transformers = pytest.importorskip("transformers")
    modeling = pytest.importorskip("transformers.models.gpt_neox.modeling_gpt_neox")
    config_json = {"model_type": "gpt_neox", "hidden_size": 512, "num_attention_heads": 8, "rotary_pct": 0.25,
                   "rotary_emb_base": 20000, "max_position_embeddings": 2048}
    encoding = from_hf_config(config_json)
    want = modeling.GPTNeoXRotaryEmbedding(transformers.GPTNeoXConfig(**config_json)).inv_freq.double().numpy()
    assert (encoding.head_dim, encoding.rot_dim, encoding.base) == (64, 16, 20000)
    np.testing.assert_allclose(encoding.inverse_frequencies().numpy(), want, rtol=2e-6, atol=0)


@pytest.mark.parametrize("name, module, config_json", [
    ("Gemma3Text", "gemma3", {"model_type": "gemma3_text", "hidden_size": 64, "num_attention_heads": 4, "head_dim": 16,
                    "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
                    "rope_scaling": {"rope_type": "linear", "factor": 8.0}, "max_position_embeddings": 128}),
    ("ModernBert", "modernbert", {"model_type": "modernbert", "hidden_size": 64, "num_attention_heads": 4,
                    "global_rope_theta": 160000.0, "local_rope_theta": 10000.0, "max_position_embeddings": 128}),
])
def test_local_and_global_bases_of_an_older_config_json(name, module, config_json):
    """Gemma 3's config.json gives the sliding layers' base as ``rope_local_base_freq``, ModernBERT's as
    ``local_rope_theta`` beside ``global_rope_theta``; read as a dict, from_hf_config once returned one
    RoPE for every layer (Gemma 3's global base and scaling on its sliding layers, base 10000 on
    ModernBERT's global ones). It now gives one per layer type, as transformers nests them on loading."""
    transformers = pytest.importorskip("transformers")
    modeling = pytest.importorskip(f"transformers.models.{module}.modeling_{module}")
    config = getattr(transformers, f"{name}Config")(**config_json)
    rotary = getattr(modeling, f"{name.removesuffix('Text')}RotaryEmbedding")(config)
    encodings = from_hf_config(config_json)
    assert set(encodings) == {"full_attention", "sliding_attention"}
    for layer_type, encoding in encodings.items():
        want = getattr(rotary, f"{layer_type}_inv_freq").double().numpy()
        np.testing.assert_allclose(encoding.inverse_frequencies().numpy(), want, rtol=2e-6, atol=0)


@pytest.mark.parametrize("rope_type", ["default", "proportional"])
@pytest.mark.parametrize("partial", ["0.5", float("nan"), float("inf"), 1.5])
def test_a_partial_rotary_factor_that_is_not_a_fraction_is_named(rope_type, partial):
    """partial_rotary_factor "0.5", nan or inf once failed in int(head_dim * partial) ("invalid literal for
    int() with base 10: '0.50.50.5...'", "cannot convert float NaN to integer", a bare OverflowError)."""
    rope = {"rope_type": rope_type, "rope_theta": 1e4, "partial_rotary_factor": partial}
    with pytest.raises((TypeError, ValueError), match="`partial_rotary_factor`"):
        from_hf_config({"head_dim": 16, "max_position_embeddings": 64, "rope_parameters": rope})


@pytest.mark.parametrize("old_name", ["su", "yarn"])
def test_phi3_config_json_with_an_older_longrope_name(old_name):
    """A Phi-3 config.json of the first releases names its LongRoPE 'su' (or 'yarn'); transformers'
    Phi3Config reads 'yarn' as longrope (and means to read 'su' so, but this version then misses the
    trained length: the reference is named longrope). 'su' used to be refused as an unknown rope type and
    'yarn' was built as YaRN, with other frequencies and attention factor, silently."""
    transformers = pytest.importorskip("transformers")
    scaling = {"type": old_name, "short_factor": SHORT, "long_factor": LONG}
    config_json = {
        "model_type": "phi3", "hidden_size": 4 * HEAD_DIM, "num_attention_heads": 4, "max_position_embeddings": 2048,
        "original_max_position_embeddings": 128, "rope_theta": 10000.0, "rope_scaling": scaling,
    }
    config = transformers.Phi3Config(
        hidden_size=4 * HEAD_DIM, num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=1, intermediate_size=32,
        vocab_size=32, max_position_embeddings=2048, original_max_position_embeddings=128, pad_token_id=0,
        rope_scaling={**scaling, "type": "longrope" if old_name == "su" else old_name},
    )
    assert config.rope_parameters["rope_type"] == "longrope"
    encoding = from_hf_config(config_json)
    assert encoding.scaling.kind == "longrope"
    for seq_len in (None, 100, 4096):
        assert_same(encoding, config, seq_len)


def test_yarn_export_keeps_deepseeks_mscale_for_its_attention():
    """DeepSeek-V3's attention reads rope_parameters['mscale_all_dim'] for its softmax scale
    (times m(40, 0.707) ** 2 = 1.59); the export gave the attention factor only, so a model built from
    it lost that factor."""
    transformers = pytest.importorskip("transformers")
    params, max_pos, _ = CASES["yarn-deepseek"]
    encoding = from_hf_config(llama_config(params, max_pos, {}))
    back = to_hf_rope_parameters(encoding)
    assert (back["mscale"], back["mscale_all_dim"]) == (0.707, 0.707)

    def attention_scale(rope_parameters):
        config = transformers.DeepseekV3Config(
            vocab_size=32, hidden_size=32, intermediate_size=32, moe_intermediate_size=16, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=2, q_lora_rank=None, kv_lora_rank=16, qk_rope_head_dim=HEAD_DIM,
            qk_nope_head_dim=8, v_head_dim=8, n_routed_experts=2, num_experts_per_tok=1, first_k_dense_replace=1,
            max_position_embeddings=max_pos, rope_parameters=dict(rope_parameters),
        )
        return transformers.DeepseekV3ForCausalLM(config).model.layers[0].self_attn.scaling

    assert attention_scale(back) == pytest.approx(attention_scale(params), rel=1e-12)
    assert_same(from_hf_config(llama_config(back, max_pos, {})), llama_config(params, max_pos, {}))


def test_xpos_does_not_export_as_its_rope():
    """to_hf_rope_parameters(XPos(...)) gave {'rope_type': 'default'}, dropping the decay without a word."""
    from posenc.rotary import XPos

    with pytest.raises(TypeError, match="xPos"):
        to_hf_rope_parameters(XPos(HEAD_DIM))


def test_phimoe_short_and_long_mscale_are_the_attention_factor():
    """Phi-3.5-MoE's rope_parameters give short_mscale and long_mscale (1.243 both in the release), which
    its model multiplies cos and sin by in place of LongRoPE's derived sqrt(1 + ln s / ln L0); they were
    ignored, so the encoding's factor was the derived one (1.225 here, 1.190 for the release's s = 32),
    silently. Equal ones are the attention factor now, differing ones (Phi-3-small's 1.0 and 1.19) are
    refused by name. (transformers' PhimoeRotaryEmbedding keeps the short factors past the trained length
    too, so it is compared within it.)"""
    transformers = pytest.importorskip("transformers")
    modeling = pytest.importorskip("transformers.models.phimoe.modeling_phimoe")
    rope = {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": SHORT[:4], "long_factor": LONG[:4],
            "original_max_position_embeddings": 16, "short_mscale": 1.243, "long_mscale": 1.243}
    config = transformers.PhimoeConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=64, rope_parameters=rope, num_local_experts=2,
    )
    encoding = from_hf_config(config)
    assert encoding.scaling.attention_factor == 1.243
    positions = torch.arange(16)[None]
    want_cos, want_sin = modeling.PhimoeRotaryEmbedding(config)(torch.zeros(1, 1, 8), positions)
    cos, sin = encoding.cos_sin(Positions(16, explicit=positions))
    torch.testing.assert_close(torch.cat((cos, cos), -1), want_cos, atol=2e-6, rtol=0)
    torch.testing.assert_close(torch.cat((sin, sin), -1), want_sin, atol=2e-6, rtol=0)
    config_json = {"hidden_size": 16, "num_attention_heads": 2, "max_position_embeddings": 64,
                   "rope_parameters": {**rope, "long_mscale": 1.19}}
    with pytest.raises(ValueError, match="`short_mscale`=1.243 and `long_mscale`=1.19 differ"):
        from_hf_config(config_json)
