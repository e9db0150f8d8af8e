"""use_posenc_rotary: a tiny random transformers model keeps its logits when posenc's RoPE replaces its own."""

from __future__ import annotations

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


def test_bad_arguments():
    with pytest.raises(TypeError, match="model"):
        use_posenc_rotary("llama")
    with pytest.raises(ValueError, match="RotaryEmbedding"):
        use_posenc_rotary(torch.nn.Linear(2, 2), RotaryPositionEncoding(8))
    with pytest.raises(ValueError, match="encodings"):
        PosencRotaryEmbedding(RotaryPositionEncoding(8, interleaved=True))


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
    with torch.no_grad():
        want = model(tokens).logits
        got = use_posenc_rotary(model)(tokens).logits
    assert set(model.model.rotary_emb.encodings) == {"sliding_attention", "full_attention"}
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
