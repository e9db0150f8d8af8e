"""NoPE/RoPE hybrids: NoPE layers are permutation-equivariant, Llama 4's temperature formula, RoPE on a
subset of heads, cached decoding equal to a full pass, and the plan's errors."""

from __future__ import annotations

import math

import pytest
import torch

from posenc.core.positions import Positions
from posenc.functional import apply_rope
from posenc.models import PositionPlan, Transformer
from posenc.rotary import AttentionTemperature, NoRope, RotaryOnHeads, RotaryPositionEncoding, attention_temperature
from posenc.rotary.hybrid import every_kth_layer, nope_layers_from_flags


def _block_out(model, layer, x, positions):
    return model.blocks[layer](x, position=model.position_for_layer(layer), q_positions=positions, k_positions=positions)


@pytest.mark.parametrize("nope, equivariant", [(True, True), (False, False)])
def test_nope_layer_is_permutation_equivariant(nope, equivariant):
    torch.manual_seed(0)
    plan = PositionPlan(no_rope_layers=(1,) if nope else ())
    model = Transformer(50, 16, 2, 2, position="rope", position_plan=plan).eval()
    x, perm, pos = torch.randn(2, 7, 16), torch.randperm(7), Positions(7)
    with torch.no_grad():
        out, out_perm = _block_out(model, 1, x, pos), _block_out(model, 1, x[:, perm], pos)
    assert torch.allclose(out_perm, out[:, perm], atol=1e-5) == equivariant
    # the RoPE layer 0 is not equivariant either way
    with torch.no_grad():
        assert not torch.allclose(_block_out(model, 0, x[:, perm], pos), _block_out(model, 0, x, pos)[:, perm], atol=1e-3)


def test_temperature_formula():
    # Llama 4: 1 + attn_scale * log(1 + floor((p + 1) / floor_scale)), transcribed per position
    pos = torch.tensor([0, 2, 3, 6, 7, 100, 10**6])
    ref = [1 + 0.1 * math.log(1 + math.floor((p + 1) / 4)) for p in pos.tolist()]
    torch.testing.assert_close(attention_temperature(pos, floor_scale=4, attn_scale=0.1), torch.tensor(ref), rtol=1e-6, atol=0)
    assert attention_temperature(torch.arange(8191)).eq(1).all()  # Llama 4's defaults leave short contexts as they are


def test_nope_temperature_scales_queries_only():
    q, k = torch.randn(2, 3, 5, 4, dtype=torch.float64), torch.randn(2, 3, 5, 4, dtype=torch.float64)
    pos = Positions(5, 10)
    rq, rk = NoRope(AttentionTemperature(floor_scale=3, attn_scale=0.5)).rotate(q, k, q_positions=pos, k_positions=pos)
    scale = attention_temperature(torch.arange(10, 15), floor_scale=3, attn_scale=0.5).double()
    torch.testing.assert_close(rq, q * scale[:, None], rtol=1e-7, atol=0)
    assert rk is k
    assert NoRope().hooks == frozenset()


def test_a_float64_model_gets_the_temperature_in_float64():
    # the scale was always rounded to float32: a float64 model's NoPE queries were off by up to 7e-8
    # (relative 3e-8) from Llama 4's formula
    q = torch.randn(1, 2, 6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rq, _ = NoRope(AttentionTemperature(floor_scale=2, attn_scale=0.1)).rotate(q, q, q_positions=Positions(6), k_positions=Positions(6))
    ref = torch.tensor([1 + 0.1 * math.log(1 + math.floor((p + 1) / 2)) for p in range(6)], dtype=torch.float64)
    torch.testing.assert_close(rq, q * ref[:, None], rtol=1e-15, atol=1e-15)
    assert attention_temperature(torch.arange(3), dtype=torch.bfloat16).dtype == torch.float32


def test_rope_on_a_subset_of_heads():
    model = Transformer(50, 16, 1, 4, position="rope", position_plan=PositionPlan(rope_heads=1))
    enc = model.position_for_layer(0)
    assert isinstance(enc, RotaryOnHeads)
    q, k = torch.randn(2, 4, 5, 4), torch.randn(2, 4, 5, 4)
    rq, rk = enc.rotate(q, k, q_positions=Positions(5, 3), k_positions=Positions(5, 3))
    torch.testing.assert_close(rq[:, :1], apply_rope(q[:, :1], torch.arange(3, 8)))
    torch.testing.assert_close(rk[:, :1], apply_rope(k[:, :1], torch.arange(3, 8)))
    assert torch.equal(rq[:, 1:], q[:, 1:]) and torch.equal(rk[:, 1:], k[:, 1:])


def test_rope_on_a_subset_of_heads_with_grouped_query_keys():
    """4 query heads over 2 key heads, the first 2 query heads rotated: they share key head 0, which is
    rotated; query heads 2 and 3 read key head 1, which must stay position-free (it used to be rotated,
    putting their scores off plain q . k by up to 5)."""
    torch.manual_seed(0)
    enc = RotaryOnHeads(RotaryPositionEncoding(8), 2)
    q, k = torch.randn(1, 4, 6, 8, dtype=torch.float64), torch.randn(1, 2, 6, 8, dtype=torch.float64)
    rq, rk = enc.rotate(q, k, q_positions=Positions(6), k_positions=Positions(6))
    torch.testing.assert_close(rq[:, :2], apply_rope(q[:, :2], torch.arange(6)))
    torch.testing.assert_close(rk[:, :1], apply_rope(k[:, :1], torch.arange(6)))
    assert torch.equal(rq[:, 2:], q[:, 2:]) and torch.equal(rk[:, 1:], k[:, 1:])
    with pytest.raises(ValueError, match="multiple of the 2 query heads"):
        RotaryOnHeads(RotaryPositionEncoding(8), 1).rotate(q, k, q_positions=Positions(6), k_positions=Positions(6))
    with pytest.raises(ValueError, match="`k` must have a number of heads dividing"):
        enc.rotate(q, k[:, :1].expand(1, 3, 6, 8), q_positions=Positions(6), k_positions=Positions(6))


def test_layer_patterns():
    assert every_kth_layer(10, 4) == (3, 7)
    assert nope_layers_from_flags([1, 1, 1, 0, 1, 1, 1, 0]) == (3, 7)
    assert PositionPlan(no_rope_layers=(0,), no_rope_every=3).nope_layers(7) == {0, 2, 5}
    model = Transformer(50, 16, 4, 2, position="rope", position_plan=PositionPlan(no_rope_every=2))
    assert [isinstance(model.position_for_layer(i), NoRope) for i in range(4)] == [False, True, False, True]


@pytest.mark.parametrize(
    "plan",
    [
        PositionPlan(no_rope_every=2, attn_temperature_tuning=AttentionTemperature(floor_scale=2.0, attn_scale=0.3)),
        PositionPlan(no_rope_layers=(0,), rope_heads=1),
    ],
)
def test_cached_decoding_equals_full_forward(plan):
    torch.manual_seed(0)
    model = Transformer(50, 16, 3, 2, position="rope", causal=True, position_plan=plan).eval()
    tokens = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_cache()
        chunks = [model(tokens[:, :4], cache=cache)] + [model(tokens[:, t : t + 1], cache=cache) for t in range(4, 9)]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens, positions=torch.arange(9)), full, rtol=1e-5, atol=1e-5)


def test_temperature_changes_long_positions_only():
    torch.manual_seed(0)
    plan = PositionPlan(no_rope_layers=(0,), attn_temperature_tuning=AttentionTemperature(floor_scale=4.0, attn_scale=1.0))
    model = Transformer(50, 16, 1, 2, position="rope", causal=True, position_plan=plan).eval()
    plain = Transformer(50, 16, 1, 2, position="rope", causal=True, position_plan=PositionPlan(no_rope_layers=(0,))).eval()
    plain.load_state_dict(model.state_dict())
    tokens = torch.randint(0, 50, (1, 8))
    with torch.no_grad():
        a, b = model(tokens), plain(tokens)
    torch.testing.assert_close(a[:, :3], b[:, :3])  # positions 0..2: temperature 1
    assert not torch.allclose(a[:, 3:], b[:, 3:])


def test_compiles_fullgraph():
    plan = PositionPlan(no_rope_every=2, attn_temperature_tuning=AttentionTemperature(floor_scale=2.0), rope_heads=1)
    model = Transformer(50, 16, 2, 2, position="rope", causal=True, position_plan=plan).eval()
    tokens = torch.randint(0, 50, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, fullgraph=True, backend="eager")(tokens), model(tokens))


@pytest.mark.parametrize(
    "position, plan, name",
    [
        ("rope", PositionPlan(no_rope_layers=(2,)), r"no_rope_layers\[0\]"),
        ("rope", PositionPlan(no_rope_every=0), "no_rope_every"),
        ("rope", PositionPlan(rope_heads=3), "rope_heads"),
        ("rope_learned", PositionPlan(rope_heads=3), "rope_heads"),
        ("rope", PositionPlan(attn_temperature_tuning=0.1), "attn_temperature_tuning"),
        ("alibi", PositionPlan(no_rope_layers=(0,)), "position_plan"),
        ("rope", {"no_rope_layers": (0,)}, "position_plan"),
        # an int where a sequence belongs failed with "'int' object is not iterable"
        ("rope", PositionPlan(no_rope_layers=1), "`no_rope_layers` must be a sequence of layer indices, got int 1"),
        ("rope", PositionPlan(no_rope_layers="1"), "`no_rope_layers` must be a sequence of layer indices, got str '1'"),
    ],
)
def test_bad_plan_names_the_argument(position, plan, name):
    with pytest.raises((ValueError, TypeError), match=name):
        Transformer(50, 16, 2, 2, position=position, position_plan=plan)


def test_bad_plan_values():
    with pytest.raises(ValueError, match="rope_heads"):
        PositionPlan(rope_heads=0)


def test_bad_temperature():
    with pytest.raises(ValueError, match="floor_scale"):
        AttentionTemperature(floor_scale=0.0)


def test_plan_with_learned_frequencies_round_trips_and_copies():
    import copy

    torch.manual_seed(0)
    plan = PositionPlan(no_rope_layers=(1,), rope_heads=1)
    model = Transformer(50, 16, 3, 2, position="rope_learned", causal=True, position_plan=plan).eval()
    state = model.state_dict()
    assert sum(k.endswith("freqs") for k in state) == 3  # one set per block, none duplicated by the plan
    assert model.position.freqs.shape == (1, 4)  # built for the one head it rotates
    tokens = torch.randint(0, 50, (2, 6))
    with torch.device("meta"):
        fresh = Transformer(50, 16, 3, 2, position="rope_learned", causal=True, position_plan=plan)
    fresh = fresh.to_empty(device="cpu").eval()
    fresh.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(fresh(tokens), model(tokens))
        twin = copy.deepcopy(model)
        twin.position_for_layer(2).inner.freqs.mul_(3.0)  # the copy's plan wraps the copy's encodings
        assert not torch.allclose(twin(tokens), model(tokens))
        torch.testing.assert_close(model.double()(tokens), fresh(tokens).double(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("module, config", [("llama4", "Llama4TextConfig"), ("smollm3", "SmolLM3Config")])
def test_every_fourth_layer_matches_transformers_defaults(module, config):
    configuration = pytest.importorskip(f"transformers.models.{module}.configuration_{module}")
    cfg = getattr(configuration, config)(num_hidden_layers=10)
    assert nope_layers_from_flags(cfg.no_rope_layers) == every_kth_layer(10, 4) == (3, 7)
    if module == "llama4":
        assert (cfg.floor_scale, cfg.attn_scale) == (AttentionTemperature().floor_scale, AttentionTemperature().attn_scale)


def test_every_trainable_parameter_gets_a_gradient():
    # DDP without find_unused_parameters needs this: the NoPE layer's own learned frequencies are frozen
    torch.manual_seed(0)
    model = Transformer(50, 16, 3, 2, position="rope_learned", causal=True, position_plan=PositionPlan(no_rope_layers=(1,)))
    model(torch.randint(0, 50, (2, 6))).sum().backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []
    assert not model.layer_positions[0].freqs.requires_grad  # block 1's


@pytest.mark.parametrize(
    "kwargs, name",
    [({"floor_scale": 0}, "floor_scale"), ({"floor_scale": -8.0}, "floor_scale"),
     ({"attn_scale": float("nan")}, "attn_scale"), ({"attn_scale": -0.1}, "attn_scale")],
)
def test_attention_temperature_refuses_bad_scales(kwargs, name):
    """As AttentionTemperature does: the function alone gave inf or NaN for these."""
    with pytest.raises(ValueError, match=f"`{name}`"):
        attention_temperature(torch.arange(4), **kwargs)


@pytest.mark.parametrize(
    "positions, error, message",
    [
        (torch.tensor([0.0, float("nan")]), ValueError, "`positions` must be finite"),
        (torch.tensor([-5, 0, 1]), ValueError, "`positions` must be >= 0"),
        (torch.tensor([300.0, 301.0], dtype=torch.bfloat16), ValueError, "`positions` must be an integer, float32 or float64"),
        (torch.tensor([True, False]), ValueError, "`positions` must be an integer or float tensor"),
        ([0, 1], TypeError, "`positions` must be a torch.Tensor"),
    ],
)
def test_attention_temperature_refuses_bad_positions(positions, error, message):
    """They gave a NaN temperature, -inf below position 0 (queries of +-inf), bf16 positions collapsed
    onto one, bools taken as 0 and 1, and a list failed with AttributeError."""
    with pytest.raises(error, match=message):
        attention_temperature(positions, floor_scale=4.0)


def test_nope_layer_refuses_negative_positions():
    layer = NoRope(AttentionTemperature(floor_scale=4.0))
    q = torch.randn(1, 2, 3, 8)
    positions = Positions(3, explicit=torch.tensor([[-3, -2, -1]]))
    with pytest.raises(ValueError, match="`positions` must be >= 0"):
        layer.rotate(q, q, q_positions=positions, k_positions=positions)
