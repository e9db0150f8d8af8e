"""NanoFlow's flow-indication embedding: a learned table looked up by flow step (Lee et al. 2020)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import posenc
from posenc.step import FlowIndexEmbedding


def test_matches_float64_reference_lookup():
    module = FlowIndexEmbedding(5, 3, dtype=torch.float64)
    table = module.weight.detach().tolist()
    index = torch.tensor([[0, 4], [2, 2]])
    got = module(index)
    assert got.shape == (2, 2, 3) and got.dtype == torch.float64
    for i in range(2):
        for j in range(2):
            for c in range(3):
                assert got[i, j, c].item() == table[index[i, j]][c]


@given(shape=st.lists(st.integers(1, 3), max_size=3), integer=st.booleans())
def test_int_and_float_steps_of_any_shape(shape, integer):
    module = FlowIndexEmbedding(6, 4)
    index = torch.randint(0, 6, shape)
    steps = index if integer else index.double()
    out = module(steps)
    assert out.shape == (*shape, module.out_dim)
    torch.testing.assert_close(out, module.weight[index])


def test_python_numbers():
    module = FlowIndexEmbedding(4, 2)
    torch.testing.assert_close(module(3), module.weight[3])
    torch.testing.assert_close(module(2.0), module.weight[2])


def test_gradient_reaches_only_the_rows_used():
    module = FlowIndexEmbedding(4, 3)
    module(torch.tensor([1, 3, 3])).sum().backward()
    used = module.weight.grad.abs().sum(-1) > 0
    assert used.tolist() == [False, True, False, True]


def test_meta_device_and_state_dict():
    module = FlowIndexEmbedding(4, 3, device="meta")
    assert module.out_dim == 3
    module.to_empty(device="cpu")
    module.reset_parameters()
    assert torch.isfinite(module.weight).all()
    other = FlowIndexEmbedding(4, 3)
    other.load_state_dict(module.state_dict())
    torch.testing.assert_close(other(torch.arange(4)), module(torch.arange(4)))


def test_registry():
    info = posenc.get("flow_index")
    assert info.family == "step" and "2006.06280" in info.paper
    assert posenc.create("flow_index", num_flows=3, dim=5).out_dim == 5


def test_bad_input():
    module = FlowIndexEmbedding(4, 3)
    with pytest.raises(ValueError, match="flow_index"):
        module(torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="flow_index"):
        module(-1)
    with pytest.raises(ValueError, match="flow_index"):
        module(torch.tensor([1.5]))
    with pytest.raises(ValueError, match="flow_index"):
        module(torch.tensor([True]))
    with pytest.raises(ValueError, match="num_flows"):
        FlowIndexEmbedding(0, 3)
    with pytest.raises(ValueError, match="dim"):
        FlowIndexEmbedding(3, 0)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_index_is_refused_as_such(bad):
    # inf used to pass the whole-number test and be reported as the range [-9223372036854775808, ...]
    with pytest.raises(ValueError, match="`flow_index` must be finite"):
        FlowIndexEmbedding(4, 3)(torch.tensor([1.0, bad]))


@pytest.mark.parametrize("bad", [10**30, 1e30, -1e30], ids=["int", "float", "negative float"])
def test_an_index_past_int64_is_refused_with_the_value_given(bad):
    # a Python int past int64 failed inside torch.tensor ('Overflow when unpacking long long'), and a float
    # one was converted with .long() first and reported as the range [-9223372036854775808, ...]
    emb = FlowIndexEmbedding(4, 8)
    for value in (bad, torch.tensor([bad])) if isinstance(bad, float) else (bad,):
        with pytest.raises(ValueError, match=r"^`flow_index` must lie in \[0, num_flows - 1\] = \[0, 3\], got") as info:
            emb(value)
        assert "9223372036854775808" not in str(info.value) and ("-" in str(info.value).split("got")[1]) == (bad < 0)


def test_flow_indices_checks_num_flows_by_name():
    # num_flows='8' failed with "unsupported operand type(s) for -: 'str' and 'int'", 2.5 passed, and
    # num_flows=0 refused a valid index as outside '[0, -1]'
    from posenc.step import flow_indices

    with pytest.raises(TypeError, match="`num_flows` must be an int, got str '8'"):
        flow_indices(torch.tensor([1]), "8")
    with pytest.raises(TypeError, match="`num_flows` must be an int, got float 2.5"):
        flow_indices(1, 2.5)
    with pytest.raises(ValueError, match="`num_flows` must be >= 1, got 0"):
        flow_indices(torch.tensor([1]), 0)
    assert flow_indices(torch.tensor([0.0, 3.0]), 4).tolist() == [0, 3]
