"""use_posenc_rotary: a tiny random transformers model keeps its logits when posenc's RoPE replaces its own."""

from __future__ import annotations

import math

import pytest
import torch

from posenc.integrations.transformers import PosencRotaryEmbedding, use_posenc_rotary
from posenc.rotary import RotaryPositionEncoding

transformers = pytest.importorskip("transformers")

HEAD_DIM = 16
ORIGINAL = 16  # the "trained" length; the test sequence (24 tokens) runs past it
ROPES = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "linear": {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0},
    "dynamic-factor-1": {"rope_type": "dynamic", "factor": 1.0, "rope_theta": 10000.0},  # still stretches past L0
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": ORIGINAL, "rope_theta": 10000.0,
             "mscale": 0.8, "mscale_all_dim": 0.5, "truncate": False},
    "longrope": {"rope_type": "longrope", "original_max_position_embeddings": ORIGINAL, "rope_theta": 10000.0,
                 "short_factor": [1.0, 1.1, 1.2, 1.5, 2.0, 2.2, 2.5, 3.0], "long_factor": [1.0, 1.5, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0]},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": ORIGINAL, "rope_theta": 10000.0},
    "proportional": {"rope_type": "proportional", "partial_rotary_factor": 0.5, "rope_theta": 10000.0},
}


def tiny(cls_name, rope, max_pos):
    config_cls = getattr(transformers, cls_name.replace("ForCausalLM", "Config"))
    config = config_cls(
        hidden_size=4 * HEAD_DIM, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
        intermediate_size=64, vocab_size=64, max_position_embeddings=max_pos, rope_parameters=dict(rope),
    )
    torch.manual_seed(0)
    return getattr(transformers, cls_name)(config).eval()


def assert_swap_keeps_logits(model, tokens) -> None:
    """The model's logits for ``tokens`` before and after :func:`use_posenc_rotary` (in place) agree."""
    with torch.no_grad():
        want = model(tokens).logits
        got = use_posenc_rotary(model)(tokens).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("rope_type", sorted(ROPES))
@pytest.mark.parametrize("cls_name", ["LlamaForCausalLM", "Qwen2ForCausalLM"])
def test_swapped_rotary_gives_the_same_logits(cls_name, rope_type):
    # dynamic NTK reads its trained length from max_position_embeddings; the others extend it
    max_pos = ORIGINAL if rope_type.startswith("dynamic") else 4 * ORIGINAL
    model = tiny(cls_name, ROPES[rope_type], max_pos)
    tokens = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(tokens).logits
        assert use_posenc_rotary(model) is model
        assert isinstance(model.model.rotary_emb, PosencRotaryEmbedding)
        got = model(tokens).logits
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        short = tokens[:, :8]  # within the trained length too
        torch.testing.assert_close(model(short).logits, tiny(cls_name, ROPES[rope_type], max_pos)(short).logits, atol=1e-5, rtol=0)


def test_cached_generation_matches_the_original_model():
    model = tiny("LlamaForCausalLM", ROPES["llama3"], 4 * ORIGINAL)
    tokens = torch.randint(0, 64, (1, 5), generator=torch.Generator().manual_seed(2))
    want = model.generate(tokens, max_new_tokens=6, do_sample=False)
    got = use_posenc_rotary(model).generate(tokens, max_new_tokens=6, do_sample=False)
    torch.testing.assert_close(got, want)


def test_a_different_posenc_variant_can_be_swapped_in():
    model = tiny("LlamaForCausalLM", ROPES["default"], 64)
    tokens = torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = model(tokens).logits
        use_posenc_rotary(model, RotaryPositionEncoding(HEAD_DIM, p=0.25))
        assert not torch.allclose(model(tokens).logits, before)


def test_a_swapped_model_takes_another_variant_and_back():
    """A second use_posenc_rotary on a model already swapped (the README's order) once raised 'has no
    '*RotaryEmbedding' module to replace'; it now replaces posenc's module with the new encoding."""
    model = tiny("LlamaForCausalLM", ROPES["default"], 64)
    tokens = torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = model(tokens).logits
        use_posenc_rotary(model)
        variant = RotaryPositionEncoding(HEAD_DIM, p=0.25)
        use_posenc_rotary(model, variant)
        assert model.model.rotary_emb.encodings["default"] is variant
        assert not torch.allclose(model(tokens).logits, before)
        use_posenc_rotary(model)  # back to the config's RoPE
        torch.testing.assert_close(model(tokens).logits, before, atol=1e-5, rtol=0)


def test_bad_arguments():
    with pytest.raises(TypeError, match="model"):
        use_posenc_rotary("llama")
    with pytest.raises(ValueError, match="RotaryEmbedding"):
        use_posenc_rotary(torch.nn.Linear(2, 2), RotaryPositionEncoding(8))
    with pytest.raises(ValueError, match="encodings"):
        PosencRotaryEmbedding(RotaryPositionEncoding(8, interleaved=True))


def test_a_model_without_a_config_is_refused_naming_what_to_pass():
    # use_posenc_rotary(module_without_config) said '`config` must be a transformers config or a dict, got
    # NoneType', an argument the caller never passed
    with pytest.raises(ValueError, match=r"`model` \(Linear\) has no '\*RotaryEmbedding' module"):
        use_posenc_rotary(torch.nn.Linear(2, 2))

    class HandRotaryEmbedding(torch.nn.Module):  # a rotary module built without a transformers config
        pass

    holder = torch.nn.Module()
    holder.rotary_emb = HandRotaryEmbedding()
    with pytest.raises(ValueError, match=r"`model` \(Module\) has no `config`.*'rotary_emb'.*`encoding`"):
        use_posenc_rotary(holder)


def test_per_layer_type_rotary_of_gemma3():
    config = transformers.Gemma3TextConfig(
        hidden_size=4 * HEAD_DIM, num_attention_heads=4, head_dim=HEAD_DIM, num_hidden_layers=2, num_key_value_heads=2,
        intermediate_size=64, vocab_size=64, max_position_embeddings=64, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                         "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}},
    )
    torch.manual_seed(0)
    model = transformers.Gemma3ForCausalLM(config).eval()
    tokens = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(4))
    assert_swap_keeps_logits(model, tokens)
    assert set(model.model.rotary_emb.encodings) == {"sliding_attention", "full_attention"}


def test_one_encoding_serves_every_layer_type_of_gemma3():
    """One encoding passed to a per-layer-type model once raised at the first forward ('`layer_type` must be
    one of ['default']'); it now rotates every layer, as the model with that RoPE for both layer types does."""
    def gemma3(sliding, full):
        config = transformers.Gemma3TextConfig(
            hidden_size=4 * HEAD_DIM, num_attention_heads=4, head_dim=HEAD_DIM, num_hidden_layers=2,
            num_key_value_heads=2, intermediate_size=64, vocab_size=64, max_position_embeddings=64, sliding_window=4,
            layer_types=["sliding_attention", "full_attention"],
            rope_parameters={"sliding_attention": sliding, "full_attention": full},
        )
        torch.manual_seed(0)
        return transformers.Gemma3ForCausalLM(config).eval()

    linear = {"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}
    model = gemma3({"rope_type": "default", "rope_theta": 10000.0}, {"rope_type": "default", "rope_theta": 1e6})
    use_posenc_rotary(model, RotaryPositionEncoding(HEAD_DIM, base=500.0, scaling="linear", factor=2.0))
    tokens = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens).logits, gemma3(linear, linear)(tokens).logits, atol=1e-5, rtol=0)


def tiny_deepseek(version, rope):
    config_cls = getattr(transformers, f"DeepseekV{version}Config")
    extra = {"n_group": 1, "topk_group": 1} if version == 3 else {}
    config = config_cls(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=2, intermediate_size=64,
        moe_intermediate_size=16, vocab_size=64, max_position_embeddings=4 * ORIGINAL, q_lora_rank=16, kv_lora_rank=16,
        qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, n_routed_experts=4, num_experts_per_tok=2,
        n_shared_experts=1, first_k_dense_replace=1, rope_parameters=dict(rope), **extra,
    )
    torch.manual_seed(0)
    return getattr(transformers, f"DeepseekV{version}ForCausalLM")(config).eval()


DEEPSEEK_YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": ORIGINAL, "rope_theta": 10000.0,
                 "mscale": 1.0, "mscale_all_dim": 0.5, "beta_fast": 32, "beta_slow": 1}


def test_deepseek_v3_yarn_with_mscale_all_dim_gives_the_same_logits():
    """qk_rope_head_dim as the rotated head, interleaved pairs permuted by the model, mscale / mscale_all_dim
    on cos/sin (the model's softmax scale carries mscale_all_dim squared itself)."""
    if not hasattr(transformers, "DeepseekV3ForCausalLM"):
        pytest.skip("no DeepSeek-V3 in this transformers")
    model = tiny_deepseek(3, DEEPSEEK_YARN)
    tokens = torch.randint(0, 64, (2, 40), generator=torch.Generator().manual_seed(5))
    assert_swap_keeps_logits(model, tokens)
    assert model.model.rotary_emb.encodings["default"].scaling.attention_factor == pytest.approx(
        (0.1 * math.log(4.0) + 1) / (0.05 * math.log(4.0) + 1), rel=1e-12)


def test_phi3_longrope_shorter_than_its_trained_length_gives_the_same_logits():
    """Phi-3 keeps original_max_position_embeddings (4096 by default) beside a longrope without factor;
    below it, transformers' factor max_position_embeddings / 4096 is under 1 and its attention factor 1.
    This used to be refused ('`max_len` must be >= `original_max_len`')."""
    config = transformers.Phi3Config(
        hidden_size=4 * HEAD_DIM, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2, intermediate_size=64,
        vocab_size=64, pad_token_id=0, max_position_embeddings=64,
        rope_parameters={"rope_type": "longrope", "short_factor": ROPES["longrope"]["short_factor"],
                         "long_factor": ROPES["longrope"]["long_factor"]},
    )
    torch.manual_seed(0)
    model = transformers.Phi3ForCausalLM(config).eval()
    assert_swap_keeps_logits(model, torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(6)))
    assert model.model.rotary_emb.encodings["default"].scaling.attention_factor == 1.0


@pytest.mark.parametrize("name", ["HunYuanDenseV1", "HunYuanMoEV1"])
def test_hunyuan_dynamic_with_alpha_gives_the_same_logits(name):
    """HunYuan's checkpoints label their RoPE 'dynamic' with an alpha, which their models read as a static
    NTK base, base * alpha ** (d / (d - 2)); posenc built transformers' dynamic NTK from it (the base
    unchanged within max_position_embeddings) and the swapped model's logits moved by 0.12."""
    if not hasattr(transformers, f"{name}ForCausalLM"):
        pytest.skip(f"no {name} in this transformers")
    config = getattr(transformers, f"{name}Config")(
        hidden_size=4 * HEAD_DIM, num_attention_heads=4, num_key_value_heads=2, head_dim=HEAD_DIM, num_hidden_layers=2,
        intermediate_size=64, vocab_size=64, max_position_embeddings=64, pad_token_id=0,
        rope_parameters={"rope_type": "dynamic", "alpha": 1000.0, "factor": 1.0, "rope_theta": 10000.0},
    )
    torch.manual_seed(0)
    model = getattr(transformers, f"{name}ForCausalLM")(config).eval()
    assert_swap_keeps_logits(model, torch.randint(1, 64, (2, 12), generator=torch.Generator().manual_seed(1)))


def test_lfm3_reads_the_layer_types_of_its_rotary_module():
    """LFM3's model asks its rotary module for the cos/sin of each of ``rotary_emb.layer_types``; posenc's
    module had no such attribute and the swapped model failed at its first forward with an AttributeError."""
    if not hasattr(transformers, "Lfm3ForCausalLM"):
        pytest.skip("no LFM3 in this transformers")
    config = transformers.Lfm3Config(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=4,
                                     intermediate_size=64, vocab_size=64, max_position_embeddings=64, pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.Lfm3ForCausalLM(config).eval()
    tokens = torch.randint(1, 64, (2, 12), generator=torch.Generator().manual_seed(10))
    assert_swap_keeps_logits(model, tokens)
    assert set(model.model.rotary_emb.layer_types) == {"full_attention", "sliding_attention"}
    # one shared encoding serves the layer types the model's config gives RoPE parameters for
    use_posenc_rotary(model, RotaryPositionEncoding(config.head_dim, p=0.25))
    assert set(model.model.rotary_emb.layer_types) == {"full_attention", "sliding_attention"}
    with torch.no_grad():
        assert torch.isfinite(model(tokens).logits).all()
    assert PosencRotaryEmbedding(RotaryPositionEncoding(HEAD_DIM)).layer_types == ["default"]


def test_a_model_on_the_meta_device_is_refused_by_name():
    """The layout probe compared the meta rotary module's cos halves with torch.equal, which failed inside
    torch ('aten::equal: attempted to run this operator with Meta tensors')."""
    config = transformers.LlamaConfig(hidden_size=4 * HEAD_DIM, num_attention_heads=4, num_key_value_heads=2,
                                      num_hidden_layers=1, intermediate_size=32, vocab_size=64)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    with pytest.raises(ValueError, match="'model.rotary_emb'.*is on the meta device"):
        use_posenc_rotary(model)
    assert type(model.model.rotary_emb).__name__ == "LlamaRotaryEmbedding"  # left as it was


def test_position_ids_per_axis_are_refused_by_name():
    """NeoMME hands its rotary module (2, b, n) row/column ids (multimodal RoPE without mrope_section):
    posenc's module took them as (2, b, n) explicit positions and the model then failed inside torch
    ('The size of tensor a (4) must match the size of tensor b (2) at non-singleton dimension 2')."""
    rotary = PosencRotaryEmbedding(RotaryPositionEncoding(HEAD_DIM))
    x, ids = torch.zeros(2, 5, HEAD_DIM), torch.arange(5).expand(2, -1)
    assert rotary(x, ids)[0].shape == (2, 5, HEAD_DIM)
    for bad in (ids.expand(2, -1, -1), torch.arange(5)):
        with pytest.raises(ValueError, match=r"`position_ids` must have shape \(b, n\).*apply_mrope"):
            rotary(x, bad)
    if not hasattr(transformers, "NeoMMEConfig"):
        return
    config = transformers.NeoMMEConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                                       intermediate_size=64, vocab_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    model = use_posenc_rotary(transformers.NeoMMEForMaskedLM(config).eval())
    with pytest.raises(ValueError, match=r"`position_ids` must have shape \(b, n\), one position per token, got \(2, 1, 6\)"):
        model(torch.randint(1, 64, (1, 6)))


def test_models_whose_rotary_has_another_interface_are_refused():
    """DeepSeek-V2's rotary returns one complex tensor, Qwen2-VL's takes (3, b, n) M-RoPE ids: swapping
    them once crashed deep inside the model (AttributeError, a matmul shape error)."""
    if hasattr(transformers, "DeepseekV2ForCausalLM"):
        with pytest.raises(ValueError, match="does not return \\(cos, sin\\)"):
            use_posenc_rotary(tiny_deepseek(2, DEEPSEEK_YARN))
    if hasattr(transformers, "Qwen2VLForConditionalGeneration"):
        config = transformers.Qwen2VLConfig(
            text_config={"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 1,
                         "intermediate_size": 64, "vocab_size": 128, "head_dim": 16,
                         "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]}},
            vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2,
                           "spatial_merge_size": 2, "patch_size": 4, "temporal_patch_size": 2},
        )
        model = transformers.Qwen2VLForConditionalGeneration(config)
        for encoding in (None, RotaryPositionEncoding(16)):
            with pytest.raises(ValueError, match="mrope_section"):
                use_posenc_rotary(model, encoding)


def tiny_of(name, **extra):
    config = getattr(transformers, f"{name}Config")(
        hidden_size=4 * HEAD_DIM, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
        intermediate_size=64, vocab_size=64, max_position_embeddings=64, **extra,
    )
    torch.manual_seed(0)
    return getattr(transformers, f"{name}ForCausalLM")(config).eval()


@pytest.mark.parametrize("name, extra, layout", [
    ("Cohere", {}, "interleaved"),  # each angle at 2i and 2i + 1 (repeat_interleave)
    ("GptOss", {"num_local_experts": 2, "num_experts_per_tok": 1, "head_dim": HEAD_DIM,
                "layer_types": ["full_attention"] * 2}, "single"),  # (b, n, rot/2): each angle once
])
def test_cos_sin_come_in_the_layout_of_the_replaced_module(name, extra, layout):
    """Cohere's cos/sin once came back in Llama's halves layout (logits off by 3.5e-4, silently) and
    gpt-oss's at twice their width (a shape error inside its attention); each now keeps its model's logits."""
    if not hasattr(transformers, f"{name}ForCausalLM"):
        pytest.skip(f"no {name} in this transformers")
    model = tiny_of(name, **extra)
    tokens = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(7))
    assert_swap_keeps_logits(model, tokens)
    assert model.model.rotary_emb.layout == layout


def test_an_encoding_of_another_width_than_the_model_is_refused():
    """An encoding rotating 8 features in a model with 16-wide heads once failed at the first forward
    with a bare shape error from torch; it is now refused when swapped in, naming both widths."""
    with pytest.raises(ValueError, match="`encoding` rotates 8 features.*width 16"):
        use_posenc_rotary(tiny_of("Llama"), RotaryPositionEncoding(8))
    with pytest.raises(ValueError, match="`encoding` rotates 32 features.*width 16"):
        use_posenc_rotary(tiny_of("Llama"), RotaryPositionEncoding(32))
    with pytest.raises(ValueError, match="`layout`"):
        PosencRotaryEmbedding(RotaryPositionEncoding(8), layout="pairs")


def test_xpos_is_refused_rather_than_run_as_its_rope():
    """xPos scales queries and keys apart; handed over as one (cos, sin) it used to run in the model as plain
    RoPE (the same logits as RotaryPositionEncoding), without a word."""
    from posenc.rotary import XPos

    with pytest.raises(TypeError, match="xPos"):
        use_posenc_rotary(tiny_of("Llama"), XPos(HEAD_DIM))
    with pytest.raises(TypeError, match="xPos"):
        PosencRotaryEmbedding({"full_attention": XPos(HEAD_DIM)})


def test_gemma4_full_attention_heads_of_their_own_width():
    """Gemma 4's full-attention layers rotate wider heads (``global_head_dim``) than its sliding ones;
    the swapped model once failed there with a bare shape error from torch."""
    if not hasattr(transformers, "Gemma4ForCausalLM"):
        pytest.skip("no Gemma 4 in this transformers")
    config = transformers.Gemma4TextConfig(
        hidden_size=4 * HEAD_DIM, num_attention_heads=4, head_dim=HEAD_DIM, global_head_dim=2 * HEAD_DIM,
        num_hidden_layers=2, num_key_value_heads=2, intermediate_size=64, vocab_size=64, max_position_embeddings=64,
        sliding_window=4, layer_types=["sliding_attention", "full_attention"], hidden_size_per_layer_input=0,
        vocab_size_per_layer_input=64, num_kv_shared_layers=0,
    )
    torch.manual_seed(0)
    model = transformers.Gemma4ForCausalLM(config).eval()
    tokens = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(4))
    assert_swap_keeps_logits(model, tokens)


def test_per_layer_type_rotary_returning_one_angle_per_pair():
    """DeepSeek-V4's rotary takes a layer type and returns each angle once, (b, n, rot/2), which its
    attention interleaves itself; the swapped module, unprobed, once returned Llama's halves and the
    logits moved by 0.35 without an error. Its layout is now read per layer type."""
    if not hasattr(transformers, "DeepseekV4ForCausalLM"):
        pytest.skip("no DeepSeek-V4 in this transformers")
    model = tiny_of("DeepseekV4", head_dim=HEAD_DIM, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    tokens = torch.randint(3, 64, (1, 10), generator=torch.Generator().manual_seed(1))
    assert_swap_keeps_logits(model, tokens)
    assert model.model.rotary_emb.layout == "single"


def test_rotary_modules_built_from_their_own_configs():
    """Granite SWA builds one rotary module per layer base from copies of its config and keys them by
    ``rotary_emb.config.rope_parameters['rope_theta']``; the swapped model once failed with an
    AttributeError from inside it. Each module's RoPE is now read from its own config and kept there."""
    if not hasattr(transformers, "GraniteSWAForCausalLM"):
        pytest.skip("no Granite SWA in this transformers")
    model = tiny_of("GraniteSWA", head_dim=HEAD_DIM, layer_rope_theta=[10000.0, 500000.0])
    tokens = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(8))
    assert_swap_keeps_logits(model, tokens)
    assert sorted(m.encodings["default"].base for m in model.model.rotary_embs) == [10000.0, 500000.0]


def test_a_vision_tower_rotary_stays():
    """Mistral 3's Pixtral vision tower has its own 2-D rotary module (built from its vision config):
    it was replaced by the text RoPE too, or refused the whole swap ("rope_type ... 'axial'"); only the
    text model's rotary is replaced now, and the text logits are kept."""
    if not hasattr(transformers, "Mistral3ForConditionalGeneration"):
        pytest.skip("no Mistral 3 in this transformers")
    config = transformers.Mistral3Config(
        text_config={"model_type": "mistral", "hidden_size": 4 * HEAD_DIM, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "num_hidden_layers": 1, "intermediate_size": 64, "vocab_size": 64, "head_dim": HEAD_DIM},
        vision_config={"model_type": "pixtral", "hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1,
                       "intermediate_size": 32, "image_size": 16, "patch_size": 4, "head_dim": 16},
        image_token_index=5,
    )
    torch.manual_seed(0)
    model = transformers.Mistral3ForConditionalGeneration(config).eval()
    vision_rotary = model.model.vision_tower.patch_positional_embedding
    tokens = torch.randint(6, 64, (1, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(input_ids=tokens).logits
        got = use_posenc_rotary(model)(input_ids=tokens).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert model.model.vision_tower.patch_positional_embedding is vision_rotary
    assert isinstance(model.model.language_model.rotary_emb, PosencRotaryEmbedding)


def test_an_encoding_that_is_not_rotary_is_refused_by_name():
    """An ALiBi or a registry name failed with AttributeError: 'ALiBi' object has no attribute 'items'."""
    import posenc

    with pytest.raises(TypeError, match="`encoding` must be a RotaryPositionEncoding, a dict of them by layer type, or None, got ALiBi"):
        use_posenc_rotary(tiny_of("Llama"), posenc.create("alibi", heads=4))
    with pytest.raises(TypeError, match="`encoding` must be .* got str"):
        use_posenc_rotary(tiny_of("Llama"), "rope")
    with pytest.raises(TypeError, match="`encodings` must be a RotaryPositionEncoding or a dict of them by layer type, got str"):
        PosencRotaryEmbedding("rope")
