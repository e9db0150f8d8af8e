"""Empty sequences (n = 0 or m = 0, no points, no steps, no pixels) give empty outputs of the right
shape for every registered encoding and for the reference models."""

from __future__ import annotations

import pytest
import torch

import posenc
from posenc.core.base import PositionEncoding
from posenc.core.positions import Positions
from posenc.core.registry import get
from posenc.models import Transformer, ViT
from posenc.testing import example
from posenc.testing.examples import Arg, spec

NAMES = [info.name for info in posenc.available()]


def _emptied(arg: Arg, value):
    """``value`` with the axis that counts tokens, points, steps or pixels cut to length 0."""
    if arg.role == "count":
        return 0 if arg.name == "n" else value  # a sequence length, not a batch size
    if arg.role == "activation" and arg.feature_axis == -1 and value.ndim >= 3:
        axis = -2  # (..., n, d)
    elif arg.role == "activation" and value.ndim >= 3:
        axis = -1  # (b, c, h, w): no columns
    elif arg.role == "activation":
        return value  # a latent vector, not a sequence
    elif arg.role == "coordinates":
        axis = 0  # (points, in_dim)
    else:
        axis = -1  # positions (b | 1, n) or steps (t,)
    index = [slice(None)] * value.ndim
    index[axis] = slice(0, 0)
    return value[tuple(index)]


def _tensors(out) -> list[torch.Tensor]:
    return [out] if isinstance(out, torch.Tensor) else [t for item in out for t in _tensors(item)]


def _assert_empty_like(got: torch.Tensor, full: torch.Tensor) -> None:
    """Same rank and dtype as the full output, and only axes that collapse to 0 differ."""
    assert got.numel() == 0 and got.ndim == full.ndim and got.dtype == full.dtype, (got.shape, full.shape)
    for g, f in zip(got.shape, full.shape, strict=True):
        assert g in (f, 0), (got.shape, full.shape)


#: examples whose forward pins the sequence length, run here at the inputs' own lengths
FORWARDS = {
    "transformer_xl": lambda m, q, k: m.score_bias(
        q, k, q_positions=Positions(q.shape[-2]), k_positions=Positions(k.shape[-2])
    ),
}


@pytest.mark.parametrize("name", NAMES)
def test_every_encoding_takes_an_empty_sequence(name, cases):
    module, inputs, forward = example(name)
    forward = FORWARDS.get(name, forward)
    args = spec(name).args
    empty = tuple(_emptied(a, v) for a, v in zip(args, inputs)) + tuple(inputs[len(args) :])
    with torch.no_grad():
        full = _tensors(forward(module, *inputs))
        got = _tensors(forward(module, *empty))
    cases["empty"] += 1
    assert len(got) == len(full)
    if any(e is not v for e, v in zip(empty, inputs)):  # `none` takes no sequence of its own
        for g, f in zip(got, full, strict=True):
            _assert_empty_like(g, f)


@pytest.mark.parametrize("n, m", [(0, 6), (0, 0)])
def test_shaw_without_queries(n, m):
    shaw = posenc.create("shaw", head_dim=4, heads=2, max_distance=3)
    q = torch.randn(2, 2, n, 4, requires_grad=True)
    out = shaw(q, torch.randn(2, 2, m, 4), torch.randn(2, 2, m, 4))
    assert out.shape == (2, 2, 0, 4)
    out.sum().backward()  # still part of the graph
    assert q.grad.shape == q.shape


def test_shaw_without_keys_for_queries_names_k():
    shaw = posenc.create("shaw", head_dim=4, heads=2, max_distance=3)
    # its queries are the last n of the m keys: queries without keys are an error naming `k`
    with pytest.raises(ValueError, match="`k` must have at least as many keys"):
        shaw(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 0, 4), torch.randn(1, 2, 0, 4))


@pytest.mark.parametrize("name", ["alibi", "t5", "rel_bias_2d"])
@pytest.mark.parametrize("n, m", [(0, 4), (4, 0), (0, 0)])
def test_biases_with_no_queries_or_no_keys(name, n, m):
    module = example(name).module
    bias = module.score_bias(None, None, q_positions=Positions(n), k_positions=Positions(m))
    assert bias.shape == (1, 2, n, m)


@pytest.mark.parametrize("n, m", [(0, 4), (4, 0), (0, 0)])
def test_transformer_xl_scores_with_no_queries_or_no_keys(n, m):
    xl = posenc.create("transformer_xl", dim=8, heads=2, head_dim=4)
    q, k = torch.randn(2, 2, n, 4), torch.randn(2, 2, m, 4)
    scores = xl.score_bias(q, k, q_positions=Positions(n), k_positions=Positions(m))
    assert scores.shape == (2, 2, n, m)


def test_causal_conv_context_stream_continues_after_an_empty_chunk():
    conv = posenc.create("conv_context", dim=8, kernel_size=3, layers=2, causal=True)
    x = torch.randn(1, 6, 8)
    whole = conv(x)
    first = conv(x[:, :4])
    assert conv(x[:, 4:4], offset=4).shape == (1, 0, 8)
    torch.testing.assert_close(torch.cat([first, conv(x[:, 4:], offset=4)], dim=1), whole)


# the encodings the reference Transformer takes (the vision ones need a patch grid: see the ViT below)
SEQUENCE_ENCODINGS = [
    n for n in NAMES if issubclass(get(n).cls, PositionEncoding) and get(n).family != "vision" and n != "sincos_2d"
]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("position", SEQUENCE_ENCODINGS)
def test_transformer_on_no_tokens(position, causal):
    cls = get(position).cls
    if causal and not cls.supports_causal:
        pytest.skip("not usable in causal attention")
    torch.manual_seed(0)
    model = Transformer(11, 16, 1, 2, position=position, causal=causal)
    out = model(torch.zeros(1, 0, dtype=torch.long))
    full = model(torch.zeros(1, 3, dtype=torch.long))
    assert out.shape == (1, 0, *full.shape[2:]) and out.dtype == full.dtype


@pytest.mark.parametrize("position", ["vit_learned", "peg", "rel_bias_2d", "rope_2d", "sincos_2d"])
def test_vit_on_no_images(position):
    model = ViT(8, 4, 3, dim=16, heads=2, depth=1, position=position)
    assert model(torch.zeros(0, 3, 8, 8)).shape == (0, 3)


def test_rel_bias_2d_among_no_tokens():
    assert example("rel_bias_2d").module(0).shape == (1, 2, 0, 0)
