"""The reference Transformer with each foundation encoding: training, decoding, masks, properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_loss_falls, train_losses
from hypothesis import given
from hypothesis import strategies as st

import posenc
from posenc.core.positions import Positions
from posenc.models import Block, Transformer

FOUNDATION = ["none", "sinusoidal", "learned", "rope", "alibi", "t5"]


def tiny(position, causal=False, **kw):
    return Transformer(16, 32, 2, 4, position=position, causal=causal, **kw)


@pytest.mark.parametrize("position", FOUNDATION)
def test_loss_falls_on_a_synthetic_task(position):
    torch.manual_seed(0)
    model = Transformer(16, 32, 1, 4, position=position, causal=True)

    def batch():
        # each sequence counts upward from a random start: the next token is predictable
        start = torch.randint(0, 16, (16, 1))
        seq = (start + torch.arange(13)) % 16
        return seq[:, :-1], seq[:, 1:]

    losses = train_losses(model, batch, lambda out, y: F.cross_entropy(out.flatten(0, 1), y.flatten()), steps=40, lr=1e-2)
    assert_loss_falls(losses, factor=0.5)


@pytest.mark.parametrize("position", FOUNDATION)
def test_cached_decoding_equals_full_forward(position):
    model = tiny(position, causal=True).eval()
    tokens = torch.randint(0, 16, (2, 11))
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_cache()
        chunks = [model(tokens[:, :4], cache=cache)] + [model(tokens[:, t : t + 1], cache=cache) for t in range(4, 11)]
    assert cache.length == 11
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("position", FOUNDATION)
def test_explicit_positions_equal_implicit(position):
    model = tiny(position).eval()
    tokens = torch.randint(0, 16, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), model(tokens, positions=torch.arange(7)))
        torch.testing.assert_close(model(tokens), model(tokens, positions=torch.arange(7).expand(2, 7)))


@given(seed=st.integers(0, 2**16))
def test_encoder_without_encoding_is_permutation_equivariant(seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(0)
    model = tiny("none").eval()
    tokens = torch.randint(0, 16, (2, 9), generator=gen)
    perm = torch.randperm(9, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens[:, perm]), model(tokens)[:, perm], atol=1e-5, rtol=0)


@pytest.mark.parametrize("position", ["sinusoidal", "learned", "rope", "alibi", "t5"])
def test_every_encoding_breaks_equivariance(position):
    torch.manual_seed(0)
    model = tiny(position).eval()
    if position == "t5":
        torch.nn.init.normal_(model.position.bias.weight, std=1.0)
    if position == "learned":
        torch.nn.init.normal_(model.position.weight, std=1.0)
    tokens = torch.randint(0, 16, (1, 9))
    perm = torch.tensor([3, 0, 7, 1, 8, 2, 5, 4, 6])  # not a reversal: symmetric ALiBi is reversal-invariant
    with torch.no_grad():
        assert (model(tokens[:, perm]) - model(tokens)[:, perm]).abs().max() > 1e-3


def logit(position, q, k, i, j, heads):
    """q . k / sqrt(d) + bias for one query at position i and one key at position j, through the hooks."""
    qp, kp = Positions(1, explicit=torch.tensor([[i]])), Positions(1, explicit=torch.tensor([[j]]))
    if "rotary" in position.hooks:
        q, _ = position.rotate(q, q, q_positions=qp, k_positions=qp)
        k, _ = position.rotate(k, k, q_positions=kp, k_positions=kp)
    out = (q * k).sum(-1, keepdim=True) / math.sqrt(q.shape[-1])
    if "bias" in position.hooks:
        out = out + position.score_bias(q, k, q_positions=qp, k_positions=kp)
    return out.flatten()


@pytest.mark.parametrize("name", ["rope", "alibi", "t5"])
@given(i=st.integers(0, 200), j=st.integers(0, 200), shift=st.integers(0, 100000))
def test_logit_is_invariant_to_a_common_shift(name, i, j, shift):
    torch.manual_seed(0)
    position = posenc.create(name, **({"head_dim": 16} if name == "rope" else {"heads": 2, "causal": False}))
    q, k = torch.randn(1, 2, 1, 16, dtype=torch.float64), torch.randn(1, 2, 1, 16, dtype=torch.float64)
    if name != "rope":
        position = position.double()
    torch.testing.assert_close(logit(position, q, k, i, j, 2), logit(position, q, k, i + shift, j + shift, 2), atol=1e-8, rtol=0)


@pytest.mark.parametrize("position", FOUNDATION)
def test_key_padding_mask_hides_padding(position):
    model = tiny(position).eval()
    tokens = torch.randint(0, 16, (1, 6))
    padded = torch.cat([tokens, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.tensor([[True] * 6 + [False] * 3])
    with torch.no_grad():
        torch.testing.assert_close(model(padded, key_padding_mask=mask)[:, :6], model(tokens), atol=1e-5, rtol=0)


@pytest.mark.parametrize("position", FOUNDATION)
def test_left_padded_causal_batch_with_explicit_positions(position):
    model = tiny(position, causal=True).eval()
    tokens = torch.randint(0, 16, (1, 5))
    padded = torch.cat([torch.zeros(1, 2, dtype=torch.long), tokens], dim=1)
    mask = torch.tensor([[False, False] + [True] * 5])
    positions = torch.tensor([[0, 0, 0, 1, 2, 3, 4]])
    with torch.no_grad():
        out = model(padded, key_padding_mask=mask, positions=positions)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out[:, 2:], model(tokens), atol=1e-5, rtol=0)


@pytest.mark.parametrize("position", FOUNDATION)
def test_state_dict_round_trip_excludes_derived_tables(position):
    a, b = tiny(position), tiny(position)
    state = a.state_dict()
    assert not any(k.endswith(("cos_cached", "sin_cached", "table", "slopes")) for k in state)
    b.load_state_dict(state)
    tokens = torch.randint(0, 16, (1, 5))
    torch.testing.assert_close(a.eval()(tokens), b.eval()(tokens))


def test_bf16_model_keeps_float32_tables_and_runs_at_large_positions():
    model = tiny("rope", causal=True).to(torch.bfloat16).eval()
    assert model.position.cos_cached.dtype == torch.float32
    tokens = torch.randint(0, 16, (1, 4))
    with torch.no_grad():
        out = model(tokens, positions=torch.arange(99996, 100000))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_position_as_module_and_kwargs():
    rope = posenc.create("rope", head_dim=8, scaling="linear", factor=2.0)
    model = Transformer(16, 32, 1, 4, position=rope, causal=True)
    assert model.position is rope
    by_name = Transformer(16, 32, 1, 4, position="rope", causal=True, scaling="linear", factor=2.0)
    assert by_name.position.scaling.factor == 2.0
    # the encoding's own width collides with the model's `dim`: a concatenated encoding comes as a module
    concat = Transformer(16, 32, 1, 4, position=posenc.create("sinusoidal", dim=8, combine="concat"))
    assert concat.embed.embedding_dim == 24
    assert concat(torch.randint(0, 16, (1, 3))).shape == (1, 3, 16)


def test_bad_input():
    with pytest.raises(ValueError, match="heads"):
        Transformer(16, 30, 1, 4)
    with pytest.raises(ValueError, match="known encodings: .*rope"):
        Transformer(16, 32, 1, 4, position="ropee")
    with pytest.raises(ValueError, match="registry name"):
        Transformer(16, 32, 1, 4, position=posenc.create("none"), base=3.0)
    with pytest.raises(TypeError, match="position"):
        Transformer(16, 32, 1, 4, position=3)
    model = tiny("rope")
    with pytest.raises(ValueError, match="key_padding_mask"):
        model(torch.zeros(1, 3, dtype=torch.long), key_padding_mask=torch.ones(1, 3))
    with pytest.raises(ValueError, match="causal"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=model.new_cache())
    decoder = tiny("rope", causal=True)
    cache = decoder.new_cache()
    decoder(torch.zeros(2, 3, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="cache.*batch of 2 rows.*3"):
        decoder(torch.zeros(3, 1, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="cache.*layers"):
        Transformer(16, 32, 1, 4, position="rope", causal=True)(torch.zeros(2, 1, dtype=torch.long), cache=cache)
    with pytest.raises(TypeError, match="KVCache"):
        decoder(torch.zeros(2, 1, dtype=torch.long), cache={})
    with pytest.raises(ValueError, match="tokens"):
        model(torch.zeros(3, dtype=torch.long))
    vocab = model.embed.num_embeddings
    for ids, said in ((torch.zeros(1, 3), "integer"), (torch.full((1, 3), vocab), rf"\[0, {vocab}\)"), (-torch.ones(1, 3, dtype=torch.long), "-1")):
        with pytest.raises(ValueError, match=f"tokens.*{said}"):
            model(ids)
    with pytest.raises(ValueError, match="positions"):
        model(torch.zeros(1, 3, dtype=torch.long), positions=torch.arange(4))
    with pytest.raises(ValueError, match="max_len"):
        Transformer(16, 32, 1, 4, position="learned", max_len=4)(torch.zeros(1, 5, dtype=torch.long))


@pytest.mark.parametrize(
    "kwargs,error,name",
    [
        ({"mlp_ratio": -1}, ValueError, "mlp_ratio"),
        ({"mlp_ratio": 0}, ValueError, "mlp_ratio"),
        ({"mlp_ratio": float("nan")}, ValueError, "mlp_ratio"),
        ({"mlp_ratio": "4"}, TypeError, "mlp_ratio"),
        ({"mlp_ratio": 0.01}, ValueError, "mlp_ratio"),  # int(32 * 0.01) = 0 units
        ({"causal": "no"}, TypeError, "causal"),
        ({"causal": 1}, TypeError, "causal"),
    ],
)
def test_bad_block_arguments_name_themselves(kwargs, error, name):
    with pytest.raises(error, match=f"`{name}`"):
        Transformer(16, 32, 1, 4, **kwargs)


@pytest.mark.parametrize(
    "kwargs,error,name",
    [
        ({"dim": -1}, ValueError, "dim"),
        ({"dim": 8.0}, TypeError, "dim"),
        ({"mlp_ratio": -1}, ValueError, "mlp_ratio"),
        ({"mlp_ratio": float("nan")}, ValueError, "mlp_ratio"),
        ({"mlp_ratio": 0}, ValueError, "mlp_ratio"),
    ],
)
def test_block_refuses_its_sizes_by_name(kwargs, error, name):
    # Block (public in posenc.models) built its layers unchecked: torch's negative-dimension errors,
    # int(nan), or an MLP of zero units for mlp_ratio=0
    with pytest.raises(error, match=f"`{name}`"):
        Block(**{"dim": 8, "heads": 2, "causal": False, "mlp_ratio": 4.0, "dropout": 0.0, **kwargs})


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16])
def test_token_ids_of_a_dtype_the_embedding_cannot_take_are_refused(dtype):
    model = Transformer(16, 32, 1, 4).eval()
    with pytest.raises(ValueError, match="`tokens` must be integer token ids, int64 or int32"):
        model(torch.zeros(1, 3, dtype=dtype))
    assert model(torch.zeros(1, 3, dtype=torch.int32)).shape == (1, 3, 16)


def test_encodings_the_registry_says_do_not_fit_are_refused_by_name():
    """A vision or spatial encoding would otherwise read a 1-D sequence as patches of a default grid."""
    unfit = [info.name for info in posenc.available() if not info.fits_transformer]
    assert {"peg", "rope_2d", "rel_bias_2d"} <= set(unfit)
    for name in unfit:
        with pytest.raises(TypeError, match=f"`position`='{name}'"):
            Transformer(16, 32, 1, 4, position=name)
    for info in posenc.available():
        if info.fits_transformer:
            Transformer(16, 32, 1, 4, position=info.name, causal=False)


@pytest.mark.parametrize("position", ["rope", "complex_order"])
def test_vmap_over_token_rows_equals_the_batched_forward(position):
    """torch.func.vmap over the rows of a batch: the token range check cannot read a batched tensor's
    values, so it is skipped there as under torch.compile (it raised from Tensor.item() before)."""
    torch.manual_seed(0)
    model = Transformer(30, 16, 2, 2, position=position, causal=True, attention="eager").eval()
    tokens = torch.randint(0, 30, (3, 6))
    rows = torch.vmap(lambda row: model(row[None])[0])(tokens)
    torch.testing.assert_close(rows, model(tokens))


@pytest.mark.parametrize("position", ["rope", "alibi", "conv_context"])
def test_a_call_that_fails_part_way_leaves_the_cache_as_it_was(position):
    # the first layer extended the cache before the second raised: a retry once read the first
    # layer's keys twice ('`k_positions` must count the ... rows of `k`')
    torch.manual_seed(0)
    model = Transformer(32, 16, 2, 2, position=position, causal=True).eval()
    tokens = torch.randint(0, 32, (1, 6))
    with torch.no_grad():
        want = model(tokens[:, 3:], cache=_prefilled(model, tokens[:, :3]))
        cache = _prefilled(model, tokens[:, :3])
        second = model.blocks[1]
        real_forward = second.forward

        def fail_once(*args, **kwargs):
            second.forward = real_forward
            raise RuntimeError("a failure inside the second layer")

        second.forward = fail_once
        with pytest.raises(RuntimeError, match="second layer"):
            model(tokens[:, 3:], cache=cache)
        assert cache.length == 3 and all(k.shape[-2] == 3 for k in cache.keys)
        torch.testing.assert_close(model(tokens[:, 3:], cache=cache), want, rtol=0, atol=0)


def _prefilled(model, tokens):
    cache = model.new_cache()
    model(tokens, cache=cache)
    return cache


def test_cached_decoding_compiles_in_one_graph():
    # forward_features restores the cache when a call fails (try/except), which dynamo must trace
    torch.manual_seed(0)
    model = Transformer(32, 16, 2, 2, position="rope", causal=True).eval()
    tokens = torch.randint(0, 32, (1, 5))
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        want = model(tokens[:, 3:], cache=_prefilled(model, tokens[:, :3]))
        cache = compiled.new_cache()
        compiled(tokens[:, :3], cache=cache)
        torch.testing.assert_close(compiled(tokens[:, 3:], cache=cache), want, rtol=1e-5, atol=1e-6)


def test_tokens_on_another_device_are_refused_by_name():
    # meta token ids into a CPU model went into nn.Embedding, which read arbitrary memory: NaN logits
    # or a segmentation fault
    model = Transformer(16, 32, 1, 4, position="rope").eval()
    with pytest.raises(ValueError, match="`tokens` is on meta but the model is on cpu"):
        model(torch.zeros(1, 3, dtype=torch.long, device="meta"))
    with torch.device("meta"):
        meta = Transformer(16, 32, 1, 4, position="rope")
    with pytest.raises(ValueError, match="`tokens` is on cpu but the model is on meta"):
        meta(torch.zeros(1, 3, dtype=torch.long))
    assert meta(torch.zeros(1, 3, dtype=torch.long, device="meta")).shape == (1, 3, 16)
